"""The README's results block is what results/ says, and the script that writes it."""

import json
from pathlib import Path

import pytest

from cormult_lib.tutorial.readme_results import (
    END,
    README,
    START,
    record_quick_timings,
    results_block,
    timing_table,
    update_readme,
)


def test_the_readme_block_is_current() -> None:
    text = README.read_text()
    assert START in text and END in text
    written = START + text.split(START, 1)[1].split(END, 1)[0] + END
    assert written == results_block(), (
        "README.md's results block differs from results/: run "
        "`python -m cormult_lib.tutorial.readme_results`"
    )


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
    assert "| `07_cormult_training` | 1.6 min | - |" in table
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
