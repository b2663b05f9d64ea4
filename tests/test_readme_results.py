"""The README's results block is what results/ says, and the script that writes it."""

import json
from pathlib import Path

import pytest

from cormult_lib.stats import Comparison
from cormult_lib.tutorial.readme_results import (
    END,
    README,
    START,
    headlines,
    record_quick_timings,
    results_block,
    timing_table,
    update_readme,
)
from cormult_lib.tutorial.reference import with_provenance


def test_the_readme_block_is_current() -> None:
    text = README.read_text()
    assert START in text and END in text
    written = START + text.split(START, 1)[1].split(END, 1)[0] + END
    assert written == results_block(), (
        "README.md's results block differs from results/: run "
        "`python -m cormult_lib.tutorial.readme_results`"
    )


def test_quick_timings_name_a_broken_file_and_count_what_they_leave_out(tmp_path, capsys):
    quick = tmp_path / "quick"
    quick.mkdir()
    for name, profile in (("07_cormult_training", "quick"), ("08_clip_msa", "standard")):
        (quick / f"{name}.json").write_text(json.dumps(
            {"notebook": name, "settings": {"profile": profile}, "seconds": 1.0}))
    record_quick_timings(quick, "test", tmp_path)
    assert "left out 1 results of other profiles: 08_clip_msa.json" in capsys.readouterr().out
    (quick / "09_real_text.json").write_text('{"settings": {"profile": "quick"}}')
    with pytest.raises(ValueError, match=r"09_real_text.json: not a chapter's results JSON"):
        record_quick_timings(quick, "test", tmp_path)


def test_quick_timings_are_recorded_and_tabled(tmp_path: Path) -> None:
    quick = tmp_path / "quick"
    quick.mkdir()
    with pytest.raises(FileNotFoundError, match="no results JSON of a quick-profile run"):
        record_quick_timings(quick, "test", tmp_path)
    for name, profile, seconds in (("07_cormult_training", "quick", 95.26),
                                   ("08_clip_msa", "standard", 400.0)):
        (quick / f"{name}.json").write_text(json.dumps(
            {"notebook": name, "settings": {"profile": profile}, "seconds": seconds}))
    target = record_quick_timings(quick, "nbval, 1 thread", tmp_path)
    assert json.loads(target.read_text())["seconds"] == {"07_cormult_training": 95.3}
    assert "torch_threads" not in json.loads(target.read_text())["machine"], "not this process's"
    table = timing_table(tmp_path)
    assert "| `07_cormult_training` | 1.6 min | - | - |" in table
    assert "quick: nbval, 1 thread" in table and "GPU: not measured" in table


def test_update_readme_needs_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# title\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        update_readme(readme, "block")
    readme.write_text(f"# title\n{START}\nold\n{END}\nrest\n")
    assert update_readme(readme, f"{START}\nnew\n{END}")
    assert readme.read_text() == f"# title\n{START}\nnew\n{END}\nrest\n"
    assert not update_readme(readme, f"{START}\nnew\n{END}"), "unchanged the second time"


def test_the_timing_table_names_what_each_reference_ran_on(tmp_path: Path) -> None:
    """A reference of another profile says so; a machine's GPU counts only for a CUDA run."""
    def write(name: str, profile: str, device: str, gpu: str | None) -> None:
        machine = {"cpu": "CPU", "cpu_count": 2, "torch_threads": 2, "gpu": gpu}
        provenance = {"seconds": 60.0, "machine": machine, "command": "make reference",
                      "made_at": "2026-12-06", "seeds": [0],
                      "code": {"commit": None, "uncommitted_changes": None}}
        record = {"notebook": name, "metrics": {}, "settings": {"profile": profile},
                  "device": device, "reference": provenance}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))

    write("07_cormult_training", "paper", "cpu", "H100")
    write("08_clip_msa", "standard", "cpu", None)
    table = timing_table(tmp_path)
    assert "| `07_cormult_training` | - | 1.0 min (paper) | ? |" in table
    assert "| `08_clip_msa` | - | 1.0 min | ? |" in table
    assert "code: the references come from" not in table, "one commit (unknown) for all"
    assert "GPU: not used (every chapter ran on the CPU of a machine with H100)" in table, (
        "07 ran on the CPU of a machine with a GPU"
    )
    write("07_cormult_training", "paper", "cuda:0", "H100")
    assert "GPU: H100" in timing_table(tmp_path)
    # References of different commits: each row names its own, and a note says they differ.
    record = json.loads((tmp_path / "08_clip_msa.json").read_text())
    record["reference"]["code"] = {"commit": "0123456789abcdef", "uncommitted_changes": True}
    (tmp_path / "08_clip_msa.json").write_text(json.dumps(record))
    table = timing_table(tmp_path)
    assert "| `08_clip_msa` | - | 1.0 min | 0123456+ |" in table
    assert "code: the references come from 2 commits (0123456+, ?;" in table


def test_headlines_print_the_real_text_entries_and_chapter_07s_comparisons(tmp_path: Path) -> None:
    """The README's headline lines come from the records, each with its interval and n; a
    comparison of other models or metrics is not a headline."""
    cell = {"value": 0.6, "ci_low": 0.55, "ci_high": 0.65}
    real = {"notebook": "09_real_text", "metrics": {}, "settings": {}, "seed": 0, "seconds": 1.0,
            "real_text": [{"encoder": "all-MiniLM-L6-v2", "finetuned": False, "n_test": 4653,
                           **{m: cell for m in ("mae", "corr", "acc7")},
                           "acc2_non0": {**cell, "n": 3612}}]}
    comparison = Comparison.build(
        subset="weak:voice", n=142, n_seeds=5, metric="mae", names=("CorMulT", "MulT"),
        values=(0.70, 0.73), interval=(-0.083, 0.016), method="paired bootstrap",
    )
    other = Comparison.build(
        subset="all", n=1440, n_seeds=5, metric="corr", names=("CorMulT", "MulT"),
        values=(0.5, 0.4), interval=(0.05, 0.15), method="paired bootstrap",
    )
    cormult = {"notebook": "07_cormult_training", "metrics": {}, "seed": 0, "seconds": 1.0,
               "settings": {"dataset": "synthetic"},
               "comparisons": [comparison.to_dict(), other.to_dict()]}
    for record in (real, cormult):
        path = tmp_path / f"{record['notebook']}.json"
        path.write_text(json.dumps(with_provenance(record, {})))
    lines = headlines(tmp_path).splitlines()
    commit = json.loads((tmp_path / "09_real_text.json").read_text())["reference"]["code"]
    code = (commit["commit"] or "?")[:7] + ("+" if commit["uncommitted_changes"] else "")
    assert lines == [
        "- Real CMU-MOSEI transcripts, text only, all-MiniLM-L6-v2 (frozen, ridge), n=4,653 test "
        "segments: mae 0.600 [0.550, 0.650], corr 0.600 [0.550, 0.650], acc2_non0 0.600 "
        "[0.550, 0.650] (n=3,612), acc7 0.600 [0.550, 0.650] (`results/09_real_text.json`, code "
        f"{code})",
        "- Synthetic, weak:voice (n=142, 5 seeds): CorMulT - MulT mae = -0.030 [-0.083, +0.016], "
        f"no measurable difference (`results/07_cormult_training.json`, code {code})",
    ]
    assert headlines(tmp_path / "empty").startswith("No headline results yet")
