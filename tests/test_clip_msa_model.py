"""CLIP-MSA's co-attention unit, hierarchical fusion and model on cached encoder outputs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cormult_lib.config import TrainConfig
from cormult_lib.data.dataset import MultimodalSplit
from cormult_lib.models.clip_msa import FUSION_ORDERS, ClipMSA, ablation_settings
from cormult_lib.models.co_attention import CoAttention, CoAttentionUnit, HierarchicalFusion
from cormult_lib.training.supervised import evaluate, train_model

BRANCHES = {"T": (6, 5), "A": (4, 3), "V": (7, 5)}
FRAMES = 4


def _inputs(batch: int = 5, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    features = {
        "T": torch.randn(batch, 1, sum(BRANCHES["T"]), generator=g),
        "A": torch.randn(batch, 1, sum(BRANCHES["A"]), generator=g),
        "V": torch.randn(batch, FRAMES, sum(BRANCHES["V"]), generator=g),
    }
    masks = {m: torch.ones(x.shape[:2], dtype=torch.bool) for m, x in features.items()}
    masks["V"][0, 2:] = False  # the first clip has two frames
    return features, masks


def test_co_attention_is_the_paper_formula_per_head() -> None:
    torch.manual_seed(0)
    attention = CoAttention(num_heads=3, head_dim=4).eval()
    x1, x2 = torch.randn(2, 6), torch.randn(2, 5)
    h, weights = attention(x1, x2, return_weights=True)
    fused, none = attention(x1, x2)  # the fused-kernel path
    assert none is None and torch.allclose(h, fused, atol=1e-6)
    wq, wk, wv = attention.query.weight, attention.key.weight, attention.value.weight  # (12, 1)
    heads = []
    for i in range(3):
        rows = slice(4 * i, 4 * (i + 1))
        q = x1[..., None] @ wq[rows].T  # (batch, d1, d_h): X1 W_i^Q with W_i^Q in R^{1 x d_h}
        k = x2[..., None] @ wk[rows].T
        v = x2[..., None] @ wv[rows].T
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(4), dim=-1)
        assert torch.allclose(a, weights[:, i], atol=1e-6)
        heads.append(a @ v)
    expected = (torch.cat(heads, dim=-1) @ attention.out.weight.T).squeeze(-1)  # W^O: 12 x 1
    assert h.shape == (2, 6) and weights.shape == (2, 3, 6, 5)
    assert torch.allclose(h, expected, atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 6), atol=1e-6)


def test_co_attention_matches_torch_multihead_attention() -> None:
    """Each feature is a token with a scalar value: lifting the scalars onto the first axis of an
    E = m d_h embedding turns nn.MultiheadAttention into the same computation."""
    torch.manual_seed(1)
    m, dh = 2, 3
    ours = CoAttention(m, dh).eval()
    reference = nn.MultiheadAttention(m * dh, m, bias=False, batch_first=True).eval()
    with torch.no_grad():
        w = reference.in_proj_weight.clone()
        w[:, 0] = torch.cat(
            [ours.query.weight[:, 0], ours.key.weight[:, 0], ours.value.weight[:, 0]]
        )
        reference.in_proj_weight.copy_(w)
        reference.out_proj.weight[0].copy_(ours.out.weight[0])
    x1, x2 = torch.randn(3, 5), torch.randn(3, 7)
    lift = torch.zeros(m * dh)
    lift[0] = 1.0
    out, maps = reference(
        x1[..., None] * lift, x2[..., None] * lift, x2[..., None] * lift, average_attn_weights=False
    )
    h, weights = ours(x1, x2, return_weights=True)
    assert torch.allclose(h, out[..., 0], atol=1e-5)
    assert torch.allclose(weights, maps, atol=1e-6)


def test_co_attention_unit_residual_norm_ffn() -> None:
    torch.manual_seed(2)
    unit = CoAttentionUnit(dim=8, num_heads=2).eval()
    x1, x2 = torch.randn(3, 8), torch.randn(3, 8)
    out, _ = unit(x1, x2)
    h, _ = unit.attention(x1, x2)
    attended = unit.norm_attention(x1 + h)
    assert torch.allclose(out, unit.norm_output(attended + unit.ffn(attended)), atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        CoAttentionUnit(dim=10, num_heads=4)


def test_hierarchical_fusion_order_and_maps() -> None:
    torch.manual_seed(3)
    vectors = {m: torch.randn(2, 8) for m in "TAV"}
    fusion = HierarchicalFusion(8, ("A", "V", "T"), num_heads=2).eval()
    fused, maps = fusion(vectors, return_weights=True)
    assert fused.shape == (2, 8)
    assert set(maps) == {"A<-V", "V<-A", "AV<-T", "T<-AV"}
    assert all(w.shape == (2, 2, 8, 8) for w in maps.values())
    # Swapping two inputs of the first stage changes the result (the units are not shared).
    swapped, _ = fusion({"T": vectors["T"], "A": vectors["V"], "V": vectors["A"]})
    assert not torch.allclose(fused, swapped)
    with pytest.raises(ValueError, match="three letters"):
        HierarchicalFusion(8, ("A", "A", "T"))


def test_clip_msa_shapes_and_padding() -> None:
    torch.manual_seed(4)
    model = ClipMSA(BRANCHES, hidden_dim=8, num_heads=2).eval()
    features, masks = _inputs()
    out = model(features, masks)
    assert out.shape == (5,) and torch.isfinite(out).all()
    vectors = model.unimodal(features, masks)
    assert {m: tuple(v.shape) for m, v in vectors.items()} == {m: (5, 8) for m in "TAV"}
    # Garbage in padded frames never changes the output.
    noisy = dict(features, V=features["V"].clone())
    noisy["V"][0, 2:] = float("nan")
    assert torch.allclose(model(noisy, masks), out, atol=1e-6)
    # Nor does where the padding is: the first clip's two frames at the end instead.
    moved, moved_masks = dict(features, V=features["V"].clone()), dict(masks, V=masks["V"].clone())
    moved["V"][0] = features["V"][0, [2, 3, 0, 1]]
    moved_masks["V"][0] = torch.tensor([False, False, True, True])
    assert torch.allclose(model(moved, moved_masks), out, atol=1e-6)
    maps = model.attention_maps(features, masks)
    assert set(maps) == {"A<-V", "V<-A", "AV<-T", "T<-AV"}
    with pytest.raises(ValueError, match=r"modality T must be \(batch, 1, 11\)"):
        model(dict(features, T=features["T"][..., :-1]), masks)


@pytest.mark.parametrize("name", list(ablation_settings()))
def test_ablations_use_exactly_their_branches(name: str) -> None:
    settings = ablation_settings()[name]
    torch.manual_seed(5)
    model = ClipMSA(BRANCHES, hidden_dim=8, num_heads=2, **settings).eval()
    features, masks = _inputs()
    out = model(features, masks)
    for m, (specific, _) in BRANCHES.items():
        changed = dict(features, **{m: features[m].clone()})
        changed[m][..., specific:] += 3.0  # only the CLIP branch of modality m
        moved = not torch.allclose(model(changed, masks), out, atol=1e-6)
        assert moved == (m in model.use_clip), (name, m)
    if not model.co_attention:
        with pytest.raises(ValueError, match="no co-attention"):
            model.attention_maps(features, masks)
    else:
        first, second, third = FUSION_ORDERS[model.order]
        assert f"{first}<-{second}" in model.attention_maps(features, masks)


@pytest.mark.parametrize("use_specific", ["AV", "TV", "TA", ""])
def test_use_specific_drops_exactly_those_specific_branches(use_specific: str) -> None:
    torch.manual_seed(6)
    model = ClipMSA(BRANCHES, hidden_dim=8, num_heads=2, use_specific=use_specific).eval()
    features, masks = _inputs()
    out = model(features, masks)
    assert out.shape == (5,) and torch.isfinite(out).all()
    for m, (specific, _) in BRANCHES.items():
        changed = dict(features, **{m: features[m].clone()})
        changed[m][..., :specific] += 3.0  # only the specific branch of modality m
        moved = not torch.allclose(model(changed, masks), out, atol=1e-6)
        assert moved == (m in use_specific), (use_specific, m)
        changed = dict(features, **{m: features[m].clone()})
        changed[m][..., specific:] += 3.0  # the CLIP branch is always read here
        assert not torch.allclose(model(changed, masks), out, atol=1e-6), (use_specific, m)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"neither branch"):
        ClipMSA(BRANCHES, use_clip="TA", use_specific="TA")
    with pytest.raises(ValueError, match="use_specific"):
        ClipMSA(BRANCHES, use_specific="Q")
    with pytest.raises(ValueError, match="order"):
        ClipMSA(BRANCHES, order="TAV")
    with pytest.raises(ValueError, match="use_clip"):
        ClipMSA(BRANCHES, use_clip="XY")
    with pytest.raises(ValueError, match="lacks"):
        ClipMSA({"T": (2, 2)})


def _learnable_split(n: int, seed: int, name: str) -> MultimodalSplit:
    """Labels a fixed linear function of the text's CLIP branch and the audio's specific one."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n, 1, sum(BRANCHES["T"]))).astype(np.float32)
    a = rng.normal(size=(n, 1, sum(BRANCHES["A"]))).astype(np.float32)
    v = rng.normal(size=(n, FRAMES, sum(BRANCHES["V"]))).astype(np.float32)
    labels = np.clip(t[:, 0, 6] + t[:, 0, 7] - a[:, 0, 0], -3, 3).astype(np.float32)
    features = {"T": t, "A": a, "V": v}
    masks = {m: np.ones(x.shape[:2], dtype=bool) for m, x in features.items()}
    return MultimodalSplit(features, masks, labels, [f"{name}{i}" for i in range(n)], name=name)


def test_training_learns_and_a_lone_last_sample_is_dropped() -> None:
    # 97 = 3 x 32 + 1: the last batch would hold one sample, which BatchNorm refuses in training.
    train, valid = _learnable_split(97, 0, "train"), _learnable_split(64, 1, "valid")
    config = replace(TrainConfig(), epochs=12, batch_size=32, lr=3e-3, patience=20)
    torch.manual_seed(0)
    trained = train_model(
        ClipMSA(BRANCHES, hidden_dim=16, num_heads=2),
        train,
        valid,
        config,
        loss="smooth_l1",
        progress=False,
    )
    history = trained.history["valid_loss"]
    assert history.min() < 0.6 * history.iloc[0], history.tolist()
    metrics = evaluate(trained.model, valid)["all"]
    assert metrics["corr"] > 0.6, metrics
