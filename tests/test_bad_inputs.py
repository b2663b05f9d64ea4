"""A probe of bad inputs a user hits: each must fail at once with an error that names the file,
field or parameter and says what was expected (never a bare error from deep inside a library).

Each case builds its input in a temporary folder and calls one public entry point; the table
is the probe's record (case, error type, what the message must say)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cormult_lib.config import EncoderConfig, get_config
from cormult_lib.data.cmu import DataFormatError, load_mmsa, load_mult, read_label_csv
from cormult_lib.data.transcripts import load_transcripts
from cormult_lib.features.clip_msa_cache import load_clip_msa_cache
from cormult_lib.features.loading import load_splits
from cormult_lib.features.pipeline import load_feature_cache
from cormult_lib.models.clip_msa import ClipMSA
from cormult_lib.stats import paired_bootstrap
from cormult_lib.training.sweep import grid_points, run_sweep
from cormult_lib.tutorial.notebook import start_notebook

GOOD_CSV = "video_id,clip_id,text,label,mode\nv,1,hi,1.0,train\nv,2,yo,-1,valid\nv,3,ok,0,test\n"
SPLITS = ("train", "valid", "test")


def _csv(tmp: Path, text: str | bytes) -> Path:
    path = tmp / "label.csv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _pickle(tmp: Path, data: object, name: str = "data.pkl") -> Path:
    path = tmp / name
    path.write_bytes(pickle.dumps(data))
    return path


def _mult(labels=None, audio=None) -> dict:
    return {
        s: {
            "text": np.ones((2, 3, 4)),
            "audio": np.ones((2, 3, 2)) if audio is None else audio,
            "vision": np.ones((2, 3, 2)),
            "labels": np.zeros(2) if labels is None else labels,
        }
        for s in SPLITS
    }


def _notebook(tmp: Path, **changes):
    params = {"profile": "quick", "dataset": "synthetic", "data_path": None,
              "modalities": "TAV", "seed": 0, "device": "cpu",
              "output_dir": str(tmp / "out"), "figures_dir": str(tmp / "fig")}  # fmt: skip
    return start_notebook("probe", **{**params, **changes})


CASES: dict[str, tuple[Callable[[Path], object], type[BaseException], str]] = {
    # label.csv
    "label.csv empty file": (
        lambda t: read_label_csv(_csv(t, "")), DataFormatError, r"label.csv: not a readable CSV"),
    "label.csv not UTF-8": (
        lambda t: read_label_csv(_csv(t, GOOD_CSV.encode().replace(b"hi", b"h\xff"))),
        DataFormatError, r"label.csv: not a readable CSV.*utf-8"),
    "label.csv mode in capitals": (
        lambda t: read_label_csv(_csv(t, GOOD_CSV.replace(",train", ",Train"))),
        DataFormatError, r"column 'mode' must be one of"),
    "label.csv label 'nan'": (
        lambda t: read_label_csv(_csv(t, GOOD_CSV.replace("1.0,train", "nan,train"))),
        DataFormatError, r"column 'label' must hold numbers in \[-3, 3\]"),
    "label.csv empty video_id": (
        lambda t: read_label_csv(_csv(t, GOOD_CSV.replace("v,1,", ",1,"))),
        DataFormatError, r"'video_id' and 'clip_id' must name every clip; 1 row"),
    "label.csv given as a folder": (
        lambda t: read_label_csv(t), FileNotFoundError, r"is a folder, not a label.csv file"),
    "label.csv a clip twice": (
        lambda t: read_label_csv(_csv(t, GOOD_CSV + "v,1,hi,1.0,test\n")),
        DataFormatError, r"listed more than once \(1 of them in two splits"),
    "label.csv without a text column": (
        lambda t: read_label_csv(_csv(t, GOOD_CSV.replace("text,", "words,"))),
        DataFormatError, r"\['text'\] missing"),
    "transcripts of a missing label.csv": (
        lambda t: load_transcripts(t / "nope.csv"), FileNotFoundError, r"nope.csv: no such file"),
    # pickles
    "pickle truncated": (
        lambda t: load_mmsa(_truncated(t)),
        DataFormatError, r"data.pkl: not a readable pickle"),
    "pickle holds a list": (
        lambda t: load_mmsa(_pickle(t, [1, 2])), DataFormatError, r"expected a dict with splits"),
    "pickle labels are words": (
        lambda t: load_mult(_pickle(t, _mult(labels=np.array(["a", "b"])))),
        DataFormatError, r"\[train\]: 'labels' is not numeric"),
    "pickle labels out of [-3, 3]": (
        lambda t: load_mult(_pickle(t, _mult(labels=np.array([0.0, 9.0])))),
        DataFormatError, r"\[train\]: 'labels' must hold sentiment in \[-3, 3\]; 1 label"),
    "pickle 2-D audio": (
        lambda t: load_mult(_pickle(t, _mult(audio=np.ones((2, 3))))),
        DataFormatError, r"\[train\]: 'audio' has shape \(2, 3\); expected 3-D"),
    "pickle an empty split": (
        lambda t: load_mult(_pickle(t, {**_mult(), "test": {
            k: v[:0] for k, v in _mult()["test"].items()}})),
        DataFormatError, r"\[test\]: the split holds no samples"),
    # data sets and caches
    "dataset unknown": (
        lambda t: load_splits("imdb", t), ValueError, r"dataset='imdb' is not known"),
    "dataset mmsa without data_path": (
        lambda t: load_splits("mmsa", None), ValueError, r"'mmsa' needs data_path"),
    "dataset mmsa given a folder": (
        lambda t: load_splits("mmsa", t), ValueError, r"is a folder; dataset 'mmsa' reads one"),
    "dataset raw given a file": (
        lambda t: load_splits("raw", _csv(t, GOOD_CSV)), ValueError, r"is a file; dataset 'raw'"),
    "feature cache without manifest": (
        lambda t: load_feature_cache(t), FileNotFoundError, r"is not a feature cache"),
    "feature cache manifest truncated": (
        lambda t: load_feature_cache(_truncated_manifest(t)), DataFormatError,
        r"manifest.json is not valid JSON"),
    "CLIP-MSA cache manifest truncated": (
        lambda t: load_clip_msa_cache(_truncated_manifest(t)), DataFormatError,
        r"manifest.json is not valid JSON .*: the CLIP-MSA cache manifest is damaged"),
    # parameters and settings
    "profile unknown": (lambda t: get_config("huge"), ValueError, r"profile must be one of"),
    "config field misspelt": (
        lambda t: get_config("quick", train={"epoch": 2}), ValueError,
        r"unknown train field\(s\) \['epoch'\]"),
    "notebook output_dir is a file": (
        lambda t: _notebook(t, output_dir=str(_csv(t, "x"))), ValueError,
        r"output_dir='.*label.csv' is a file, not a folder"),
    "notebook modalities misspelt": (
        lambda t: _notebook(t, modalities="TX"), ValueError, r"modalities must be .*got 'TX'"),
    "notebook seed negative": (lambda t: _notebook(t, seed=-1), ValueError, r"seed=-1"),
    "notebook data_path without its dataset": (
        lambda t: _notebook(t, data_path=str(_csv(t, "x"))), ValueError,
        r"data_path='.*' is given but dataset='synthetic' reads no file"),
    "CLIP-MSA text stand-in missing": (
        lambda t: EncoderConfig(clip_text=""), ValueError, r"clip_text must be a non-empty"),
    "CLIP-MSA a modality without branches": (
        lambda t: ClipMSA({"T": (2, 2), "A": (2, 2), "V": (2, 2)}, use_clip="", use_specific="AV"),
        ValueError, r"\['T'\] would have neither branch"),
    # sweeps and statistics
    "sweep with a repeated seed": (
        lambda t: run_sweep(grid_points({"a": (1,)}), (0, 0), _metric, t / "s.db"),
        ValueError, r"seeds must be distinct"),
    "sweep run_point returns a list": (
        lambda t: run_sweep(grid_points({"a": (1,)}), (0,), lambda s, k: [1.0], t / "s.db",
                            progress=False),
        TypeError, r"must return a mapping of metrics, got <class 'list'>"),
    "sweep metric that is not a number": (
        lambda t: run_sweep(grid_points({"a": (1,)}), (0,), lambda s, k: {"m": "x"}, t / "s.db",
                            progress=False),
        TypeError, r"returned a non-numeric metric"),
    "sweep storage that is no database": (
        lambda t: run_sweep(grid_points({"a": (1,)}), (0,), _metric, _csv(t, GOOD_CSV),
                            progress=False),
        ValueError, r"cannot open the sweep storage '.*label.csv'"),
    "comparison of unequal lengths": (
        lambda t: paired_bootstrap(np.zeros(3), np.zeros(4), np.zeros(3)),
        ValueError, r"b_predictions must have shape \(n_seeds, 3\)"),
}


def _metric(settings: dict, seed: int) -> dict[str, float]:
    return {"m": 1.0}


def _truncated(tmp: Path) -> Path:
    path = tmp / "data.pkl"
    path.write_bytes(pickle.dumps({"train": {"a": np.zeros(100)}})[:50])
    return path


def _truncated_manifest(tmp: Path) -> Path:
    (tmp / "manifest.json").write_text('{"sample_rate": 16')
    return tmp


@pytest.fixture(autouse=True)
def _own_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook cases pass output_dir themselves: no redirect from conftest."""
    monkeypatch.delenv("CORMULT_OUTPUT_DIR", raising=False)
    monkeypatch.delenv("CORMULT_FIGURES_DIR", raising=False)


def test_the_probe_has_at_least_30_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly(case: str, tmp_path: Path) -> None:
    build, error, pattern = CASES[case]
    with pytest.raises(error, match=pattern):
        build(tmp_path)
