"""The raw-clip pipeline: clips + label table -> atomic, resumable feature cache -> splits."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cormult_lib.config import DataConfig, FeatureConfig
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import export_raw_corpus
from cormult_lib.features import pipeline
from cormult_lib.features.audio import LogMel, load_audio
from cormult_lib.features.loading import load_splits
from cormult_lib.features.pipeline import (
    extract_features,
    load_feature_cache,
    main,
)
from cormult_lib.features.text import Vocabulary
from cormult_lib.features.vision import imagenet_checkpoint_path

FAST = FeatureConfig(backbone="resnet18", weights=None, image_size=64, num_frames=4, feature_dim=64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """Eight synthetic clips in CMU's raw layout, one of them corrupt and one missing."""
    root = tmp_path_factory.mktemp("raw")
    corpus = SyntheticCorpus(DataConfig(n_samples=40), seed=0)
    table = export_raw_corpus(corpus, root, indices=range(8))
    (root / "Raw" / "synth0" / "00003.mp4").write_bytes(os.urandom(4000))
    (root / "Raw" / "synth0" / "00005.mp4").unlink()
    return root, table


def _entries(cache: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (cache / "clips").rglob("*.npz")}


def test_extract_report_resume_and_load(clips, tmp_path, capsys):
    root, table = clips
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="randomly initialised"):
        first = extract_features(root, table, cache, FAST, workers=0, limit=4)
    assert first.counts() == {"done": 3, "cached": 0, "failed": 1}
    failed = first.table.set_index("id").loc["synth0$_$00003"]
    assert failed["status"] == "failed" and "00003.mp4" in failed["reason"]
    before = _entries(cache)
    assert len(before) == 3 and not list(cache.rglob("*.tmp"))

    # The rerun over the whole table skips the three finished clips and retries the rest.
    with pytest.warns(UserWarning):
        second = extract_features(root, table, cache, FAST, workers=0)
    assert second.counts() == {"done": 3, "cached": 3, "failed": 2}
    after = _entries(cache)
    assert all(after[name] == stamp for name, stamp in before.items()), "recomputed a clip"
    assert "no clip file for synth0/00005" in capsys.readouterr().out
    report = pd.read_csv(cache / "report.csv", keep_default_na=False)
    assert len(report) == 8 and (report["status"] == "failed").sum() == 2

    splits = load_feature_cache(cache, audio_pool=2)
    labels = pd.read_csv(table)
    assert sum(len(s) for s in splits.values()) == 6
    for split in splits.values():
        assert split.features["T"].shape[1:] == (50,)
        assert split.features["V"].shape[1:] == (4, 64)
        assert split.features["A"].shape[2] == 64
        truth = labels.set_index(
            labels["video_id"] + "$_$" + labels["clip_id"].map("{:05d}".format)
        )
        assert np.allclose(split.labels, truth.loc[split.ids, "label"].to_numpy())
    # Text ids decode to the transcript's WordPiece tokens.
    vocabulary = Vocabulary.load(cache / "vocabulary.json")
    train = splits["train"]
    words = vocabulary.decode(train.features["T"][0][train.masks["T"][0]].tolist())
    assert " ".join(words).replace(" ##", "") == train.meta["text"][0]
    # Audio: the clip's log-Mel (Eq. 1-3), averaged over pairs of frames (audio_pool=2).
    assert (train.masks["A"].sum(1) > 50).all()
    for i, clip_id in enumerate(train.ids[:2]):
        video, clip = clip_id.split("$_$")
        waveform, _ = load_audio(root / "Raw" / video / f"{clip}.mp4", FAST.sample_rate)
        log_mel = LogMel(FAST.sample_rate, FAST.n_fft, FAST.hop_length, n_mels=FAST.n_mels)
        frames = log_mel(torch.from_numpy(waveform))[0]  # (frames, n_mels)
        pooled = F.avg_pool1d(frames.T[None], 2, ceil_mode=True)[0].T
        cached = torch.from_numpy(train.features["A"][i][train.masks["A"][i]])
        torch.testing.assert_close(cached, pooled, atol=1e-5, rtol=1e-5)


def test_faces_detected_says_when_no_face_was_looked_for(clips, tmp_path):
    root, table = clips
    for crop in (True, False):
        cache = tmp_path / f"face_crop_{crop}"
        with pytest.warns(UserWarning):
            extract_features(root, table, cache, replace(FAST, face_crop=crop), workers=0, limit=2)
        stored = {
            f"synth0$_${path.stem}": np.load(path)["face_detected"]
            for path in (cache / "clips").rglob("*.npz")
        }
        assert len(stored) == 2
        with pytest.warns(UserWarning, match="no cached"):  # the rows and split not extracted
            splits = load_feature_cache(cache)
        shares = pd.concat(s.meta for s in splits.values()).set_index("id")["faces_detected"]
        if crop:  # the drawn faces are found
            assert all(flags.mean() >= 0.5 for flags in stored.values())
            assert shares.to_dict() == {k: float(flags.mean()) for k, flags in stored.items()}
        else:  # no detector ran: no frame is marked as a face, and no share is made up
            assert not any(flags.any() for flags in stored.values())
            assert shares.isna().all() and len(shares) == 2


@pytest.mark.parametrize("pool", [0, -2, 1.5, True])
def test_audio_pool_must_be_a_whole_number_of_frames(tmp_path, pool):
    with pytest.raises(ValueError, match=re.escape(f"audio_pool={pool!r} is not valid")):
        load_feature_cache(tmp_path, audio_pool=pool)


def test_changed_settings_are_refused(clips, tmp_path):
    root, table = clips
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        extract_features(root, table, cache, FAST, workers=0, limit=1)
    changed = FeatureConfig(**{**FAST.to_json(), "num_frames": 2})
    with pytest.raises(ValueError, match="num_frames"):  # before any encoder is loaded
        extract_features(root, table, cache, changed)


def test_auto_weights_are_recorded_as_what_they_load(clips, tmp_path, monkeypatch):
    """Random and ImageNet frame features must not share a cache: "auto" is recorded as what
    it loaded, so the checkpoint turning up later changes the settings."""
    root, table = clips
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no checkpoint there
    cache = tmp_path / "cache"
    auto = FeatureConfig(**{**FAST.to_json(), "weights": "auto"})
    with pytest.warns(UserWarning, match="randomly initialised"):
        extract_features(root, table, cache, auto, workers=0, limit=1)
    assert json.loads((cache / "manifest.json").read_text())["settings"]["weights"] is None
    checkpoint = imagenet_checkpoint_path(auto.backbone)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")  # "auto" now means ImageNet (refused before it is loaded)
    with pytest.raises(ValueError, match="weights: None -> 'imagenet'"):
        extract_features(root, table, cache, auto, workers=0, limit=1)


def test_a_changed_transcript_is_extracted_again(clips, tmp_path, capsys):
    root, table = clips
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        extract_features(root, table, cache, FAST, workers=0, limit=2)
    labels = pd.read_csv(table, dtype={"clip_id": str})
    labels.loc[1, "text"] = "a corrected transcript"
    edited = tmp_path / "label.csv"
    labels.to_csv(edited, index=False)
    with pytest.warns(UserWarning):
        rerun = extract_features(root, edited, cache, FAST, workers=0, limit=2)
    assert rerun.counts() == {"done": 1, "cached": 1, "failed": 0}
    assert "made from another transcript" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="no cached features"):  # rows 3-8 not extracted
        splits = load_feature_cache(cache)
    meta = pd.concat([split.meta for split in splits.values()]).set_index("id")
    assert meta.loc["synth0$_$00001", "text"] == "a corrected transcript"


def test_a_limited_run_keeps_the_whole_table(clips, tmp_path):
    """After a full extraction, a demo with ``limit`` must not hide the other clips."""
    root, table = clips
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        extract_features(root, table, cache, FAST, workers=0)
    with pytest.warns(UserWarning):
        extract_features(root, table, cache, FAST, workers=0, limit=1)
    with pytest.warns(UserWarning, match="no cached features"):  # the two failed clips
        splits = load_feature_cache(cache)
    assert sum(len(s) for s in splits.values()) == 6


def test_a_file_only_workers_load_fails_before_the_pool_starts(clips, tmp_path, monkeypatch):
    """A missing tokenizer used to surface as a bare BrokenProcessPool from the workers."""
    from cormult_lib.features import text

    root, table = clips
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        extract_features(root, table, cache, FAST, workers=0, limit=1)  # builds the vocabulary

    def unavailable(name=None):
        raise text.TokenizerUnavailableError("no tokenizer here")

    monkeypatch.setattr(text, "load_bert_tokenizer", unavailable)
    with pytest.warns(UserWarning), pytest.raises(text.TokenizerUnavailableError, match="here"):
        extract_features(root, table, cache, FAST, workers=2)


def test_a_crash_while_writing_leaves_no_entry(clips, tmp_path, monkeypatch):
    root, table = clips
    cache = tmp_path / "cache"

    def crash(stream, **arrays):
        stream.write(b"half an entry")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.np, "savez", crash)
    with pytest.warns(UserWarning), pytest.raises(KeyboardInterrupt):
        extract_features(root, table, cache, FAST, workers=0, limit=1)
    assert not list((cache / "clips").rglob("*"))[1:] and not list(cache.rglob("*.npz"))
    assert not list(cache.rglob("*.tmp"))


def test_worker_pool_matches_a_single_process(clips, tmp_path):
    root, table = clips
    with pytest.warns(UserWarning):
        extract_features(root, table, tmp_path / "serial", FAST, workers=0, limit=3)
        extract_features(root, table, tmp_path / "pool", FAST, workers=2, limit=3)
    serial, pool = load_feature_cache(tmp_path / "serial"), load_feature_cache(tmp_path / "pool")
    for name in serial:
        assert serial[name].ids == pool[name].ids
        for m in "TAV":
            assert np.allclose(serial[name].features[m], pool[name].features[m], atol=1e-4)


def test_cli_and_raw_dataset(clips, tmp_path):
    root, table = clips
    cache = tmp_path / "cache"
    args = [str(root), str(table), str(cache), "--workers", "0", "--limit", "3"]
    args += ["--backbone", "resnet18", "--weights", "none", "--image-size", "64"]
    args += ["--num-frames", "2", "--feature-dim", "32", "--no-face-crop"]
    with pytest.warns(UserWarning):
        assert main(args) == 0
    splits = load_feature_cache(cache, modalities="AV")
    assert splits["train"].modalities == ("A", "V")
    # Three clips do not reach every split: training on them is refused at load time.
    missing = [name for name in ("train", "valid", "test") if name not in splits]
    assert missing
    with pytest.raises(ValueError, match=re.escape(f"split(s) {missing} hold no samples")):
        load_splits("raw", cache, modalities="AV")
    assert splits["train"].features["V"].shape[1:] == (2, 32)
    with pytest.raises(FileNotFoundError, match="not a feature cache"):
        load_feature_cache(tmp_path)
