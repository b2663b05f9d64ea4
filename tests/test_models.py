"""MulT, CorMulT and the late-fusion baseline: shapes, padding, causality, weighting, training."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.config import DataConfig, get_config
from cormult_lib.correlation.distances import Distance
from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator
from cormult_lib.data.dataset import make_loader
from cormult_lib.data.synthetic import make_synthetic_splits
from cormult_lib.models import CorMulT, LateFusion, MulT
from cormult_lib.models.mult import directions
from cormult_lib.nn.pooling import last_valid, masked_mean
from cormult_lib.training.pretrain import load_cormult, pretrain_evaluator, save_evaluator

DIMS = {"T": 6, "A": 5, "V": 7}
TIMES = {"T": 7, "A": 9, "V": 5}
VOCAB = 30
NO_DROPOUT = {
    "attn_dropout": 0.0,
    "relu_dropout": 0.0,
    "res_dropout": 0.0,
    "embed_dropout": 0.0,
    "out_dropout": 0.0,
}
TINY_MULT = {"hidden_dim": 8, "num_heads": 2, "num_layers": 1, **NO_DROPOUT}
TINY_EVALUATOR = {
    "hidden_dim": 8,
    "num_layers": 1,
    "num_heads": 2,
    "ff_dim": 8,
    "shared_time": 2,
    "shared_dim": 4,
    "dropout": 0.0,
}
SUBSETS = ["TA", "TV", "AV", "TAV"]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(modalities: str, ids: bool = False, seed: int = 0, batch: int = 3):
    """Features and end-padded masks (sample i has ``time - i`` real steps), NaN on padding."""
    g = _generator(seed)
    features, masks = {}, {}
    for m in modalities:
        t = TIMES[m]
        mask = torch.arange(t)[None, :] < torch.tensor([t - i for i in range(batch)])[:, None]
        if m == "T" and ids:
            features[m] = torch.where(mask, torch.randint(2, VOCAB, (batch, t), generator=g), -7)
        else:
            x = torch.randn(batch, t, DIMS[m], generator=g)
            features[m] = torch.where(mask[..., None], x, float("nan"))
        masks[m] = mask
    return features, masks


def _repad(features: dict, masks: dict, extra: int, start: bool):
    """The same samples with ``extra`` more padding steps, real steps at the start or end."""
    out_f, out_m = {}, {}
    for m, x in features.items():
        batch, time = masks[m].shape
        fill = -5 if not x.is_floating_point() else float("nan")
        new_x = torch.full((batch, time + extra, *x.shape[2:]), fill, dtype=x.dtype)
        new_mask = torch.zeros(batch, time + extra, dtype=torch.bool)
        for i in range(batch):
            real = x[i][masks[m][i]]
            n = len(real)
            span = slice(time + extra - n, time + extra) if start else slice(0, n)
            new_x[i, span] = real
            new_mask[i, span] = True
        out_f[m], out_m[m] = new_x, new_mask
    return out_f, out_m


def _mult(modalities: str = "TAV", **kwargs) -> MulT:
    torch.manual_seed(0)
    return MulT(DIMS, modalities, **(TINY_MULT | kwargs)).eval()


def _evaluator(modalities: str = "TAV", dims: dict | None = None):
    torch.manual_seed(1)
    dims = dims or DIMS
    return ModalityCorrelationEvaluator({m: dims[m] for m in modalities}, **TINY_EVALUATOR)


class ConstantCorrelation(Distance):
    """A distance whose coefficient is ``value`` for every sample (to test the fusion)."""

    def __init__(self, value: float):
        super().__init__("cosine")
        self.value = value

    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape[:1], self.value)


# ---------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("head", ["regression", "classification"])
@pytest.mark.parametrize("modalities", SUBSETS)
def test_every_model_gives_the_head_shape_for_every_subset(modalities, head):
    features, masks = _batch("TAV")
    expected = (3,) if head == "regression" else (3, 7)
    mult = _mult(modalities, head=head)
    models = [
        mult,
        CorMulT(mult, _evaluator(modalities), Distance("cosine")),
        LateFusion(DIMS, modalities, hidden_dim=8, head=head),
    ]
    for model in models:
        assert model.head == head and model.modalities == tuple(modalities)
        out = model(features, masks)
        assert out.shape == expected and torch.isfinite(out).all(), type(model).__name__


@pytest.mark.parametrize("modalities", SUBSETS)
def test_crossmodal_outputs_are_keyed_source_to_target(modalities):
    features, masks = _batch(modalities)
    mult = _mult(modalities)
    outputs = mult.crossmodal(features, masks)
    assert tuple(outputs) == mult.directions == directions(modalities)
    assert len(outputs) == len(modalities) * (len(modalities) - 1)
    for key, h in outputs.items():
        target = key.split("->")[1]
        assert h.shape == (3, TIMES[target], 8), key
    assert mult.combined_dim == (6 if len(modalities) == 3 else 2) * 8
    assert directions("TAV") == ("A->T", "V->T", "T->A", "V->A", "T->V", "A->V")


def test_projections_are_bias_free_convolutions_skipped_at_equal_width():
    mult = MulT(
        {"T": 8, "A": 5, "V": 7}, hidden_dim=8, num_heads=2, num_layers=1, kernel_sizes=(1, 3, 5)
    ).eval()
    assert isinstance(mult.projections["T"], nn.Identity)
    conv = mult.projections["V"]
    assert isinstance(conv, nn.Conv1d) and conv.bias is None and conv.kernel_size == (5,)
    assert mult.conv_padding == {"T": (0, 0), "A": (1, 1), "V": (2, 2)}
    features, masks = _batch("AV")
    features["T"], masks["T"] = torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool)
    projected = mult.project(features, masks)
    assert {m: x.shape for m, x in projected.items()} == {
        "T": (3, 4, 8),
        "A": (3, TIMES["A"], 8),
        "V": (3, TIMES["V"], 8),
    }
    torch.testing.assert_close(projected["T"], features["T"])
    # One stack of six crossmodal transformers, one of three memory transformers.
    assert mult.crossmodal_encoders.count == 6 and len(mult.crossmodal_encoders.layers) == 1
    assert mult.memory_encoders.count == 3
    assert len(mult.memory_encoders.layers) == 3  # max(num_layers, 3)
    deep = MulT(DIMS, hidden_dim=8, num_heads=2, num_layers=5)
    assert len(deep.memory_encoders.layers) == 5 and deep.memory_encoders.dim == 16


# ---------------------------------------------------------------------------- padding


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("ids", [False, True])
def test_padding_never_changes_the_output(pooling, ids):
    features, masks = _batch("TAV", ids=ids)
    vocab = VOCAB if ids else None
    torch.manual_seed(0)
    models = [
        _mult(pooling=pooling, vocab_size=vocab),
        _mult(pooling=pooling, vocab_size=vocab, causal=True),
        LateFusion(DIMS, hidden_dim=8, vocab_size=vocab).eval(),
    ]
    for model in models:
        with torch.no_grad():
            reference = torch.cat([model(*_select(features, masks, i)) for i in range(3)])
            for extra, start in [(0, False), (3, False), (2, True)]:
                out = model(*_repad(features, masks, extra, start))
                torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def _select(features: dict, masks: dict, i: int):
    """Sample ``i`` alone, trimmed to its real steps."""
    out_f, out_m = {}, {}
    for m, x in features.items():
        keep = masks[m][i]
        out_f[m], out_m[m] = x[i : i + 1, keep], masks[m][i : i + 1, keep]
    return out_f, out_m


def test_pooling_reads_only_real_steps():
    x = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[False, True, True], [False, False, False]])
    x[0, 0] = float("nan")
    assert last_valid(x, mask).tolist() == [[4.0, 5.0], [0.0, 0.0]]
    assert masked_mean(x, mask).tolist() == [[3.0, 4.0], [0.0, 0.0]]


def test_without_padding_the_padding_mask_option_changes_nothing():
    features, masks = _batch("TAV", batch=1)
    with torch.no_grad():
        masked = _mult()(features, masks)
        unmasked = _mult(use_padding_mask=False)(features, masks)
    torch.testing.assert_close(masked, unmasked)


def test_an_all_padding_sample_gives_finite_outputs_and_gradients():
    features, masks = _batch("TAV")
    masks["A"][1] = False
    features["A"][1] = float("nan")
    for pooling in ("last", "mean"):
        mult = _mult(pooling=pooling).train()
        models = [mult, CorMulT(mult, _evaluator()), LateFusion(DIMS, hidden_dim=8)]
        for model in models:
            out = model(features, masks)
            assert torch.isfinite(out).all(), type(model).__name__
            out.sum().backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------- causality


def test_causal_option_blocks_the_future_and_is_off_by_default():
    features, _ = _batch("TAV", batch=1)
    features = {m: x[:, :5] for m, x in features.items()}  # 5 real steps in every modality
    changed = {m: x.clone() for m, x in features.items()}
    for m in changed:
        changed[m][:, 3:] = torch.randn(changed[m][:, 3:].shape, generator=_generator(5))
    causal = _mult(causal=True)
    before, after = causal.crossmodal(features), causal.crossmodal(changed)
    for key in causal.directions:
        torch.testing.assert_close(after[key][:, :3], before[key][:, :3])
        assert not torch.allclose(after[key][:, 3:], before[key][:, 3:]), key
    default = _mult()
    assert default.causal is False
    before, after = default.crossmodal(features), default.crossmodal(changed)
    assert not torch.allclose(after["A->T"][:, :3], before["A->T"][:, :3])


# ---------------------------------------------------------------------------- weighting


def test_weights_multiply_the_named_crossmodal_output():
    features, masks = _batch("TAV")
    mult = _mult()
    with torch.no_grad():
        plain = mult(features, masks)
        ones = mult(features, masks, weights=dict.fromkeys(mult.directions, torch.ones(3)))
        half = mult(features, masks, weights={"T->A": 0.5})
        half_tensor = mult(features, masks, weights={"T->A": torch.full((3,), 0.5)})
    torch.testing.assert_close(ones, plain)
    torch.testing.assert_close(half, half_tensor)
    assert not torch.allclose(half, plain)
    with pytest.raises(ValueError, match="'A<-T'"):
        mult(features, masks, weights={"A<-T": 1.0})
    with pytest.raises(ValueError, match=r"weights\['T->A'\] must be"):
        mult(features, masks, weights={"T->A": torch.ones(2)})


@pytest.mark.parametrize(
    ("fusion", "cor"),
    [("product", 1.0), ("residual", 0.0), ("post_norm", 1.0)],
    ids=["product-1", "residual-0", "post_norm-1"],
)
def test_cormult_with_neutral_coefficients_is_plain_mult(fusion, cor):
    features, masks = _batch("TAV")
    mult = _mult()
    model = CorMulT(mult, _evaluator(), ConstantCorrelation(cor), fusion=fusion).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(features, masks), mult(features, masks))


def test_product_with_zero_correlation_removes_the_crossmodal_contribution():
    features, masks = _batch("TAV")
    other, _ = _batch("TAV", seed=7)  # different values, same masks
    model = CorMulT(_mult(), _evaluator(), ConstantCorrelation(0.0), fusion="product").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(features, masks), model(other, masks))
        zero = {k: torch.zeros(3) for k in model.mult.directions}
        torch.testing.assert_close(model(features, masks), model.mult(features, masks, zero))


@pytest.mark.parametrize("fusion", ["product", "residual"])
def test_cormult_weights_both_directions_of_a_pair_with_its_coefficient(fusion):
    features, masks = _batch("TAV")
    model = CorMulT(_mult(), _evaluator(), "cosine", fusion=fusion).eval()
    with torch.no_grad():
        output, cor = model(features, masks, return_coefficients=True)
        assert set(cor) == {("T", "A"), ("T", "V"), ("A", "V")}
        weights = model.direction_weights(cor)
        factor = cor[("T", "V")] if fusion == "product" else 1 + cor[("T", "V")]
        torch.testing.assert_close(weights["T->V"], factor)
        torch.testing.assert_close(weights["V->T"], factor)
        torch.testing.assert_close(output, model.mult(features, masks, weights))


def test_post_norm_scales_each_pooled_memory_output_by_the_mean_of_its_pairs():
    """This repository's variant: the factor acts after the memory's final LayerNorm."""
    features, masks = _batch("TAV")
    model = CorMulT(_mult(), _evaluator(), "cosine", fusion="post_norm").eval()
    with torch.no_grad():
        output, cor = model(features, masks, return_coefficients=True)
        assert model.direction_weights(cor) == {}, "the crossmodal outputs are left as they are"
        d = model.mult.combined_dim // 3
        checked = model.mult._check(features, masks)
        pooled = model.mult.fuse(model.mult.crossmodal(features, masks), checked)
        mean = {
            "T": (cor[("T", "A")] + cor[("T", "V")]) / 2,
            "A": (cor[("T", "A")] + cor[("A", "V")]) / 2,
            "V": (cor[("T", "V")] + cor[("A", "V")]) / 2,
        }
        factor = torch.cat([mean[m][:, None].expand(-1, d) for m in "TAV"], dim=1)
        torch.testing.assert_close(output, model.mult.output(pooled * factor))
        # Unlike the product on the memory input, a constant factor here reaches the output.
        halved = model.forward_with(features, masks, {p: torch.full((3,), 0.5) for p in cor})
        torch.testing.assert_close(halved, model.mult.output(pooled * 0.5))
    with pytest.raises(ValueError, match="expected keys out of"):
        model.mult(features, masks, target_weights={"X": 1.0})


def test_cormult_weights_the_pairs_its_evaluator_knows():
    with pytest.raises(ValueError, match="share no pair"):
        CorMulT(_mult("TA"), _evaluator("AV"))
    # Table 6: a TAV MulT with an evaluator pre-trained on TA only weights T<->A alone.
    partial = CorMulT(_mult("TAV"), _evaluator("TA")).eval()
    assert partial.pairs == [("T", "A")] and partial.modalities == ("T", "A", "V")
    features, masks = _batch("TAV")
    with torch.no_grad():
        output, cor = partial(features, masks, return_coefficients=True)
        weights = {"T->A": cor[("T", "A")], "A->T": cor[("T", "A")]}
        torch.testing.assert_close(output, partial.mult(features, masks, weights))
    with pytest.raises(ValueError, match="fusion must be one of"):
        CorMulT(_mult("TA"), _evaluator("TA"), fusion="sum")
    model = CorMulT(_mult("TA"), _evaluator("TAV")).eval()
    assert model.modalities == ("T", "A", "V") and model.fused_modalities == ("T", "A")
    assert model.pairs == [("T", "A")]
    assert model(features, masks).shape == (3,)
    with pytest.raises(ValueError, match=r"lack modalities \['V'\]"):
        model(*_batch("TA"))


def test_frozen_evaluator_gets_no_gradient_and_stays_in_eval_mode():
    features, masks = _batch("TAV")
    model = CorMulT(_mult(), _evaluator()).train()
    assert model.mult.training and not model.evaluator.training
    assert not any(m.training for m in model.evaluator.modules())
    model(features, masks).sum().backward()
    assert all(p.grad is None for p in model.evaluator.parameters())
    assert all(p.grad is not None for p in model.mult.parameters() if p.requires_grad)


def test_fine_tuned_evaluator_gets_gradients():
    features, masks = _batch("TAV")
    model = CorMulT(_mult(), _evaluator(), fusion="residual", freeze_evaluator=False).train()
    assert model.evaluator.training
    model(features, masks).sum().backward()
    grads = [p.grad for p in model.evaluator.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_fine_tuning_leaves_the_given_evaluator_as_it_was():
    """Seeds built from one pre-trained evaluator each fine-tune their own copy, even after a
    frozen CorMulT (which shares it and switches its gradients off) was built from it."""
    features, masks = _batch("TAV")
    pretrained = _evaluator()
    CorMulT(_mult(), pretrained)  # frozen: shared, no gradients
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    first = CorMulT(_mult(), pretrained, fusion="residual", freeze_evaluator=False).train()
    optimizer = torch.optim.SGD(first.parameters(), lr=1.0)
    first(features, masks).sum().backward()
    optimizer.step()
    changed = [k for k, v in first.evaluator.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the fine-tuned copy must have moved"
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    second = CorMulT(_mult(), pretrained, fusion="residual", freeze_evaluator=False)
    for key, value in second.evaluator.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert all(p.requires_grad for p in second.evaluator.parameters())


def test_load_cormult_uses_the_saved_evaluator_and_distance(tmp_path):
    tiny = make_synthetic_splits(DataConfig(n_samples=40, seq_len=8), seed=1)
    config = replace(get_config("quick").correlation, epochs=1, num_layers=1, shared_time=2)
    result = pretrain_evaluator(
        tiny["train"], tiny["valid"], config, distance="euclidean", progress=False
    )
    path = save_evaluator(tmp_path / "mce.pt", result)
    torch.manual_seed(0)
    mult = MulT(tiny["train"].dims(), **TINY_MULT).eval()
    model = load_cormult(path, mult, fusion="residual").eval()
    assert model.distance.name == "euclidean" and model.distance.scale == result.distance.scale
    batch = next(iter(make_loader(tiny["test"], 4, shuffle=False)))
    expected = CorMulT(mult, result.model, result.distance, fusion="residual")
    with torch.no_grad():
        torch.testing.assert_close(
            model(batch["features"], batch["masks"]), expected(batch["features"], batch["masks"])
        )


# ---------------------------------------------------------------------------- errors


def test_models_reject_bad_arguments_with_the_parameter_named():
    with pytest.raises(ValueError, match="head must be one of"):
        MulT(DIMS, head="ordinal")
    with pytest.raises(ValueError, match="pooling must be one of"):
        MulT(DIMS, pooling="max")
    with pytest.raises(ValueError, match="kernel_sizes\\['A'\\] must be an odd"):
        MulT(DIMS, kernel_sizes={"T": 1, "A": 2, "V": 3})
    with pytest.raises(ValueError, match="multiple of num_heads=3"):
        MulT(DIMS, hidden_dim=8, num_heads=3)
    with pytest.raises(ValueError, match="modalities must be 2 or more"):
        MulT(DIMS, "T")
    with pytest.raises(ValueError, match=r"input_dims lacks modalities \['V'\]"):
        LateFusion({"T": 3}, "TV")
    mult = _mult()
    features, masks = _batch("TAV")
    with pytest.raises(ValueError, match=r"features\['A'\] \(audio\) must be float"):
        mult({**features, "A": features["A"][..., :3]}, masks)
    with pytest.raises(ValueError, match=r"masks\['V'\] must be bool"):
        mult(features, {**masks, "V": masks["V"].float()})
    with pytest.raises(ValueError, match=r"ids in \[\d+, 40\]"):
        ids, id_masks = _batch("TAV", ids=True)
        ids["T"][0, 0] = 40
        _mult(vocab_size=VOCAB)(ids, id_masks)


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def synthetic_batch():
    """The first 32 training samples of the synthetic corpus (50 steps, dims 300 / 74 / 35)."""
    train = make_synthetic_splits(DataConfig(n_samples=120), seed=0)["train"]
    return train.dims(), next(iter(make_loader(train, 32, shuffle=False)))


def _l1(model: nn.Module, batch: dict) -> torch.Tensor:
    return F.l1_loss(model(batch["features"], batch["masks"]), batch["labels"])


@pytest.mark.parametrize("kind", ["MulT", "CorMulT", "LateFusion"])
def test_fifty_adam_steps_lower_the_l1_loss(kind, synthetic_batch):
    dims, batch = synthetic_batch
    torch.manual_seed(0)
    if kind == "LateFusion":
        model = LateFusion(dims, hidden_dim=16, dropout=0.0)
    else:
        model = MulT(dims, **TINY_MULT)
        if kind == "CorMulT":
            model = CorMulT(model, _evaluator(dims=dims))
    with torch.no_grad():
        before = float(_l1(model.eval(), batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(50):
        optimizer.zero_grad()
        _l1(model, batch).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(_l1(model.eval(), batch))
    assert after < 0.8 * before, (before, after)
