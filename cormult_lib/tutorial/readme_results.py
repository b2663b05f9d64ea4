"""The README's results block: pictures, run times and headline numbers, printed from files.

The block between :data:`START` and :data:`END` in ``README.md`` is written by
:func:`update_readme` from ``results/`` (the reference runs and ``quick_timings.json``) and
``figures/readme/``; nothing in it is typed by hand. ``make reference`` refreshes it, and a test
fails when the README and ``results/`` disagree.

Usage::

    python -m cormult_lib.tutorial.readme_results                     # rewrite the block
    python -m cormult_lib.tutorial.readme_results --quick-dir DIR \\
        --conditions "make tutorial, 2 threads"                       # record quick timings first
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from cormult_lib.files import write_atomically
from cormult_lib.stats import estimate_text
from cormult_lib.tutorial import runner
from cormult_lib.tutorial.reference import (
    README_FIGURE_DIR,
    README_FIGURES,
    REFERENCE_DIR,
    commit_label,
    load_reference,
    machine,
)
from cormult_lib.tutorial.results_overview import comparisons_of

README = runner.REPO_ROOT / "README.md"
START = "<!-- results:start (written by python -m cormult_lib.tutorial.readme_results) -->"
END = "<!-- results:end -->"
QUICK_TIMINGS = "quick_timings.json"
HEADLINE_METRICS = ("mae", "corr", "acc2_non0", "acc7")


def record_quick_timings(quick_dir: Path, conditions: str, results_dir: Path) -> Path:
    """Keep the wall time of every quick-profile results JSON in ``quick_dir`` as
    ``results_dir / quick_timings.json``, with the machine and the ``conditions`` of the run.

    Raises:
        FileNotFoundError: ``quick_dir`` holds no quick-profile chapter results.
    """
    seconds, other_profiles = {}, []
    for path in sorted(quick_dir.glob("[0-9][0-9]_*.json")):
        try:
            record = json.loads(path.read_text())
            if record.get("settings", {}).get("profile") != "quick":
                other_profiles.append(path.name)
                continue
            seconds[record["notebook"]] = round(float(record["seconds"]), 1)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a chapter's results JSON ({error!r})") from error
    if not seconds:
        raise FileNotFoundError(f"{quick_dir} holds no results JSON of a quick-profile run")
    if other_profiles:
        print(f"record_quick_timings: left out {len(other_profiles)} results of other profiles: "
              f"{', '.join(other_profiles)}")
    payload = {
        "conditions": conditions,
        # The chapters' thread count is the run's (in ``conditions``), not this process's.
        "machine": {k: v for k, v in machine().items() if k != "torch_threads"},
        "made_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": seconds,
    }
    target = results_dir / QUICK_TIMINGS
    text = (json.dumps(payload, indent=1) + "\n").encode()
    write_atomically(target, lambda file: file.write(text))
    return target


def _chapters(results_dir: Path) -> dict[str, dict[str, Any]]:
    names = sorted(p.stem for p in results_dir.glob("[0-9][0-9]_*.json"))
    return {name: load_reference(name, results_dir) for name in names}


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def pictures_table(figure_dir: Path) -> str:
    """A markdown table of the README pictures that exist, two per row."""
    present = [name for name in README_FIGURES if (figure_dir / name).is_file()]
    if not present:
        return "No pictures yet: `make reference` draws them into `figures/readme/`."
    relative = figure_dir.relative_to(runner.REPO_ROOT)
    cells = [f"![{name[:-4]}]({relative / name})<br>`{name[:-4]}`" for name in present]
    if len(cells) % 2:
        cells.append("")
    rows = [f"| {cells[i]} | {cells[i + 1]} |" for i in range(0, len(cells), 2)]
    return "\n".join(["| | |", "|---|---|", *rows])


def timing_table(results_dir: Path) -> str:
    """Per chapter: the quick run's and the standard reference run's wall time, with the
    machines and conditions they were measured under."""
    chapters = _chapters(results_dir)
    quick_file = results_dir / QUICK_TIMINGS
    quick = json.loads(quick_file.read_text()) if quick_file.is_file() else None
    names = sorted(set(chapters) | set(quick["seconds"] if quick else ()))
    lines = ["| chapter | quick | standard | code |", "|---|---|---|---|"]
    for name in names:
        standard = chapters[name]["reference"]["seconds"] if name in chapters else None
        quick_seconds = quick["seconds"].get(name) if quick else None
        # A reference made at another profile says so rather than pass for a standard one.
        profile = chapters[name]["settings"].get("profile") if name in chapters else "standard"
        other = f" ({profile})" if profile != "standard" else ""
        code = commit_label(chapters[name]) if name in chapters else "-"
        lines.append(
            f"| `{name}` | {_minutes(quick_seconds)} | {_minutes(standard)}{other} | {code} |"
        )
    notes = []
    commits = sorted({commit_label(record) for record in chapters.values()})
    if len(commits) > 1:
        notes.append(f"code: the references come from {len(commits)} commits "
                     f"({', '.join(commits)}; `+`: with uncommitted changes): a chapter's numbers "
                     "are its own code's, not necessarily today's")
    if quick:
        where = quick["machine"]
        notes.append(f"quick: {quick['conditions']}, {where['cpu']} ({where['cpu_count']} cores),"
                     f" {quick['made_at'][:10]}")
    machines = sorted({
        f"{m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads)"
        for m in (c["reference"]["machine"] for c in chapters.values())
    })
    if machines:
        notes.append(f"standard: `make reference` (one chapter at a time), {'; '.join(machines)}, "
                     "dates in results/")
    # The GPU of chapters that ran on one (a machine's GPU is recorded even for a CPU run).
    gpus = {
        c["reference"]["machine"]["gpu"]
        for c in chapters.values()
        if str(c.get("device", "")).startswith("cuda")
    } - {None}
    present = {c["reference"]["machine"]["gpu"] for c in chapters.values()} - {None}
    if gpus:
        notes.append(f"GPU: {', '.join(sorted(gpus))}")
    elif present:
        notes.append(f"GPU: not used (every chapter ran on the CPU of a machine with "
                     f"{', '.join(sorted(present))})")
    else:
        notes.append("GPU: not measured (the machines that ran these had none)")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def _other_n(cell: dict[str, Any], n_test: int) -> str:
    """``" (n=3,612)"`` when the metric read fewer samples than the test split holds (a Non0
    metric reads those with a non-zero label; older records do not say)."""
    n = cell.get("n")
    return f" (n={n:,})" if n is not None and n != n_test else ""


def headlines(results_dir: Path) -> str:
    """The real-data numbers (chapter 09) and chapter 07's CorMulT - MulT comparisons, each with
    its interval, n and source file."""
    chapters = _chapters(results_dir)
    lines = []
    real = chapters.get("09_real_text")
    for entry in (real or {}).get("real_text") or []:
        values = ", ".join(
            f"{metric} {estimate_text(entry[metric])}{_other_n(entry[metric], entry['n_test'])}"
            for metric in HEADLINE_METRICS
        )
        use = "fine-tuned" if entry["finetuned"] else "frozen, ridge"
        lines.append(f"- Real CMU-MOSEI transcripts, text only, {entry['encoder']} ({use}), "
                     f"n={entry['n_test']:,} test segments: {values} (`results/09_real_text.json`"
                     f", code {commit_label(real)})")
    cormult = chapters.get("07_cormult_training")
    if cormult is not None:
        dataset = cormult["settings"].get("dataset", "synthetic")
        data = "Synthetic" if dataset == "synthetic" else f"{dataset} data"
        for c in comparisons_of(cormult, a="CorMulT", b="MulT", metric="mae"):
            lines.append(f"- {data}, {c.sentence()} (`results/07_cormult_training.json`, code "
                         f"{commit_label(cormult)})")
    return "\n".join(lines) or "No headline results yet: `make reference` writes them."


def results_block(results_dir: Path = REFERENCE_DIR, figure_dir: Path = README_FIGURE_DIR) -> str:
    """The README block, markers included."""
    return "\n\n".join([
        START,
        "### What the chapters draw\n\n" + pictures_table(figure_dir),
        "### How long each chapter takes\n\n" + timing_table(results_dir),
        "### Headline numbers (95% intervals; computed by the chapters, copied here by a script)"
        "\n\n" + headlines(results_dir),
        END,
    ])


def update_readme(readme: Path = README, block: str | None = None) -> bool:
    """Put ``block`` (default :func:`results_block`) between the markers; True if it changed.

    Raises:
        ValueError: the README lacks the markers.
    """
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} lacks the markers {START!r} ... {END!r}")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    new = head + (block or results_block()) + tail
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """Rewrite the README's results block (after recording quick timings, if asked)."""
    parser = argparse.ArgumentParser(prog="cormult-readme-results", description=__doc__)
    parser.add_argument("--quick-dir", type=Path, help="results JSONs of a quick-profile run")
    parser.add_argument("--conditions", default="make tutorial (one chapter at a time)")
    parser.add_argument("--results-dir", type=Path, default=REFERENCE_DIR)
    args = parser.parse_args(argv)
    if args.quick_dir is not None:
        target = record_quick_timings(args.quick_dir, args.conditions, args.results_dir)
        print(f"Quick timings: {runner.display(target)}")
    changed = update_readme(block=results_block(args.results_dir))
    print(f"README.md {'updated' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
