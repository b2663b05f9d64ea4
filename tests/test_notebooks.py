"""Every chapter keeps the notebook contract, and the runner guards its parameters.

nbval (``make test``) executes the notebooks with their defaults; these tests check what nbval
cannot: the shape of each notebook, and how a headless run with wrong parameters fails.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from cormult_lib.config import DataConfig, FeatureConfig
from cormult_lib.data.synthetic import SyntheticCorpus, make_synthetic_splits
from cormult_lib.data.synthetic_raw import export_raw_corpus
from cormult_lib.features.pipeline import extract_features
from cormult_lib.stats import verdict
from cormult_lib.tutorial.runner import main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED = {
    "profile",
    "dataset",
    "data_path",
    "modalities",
    "seed",
    "device",
    "output_dir",
    "figures_dir",
}


@pytest.fixture(autouse=True)
def _own_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests pass output_dir / figures_dir themselves: no redirect from conftest."""
    monkeypatch.delenv("CORMULT_OUTPUT_DIR", raising=False)
    monkeypatch.delenv("CORMULT_FIGURES_DIR", raising=False)


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "notebooks/ holds no numbered chapter"


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_contract(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert "Learning goals" in cells[0].source
    assert "parameters" in cells[1].metadata.get("tags", []), "cell 1 must be tagged parameters"
    tree = ast.parse(cells[1].source)
    names = set()
    for statement in tree.body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1
        assert _is_literal(statement.value), f"{ast.unparse(statement)} is not a literal"
        names.add(statement.targets[0].id)
    assert names >= REQUIRED, f"missing parameters {sorted(REQUIRED - names)}"
    setup = cells[2].source
    assert (
        f'start_notebook(\n    "{path.stem}"' in setup or f'start_notebook("{path.stem}"' in setup
    )
    call = setup[setup.index("start_notebook(") :]
    for name in names:
        assert re.search(rf"\b{name}=", call), f"{name} is not passed to start_notebook"
    code = [c for c in cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    assert any("assert " in c.source for c in code[2:]), "the notebook must check itself"
    tail = "\n".join(c.source for c in cells[-3:] if c.cell_type == "markdown")
    assert "## Summary" in tail and "## Exercises" in tail


def _run(tmp_path: Path, *options: str, notebook: str = "00_data_tour") -> int:
    return main(
        [
            str(ROOT / "notebooks" / f"{notebook}.ipynb"),
            "--executed-dir",
            str(tmp_path / "executed"),
            "-p",
            "output_dir",
            str(tmp_path / "out"),
            "-p",
            "figures_dir",
            str(tmp_path / "fig"),
            *options,
        ]
    )


def test_misspelt_parameter_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run(tmp_path, "-p", "seeed", "1") == 2
    message = "".join(capsys.readouterr())
    assert "'seeed'" in message and "did you mean 'seed'?" in message


def test_wrong_data_path_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "MOSEI" / "aligned_50.pkl"
    assert _run(tmp_path, "-p", "dataset", "mmsa", "-p", "data_path", str(missing)) == 1
    err = capsys.readouterr().err
    assert "data_path=" in err and str(missing) in err and "does not exist" in err


def _write_mmsa(path: Path) -> None:
    """An MMSA-format pickle (BERT-sized text) made from the synthetic corpus, with COVAREP-like
    non-finite audio values planted, to run the real-data path end to end."""
    splits = make_synthetic_splits(DataConfig(n_samples=300, text_dim=768), seed=5)
    data = {}
    for name, split in splits.items():
        audio = split.features["A"].copy()
        audio[0, 0, :3] = [np.nan, np.inf, -np.inf]
        lengths = split.masks["T"].sum(1)
        ids = np.zeros((len(split), 3, 50))
        ids[:, 1] = split.masks["T"]
        data[name] = {
            "text": split.features["T"],
            "text_bert": ids,
            "audio": audio,
            "vision": split.features["V"],
            "audio_lengths": lengths,
            "vision_lengths": lengths,
            "regression_labels": split.labels,
            "id": np.array(split.ids, dtype=object),
            "raw_text": split.meta["transcript"].to_numpy(),
        }
    path.write_bytes(pickle.dumps(data))


def test_data_tour_runs_on_an_mmsa_pickle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pickle_path = tmp_path / "aligned_50.pkl"
    _write_mmsa(pickle_path)
    assert _run(tmp_path, "-p", "dataset", "mmsa", "-p", "data_path", str(pickle_path)) == 0
    result = json.loads((tmp_path / "out" / "00_data_tour.json").read_text())
    assert result["settings"]["dataset"] == "mmsa"
    assert result["metrics"]["n_samples"] == {"train": 210, "valid": 45, "test": 45}
    assert result["metrics"]["probes"]["probe_T"]["acc2_non0"] > 0.6
    executed = (tmp_path / "executed" / "00_data_tour.ipynb").read_text()
    assert "replaced 3 non-finite values" in executed


def _check_verdicts(comparisons: list[dict]) -> None:
    """Every comparison of a results JSON has its keys, n and a verdict its interval gives."""
    keys = {"subset", "n", "metric", "a", "b", "a_value", "b_value", "difference", "ci_low"}
    for c in comparisons:
        assert keys | {"ci_high", "verdict"} <= set(c), c
        low = float("nan") if c["ci_low"] is None else c["ci_low"]
        high = float("nan") if c["ci_high"] is None else c["ci_high"]
        assert c["verdict"] == verdict(low, high, c["metric"], c.get("lower_is_better")), c


def test_mce_pretraining_runs_on_an_mmsa_pickle(tmp_path: Path) -> None:
    """Pre-training reads no label, so chapter 04 runs on any pickle with two modalities."""
    pickle_path = tmp_path / "aligned_50.pkl"
    _write_mmsa(pickle_path)
    options = ["-p", "dataset", "mmsa", "-p", "data_path", str(pickle_path)]
    options += ["-p", "modalities", "TA", "-p", "epochs", "2", "-p", "ablation", "False"]
    assert _run(tmp_path, *options, notebook="04_mce_pretraining") == 0
    result = json.loads((tmp_path / "out" / "04_mce_pretraining.json").read_text())
    assert result["settings"]["modalities"] == "TA"
    assert len(result["metrics"]["history"]["valid_loss"]) == 2
    assert {row["pair"] for row in result["metrics"]["separation_auc"]} == {"TA"}, "one pair"
    assert {c["subset"] for c in result["comparisons"]} == {f"{s} TA" for s in "ABCD"}
    _check_verdicts(result["comparisons"])
    assert result["metrics"]["weak_strong_auc"] is None and result["metrics"]["table5"] is None
    assert (tmp_path / "out" / "04_mce.pt").is_file()


def test_cormult_training_runs_on_an_mmsa_pickle(tmp_path: Path, monkeypatch) -> None:
    """Chapter 07 on real-format data: no discrepancy labels, so no subsets; TA only. The
    runner alone (no test configuration) makes the progress bars text."""
    monkeypatch.delenv("CORMULT_PROGRESS", raising=False)
    pickle_path = tmp_path / "aligned_50.pkl"
    _write_mmsa(pickle_path)
    options = ["-p", "dataset", "mmsa", "-p", "data_path", str(pickle_path)]
    options += ["-p", "modalities", "TA", "-p", "pretrain_modalities", "TA", "-p", "epochs", "3"]
    options += ["-p", "n_seeds", "1", "-p", "ablations", "False", "-p", "placements", "False"]
    options += ["-p", "compare_heads", "False", "-p", "evaluator_path", str(tmp_path / "mce.pt")]
    assert _run(tmp_path, *options, notebook="07_cormult_training") == 0
    result = json.loads((tmp_path / "out" / "07_cormult_training.json").read_text())
    metrics = result["metrics"]
    assert {row["model"] for row in metrics["summary"]} == {"late fusion", "MulT", "CorMulT"}
    assert {row["subset"] for row in metrics["summary"]} == {"all"}
    assert result["evaluator"]["loaded"] is False and (tmp_path / "out" / "07_mce.pt").is_file()
    central = [c for c in result["comparisons"] if (c["a"], c["b"]) == ("CorMulT", "MulT")]
    assert {c["subset"] for c in central} == {"all"}, "no subsets without discrepancy labels"
    # n counts the test samples a metric reads: all of them, or those with a non-zero label.
    n_test = result["metrics"]["runs"][0]["n"]
    assert all(c["n"] == n_test for c in central if not c["metric"].endswith("_non0"))
    assert all(0 < c["n"] <= n_test for c in central)
    _check_verdicts(result["comparisons"])
    assert not (tmp_path / "mce.pt").exists(), "chapter 04's path is only read"
    executed = (tmp_path / "executed" / "07_cormult_training.ipynb").read_text()
    assert "application/vnd.jupyter.widget-view+json" not in executed, "static widget bars"
    assert "seeds: 100%" in executed, "the text bar of run_seeds"


def test_data_tour_runs_on_a_raw_clip_cache(tmp_path: Path) -> None:
    corpus = SyntheticCorpus(DataConfig(n_samples=40), seed=0)
    picks = [
        i
        for name in ("train", "valid", "test")
        for i in np.flatnonzero(corpus.split_of == name)[:3]
    ]
    table = export_raw_corpus(corpus, tmp_path / "clips", indices=picks)
    config = FeatureConfig(backbone="resnet18", weights=None, image_size=64, num_frames=4)
    with pytest.warns(UserWarning, match="randomly initialised"):
        extract_features(tmp_path / "clips", table, tmp_path / "cache", config, workers=0)
    assert _run(tmp_path, "-p", "dataset", "raw", "-p", "data_path", str(tmp_path / "cache")) == 0
    result = json.loads((tmp_path / "out" / "00_data_tour.json").read_text())
    assert result["metrics"]["n_samples"] == {"train": 3, "valid": 3, "test": 3}
    assert set(result["metrics"]["probes"]) == {"probe_A", "probe_V"}


def test_clip_msa_fine_tunes_encoders_on_clips_in_a_folder(tmp_path: Path) -> None:
    """Chapter 08 on a folder of clips (the CMU-MOSEI layout) with two encoders fine-tuned."""
    corpus = SyntheticCorpus(DataConfig(n_samples=48), seed=0)
    export_raw_corpus(corpus, tmp_path / "clips", indices=range(48))
    options = ["-p", "dataset", "clips", "-p", "data_path", str(tmp_path / "clips")]
    options += ["-p", "num_frames", "2", "-p", "epochs", "4", "-p", "n_seeds", "1"]
    options += ["-p", "ablations", "False", "-p", "finetune", '["albert", "vgg"]']
    assert _run(tmp_path, *options, notebook="08_clip_msa") == 0
    metrics = json.loads((tmp_path / "out" / "08_clip_msa.json").read_text())["metrics"]
    assert metrics["extraction"]["done"] == 48
    frozen, tuned = metrics["finetune"]
    assert frozen["model"] == "frozen (section 4)" and tuned["model"] == "fine-tuned albert+vgg"
    assert tuned["n"] == frozen["n"] > 0 and np.isfinite(tuned["mae"])
    assert (tmp_path / "fig" / "08_finetune.png").is_file()


def test_the_runner_finds_the_chapters_of_this_repository() -> None:
    """``make tutorial`` (no notebook named) runs every chapter under <repo>/notebooks."""
    from cormult_lib.tutorial.runner import REPO_ROOT, discover_notebooks

    assert (REPO_ROOT / "pyproject.toml").is_file(), REPO_ROOT
    assert [p.name for p in discover_notebooks()] == sorted(
        p.name for p in NOTEBOOKS
    )
