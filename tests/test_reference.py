"""Reference results: provenance, the side-by-side table each chapter prints, and the files."""

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from cormult_lib.tutorial.notebook import RESULT_KEYS
from cormult_lib.tutorial.reference import (
    REFERENCE_DIR,
    beside_reference,
    code_version,
    load_reference,
    not_a_reference,
    print_beside_reference,
    seed_list,
    with_provenance,
)


def _comparison(subset: str, difference: float, n_seeds: int = 2) -> dict:
    return {
        "subset": subset, "n": 90, "n_seeds": n_seeds, "metric": "mae", "a": "CorMulT",
        "b": "MulT", "a_value": 0.7, "b_value": 0.7 - difference, "difference": difference,
        "ci_low": difference - 0.05, "ci_high": difference + 0.05,
        "verdict": "no measurable difference",
    }


def _record(profile: str, comparisons: list[dict]) -> dict:
    return {
        "notebook": "07_cormult_training", "metrics": {}, "settings": {"profile": profile},
        "seed": 3, "seconds": 12.5, "comparisons": comparisons,
    }


def test_provenance_names_command_seeds_machine_and_versions() -> None:
    record = with_provenance(_record("standard", [_comparison("all", 0.01, n_seeds=5)]),
                             {"profile": "standard"})
    block = record["reference"]
    assert block["seeds"] == [3, 4, 5, 6, 7] == seed_list(record)
    assert "-p profile standard" in block["command"] and block["seconds"] == 12.5
    assert "reference notebooks/07_cormult_training.ipynb -p" in block["command"], "which chapter"
    assert block["machine"]["cpu_count"] >= 1 and block["versions"]["torch"]
    assert seed_list(_record("quick", [])) == [3], "no comparison: the first seed only"


def test_the_table_aligns_comparisons_and_marks_those_one_side_lacks() -> None:
    run = _record("quick", [_comparison("all", 0.02), _comparison("weak:voice", -0.1)])
    reference = _record("standard", [_comparison("all", -0.03)])
    table = beside_reference(run, reference)
    assert list(table.columns) == ["this run (quick)", "reference (standard)"]
    assert table.loc[("all", "mae", "CorMulT", "MulT", 0), "reference (standard)"].startswith(
        "-0.030 [-0.080, +0.020] (n=90)"
    )
    assert table.loc[("weak:voice", "mae", "CorMulT", "MulT", 0), "reference (standard)"] == "-"
    twice = _record("quick", [_comparison("all", 0.02), _comparison("all", 0.04)])
    assert len(beside_reference(twice, reference)) == 2, "a repeated pair keeps both rows"
    assert beside_reference(_record("quick", []), reference).iloc[0, 0] == "-"
    assert beside_reference(_record("quick", []), _record("standard", [])).empty
    two_groups = {**_comparison("weak:voice", 0.1), "n": 53, "groups": [3, 50]}
    mixed = beside_reference(_record("quick", [two_groups]), reference)
    assert mixed.loc[("weak:voice", "mae", "CorMulT", "MulT", 0), "this run (quick)"].startswith(
        "+0.100 [+0.050, +0.150] (n=3 vs 50)"
    )
    # A comparison whose difference is undefined (JSON null: a group without samples, a
    # correlation of constant predictions) was made: it is shown as such, not left out.
    undefined = {**_comparison("all", 0.0), "difference": None, "ci_low": None, "ci_high": None}
    (shown,) = beside_reference(_record("quick", [undefined]), _record("standard", []))[
        "this run (quick)"
    ]
    assert shown == "undefined (no interval) (n=90) no measurable difference"


def test_missing_and_malformed_references(tmp_path: Path, capsys) -> None:
    assert load_reference("07_cormult_training", tmp_path) is None
    print_beside_reference(_record("quick", []), tmp_path)
    assert "No reference results at" in capsys.readouterr().out
    (tmp_path / "07_cormult_training.json").write_text('{"notebook": "x"}')
    with pytest.raises(ValueError, match="07_cormult_training.json: not a reference record"):
        load_reference("07_cormult_training", tmp_path)
    reference = with_provenance(_record("standard", [_comparison("all", 0.0)]), {})
    (tmp_path / "07_cormult_training.json").write_text(json.dumps(reference))
    print_beside_reference(_record("quick", [_comparison("all", 0.02)]), tmp_path)
    out = capsys.readouterr().out
    assert "reference (standard)" in out and "settings differ" not in out
    # A reference block without its provenance fields is named, not a bare KeyError later.
    broken = {**reference, "reference": {k: v for k, v in reference["reference"].items()
                                         if k != "seeds"}}  # fmt: skip
    (tmp_path / "07_cormult_training.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"07_cormult_training.json: its 'reference' block lacks"):
        print_beside_reference(_record("quick", []), tmp_path)


def test_a_run_on_other_data_is_printed_as_such_beside_the_reference(tmp_path, capsys) -> None:
    reference = with_provenance(_record("standard", [_comparison("all", 0.0)]), {})
    reference["settings"] |= {"dataset": "synthetic", "modalities": "TAV", "output_dir": "a"}
    (tmp_path / "07_cormult_training.json").write_text(json.dumps(reference))
    run = _record("quick", [_comparison("all", 0.02)])
    run["settings"] |= {"dataset": "mmsa", "modalities": "TAV", "output_dir": "b"}
    print_beside_reference(run, tmp_path)
    out = capsys.readouterr().out
    assert "settings differ from the reference's" in out
    assert "dataset='mmsa' (reference: 'synthetic')" in out
    assert "modalities=" not in out and "output_dir=" not in out and "profile=" not in out


REFERENCES = sorted(REFERENCE_DIR.glob("[0-9][0-9]_*.json"))



def test_code_version_names_the_commit_and_uncommitted_changes(tmp_path: Path, capsys) -> None:
    assert code_version(tmp_path) == {"commit": None, "uncommitted_changes": None}  # no repo
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert code_version(tmp_path) == {"commit": head.strip(), "uncommitted_changes": False}
    (tmp_path / "a.txt").write_text("b")
    assert code_version(tmp_path)["uncommitted_changes"] is True
    # The block keeps what it is given (taken before a run), and a chapter prints it.
    code = code_version(tmp_path)
    record = with_provenance(_record("standard", []), {"profile": "standard"}, code)
    assert record["reference"]["code"] == code
    (tmp_path / "07_cormult_training.json").write_text(json.dumps(record))
    print_beside_reference(_record("quick", []), tmp_path)
    assert f"code {head[:7]} with uncommitted changes" in capsys.readouterr().out

@pytest.mark.parametrize("path", REFERENCES or [None], ids=lambda p: p.name if p else "none")
def test_committed_references_hold_the_chapter_schema(path: Path | None) -> None:
    if path is None:
        pytest.skip("results/ holds no reference results yet: `make reference` writes them")
    record = load_reference(path.stem, path.parent)
    assert set(RESULT_KEYS) <= set(record), f"{path.name} lacks chapter result keys"
    assert record["notebook"] == path.stem and record["settings"]["profile"] == "standard"
    assert {"command", "seeds", "machine", "versions", "seconds"} <= set(record["reference"])
    assert tempfile.gettempdir() + "/cormult-reference-" not in path.read_text(), (
        f"{path.name} names the deleted scratch folder"
    )


def test_a_skipped_or_failed_run_is_not_kept_as_the_reference(tmp_path: Path) -> None:
    executed = tmp_path / "09_real_text.ipynb"
    assert not_a_reference({"skipped": None}, executed) is None  # no executed copy: complete
    assert "no real transcripts" in not_a_reference({"skipped": "no real transcripts"}, executed)
    executed.write_text(json.dumps({"metadata": {"papermill": {"exception": None}}}))
    assert not_a_reference({}, executed) is None
    executed.write_text(json.dumps({"metadata": {"papermill": {"exception": True}}}))
    assert not_a_reference({}, executed) == "the run failed after writing its results"


def test_seed_list_takes_the_seeds_a_chapter_names() -> None:
    record = {"seed": 0, "settings": {"seeds": [3, 7]}, "comparisons": [{"n_seeds": 2}]}
    assert seed_list(record) == [3, 7]
    assert seed_list({**record, "settings": {"seeds": None}}) == [0, 1]
    # A sweep given seeds=None ran its grid's seeds, which its results record (chapter 05).
    swept = {"seed": 2, "settings": {"seeds": None}, "metrics": {"seeds": [0, 1, 2, 3, 4]},
             "comparisons": [{"n_seeds": 5}]}
    assert seed_list(swept) == [0, 1, 2, 3, 4]


def test_make_reference_keeps_complete_runs_and_their_pictures_only(tmp_path, monkeypatch):
    """A fake runner: chapter 05 runs but draws no README picture this time, chapter 09 skips
    its work; chapter 06 does not run. Only 05 becomes a reference; its stale picture goes."""
    from PIL import Image

    from cormult_lib.tutorial import reference, runner

    results, figures = tmp_path / "results", tmp_path / "figures"
    figures.mkdir()
    for name in ("05_table3_comparisons.png", "06_shared_space_heatmaps.png",
                 "09_comparisons.png"):
        Image.new("RGB", (4, 4)).save(figures / name)

    passed = {}

    def fake_run(arguments):
        passed.update({arguments[i + 1]: runner.parse_value(arguments[i + 2])
                       for i, word in enumerate(arguments) if word == "-p"})
        outputs = Path(arguments[arguments.index("output_dir") + 1])
        outputs.mkdir(parents=True)
        record = {"seed": 0, "settings": {}, "seconds": 1.0, "comparisons": []}
        (outputs / "05_distance_metrics.json").write_text(
            json.dumps({**record, "notebook": "05_distance_metrics"}))
        (outputs / "09_real_text.json").write_text(
            json.dumps({**record, "notebook": "09_real_text", "skipped": "no data"}))
        # Another JSON file of a chapter's outputs (chapter 02 saves its vocabulary): not a
        # results record, so neither kept nor read as one (it crashed make reference).
        (outputs / "05_vocabulary.json").write_text(json.dumps({"format": "vocabulary"}))
        return 0

    monkeypatch.setattr(runner, "main", fake_run)
    parameters = {"label_csv": "3", "limits": {"train": 40}, "finetune": False}
    assert reference.make_reference([Path("x.ipynb")], results, figures, parameters) == 0
    assert {k: passed[k] for k in ("profile", *parameters)} == {"profile": "standard",
                                                                **parameters}
    assert sorted(p.name for p in results.iterdir()) == ["05_distance_metrics.json"]
    assert sorted(p.name for p in figures.iterdir()) == [
        "06_shared_space_heatmaps.png", "09_comparisons.png"]
