"""The Modality Correlation Evaluator: Eq. 4-7, padding invariance, pooling, modality subsets."""

import math

import pytest
import torch
import torch.nn.functional as F

from cormult_lib.correlation.distances import Distance
from cormult_lib.correlation.evaluator import (
    EncoderLayer,
    ModalityCorrelationEvaluator,
    SinusoidalPositionalEncoding,
    key_bias,
    masked_time_pool,
)

DIMS = {"T": 6, "A": 5, "V": 7}
VOCAB = 30
SMALL = {"hidden_dim": 16, "num_layers": 2, "num_heads": 4, "ff_dim": 24, "shared_time": 4}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(modalities: str, ids: bool, seed: int = 0, batch: int = 3) -> tuple[dict, dict]:
    """Features and end-padded masks: sample i has ``time - i`` valid steps."""
    g = _generator(seed)
    times = {"T": 7, "A": 9, "V": 5}
    features, masks = {}, {}
    for m in modalities:
        t = times[m]
        if m == "T" and ids:
            features[m] = torch.randint(2, VOCAB, (batch, t), generator=g)
        else:
            features[m] = torch.randn(batch, t, DIMS[m], generator=g)
        lengths = torch.tensor([t - i for i in range(batch)])
        masks[m] = torch.arange(t)[None, :] < lengths[:, None]
    return features, masks


def _model(modalities: str, ids: bool, **kwargs) -> ModalityCorrelationEvaluator:
    torch.manual_seed(0)
    model = ModalityCorrelationEvaluator(
        {m: DIMS[m] for m in modalities},
        **(SMALL | {"shared_dim": 8}),
        vocab_size=VOCAB if ids else None,
        **kwargs,
    )
    return model.eval()


# ---------------------------------------------------------------------------- Eq. 4-7


def _eq_4_to_7(
    layer: EncoderLayer, x: torch.Tensor, padding: torch.Tensor, residual_from_x1: bool = True
) -> torch.Tensor:
    """Eq. 4-7 step by step from the weights of the layer's single member (no library
    attention).

    ``residual_from_x1=False`` gives the usual pre-norm residual ``X + X2`` instead of Eq. 6.
    """
    b, t, d = x.shape
    heads = layer.attention.num_heads
    dh = d // heads

    def norm(z, ln):
        mu = z.mean(-1, keepdim=True)
        var = z.var(-1, unbiased=False, keepdim=True)
        return (z - mu) / torch.sqrt(var + ln.eps) * ln.weight[0] + ln.bias[0]

    x1 = norm(x, layer.norm_input)  # Eq. 4
    wq, wk, wv = layer.attention.in_proj.weight[0].chunk(3)
    bq, bk, bv = layer.attention.in_proj.bias[0].chunk(3)

    def split(z):  # (b, t, d) -> (b, heads, t, dh)
        return z.reshape(b, t, heads, dh).transpose(1, 2)

    q, k, v = split(x1 @ wq.T + bq), split(x1 @ wk.T + bk), split(x1 @ wv.T + bv)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
    out = layer.attention.out_proj
    x2 = attended @ out.weight[0].T + out.bias[0]  # Eq. 5
    x3 = norm((x1 if residual_from_x1 else x) + x2, layer.norm_attention)  # Eq. 6
    first, second = layer.feed_forward.linear1, layer.feed_forward.linear2
    ff = torch.relu(x3 @ first.weight[0].T + first.bias[0]) @ second.weight[0].T + second.bias[0]
    return x3 + ff  # Eq. 7


@pytest.mark.parametrize("no_grad", [False, True], ids=["grad", "no-grad"])
def test_encoder_layer_is_eq_4_to_7(no_grad: bool) -> None:
    torch.manual_seed(1)
    layer = EncoderLayer(16, 4, 24, dropout=0.1).eval()
    x = torch.randn(3, 6, 16) * 2 + 0.5
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    padding[2, 1:] = True
    expected = _eq_4_to_7(layer, x, padding)
    with torch.set_grad_enabled(not no_grad):
        got = layer(x[None], key_bias(~padding))[0]
    valid = ~padding
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=1e-5)
    # The residual of Eq. 6 is from X1; the usual one from X gives a different layer.
    other = _eq_4_to_7(layer, x, padding, residual_from_x1=False)
    assert not torch.allclose(got[valid], other[valid], atol=1e-2)


def test_positional_encoding_values() -> None:
    pe = SinusoidalPositionalEncoding(5, max_len=10)
    positions = torch.tensor([[0, 3, 9]])
    out = pe(positions)[0]
    p, i = 3, 1  # dims 2 (sin) and 3 (cos) share the frequency 10000^(-2/5)
    torch.testing.assert_close(out[1, 2], torch.tensor(math.sin(p / 10000 ** (2 * i / 5))))
    torch.testing.assert_close(out[1, 3], torch.tensor(math.cos(p / 10000 ** (2 * i / 5))))
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(out[2, 4], torch.tensor(math.sin(9 / 10000 ** (4 / 5))))


# ---------------------------------------------------------------------------- pooling


def test_pool_equals_adaptive_avg_pool_when_divisible() -> None:
    x = torch.randn(2, 12, 3)
    mask = torch.ones(2, 12, dtype=torch.bool)
    expected = F.adaptive_avg_pool1d(x.transpose(1, 2), 4).transpose(1, 2)
    torch.testing.assert_close(masked_time_pool(x, mask, 4), expected)


def test_pool_bins_by_hand() -> None:
    # 10 valid steps into 4 bins: step k -> floor(4k/10): bins {0,1,2} {3,4} {5,6,7} {8,9}.
    x = torch.arange(10.0)[None, :, None]
    out = masked_time_pool(x, torch.ones(1, 10, dtype=torch.bool), 4)[0, :, 0]
    torch.testing.assert_close(out, torch.tensor([1.0, 3.5, 6.0, 8.5]))
    # 3 valid steps (values 5, 6, 7 after 2 padded steps) into 5 bins: bin j takes step
    # floor(3j/5) = 0, 0, 1, 1, 2.
    x = torch.tensor([99.0, -99.0, 5.0, 6.0, 7.0])[None, :, None]
    mask = torch.tensor([[False, False, True, True, True]])
    out = masked_time_pool(x, mask, 5)[0, :, 0]
    torch.testing.assert_close(out, torch.tensor([5.0, 5.0, 6.0, 6.0, 7.0]))
    # No valid step: zeros.
    empty = masked_time_pool(x, torch.zeros(1, 5, dtype=torch.bool), 3)
    torch.testing.assert_close(empty, torch.zeros(1, 3, 1))


def test_pool_ignores_where_padding_is() -> None:
    x = torch.randn(1, 6, 4)
    end = torch.tensor([[True] * 4 + [False] * 2])
    start = torch.tensor([[False] * 2 + [True] * 4])
    shifted = torch.cat([torch.randn(1, 2, 4), x[:, :4]], dim=1)
    for bins in (2, 3, 4, 7):
        torch.testing.assert_close(
            masked_time_pool(x, end, bins), masked_time_pool(shifted, start, bins)
        )


# ---------------------------------------------------------------------------- padding


def _with_garbage(features, masks, modality: str, extra: int, ids: bool, seed: int = 5):
    """Append ``extra`` padding steps holding garbage to one modality."""
    g = _generator(seed)
    x, mask = features[modality], masks[modality]
    b = x.shape[0]
    if modality == "T" and ids:
        junk = torch.randint(0, VOCAB, (b, extra), generator=g)
    else:
        junk = torch.randn(b, extra, x.shape[2], generator=g) * 1e3
        junk[:, 0, 0] = float("nan")
        junk[:, -1, -1] = float("inf")
    features = features | {modality: torch.cat([x, junk], dim=1)}
    masks = masks | {modality: torch.cat([mask, torch.zeros(b, extra, dtype=torch.bool)], 1)}
    return features, masks


@pytest.mark.parametrize("ids", [False, True], ids=["float-text", "id-text"])
@pytest.mark.parametrize("modality", ["T", "A", "V"])
def test_padding_with_garbage_does_not_change_embeddings(modality: str, ids: bool) -> None:
    model = _model("TAV", ids)
    features, masks = _batch("TAV", ids)
    with torch.no_grad():
        base = model(features, masks)
        padded = model(*_with_garbage(features, masks, modality, extra=4, ids=ids))
    for m in "TAV":
        assert torch.isfinite(padded[m]).all()
        torch.testing.assert_close(padded[m], base[m], atol=1e-5, rtol=1e-5)


def test_start_and_end_padding_give_the_same_embedding() -> None:
    model = _model("TA", ids=True)
    features, masks = _batch("TA", ids=True)
    flipped_features, flipped_masks = {}, {}
    for m in "TA":
        # Move each sample's padding to the start: roll by the number of padded steps.
        rows_x, rows_m = [], []
        for x, mask in zip(features[m], masks[m], strict=True):
            shift = int((~mask).sum())
            rows_x.append(torch.roll(x, shift, dims=0))
            rows_m.append(torch.roll(mask, shift, dims=0))
        flipped_features[m], flipped_masks[m] = torch.stack(rows_x), torch.stack(rows_m)
    assert not torch.equal(flipped_masks["A"], masks["A"])
    with torch.no_grad():
        a, b = model(features, masks), model(flipped_features, flipped_masks)
    for m in "TA":
        torch.testing.assert_close(a[m], b[m], atol=1e-5, rtol=1e-5)


def test_all_padding_sample_gets_zero_embedding_without_nan() -> None:
    model = _model("TAV", ids=False)
    features, masks = _batch("TAV", ids=False)
    masks["A"][1] = False  # sample 1 has no audio
    masks["T"][2] = False  # sample 2 has no text ...
    masks["V"][2] = False  # ... and no vision: its audio attends to nothing valid
    with torch.no_grad():
        out = model(features, masks)
        # More padding in the empty modalities changes nothing either.
        padded = model(
            *_with_garbage(*_with_garbage(features, masks, "T", 3, False), "V", 5, False)
        )
    torch.testing.assert_close(out["A"][1], torch.zeros_like(out["A"][1]))
    torch.testing.assert_close(out["T"][2], torch.zeros_like(out["T"][2]))
    assert out["A"][2].abs().sum() > 0
    for m in "TAV":
        assert torch.isfinite(out[m]).all()
        torch.testing.assert_close(padded[m], out[m], atol=1e-5, rtol=1e-5)
    model.train()
    sum(o.sum() for o in model(features, masks).values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_samples_are_independent_of_each_other() -> None:
    model = _model("AV", ids=False)
    features, masks = _batch("AV", ids=False)
    with torch.no_grad():
        together = model(features, masks)
        alone = model(
            {m: x[1:2] for m, x in features.items()}, {m: k[1:2] for m, k in masks.items()}
        )
    for m in "AV":
        torch.testing.assert_close(together[m][1:2], alone[m], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- subsets


@pytest.mark.parametrize("modalities", ["TA", "TV", "AV", "TAV"])
@pytest.mark.parametrize("ids", [False, True], ids=["float-text", "id-text"])
def test_every_modality_subset(modalities: str, ids: bool) -> None:
    model = _model(modalities, ids)
    features, masks = _batch(modalities, ids)
    out = model(features, masks)
    assert set(out) == set(modalities)
    assert all(o.shape == (3, 4, 8) for o in out.values())
    cor = model.coefficients(features, masks, "cosine")
    expected_pairs = [p for p in (("T", "A"), ("T", "V"), ("A", "V")) if set(p) <= set(modalities)]
    assert list(cor) == expected_pairs
    for pair, c in cor.items():
        assert c.shape == (3,)
        torch.testing.assert_close(c, Distance("cosine").similarity(out[pair[0]], out[pair[1]]))
    euclid = model.coefficients(features, masks, Distance("euclidean"))
    assert all(((c > 0) & (c <= 1)).all() for c in euclid.values())


def test_cross_attention_mixes_modalities() -> None:
    features, masks = _batch("TAV", ids=False)
    changed = features | {"A": features["A"] + 1.0}
    for cross, should_change in ((True, True), (False, False)):
        model = _model("TAV", ids=False, cross_attention=cross)
        with torch.no_grad():
            t_before, t_after = model(features, masks)["T"], model(changed, masks)["T"]
        assert (not torch.allclose(t_before, t_after)) == should_change


def test_defaults_follow_the_authors_and_describe_counts_parameters() -> None:
    model = ModalityCorrelationEvaluator({"T": 1, "A": 74, "V": 35}, vocab_size=500)
    assert (model.hidden_dim, model.num_layers, model.num_heads, model.ff_dim) == (128, 3, 4, 256)
    assert model.dropout == model.attn_dropout == 0.1
    assert model.encoders[0].attention.dropout == (0.1, 0.1, 0.1)  # one rate per modality
    fast = ModalityCorrelationEvaluator({"A": 5, "V": 7}, **SMALL, attn_dropout=0.0)
    assert fast.encoders[1].attention.dropout == (0.0, 0.0)
    assert fast.cross.attention.dropout == (0.0, 0.0)
    assert fast.encoders[1].feed_forward.dropout == 0.1
    assert (model.shared_time, model.shared_dim) == (64, 200)
    table = model.parameter_table()
    total = sum(p.numel() for p in model.parameters())
    assert table.loc["total", "total"] == total
    assert table.loc["T", "transformation"] == 500 * 128
    assert table.loc["A", "transformation"] == 74 * 128 + 128
    assert f"{total:,} parameters" in model.describe()
    assert "T+A+V" in model.describe()


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="2 or more"):
        ModalityCorrelationEvaluator({"A": 5})
    with pytest.raises(ValueError, match="divisible"):
        ModalityCorrelationEvaluator({"A": 5, "V": 7}, hidden_dim=10, num_heads=4)
    model = _model("TA", ids=True)
    features, masks = _batch("TA", ids=True)
    with pytest.raises(ValueError, match="built for modalities TA"):
        model({"A": features["A"], "V": features["A"]}, masks)
    with pytest.raises(ValueError, match=r"features\['A'\].*float \(batch, time, 5\)"):
        model(features | {"A": features["A"][..., :3]}, masks)
    with pytest.raises(ValueError, match="token ids"):
        model(features | {"T": torch.randn(3, 7, 6)}, masks)
    with pytest.raises(ValueError, match=r"outside \[0, 30\)"):
        model(features | {"T": features["T"] + VOCAB}, masks)
    with pytest.raises(ValueError, match=r"masks\['A'\] must be bool"):
        model(features, masks | {"A": masks["A"].float()})
    with pytest.raises(ValueError, match="max_len"):
        long = ModalityCorrelationEvaluator({"A": 5, "V": 7}, **SMALL, max_len=4)
        long(*_batch("AV", ids=False))
    float_model = _model("TA", ids=False)
    with pytest.raises(ValueError, match="token ids need vocab_size"):
        float_model(features, masks)
