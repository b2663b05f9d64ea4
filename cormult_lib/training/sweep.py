"""Resumable, shardable parameter sweeps with one CSV row per finished (settings, seed) pair.

CorMulT sections 4.3 and 4.4 sweep the distance measure of the correlation evaluator and the
size ``(t, o)`` of its shared space, each over several seeds. This module runs such sweeps:

* :func:`grid_points` expands named axes into the list of settings (the cartesian product);
* :func:`run_sweep` calls ``run_point(settings, seed)`` for every pair and appends its metrics;
* :func:`load_sweep` merges the files of every shard into one table;
* :func:`summarize_sweep` gives the mean and standard deviation over seeds per setting.

Resumability. Every finished pair is appended to the results CSV at once, as one line, flushed
and ``os.fsync``-ed, so an interrupted sweep (Ctrl-C, a crash, a lost machine) loses at most the
pair it was running. Each row carries a ``key``, the JSON of its settings (keys sorted) and seed;
a rerun skips the pairs whose key is already in the file and runs only the rest. So a grid with
new values runs only the new pairs, and rows of settings no longer in the grid stay in the file.
A process killed in the middle of a write leaves an incomplete last line: it is dropped (and
removed from the file before the next append), with a warning, and its pair is run again.

Sharding. ``shard=(i, n)`` runs the pairs ``j`` with ``j % n == i`` of the ordered list of
pairs (points in order, the seeds of each point in order), e.g. one process per GPU. Shard
``(i, n)`` with ``n > 1`` writes ``<stem>.shard-<i>-of-<n><suffix>`` beside ``results_path``
(``sweep.csv`` -> ``sweep.shard-0-of-2.csv`` and ``sweep.shard-1-of-2.csv``); ``(0, 1)`` writes
``results_path`` itself. Shards never write the same file; :func:`load_sweep` merges them. Keep
``n`` fixed while resuming a sweep: a rerun skips only the pairs found in its own shard's file.
One process at a time per file: nothing locks it.

Example::

    from cormult_lib.training.sweep import (
        SEEDS, SHARED_SPACE_GRIDS, grid_points, load_sweep, run_sweep, summarize_sweep,
    )

    def run_point(settings: dict, seed: int) -> dict[str, float]:
        ...  # pre-train with shared_time=settings["shared_time"], ...; return the metrics
        return {"roc_auc": auc}

    points = grid_points(SHARED_SPACE_GRIDS["quick"])
    run_sweep(points, SEEDS["quick"], run_point, "runs/shared_space.csv", shard=(0, 2))
    # ... and shard=(1, 2) in a second process; then, in either:
    table = load_sweep("runs/shared_space.csv")
    summary = summarize_sweep(table, by=["shared_time", "shared_dim"], metrics=["roc_auc"])
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import ParameterGrid
from tqdm.auto import tqdm

from cormult_lib.correlation.distances import DISTANCES

__all__ = [
    "DISTANCE_GRIDS",
    "SEEDS",
    "SHARED_SPACE_GRIDS",
    "grid_points",
    "load_sweep",
    "results_file",
    "run_sweep",
    "shard_path",
    "summarize_sweep",
    "sweep_seeds",
]

SHARED_SPACE_GRIDS: dict[str, dict[str, tuple[int, ...]]] = {
    "quick": {"shared_time": (2, 8, 32), "shared_dim": (8, 32, 128)},
    "standard": {"shared_time": (2, 8, 32), "shared_dim": (8, 32, 128)},
    "paper": {
        "shared_time": (2, 4, 8, 16, 32, 64, 128),
        "shared_dim": tuple(range(50, 1001, 50)),
    },
}
"""Axes of the shared-space sweep (CorMulT section 4.4): ``t`` = ``shared_time``, ``o`` =
``shared_dim``. ``"paper"``: ``t`` in 2, 4, ..., 128 and ``o`` in 50, 100, ..., 1000 (140
settings), each with the five seeds of ``SEEDS["paper"]``; the paper pre-trained the evaluator
on the first 10% of CMU-MOSEI for this sweep. ``"quick"``: 9 settings for a tutorial run;
``"standard"``: the same 9 with five seeds."""

DISTANCE_GRIDS: dict[str, dict[str, tuple[str, ...]]] = {
    "quick": {"distance": tuple(DISTANCES)},
    "standard": {"distance": tuple(DISTANCES)},
    "paper": {"distance": tuple(DISTANCES)},
}
"""Axis of the distance-measure sweep (CorMulT section 4.3, Table 3): the five measures of
:mod:`cormult_lib.correlation.distances`, the same in both profiles. As for the shared-space
sweep, the paper trained on the first 10% of CMU-MOSEI, over the five seeds of
``SEEDS["paper"]``."""

SEEDS: dict[str, tuple[int, ...]] = {
    "quick": (0, 1),
    "standard": (0, 1, 2, 3, 4),
    "paper": (0, 1, 2, 3, 4),
}
"""Seeds per setting: five in the paper and the standard run, two for a quick run."""

#: Columns every results file has besides the settings and the metrics.
RESERVED_COLUMNS = ("seed", "wall_s", "key")
_SCALAR_TYPES = (str, int, float, bool, type(None))


@dataclass
class _Row:
    """One finished pair as read from, or written to, a results file."""

    settings: dict
    seed: int
    metrics: dict[str, float]
    wall_s: float
    key: str


@dataclass
class _ResultsFile:
    """A parsed results file: its column layout (``None`` while it has no header) and rows."""

    path: Path
    settings_names: tuple[str, ...] | None
    metric_names: tuple[str, ...] | None
    rows: list[_Row]
    complete_bytes: int  # bytes up to the end of the last complete line
    partial_lines: int  # incomplete last lines dropped: 0 or 1


def _check_name(name: object, what: str) -> str:
    """``name`` as a column name (a non-empty one-line str, not a reserved column)."""
    if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
        raise ValueError(f"{what} must be a non-empty one-line str, got {name!r}")
    if name in RESERVED_COLUMNS:
        raise ValueError(f"{what} {name!r} is reserved (results columns {RESERVED_COLUMNS})")
    return name


def _check_scalar(value: object, where: str) -> None:
    """Raise unless ``value`` is a JSON scalar that survives the CSV round trip."""
    if type(value) not in _SCALAR_TYPES:
        raise TypeError(
            f"{where}: values must be str, int, float, bool or None, got {value!r} of type "
            f"{type(value).__name__} (convert numpy scalars with .item())"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: values must be finite, got {value!r}")
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        raise ValueError(f"{where}: str values must be one line, got {value!r}")


def _json(value: object) -> str:
    """Canonical JSON: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _pair_key(settings: Mapping[str, object], seed: int) -> str:
    """The stable identifier of a (settings, seed) pair."""
    return _json({"settings": dict(settings), "seed": seed})


def grid_points(axes: Mapping[str, Sequence]) -> list[dict]:
    """The cartesian product of ``axes``, one dict of settings per point.

    Order: as nested loops over the axes in their insertion order, the first axis outermost
    (slowest) and the last innermost (fastest), every axis in the order of its values; each
    dict lists the axes in insertion order too. (:class:`sklearn.model_selection.ParameterGrid`,
    which makes the product, orders by sorted axis name instead; that order is undone here.)
    ``grid_points({"t": (2, 8), "o": (8, 32)})`` is ``[{"t": 2, "o": 8}, {"t": 2, "o": 32},
    {"t": 8, "o": 8}, {"t": 8, "o": 32}]``. No axes give one point, ``{}``.

    Args:
        axes: axis name -> its values, a non-empty sequence (not a str) of distinct values
            that are str (one line), int, float (finite), bool or None.

    Raises:
        TypeError / ValueError naming the axis for a value of another type, a repeated value, an
        empty axis, a bad or reserved axis name.
    """
    if not isinstance(axes, Mapping):
        raise TypeError(f"axes must be a mapping of axis name -> values, got {type(axes)}")
    checked: dict[str, tuple] = {}
    for name, values in axes.items():
        _check_name(name, "axis name")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise TypeError(
                f"axis {name!r}: values must be a sequence such as a tuple, got {values!r}"
            )
        if not values:
            raise ValueError(f"axis {name!r} has no values")
        seen: set[str] = set()
        for value in values:
            _check_scalar(value, f"axis {name!r}")
            if _json(value) in seen:
                raise ValueError(f"axis {name!r}: value {value!r} appears more than once")
            seen.add(_json(value))
        checked[name] = tuple(values)
    names = list(checked)
    grid = ParameterGrid({name: range(len(values)) for name, values in checked.items()})
    combos = sorted(tuple(point[name] for name in names) for point in grid)
    return [
        {name: checked[name][i] for name, i in zip(names, combo, strict=True)} for combo in combos
    ]


def results_file(
    folder: str | os.PathLike, stem: str, fixed: Mapping[str, object], suffix: str = ".csv"
) -> Path:
    """Where a sweep with these fixed settings keeps its results: ``<folder>/<stem>-<tag>.csv``.

    A results file only knows the swept axes and the seed of each row, so a rerun with another
    value of a setting held fixed over the grid (epochs, the negative strategy, the data) would
    otherwise find the old rows and skip every point. ``tag`` is the first 10 hex digits of the
    SHA-1 of ``fixed`` as sorted JSON, so each combination of fixed settings gets its own file
    and the same settings always find theirs again.

    Args:
        folder: the output folder.
        stem: a readable prefix, e.g. ``"06_shared_space_quick_synthetic"``.
        fixed: every setting that is the same for all points and changes the results; scalar
            values (str, int, float, bool, None) or lists/tuples of them.
    """
    try:
        text = json.dumps(dict(fixed), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"results_file: fixed settings must be JSON scalars or lists of them ({error})"
        ) from None
    tag = hashlib.sha1(text.encode()).hexdigest()[:10]
    return Path(folder) / f"{stem}-{tag}{suffix}"


def sweep_seeds(seeds: Sequence[int] | None, grid: str) -> list[int]:
    """The seeds of a sweep: ``SEEDS[grid]`` for ``None``, else ``seeds`` checked (a non-empty
    list of distinct non-negative ints), e.g. a notebook's ``seeds`` parameter."""
    if seeds is None:
        if grid not in SEEDS:
            raise ValueError(f"grid={grid!r} has no default seeds; known grids: {tuple(SEEDS)}")
        return list(SEEDS[grid])
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be None or a non-empty list of ints, got {seeds!r}")
    if any(type(s) is not int or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct non-negative ints, got {list(seeds)}")
    return list(seeds)


def shard_path(results_path: str | os.PathLike, shard: tuple[int, int] = (0, 1)) -> Path:
    """The file shard ``(i, n)`` writes: ``results_path`` for ``(0, 1)``, else
    ``<stem>.shard-<i>-of-<n><suffix>`` in the same folder (``i`` counts from 0)."""
    index, count = _check_shard(shard)
    path = Path(results_path)
    if count == 1:
        return path
    return path.with_name(f"{path.stem}.shard-{index}-of-{count}{path.suffix}")


def _check_shard(shard: object) -> tuple[int, int]:
    if (
        not isinstance(shard, tuple | list)
        or len(shard) != 2
        or not all(type(x) is int for x in shard)
    ):
        raise TypeError(f"shard must be a pair of ints (index, count), got {shard!r}")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    return index, count


def _check_points(points: Sequence[Mapping[str, object]]) -> list[dict]:
    """``points`` as dicts, all with the same axis names, distinct, with scalar values."""
    if isinstance(points, Mapping) or not isinstance(points, Sequence):
        raise TypeError(f"points must be a sequence of settings dicts, got {type(points)}")
    checked: list[dict] = []
    seen: set[str] = set()
    for position, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise TypeError(f"points[{position}] must be a mapping, got {point!r}")
        for name, value in point.items():
            _check_name(name, f"points[{position}]: setting name")
            _check_scalar(value, f"points[{position}][{name!r}]")
        if checked and set(point) != set(checked[0]):
            raise ValueError(
                f"points[{position}] has settings {sorted(point)}, points[0] has "
                f"{sorted(checked[0])}: every point needs the same settings names"
            )
        if _json(dict(point)) in seen:
            raise ValueError(f"points[{position}] = {dict(point)!r} appears more than once")
        seen.add(_json(dict(point)))
        checked.append(dict(point))
    return checked


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
        raise TypeError(f"seeds must be a sequence of ints, got {seeds!r}")
    for seed in seeds:
        if type(seed) is not int:
            raise TypeError(f"seeds must be ints, got {seed!r} of type {type(seed).__name__}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {tuple(seeds)}")
    return list(seeds)


def _read_results(path: Path) -> _ResultsFile:
    """Parse ``path`` (absent or empty: no header, no rows), dropping an incomplete last line."""
    data = path.read_bytes() if path.exists() else b""
    complete_bytes = data.rfind(b"\n") + 1
    partial_lines = int(complete_bytes < len(data))
    if partial_lines:
        warnings.warn(
            f"{path}: dropped 1 incomplete last line (a write that was interrupted); "
            "its pair counts as not run",
            RuntimeWarning,
            stacklevel=3,
        )
    lines = list(csv.reader(io.StringIO(data[:complete_bytes].decode("utf-8"), newline="")))
    if not lines:
        return _ResultsFile(path, None, None, [], complete_bytes, partial_lines)
    header = lines[0]
    missing = [column for column in RESERVED_COLUMNS if column not in header]
    if missing or len(set(header)) != len(header) or header[-1] != "key":
        raise ValueError(
            f"{path}: not a sweep results file: header {header} (missing {missing}); expected "
            "the settings columns, 'seed', the metric columns, 'wall_s' and last 'key'"
        )
    seed_at, wall_at = header.index("seed"), header.index("wall_s")
    if wall_at != len(header) - 2 or seed_at > wall_at:
        raise ValueError(
            f"{path}: header {header} must be the settings, 'seed', the metrics, 'wall_s', 'key'"
        )
    settings_names = tuple(header[:seed_at])
    metric_names = tuple(header[seed_at + 1 : wall_at])
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(header):
            raise ValueError(
                f"{path}, line {number}: {len(cells)} fields, header has {len(header)}"
            )
        try:
            record = json.loads(cells[-1])
            settings, seed = record["settings"], record["seed"]
            metrics = {name: float(cells[seed_at + 1 + k]) for k, name in enumerate(metric_names)}
            wall_s = float(cells[wall_at])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}, line {number}: unreadable row ({error})") from error
        if type(seed) is not int:
            raise ValueError(f"{path}, line {number}: the key's seed {seed!r} is not an int")
        if not isinstance(settings, dict) or set(settings) != set(settings_names):
            raise ValueError(
                f"{path}, line {number}: key settings {settings!r} do not match the header's "
                f"settings columns {list(settings_names)}"
            )
        rows.append(_Row(settings, seed, metrics, wall_s, cells[-1]))
    return _ResultsFile(path, settings_names, metric_names, rows, complete_bytes, partial_lines)


def _dedupe(rows: list[_Row], where: str) -> list[_Row]:
    """``rows`` with the first row of every key, warning with the count of later repeats."""
    kept: dict[str, _Row] = {}
    for row in rows:
        kept.setdefault(row.key, row)
    if len(kept) < len(rows):
        warnings.warn(
            f"{where}: {len(rows) - len(kept)} rows repeat the key of an earlier row; "
            "kept the first of each",
            RuntimeWarning,
            stacklevel=3,
        )
    return list(kept.values())


def _column(values: list) -> pd.Series:
    """A settings column: a typed dtype when every value has the same type, else object
    (so ``None`` stays ``None`` and ``1`` stays an int next to ``None`` or ``"1"``)."""
    if len({type(value) for value in values}) == 1 and values[0] is not None:
        return pd.Series(values)
    return pd.Series(values, dtype=object)


def _table(
    settings_names: Sequence[str], metric_names: Sequence[str], rows: Sequence[_Row]
) -> pd.DataFrame:
    """The results table: settings (types restored from the keys), seed, metrics, wall_s, key."""
    columns: dict[str, pd.Series] = {
        name: _column([row.settings[name] for row in rows]) for name in settings_names
    }
    columns["seed"] = pd.Series([row.seed for row in rows], dtype="int64")
    for name in metric_names:
        columns[name] = pd.Series([row.metrics[name] for row in rows], dtype="float64")
    columns["wall_s"] = pd.Series([row.wall_s for row in rows], dtype="float64")
    columns["key"] = pd.Series([row.key for row in rows], dtype=object)
    return pd.DataFrame(columns)


def _csv_line(cells: Sequence[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _append(path: Path, text: str) -> None:
    """Append ``text`` and force it to disk before returning."""
    with path.open("a", encoding="utf-8", newline="") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def run_sweep(
    points: Sequence[Mapping[str, object]],
    seeds: Sequence[int],
    run_point: Callable[[dict, int], Mapping[str, float]],
    results_path: str | os.PathLike,
    *,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> pd.DataFrame:
    """Run this shard's (point, seed) pairs not yet in its results file, one CSV row each.

    The pairs are ordered point by point, the seeds of each point in order; shard ``(i, n)``
    takes pair ``j`` when ``j % n == i`` and writes :func:`shard_path` ``(results_path, shard)``.
    A pair whose ``key`` is in that file already is skipped. Each finished pair is appended at
    once (flushed and fsync-ed): its settings, ``seed``, every metric, ``wall_s`` (seconds of
    ``run_point``) and ``key`` (JSON of the settings, keys sorted, and the seed).

    Args:
        points: settings dicts, e.g. from :func:`grid_points`; all with the same names, values
            str, int, float, bool or None.
        seeds: distinct ints, every point runs with each.
        run_point: ``run_point(settings, seed) -> {metric name: value}``, the same metric names
            for every pair (and as in the file's header, when resuming).
        results_path: the CSV of the whole sweep (parent folders are created).
        shard: ``(index, count)``, ``0 <= index < count``.
        progress: show a :mod:`tqdm` bar named after the shard.

    Returns:
        This shard's file as a table, old rows then new, one row per pair, in file order:
        settings columns (int, float, bool and str columns keep their type; a column of mixed
        types or with None is of object dtype with the exact values), ``seed``, the metrics,
        ``wall_s``, ``key``.

    Raises:
        ValueError / TypeError for a bad ``shard``, ``seeds`` or point, for metric names that
        differ between pairs or from the file (naming the pair), for settings names that differ
        from the file's, and for a file that is not a results file (naming it). An exception
        of ``run_point`` (e.g. KeyboardInterrupt) propagates; rows written so far stay.
    """
    index, count = _check_shard(shard)
    checked_points = _check_points(points)
    checked_seeds = _check_seeds(seeds)
    path = shard_path(results_path, shard)
    existing = _read_results(path)
    if existing.partial_lines:
        os.truncate(path, existing.complete_bytes)
    rows = _dedupe(existing.rows, str(path))
    settings_names = existing.settings_names
    metric_names = existing.metric_names
    if (
        checked_points
        and settings_names is not None
        and set(checked_points[0]) != set(settings_names)
    ):
        raise ValueError(
            f"{path} has settings columns {list(settings_names)}, the points have "
            f"{list(checked_points[0])}: use another results_path for another grid's axes"
        )
    done = {row.key for row in rows}
    pairs = [(point, seed) for point in checked_points for seed in checked_seeds]
    mine = [pair for j, pair in enumerate(pairs) if j % count == index]
    todo = [(point, seed) for point, seed in mine if _pair_key(point, seed) not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"sweep shard {index} of {count}",
        disable=not progress,
    ) as bar:
        for point, seed in todo:
            start = time.perf_counter()
            metrics = run_point(dict(point), seed)
            wall_s = time.perf_counter() - start
            if not isinstance(metrics, Mapping):
                raise TypeError(
                    f"run_point({point!r}, seed={seed}) must return a mapping of metrics, "
                    f"got {type(metrics)}"
                )
            header = ""
            if metric_names is None:
                metric_names = tuple(_check_name(name, "metric name") for name in metrics)
                settings_names = tuple(point)
                header = _csv_line([*settings_names, "seed", *metric_names, "wall_s", "key"])
            if set(metrics) != set(metric_names) or set(metrics) & set(settings_names):
                raise ValueError(
                    f"run_point({point!r}, seed={seed}) returned metrics {sorted(metrics)}, "
                    f"expected {sorted(metric_names)} (the first pair's, or {path}'s header); "
                    "every pair must return the same metric names, none of them a setting"
                )
            try:
                values = {name: float(metrics[name]) for name in metric_names}
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"run_point({point!r}, seed={seed}) returned a non-numeric metric: {error}"
                ) from error
            row = _Row(point, seed, values, wall_s, _pair_key(point, seed))
            cells = [point[name] for name in settings_names]
            cells += [seed, *(values[name] for name in metric_names), wall_s, row.key]
            _append(path, header + _csv_line(cells))
            rows.append(row)
            bar.update()
    if settings_names is None:  # nothing run and no file: no metric names known
        settings_names = tuple(checked_points[0]) if checked_points else ()
    return _table(settings_names, metric_names or (), rows)


def load_sweep(results_path: str | os.PathLike) -> pd.DataFrame:
    """The merged results of ``results_path`` and all its shard files, one row per key.

    Reads ``results_path`` (if present), then every ``<stem>.shard-<i>-of-<n><suffix>`` beside
    it, ordered by ``(n, i)``. A key found more than once keeps its first row (in that file
    order), with a warning giving the count; an incomplete last line of a file is dropped with
    a warning (the file is not changed). Rows are sorted by ``key``, so the table is the same
    however the sweep was sharded; columns and types as :func:`run_sweep` returns them.

    Raises:
        FileNotFoundError when neither ``results_path`` nor a shard file of it exists;
        ValueError naming the files whose settings or metric columns differ.
    """
    path = Path(results_path)
    pattern = re.compile(rf"{re.escape(path.stem)}\.shard-(\d+)-of-(\d+){re.escape(path.suffix)}")
    siblings = path.parent.iterdir() if path.parent.is_dir() else ()
    shards = sorted(
        (int(match[2]), int(match[1]), candidate)
        for candidate in siblings
        if (match := pattern.fullmatch(candidate.name))
    )
    paths = ([path] if path.exists() else []) + [candidate for _, _, candidate in shards]
    if not paths:
        raise FileNotFoundError(f"no sweep results at {path} nor shard files of it")
    files = [_read_results(candidate) for candidate in paths]
    files = [file for file in files if file.settings_names is not None]
    if not files:
        return _table((), (), [])
    first = files[0]
    for file in files[1:]:
        if set(file.settings_names) != set(first.settings_names) or set(file.metric_names) != set(
            first.metric_names
        ):
            raise ValueError(
                f"{file.path} has settings {list(file.settings_names)} and metrics "
                f"{list(file.metric_names)}, {first.path} has {list(first.settings_names)} and "
                f"{list(first.metric_names)}: not the same sweep"
            )
    rows = _dedupe([row for file in files for row in file.rows], f"sweep {path}")
    rows.sort(key=lambda row: row.key)
    return _table(first.settings_names, first.metric_names, rows)


def summarize_sweep(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and standard deviation (``ddof=1``) of ``metrics`` over the seeds of each setting.

    Returns one row per distinct combination of the ``by`` columns, in order of first
    appearance in ``table``: the ``by`` columns (values kept exactly, ``None`` included),
    ``<metric>_mean`` and ``<metric>_std`` per metric (std is NaN for a single seed) and
    ``n_seeds``, the number of rows of that setting.

    Raises:
        ValueError naming ``by`` or ``metrics`` when empty or naming missing columns, and
        naming a metric column that is not numeric.
    """
    by, metrics = list(by), list(metrics)
    for name, columns in (("by", by), ("metrics", metrics)):
        if not columns:
            raise ValueError(f"{name} must name at least one column")
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise ValueError(f"{name}: columns {missing} not in the table {list(table.columns)}")
    for metric in metrics:
        if not pd.api.types.is_numeric_dtype(table[metric]):
            raise ValueError(f"metrics: column {metric!r} is not numeric ({table[metric].dtype})")
    # Group on the JSON of the values: pandas' groupby would turn None into NaN and ints
    # next to None into floats, and would merge True with 1.
    labels = [
        json.dumps(list(values), default=repr)
        for values in zip(*(table[column].tolist() for column in by), strict=True)
    ]
    codes, _ = pd.factorize(pd.Series(labels, dtype=object))
    _, first_rows = np.unique(codes, return_index=True)  # codes number groups by appearance
    grouped = table[metrics].groupby(codes)
    columns: dict[str, pd.Series] = {}
    for column in by:
        values = table[column].tolist()
        columns[column] = _column([values[i] for i in first_rows])
    for metric in metrics:
        columns[f"{metric}_mean"] = grouped[metric].mean().reset_index(drop=True)
        columns[f"{metric}_std"] = grouped[metric].std(ddof=1).reset_index(drop=True)
    columns["n_seeds"] = grouped.size().reset_index(drop=True)
    return pd.DataFrame(columns)
