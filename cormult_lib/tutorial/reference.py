"""Reference results: what a chapter printed on a stated machine, for a student to compare with.

``make reference`` (``python -m cormult_lib.tutorial.reference``) runs every chapter with the
``standard`` profile into a temporary folder and keeps, under ``results/``:

* ``results/NN_name.json``: the chapter's results JSON (the record of
  :meth:`~cormult_lib.tutorial.notebook.NotebookRun.write_results`, same schema) with a
  ``reference`` block added: the command, the parameters, the seed list, the machine, the
  library versions, the git commit of the code (and whether the working tree had changes),
  the chapter's wall time and the date;
* ``figures/readme/*.png``: one small picture per chapter for the README (at most
  :data:`THUMBNAIL_PIXELS` wide).

Every chapter then prints its own run beside the reference (:func:`print_beside_reference`,
called by ``write_results``): the same comparisons, difference, interval and verdict in two
columns, so a student sees at once whether a run behaves. A quick run and the standard
reference differ in n and budget, so the verdicts may differ; the columns say which profile
each comes from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cormult_lib.files import write_atomically
from cormult_lib.stats import interval_text, sample_sizes
from cormult_lib.tutorial import REPO_ROOT

REFERENCE_DIR = REPO_ROOT / "results"
README_FIGURE_DIR = REPO_ROOT / "figures" / "readme"
#: Replaces :data:`REFERENCE_DIR` (the tests point it at their own folders).
REFERENCE_ENV = "CORMULT_REFERENCE_DIR"
REFERENCE_PARAMETERS: dict[str, Any] = {"profile": "standard"}
#: One picture per chapter for the README, chosen among the figures each chapter saves.
README_FIGURES = (
    "00_discrepancies.png",
    "01_waveform_spectrogram.png",
    "02_face_crops.png",
    "03_agreement_comparisons.png",
    "04_mce_architecture.png",
    "04_pretraining.png",
    "05_table3_comparisons.png",
    "06_shared_space_heatmaps.png",
    "07_cormult_architecture.png",
    "07_comparisons.png",
    "08_clip_msa_architecture.png",
    "08_table2.png",
    "09_comparisons.png",
)
THUMBNAIL_PIXELS = 560
#: The chapter that reads results/ rather than producing results of its own.
RESULTS_CHAPTER = "10_results"
PACKAGES = (
    "torch",
    "torchvision",
    "torchaudio",
    "transformers",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "optuna",
    "papermill",
    "cormult_lib",
)
# The identity of a comparison, shared by a run and its reference.
COMPARISON_KEY = ["subset", "metric", "a", "b"]
#: Stands for the temporary folder a reference run wrote into, in the paths it records.
SCRATCH = "<make-reference scratch>"


def machine() -> dict[str, Any]:
    """The machine a run used: OS, CPU model, cores, torch threads and the GPU (or ``None``)."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def library_versions() -> dict[str, str | None]:
    """Installed version of each package in :data:`PACKAGES` (``None`` when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def code_version(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The git commit checked out in ``root`` and whether its working tree has changes (files
    tracked or not, ignored ones aside); both ``None`` outside a git checkout or without git."""
    try:
        commit, status = (
            subprocess.run(
                ["git", *command], cwd=root, capture_output=True, text=True, check=True
            ).stdout
            for command in (["rev-parse", "HEAD"], ["status", "--porcelain"])
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": None}
    return {"commit": commit.strip(), "uncommitted_changes": bool(status.strip())}


def seed_list(record: dict[str, Any]) -> list[int]:
    """The seeds a chapter ran: those its results record (``metrics["seeds"]``: chapters 05,
    06 and 08, whose sweeps resolve ``seeds=None`` to a grid's list), else its ``seeds``
    parameter when it names them, else ``seed, seed + 1, ...`` (how chapters 04 and 07 number
    their runs) up to its largest comparison's count."""
    for named in (record.get("metrics", {}).get("seeds"), record.get("settings", {}).get("seeds")):
        if isinstance(named, list) and named:
            return [int(seed) for seed in named]
    counts = [c.get("n_seeds") or 1 for c in record.get("comparisons", [])]
    return [record["seed"] + i for i in range(max(counts, default=1))]


def commit_label(record: dict[str, Any]) -> str:
    """The commit a reference was made at, as printed: ``"d19da81"``, ``"d19da81+"`` with
    uncommitted changes, ``"?"`` when it was not recorded."""
    code = record.get("reference", {}).get("code") or {}
    return (code.get("commit") or "?")[:7] + ("+" if code.get("uncommitted_changes") else "")


def reference_dir() -> Path:
    """``$CORMULT_REFERENCE_DIR`` when set, else the repository's ``results/``."""
    return Path(os.environ.get(REFERENCE_ENV) or REFERENCE_DIR)


def load_reference(name: str, folder: Path | None = None) -> dict[str, Any] | None:
    """The reference record of chapter ``name`` (``None`` when ``make reference`` wrote none).

    Raises:
        ValueError: naming the file when it exists but is not a reference record.
    """
    path = (folder or reference_dir()) / f"{name}.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    missing = {"notebook", "metrics", "settings", "reference"} - set(record)
    if missing:
        raise ValueError(f"{path}: not a reference record, it lacks {sorted(missing)}")
    provenance = record["reference"]
    lacking = PROVENANCE_FIELDS - set(provenance if isinstance(provenance, dict) else {})
    if lacking:
        raise ValueError(f"{path}: its 'reference' block lacks {sorted(lacking)}")
    return record


#: What every reference record's ``reference`` block holds (:func:`with_provenance`).
PROVENANCE_FIELDS = frozenset({"code", "command", "machine", "made_at", "seconds", "seeds"})

#: Settings that may differ between a run and its reference without changing the experiment.
PLACE_SETTINGS = frozenset({"output_dir", "figures_dir", "results_dir", "profile"})


def differing_settings(record: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """``"name=this run's (reference: its)"`` for every setting of the two records that
    differs, except where the files go and the profile (the columns name it)."""
    ours, theirs = record.get("settings", {}), reference.get("settings", {})
    return [
        f"{name}={ours.get(name)!r} (reference: {theirs.get(name)!r})"
        for name in sorted(set(ours) | set(theirs))
        if name not in PLACE_SETTINGS and ours.get(name) != theirs.get(name)
    ]


def _interval(frame: pd.DataFrame) -> pd.Series:
    """``"-0.031 [-0.058, -0.004] (n=420) CorMulT better"`` per comparison row (the verdict in
    the words of :meth:`~cormult_lib.stats.Comparison.sentence`)."""

    def text(c: pd.Series) -> str:
        words = {"a better": f"{c.a} better", "b better": f"{c.b} better"}
        groups = c.get("groups")  # two groups: their sizes (absent from older records)
        sizes = sample_sizes(c.n, groups if isinstance(groups, list | tuple) else None)
        difference = f"{c.difference:+.3f}" if np.isfinite(c.difference) else "undefined"
        return (
            f"{difference} {interval_text(c.ci_low, c.ci_high)} (n={sizes}) "
            f"{words.get(c.verdict, c.verdict)}"
        )

    return frame.apply(text, axis=1)


def beside_reference(record: dict[str, Any], reference: dict[str, Any]) -> pd.DataFrame:
    """This run's comparisons beside the reference's, one row per comparison either holds.

    Returns:
        A frame indexed by subset, metric, a, b and repeat (0, or 1, 2, ... for a pair the
        chapter compared again with another method) with the columns ``this run (<profile>)``
        and ``reference (<profile>)``; a comparison only one of them made shows ``-`` in the
        other column.
    """
    columns = {}
    for label, source in (("this run", record), ("reference", reference)):
        frame = pd.DataFrame(source.get("comparisons") or [])
        if len(frame):
            # JSON keeps an undefined number (NaN) as null: numbers again, printed as such.
            numbers = ["difference", "ci_low", "ci_high"]
            frame[numbers] = frame[numbers].astype(float)
        profile = source.get("settings", {}).get("profile", "?")
        if not len(frame):
            columns[f"{label} ({profile})"] = pd.Series(dtype=str)
            continue
        # A chapter may compare the same pair twice (another method): number the repeats.
        frame = frame.assign(repeat=frame.groupby(COMPARISON_KEY).cumcount())
        columns[f"{label} ({profile})"] = pd.Series(
            _interval(frame).to_numpy(),
            index=pd.MultiIndex.from_frame(frame[[*COMPARISON_KEY, "repeat"]]),
        )
    present = [series for series in columns.values() if len(series)]
    index = present[0].index.append([s.index for s in present[1:]]).unique() if present else []
    return pd.DataFrame({k: v.reindex(index) for k, v in columns.items()}, index=index).fillna("-")


def print_beside_reference(record: dict[str, Any], folder: Path | None = None) -> None:
    """Print a chapter's comparisons beside its reference run's, or say why there are none."""
    name = record["notebook"]
    reference = load_reference(name, folder)
    where = (folder or reference_dir()) / f"{name}.json"
    if reference is None:
        print(f"No reference results at {where} (`make reference` writes them).")
        return
    provenance = reference["reference"]
    commit = (provenance.get("code") or {}).get("commit")
    code = "" if commit is None else f", code {commit[:7]}"
    if commit and provenance["code"]["uncommitted_changes"]:
        code += " with uncommitted changes"
    print(
        f"Reference: {where.name}, profile {reference['settings'].get('profile')}, seeds "
        f"{provenance['seeds']}, {provenance['seconds']:.0f} s on {provenance['machine']['cpu']}"
        f" ({provenance['machine']['cpu_count']} cores), {provenance['made_at'][:10]}{code}"
    )
    differences = differing_settings(record, reference)
    if differences:
        print("This run's settings differ from the reference's, so the two columns need not "
              f"measure the same experiment: {'; '.join(differences)}")
    table = beside_reference(record, reference)
    if table.empty:
        print("Neither run made a comparison; compare the metrics above.")
        return
    if not table.index.get_level_values("repeat").any():
        table = table.droplevel("repeat")
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(table.to_string())


def with_provenance(
    record: dict[str, Any], parameters: dict[str, Any], code: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``record`` with its ``reference`` block: command, parameters, seeds, machine, versions
    and ``code`` (:func:`code_version`, taken before the chapters ran; now when ``None``)."""
    command = " ".join(
        [
            "make reference  # python -m cormult_lib.tutorial.reference",
            f"notebooks/{record['notebook']}.ipynb",
            *(f"-p {name} {value}" for name, value in parameters.items()),
        ]
    )
    return {
        **record,
        "reference": {
            "command": command,
            "parameters": parameters,
            "seeds": seed_list(record),
            "machine": machine(),
            "versions": library_versions(),
            "code": code or code_version(),
            "seconds": record["seconds"],
            "made_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        },
    }


def save_thumbnail(source: Path, target: Path, pixels: int = THUMBNAIL_PIXELS) -> Path:
    """``source`` resized to at most ``pixels`` wide (aspect kept), as a palette PNG."""
    from PIL import Image

    with Image.open(source) as image:
        image.thumbnail((pixels, pixels * 4))
        target.parent.mkdir(parents=True, exist_ok=True)
        # A 256-colour palette: plots have few colours, and the file is a third of the size.
        image.convert("RGB").quantize(256).save(target, optimize=True)
    return target


def not_a_reference(record: dict, executed: Path) -> str | None:
    """Why a chapter's results must not replace its reference, or ``None``: the run skipped
    its work (``record["skipped"]``, e.g. chapter 09 without the real transcripts) or failed
    after writing them (its executed copy, ``executed``, carries papermill's exception)."""
    from cormult_lib.tutorial.runner import papermill_metadata  # see make_reference

    if record.get("skipped"):
        return f"the run skipped its work: {record['skipped']}"
    if executed.is_file() and papermill_metadata(executed).get("exception"):
        return "the run failed after writing its results"
    return None


def make_reference(
    notebooks: list[Path],
    results_dir: Path = REFERENCE_DIR,
    figure_dir: Path = README_FIGURE_DIR,
    parameters: dict[str, Any] | None = None,
) -> int:
    """Run ``notebooks`` with ``parameters`` and keep their results and README pictures.

    Returns the runner's exit status; the chapters that ran before a failure are kept.
    """
    # Imported here: the chapters import this module for print_beside_reference, and the
    # runner's papermill / nbformat stack would add two seconds to every kernel's start.
    from cormult_lib.tutorial import runner

    parameters = {**REFERENCE_PARAMETERS, **(parameters or {})}
    code = code_version()  # before the run writes results/ and figures/
    with tempfile.TemporaryDirectory(prefix="cormult-reference-") as scratch:
        work = Path(scratch)
        arguments = [str(path) for path in notebooks]
        for name, value in parameters.items():
            # JSON text: the runner reads it back as the same value (a string "3" stays one).
            arguments += ["-p", name, json.dumps(value)]
        arguments += ["-p", "output_dir", str(work / "outputs")]
        arguments += ["-p", "figures_dir", str(work / "figures")]
        arguments += ["--executed-dir", str(work / "executed")]
        for variable in ("CORMULT_OUTPUT_DIR", "CORMULT_FIGURES_DIR"):
            os.environ.pop(variable, None)
        status = runner.main(arguments)
        results_dir.mkdir(parents=True, exist_ok=True)
        kept = set()  # the chapter numbers ("05") whose results became references
        for path in sorted((work / "outputs").glob("[0-9][0-9]_*.json")):
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or record.get("notebook") != path.stem:
                print(f"{path.name}: another file of the chapter's outputs, not its results")
                continue
            refusal = not_a_reference(record, work / "executed" / f"{path.stem}.ipynb")
            if refusal:
                print(f"Not kept as the reference of {path.stem} ({refusal}); "
                      f"{runner.display(results_dir / path.name)} stays as it was")
                continue
            record = with_provenance(record, parameters, code)
            text = json.dumps(record, indent=1, allow_nan=False) + "\n"
            # The scratch folder is gone after the run: say so rather than keep its name.
            text = text.replace(scratch, SCRATCH).encode()
            write_atomically(results_dir / path.name, lambda file, text=text: file.write(text))
            kept.add(path.name[:2])
            print(f"Reference: {runner.display(results_dir / path.name)}")
        # A kept chapter's pictures replace its old ones; one it no longer draws (a part it
        # skipped this time) is removed rather than shown beside results it does not belong to.
        for name in (n for n in README_FIGURES if n[:2] in kept):
            source, target = work / "figures" / name, figure_dir / name
            if source.is_file():
                save_thumbnail(source, target)
                print(f"README figure: {runner.display(target)}")
            elif target.is_file():
                target.unlink()
                print(f"README figure removed (not drawn by this run): {runner.display(target)}")
    return status


def main(argv: list[str] | None = None) -> int:
    """``make reference``: every chapter (or those named) at the standard profile."""
    parser = argparse.ArgumentParser(
        prog="cormult-reference", description="Write results/ and figures/readme/."
    )
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[])
    parser.add_argument("--results-dir", type=Path, default=REFERENCE_DIR)
    parser.add_argument("--figure-dir", type=Path, default=README_FIGURE_DIR)
    args = parser.parse_args(argv)
    from cormult_lib.tutorial import runner

    parameters = {name: runner.parse_value(value) for name, value in args.parameter}
    notebooks = args.notebooks or [
        path for path in runner.discover_notebooks() if path.stem != RESULTS_CHAPTER
    ]
    return make_reference(notebooks, args.results_dir, args.figure_dir, parameters)


if __name__ == "__main__":
    sys.exit(main())
