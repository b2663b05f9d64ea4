"""Chapter 10's machinery: the reference results of ``results/`` beside the papers' tables.

Everything here reads files; nothing trains. The reference records are those
:mod:`cormult_lib.tutorial.reference` wrote (``make reference``), the papers' tables those of
:mod:`cormult_lib.tutorial.paper_tables`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cormult_lib.metrics import SCORE_KEYS
from cormult_lib.stats import Comparison, mean_interval, verdict
from cormult_lib.tutorial.reference import commit_label, load_reference, reference_dir

PAPER_SOURCE = "paper"
OURS_SYNTHETIC = "this repository, synthetic"
OURS_REAL = "this repository, real CMU-MOSEI transcripts"


def load_references(folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every reference record under ``folder`` (default :func:`reference_dir`), by chapter."""
    folder = folder or reference_dir()
    names = sorted(path.stem for path in folder.glob("[0-9][0-9]_*.json"))
    return {name: load_reference(name, folder) for name in names}


def provenance_table(references: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per chapter: profile, seeds, wall time, the device it ran on, machine, date, the
    commit (``+``: with uncommitted changes) and its comparisons."""
    rows = {}
    for name, record in references.items():
        block = record["reference"]
        comparisons = record.get("comparisons") or []
        rows[name] = {
            "profile": record["settings"].get("profile"),
            "seeds": len(block["seeds"]),
            "minutes": round(block["seconds"] / 60, 1),
            "device": record.get("device"),
            "cpu": block["machine"]["cpu"],
            "cores": block["machine"]["cpu_count"],
            "gpu": block["machine"]["gpu"] or "none",
            "date": block["made_at"][:10],
            "commit": commit_label(record),
            "comparisons": len(comparisons),
            "decided": sum(c["verdict"] != "no measurable difference" for c in comparisons),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("chapter")


def comparisons_of(record: dict[str, Any], **where: Any) -> list[Comparison]:
    """The chapter's comparisons whose fields equal every keyword, e.g. ``a="CorMulT"``."""
    found = []
    for entry in record.get("comparisons") or []:
        if all(entry.get(key) == value for key, value in where.items()):
            kept = ("groups", "lower_is_better")  # None there means "not recorded", not NaN
            values = {k: (np.nan if v is None else v) for k, v in entry.items() if k not in kept}
            groups = entry.get("groups")  # JSON keeps the pair as a list; older records lack it
            found.append(Comparison(
                **values, groups=None if groups is None else tuple(groups),
                lower_is_better=entry.get("lower_is_better"),
            ))
    return found


def mismatched_verdicts(references: Mapping[str, dict[str, Any]]) -> list[str]:
    """Comparisons whose stored verdict is not the one their interval decides (none, if the
    files are what the chapters wrote)."""
    wrong = []
    for name, record in references.items():
        for c in comparisons_of(record):
            decided = verdict(c.ci_low, c.ci_high, c.metric, c.lower_better)
            if decided != c.verdict:  # without an interval, only no verdict is right
                wrong.append(f"{name}: {c.sentence()}")
    return wrong


def seed_means(records: Sequence[dict[str, Any]], index: Sequence[str]) -> pd.DataFrame:
    """A chapter's flattened summary (``<metric>_mean`` / ``<metric>_std`` columns) as a frame
    of the means, one column per metric, indexed by ``index``."""
    frame = pd.DataFrame(list(records)).set_index(list(index))
    means = frame[[c for c in frame.columns if c.endswith("_mean")]]
    return means.rename(columns=lambda c: c.removesuffix("_mean"))


def side_by_side(
    paper: pd.DataFrame,
    ours: pd.DataFrame,
    rows: Mapping[str, str],
    columns: Mapping[str, str],
    sources: tuple[str, str],
    ours_fraction: bool = True,
) -> pd.DataFrame:
    """The paper's rows beside this repository's, in the paper's units.

    Args:
        paper: a paper table (:meth:`~cormult_lib.tutorial.paper_tables.PaperTable.frame`).
        ours: this repository's table, one row per model, metric columns.
        rows: our row -> the paper's row it stands beside.
        columns: the paper's column -> ours (``{"acc2": "acc2_non0", "mae": "mae"}``).
        sources: the two column-group labels, paper first.
        ours_fraction: our accuracies and F1 are fractions; shown times 100 as papers print.

    Returns:
        Index: our row names; columns: ``(source, paper column)``; a row either side lacks
        shows NaN.
    """
    mine = ours.reindex(list(rows))[[columns[c] for c in columns]].copy()
    mine.columns = list(columns)
    if ours_fraction:
        for paper_column, our_column in columns.items():
            if our_column in SCORE_KEYS:
                mine[paper_column] = 100 * mine[paper_column]
    theirs = paper.reindex([rows[r] for r in rows])[list(columns)]
    theirs.index = list(rows)
    return pd.concat({sources[0]: theirs, sources[1]: mine}, axis=1)


#: A mean change of the predictions under this fraction of their standard deviation counts as
#: negligible when :func:`sensitivity_intervals` decides whether ``Cor`` reaches the prediction.
NEGLIGIBLE_CHANGE = 0.05


def sensitivity_intervals(
    records: Sequence[dict[str, Any]], negligible: float = NEGLIGIBLE_CHANGE
) -> pd.DataFrame:
    """Chapter 07's ``correlation_sensitivity`` records per placement and replacement: the mean
    change of the predictions (fraction of their sd) with its 95% *t* interval over seeds.

    A mean absolute change is positive whenever the predictions move at all, even by rounding,
    so "above 0" decides nothing. The verdict compares the interval with a margin instead:
    ``"reaches the prediction"`` when it lies above ``negligible`` (a fraction of the
    predictions' sd), ``"negligible"`` when it lies below, ``"undecided"`` when it holds the
    margin or there is no interval (fewer than two seeds).

    Returns:
        Index ``(fusion, replacement)``; columns ``mean``, ``ci_low``, ``ci_high``,
        ``n_seeds`` (the seeds averaged), ``undefined`` (seeds left out because their change
        is NaN: predictions without spread) and ``verdict``. A seed recorded twice for one row
        is refused.
    """
    if not 0 < negligible < 1:
        raise ValueError(f"negligible must be a fraction of the sd in (0, 1), got {negligible}")
    frame = pd.DataFrame(list(records))
    twice = frame.duplicated(["fusion", "replacement", "seed"])
    if twice.any():
        raise ValueError(
            f"correlation_sensitivity records a (fusion, replacement, seed) more than once: "
            f"{frame.loc[twice, ['fusion', 'replacement', 'seed']].to_dict(orient='records')}"
        )
    rows = {}
    for key, group in frame.groupby(["fusion", "replacement"], sort=False):
        changes = group["relative_change"].to_numpy(dtype=float)
        defined = changes[np.isfinite(changes)]
        mean, low, high = mean_interval(defined) if len(defined) else (np.nan,) * 3
        verdict = "undecided"
        if low > negligible:
            verdict = "reaches the prediction"
        elif high < negligible:
            verdict = "negligible"
        rows[key] = {"mean": mean, "ci_low": low, "ci_high": high, "n_seeds": len(defined),
                     "undefined": len(changes) - len(defined), "verdict": verdict}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["fusion", "replacement"])
