"""The faster models compute the same function as the implementation they replaced.

``tests/reference`` holds the models as they were before the stacked rewrite. From the same
weights, the stacked ``MulT`` must give the same outputs (eval mode, within 1e-5) and the same
gradients, for every option that changes the computation: modalities, token ids, padding,
unaligned lengths, causal masks, no padding mask, weights, heads. In training, dropout must keep
its rates. Packed (per-step layers on the real steps only, ``cormult_lib.nn.packing``) both
models compute what they compute on the padded layout.
"""

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from reference import evaluator_state_dict, mult_state_dict
from reference.evaluator_v1 import ModalityCorrelationEvaluator as EvaluatorV1
from reference.mult_v1 import MulT as MulTv1

import cormult_lib.nn.functional as functional
from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator
from cormult_lib.models.clip_msa import ClipMSA
from cormult_lib.models.mult import MulT
from cormult_lib.nn import packing, stacked
from cormult_lib.nn.functional import attention, dropout, dropout_scale, kept_fraction
from cormult_lib.nn.packing import PackedRows, padded_layout

DIMS = {"T": 6, "A": 5, "V": 7}
VOCAB = 30
SIZES = {"hidden_dim": 8, "num_heads": 2, "num_layers": 2}


def _pair(modalities: str = "TAV", **kwargs) -> tuple[MulTv1, MulT]:
    """A v1 MulT with random weights and the stacked MulT holding the same weights."""
    torch.manual_seed(0)
    old = MulTv1(DIMS, modalities, **SIZES, **kwargs)
    new = MulT(DIMS, modalities, **SIZES, **kwargs)
    new.load_state_dict(mult_state_dict(old.state_dict(), new))
    return old.eval(), new.eval()


def _batch(
    times: dict[str, int], ids: bool = False, seed: int = 1, batch: int = 4, start_padded="A"
):
    """Features with end-padding, start-padding for ``start_padded`` (sample i loses i steps),
    NaN on padding."""
    g = torch.Generator().manual_seed(seed)
    features, masks = {}, {}
    for m, t in times.items():
        lengths = torch.tensor([max(t - i, 1) for i in range(batch)])[:, None]
        steps = torch.arange(t)[None, :]
        mask = steps >= t - lengths if m in start_padded else steps < lengths
        if m == "T" and ids:
            features[m] = torch.where(mask, torch.randint(1, VOCAB, (batch, t), generator=g), 0)
        else:
            x = torch.randn(batch, t, DIMS[m], generator=g)
            features[m] = torch.where(mask[..., None], x, float("nan"))
        masks[m] = mask
    return features, masks


ALIGNED = {"T": 6, "A": 6, "V": 6}
UNALIGNED = {"T": 6, "A": 9, "V": 4}


@pytest.mark.parametrize(
    ("modalities", "times", "kwargs"),
    [
        ("TAV", ALIGNED, {}),
        ("TAV", UNALIGNED, {}),
        ("TA", ALIGNED, {}),
        ("AV", UNALIGNED, {}),
        ("TAV", ALIGNED, {"causal": True}),
        ("TAV", UNALIGNED, {"causal": True, "pooling": "mean"}),
        ("TAV", ALIGNED, {"use_padding_mask": False, "kernel_sizes": (1, 1, 1)}),
        ("TAV", UNALIGNED, {"use_padding_mask": False}),
        ("TAV", ALIGNED, {"head": "classification"}),
        ("TAV", ALIGNED, {"attn_dropout_audio": 0.0, "attn_dropout_vision": 0.2}),
    ],
)
def test_stacked_mult_equals_the_v1_implementation(modalities, times, kwargs):
    old, new = _pair(modalities, **kwargs)
    features, masks = _batch({m: times[m] for m in modalities})
    if not kwargs.get("use_padding_mask", True):
        features = {m: torch.nan_to_num(x) for m, x in features.items()}
    torch.testing.assert_close(new(features, masks), old(features, masks), atol=1e-5, rtol=1e-5)
    old_cross, new_cross = old.crossmodal(features, masks), new.crossmodal(features, masks)
    assert list(new_cross) == list(old_cross)
    for key in old_cross:
        valid = masks[key[-1]]
        torch.testing.assert_close(new_cross[key][valid], old_cross[key][valid], atol=1e-5, rtol=0)


def test_stacked_mult_equals_v1_with_token_ids_and_weights():
    old, new = _pair(vocab_size=VOCAB)
    features, masks = _batch(ALIGNED, ids=True)
    weights = {"A->T": torch.tensor([0.5, -1.0, 0.0, 2.0]), "V->A": 0.3}
    torch.testing.assert_close(
        new(features, masks, weights), old(features, masks, weights), atol=1e-5, rtol=1e-5
    )


def test_stacked_mult_has_the_gradients_of_v1():
    old, new = _pair()
    features, masks = _batch(UNALIGNED)
    target = torch.randn(4)
    F.l1_loss(old(features, masks), target).backward()
    F.l1_loss(new(features, masks), target).backward()
    old_grads = mult_state_dict({k: p.grad for k, p in old.named_parameters()}, new)
    for name, parameter in new.named_parameters():
        torch.testing.assert_close(parameter.grad, old_grads[name], atol=1e-5, rtol=1e-4)


def test_parameter_count_is_unchanged():
    old, new = _pair()
    assert sum(p.numel() for p in new.parameters()) == sum(p.numel() for p in old.parameters())


def test_training_mode_draws_fresh_masks_at_the_configured_rates():
    _, new = _pair(attn_dropout=0.3, relu_dropout=0.3, res_dropout=0.3, embed_dropout=0.3)
    features, masks = _batch(ALIGNED)
    new.train()
    first, second = new(features, masks), new(features, masks)
    assert not torch.allclose(first, second)
    torch.manual_seed(5)
    again = new(features, masks)
    torch.manual_seed(5)
    torch.testing.assert_close(new(features, masks), again)  # seeded: reproducible


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_dropout_masks_have_the_rate_and_scale_of_torch_dropout(p):
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    ours, theirs = dropout(x, p, training=True), F.dropout(x, p, training=True)
    assert torch.equal(ours.unique(), theirs.unique())  # {0, 1 / (1 - p)} in float32
    kept = (ours > 0).float().mean().item()
    assert abs(kept_fraction(p) - (1 - p)) <= 2**-17
    # 400,000 draws: the standard error of the kept fraction is below 8e-4.
    assert abs(kept - (1 - p)) < 4e-3
    assert abs(ours.mean().item() - 1.0) < 6e-3  # inverted dropout keeps the expectation


def test_dropout_masks_are_independent_between_elements():
    torch.manual_seed(0)
    kept = dropout_scale((200_000, 2), 0.5, torch.empty(0)) > 0
    # P(both kept) = 1/4 for independent neighbours (e.g. the two halves of one random word).
    both = (kept[:, 0] & kept[:, 1]).float().mean().item()
    assert abs(both - 0.25) < 5e-3


def test_per_member_dropout_rates():
    torch.manual_seed(0)
    scale = dropout_scale((3, 100_000), (0.0, 0.2, 0.6), torch.empty(0))
    kept = (scale > 0).float().mean(dim=1)
    torch.testing.assert_close(kept, torch.tensor([1.0, 0.8, 0.4]), atol=5e-3, rtol=0)
    assert scale[2].max().item() == pytest.approx(1 / 0.4)


def test_attention_equals_scaled_dot_product_attention_and_its_gradients():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 4, generator=g, requires_grad=True) for _ in range(3))
    bias = torch.zeros(3, 1, 1, 5)
    bias[1, :, :, 3:] = float("-inf")
    grad = torch.randn(3, 2, 5, 4, generator=g)
    ours = attention(q, k, v, bias)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    for a, b in zip(
        torch.autograd.grad(ours, (q, k, v), grad),
        torch.autograd.grad(theirs, (q, k, v), grad),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_attention_backward_passes_gradcheck_with_dropout():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 2, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
        for _ in range(3)
    )
    bias = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    bias[0, :, 0, 2:] = float("-inf")

    def with_fixed_mask(q, k, v):
        torch.manual_seed(3)  # the same dropout mask on every call
        return attention(q, k, v, bias, dropout_p=0.4, training=True)

    assert torch.autograd.gradcheck(with_fixed_mask, (q, k, v))


def _attention_inputs(batch: int, heads: int, time_q: int, time_k: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, heads, time_q, 3, generator=g, dtype=dtype, requires_grad=True)
    k, v = (
        torch.randn(batch, heads, time_k, 3, generator=g, dtype=dtype, requires_grad=True)
        for _ in range(2)
    )
    # Sample i may see keys 0 .. i % time_k: every sample its own bias.
    seen = torch.arange(time_k) <= torch.arange(batch)[:, None] % time_k
    key_bias = torch.zeros(batch, 1, 1, time_k, dtype=dtype)
    key_bias.masked_fill_(~seen[:, None, None], float("-inf"))
    causal = torch.ones(time_q, time_k, dtype=torch.bool).triu(1)
    shared_bias = torch.zeros(1, 1, time_q, time_k, dtype=dtype).masked_fill(causal, float("-inf"))
    return q, k, v, {"key": key_bias, "causal": shared_bias, "none": None}


def _written_out_attention(q, k, v, bias, rates: tuple[float, ...]) -> torch.Tensor:
    """``(softmax(Q K^T / sqrt(d_h) + bias) * M) V`` in one piece, ``M`` from
    :func:`dropout_scale` (one rate per member, members outermost in the batch)."""
    batch, heads, time_q, head_dim = q.shape
    scores = q @ k.transpose(-1, -2) / head_dim**0.5
    weights = (scores if bias is None else scores + bias).softmax(dim=-1)
    if max(rates) > 0:
        shape = (len(rates), batch // len(rates) * heads, time_q, k.shape[2])
        weights = weights * dropout_scale(shape, rates, q).view(weights.shape)
    return weights @ v


@pytest.mark.parametrize("bias", ["key", "causal", "none"])
@pytest.mark.parametrize("rates", [(0.3,), (0.0, 0.4, 0.2), (0.0, 0.0, 0.0)])
def test_attention_in_chunks_equals_the_written_out_formula(monkeypatch, bias, rates):
    """Whole members and chunks of two samples (the last one of a member shorter) give the
    outputs and gradients of the formula, with the dropout masks of :func:`dropout_scale`."""
    batch = 9 if len(rates) == 3 else 7
    q, k, v, biases = _attention_inputs(batch, heads=2, time_q=4, time_k=5)
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    expected = _written_out_attention(q, k, v, biases[bias], rates)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)
    for chunk_bytes in (1 << 30, 2 * 2 * 4 * 5 * 4):
        monkeypatch.setattr(functional, "CHUNK_BYTES", chunk_bytes)
        torch.manual_seed(3)
        out = attention(q, k, v, biases[bias], rates, training=True)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        grads = torch.autograd.grad(out, (q, k, v), grad)
        for ours, theirs in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
        with torch.no_grad():
            torch.manual_seed(3)
            torch.testing.assert_close(attention(q, k, v, biases[bias], rates, True), out)


def test_attention_refuses_rates_that_do_not_divide_the_batch_and_odd_biases():
    q, k, v, _ = _attention_inputs(5, heads=2, time_q=4, time_k=5)
    with pytest.raises(ValueError, match="2 dropout rates"):
        attention(q, k, v, None, (0.1, 0.2), training=True)
    with pytest.raises(ValueError, match="first axis of 5 or 1"):
        attention(q, k, v, torch.zeros(3, 1, 1, 5))
    assert attention(q, k, v, None, (0.1, 0.2)).shape == q.shape  # no dropout: one piece
    flat = torch.zeros(4, 5).masked_fill(torch.ones(4, 5, dtype=torch.bool).triu(1), -torch.inf)
    torch.testing.assert_close(attention(q, k, v, flat), attention(q, k, v, flat[None, None]))


def test_fused_path_gives_a_shared_bias_to_every_member():
    """PyTorch's kernels (CUDA, ``torch.compile``) with per-member rates and one bias for all
    samples (a causal mask without padding): a member without dropout gets its exact output."""
    q, k, v, biases = _attention_inputs(4, heads=2, time_q=4, time_k=5)
    out = functional._fused_attention(q, k, v, biases["causal"], (0.0, 0.5))
    expected = F.scaled_dot_product_attention(q[:2], k[:2], v[:2], attn_mask=biases["causal"])
    torch.testing.assert_close(out[:2], expected)


def test_attention_dropout_keeps_each_members_rate_and_scale():
    """With ``Q = K = 0`` every weight is ``1 / time_k`` and ``V = I`` makes the output the
    weights themselves: a member's kept fraction is ``1 - p`` and kept weights are scaled by
    ``1 / (1 - p)``; a member with ``p = 0`` is untouched."""
    rates, batch, time = (0.0, 0.5, 0.2), 300, 8
    q = torch.zeros(len(rates) * batch, 1, time, time)
    v = torch.eye(time).expand_as(q)
    torch.manual_seed(0)
    weights = attention(q, q, v, None, rates, training=True).reshape(len(rates), -1)
    for p, member in zip(rates, weights, strict=True):
        kept = member[member > 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / time / (1 - p)))
        # 19,200 weights per member: the standard error of the kept fraction is below 4e-3.
        assert (member > 0).float().mean().item() == pytest.approx(1 - p, abs=0.015)


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 2 * 2 * 4 * 4 * 4])  # members; two samples
def test_attention_backward_passes_gradcheck_with_per_member_dropout(monkeypatch, chunk_bytes):
    monkeypatch.setattr(functional, "CHUNK_BYTES", chunk_bytes)
    q, k, v, biases = _attention_inputs(9, 2, 4, 4, dtype=torch.float64)

    def with_fixed_masks(q, k, v):
        torch.manual_seed(3)
        return attention(q, k, v, biases["key"], (0.0, 0.5, 0.3), training=True)

    assert torch.autograd.gradcheck(with_fixed_masks, (q, k, v))


# ------------------------------------------------------------------------- the evaluator
EVALUATOR = {"hidden_dim": 8, "num_layers": 2, "num_heads": 2, "ff_dim": 12}


def _evaluators(modalities: str = "TAV", **kwargs):
    torch.manual_seed(0)
    dims = {m: DIMS[m] for m in modalities}
    sizes = EVALUATOR | {"shared_time": 3, "shared_dim": 5} | kwargs
    old = EvaluatorV1(dims, **sizes)
    new = ModalityCorrelationEvaluator(dims, **sizes)
    new.load_state_dict(evaluator_state_dict(old.state_dict(), new))
    return old.eval(), new.eval()


@pytest.mark.parametrize(
    ("modalities", "times", "kwargs"),
    [
        ("TAV", ALIGNED, {}),
        ("TAV", UNALIGNED, {}),
        ("TV", UNALIGNED, {}),
        ("TAV", ALIGNED, {"cross_attention": False}),
        ("TAV", ALIGNED, {"vocab_size": VOCAB}),
        ("TAV", UNALIGNED, {"shared_time": 8}),  # t > time for T and V: projected first
    ],
)
def test_stacked_evaluator_equals_the_v1_implementation(modalities, times, kwargs):
    old, new = _evaluators(modalities, **kwargs)
    features, masks = _batch({m: times[m] for m in modalities}, ids="vocab_size" in kwargs)
    # One sample without any real audio step: its embedding is zero, its keys the empty step.
    if "A" in masks:
        masks["A"][2] = False
    expected, ours = old(features, masks), new(features, masks)
    for m in modalities:
        torch.testing.assert_close(ours[m], expected[m], atol=1e-5, rtol=1e-5)
    assert new.parameter_table().equals(old.parameter_table())


def test_stacked_evaluator_has_the_gradients_of_v1():
    old, new = _evaluators()
    features, masks = _batch(UNALIGNED)
    sum(e.square().sum() for e in old(features, masks).values()).backward()
    sum(e.square().sum() for e in new(features, masks).values()).backward()
    old_grads = evaluator_state_dict({k: p.grad for k, p in old.named_parameters()}, new)
    for name, parameter in new.named_parameters():
        torch.testing.assert_close(parameter.grad, old_grads[name], atol=1e-5, rtol=1e-4)


def _packings(monkeypatch) -> list[PackedRows | None]:
    """Record every layout :meth:`PackedRows.of` hands out from now on."""
    made = []
    original = PackedRows.of.__func__

    def recording(cls, mask):
        made.append(original(cls, mask))
        return made[-1]

    monkeypatch.setattr(PackedRows, "of", classmethod(recording))
    return made


def _gradients(model, features, masks, readout):
    """``readout(model(features, masks))`` and the parameters' gradients of its squared sum."""
    model.zero_grad(set_to_none=True)
    out = readout(model(features, masks))
    out.square().sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def _same_outputs_and_gradients(model, features, masks, readout):
    """``readout(model(features, masks))`` and the parameters' gradients, packed and padded."""
    results = []
    for layout in ("packed", "padded"):
        with padded_layout() if layout == "padded" else nullcontext():
            results.append(_gradients(model, features, masks, readout))
    (packed, packed_grads), (padded, padded_grads) = results
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, padded_grads[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("times", [ALIGNED, UNALIGNED])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("start_padded", ["", "TAV"])
def test_mult_computes_the_same_function_packed(monkeypatch, times, causal, start_padded):
    torch.manual_seed(0)
    model = MulT(DIMS, "TAV", **SIZES, causal=causal).eval()
    # Every modality padded at the same end: mixing start- and end-padding would leave, in an
    # aligned stack, no step that is padding in every member, and nothing to pack.
    features, masks = _batch(times, start_padded=start_padded)
    masks["V"][1] = False  # a sample without vision: its crossmodal queries see no key
    made = _packings(monkeypatch)
    _same_outputs_and_gradients(model, features, masks, lambda out: out)
    assert any(rows is not None for rows in made), "the padded batch was packed"


@pytest.mark.parametrize("times", [ALIGNED, UNALIGNED])
@pytest.mark.parametrize("cross_attention", [True, False])
def test_evaluator_computes_the_same_function_packed(monkeypatch, times, cross_attention):
    torch.manual_seed(0)
    sizes = EVALUATOR | {"shared_time": 3, "shared_dim": 5, "cross_attention": cross_attention}
    model = ModalityCorrelationEvaluator(DIMS, **sizes).eval()
    features, masks = _batch(times, start_padded="")
    # A sample with text only: the keys of its text query in the cross-attention are the
    # empty first step of audio, computed by the audio encoder like a real step.
    masks["A"][2] = masks["V"][2] = False
    made = _packings(monkeypatch)
    _same_outputs_and_gradients(
        model, features, masks, lambda out: torch.cat([out[m] for m in "TAV"], dim=-1)
    )
    assert any(rows is not None for rows in made), "the padded batch was packed"


# ------------------------------------------------- PyTorch's kernels (CUDA, torch.compile)
OFFICIAL_LIKE = {
    "causal": True,
    "causal_rule": "shifted",
    "use_padding_mask": False,
    "attn_dropout_audio": 0.0,
    "attn_dropout_vision": 0.0,
}


@pytest.mark.parametrize(
    ("times", "kwargs"),
    [(UNALIGNED, {}), (ALIGNED, OFFICIAL_LIKE)],  # aligned: the six directions in one stack
)
def test_pytorch_kernels_path_computes_the_same_function(monkeypatch, times, kwargs):
    """With the project's CPU kernels switched off, the models take the path of CUDA and
    ``torch.compile`` (``F.dropout``, ``scaled_dot_product_attention``, batched products, no
    packing), here on the CPU: the same outputs and gradients in eval mode, and a training
    step with per-member attention dropout runs."""
    features, masks = _batch(times)
    if not kwargs.get("use_padding_mask", True):
        features = {m: torch.nan_to_num(x) for m, x in features.items()}
    torch.manual_seed(0)
    models = {"MulT": (MulT(DIMS, **SIZES, **kwargs), features, masks, lambda out: out)}
    evaluator = ModalityCorrelationEvaluator(DIMS, **EVALUATOR, shared_time=3, shared_dim=5)
    pooled = lambda out: torch.cat([out[m] for m in "TAV"], dim=-1)  # noqa: E731
    models["evaluator"] = (evaluator, features, masks, pooled)
    # CLIP-MSA: one vector for text and audio, padded frames for vision (its face transformer).
    branches = {"T": (6, 5), "A": (4, 3), "V": (7, 5)}
    clip = ClipMSA(branches, hidden_dim=8, num_heads=2)
    frames = {"T": 1, "A": 1, "V": times["V"]}
    clip_features = {m: torch.randn(4, t, sum(branches[m])) for m, t in frames.items()}
    clip_masks = {m: torch.ones(4, t, dtype=torch.bool) for m, t in frames.items()}
    clip_masks["V"][0, 2:] = False
    models["CLIP-MSA"] = (clip, clip_features, clip_masks, lambda out: out)
    for name, (net, x, x_masks, readout) in models.items():
        expected = _gradients(net.eval(), x, x_masks, readout)
        for module in (functional, stacked, packing):
            monkeypatch.setattr(module, "eager_cpu", lambda x: False)
        out, grads = _gradients(net, x, x_masks, readout)
        torch.testing.assert_close(out, expected[0], atol=1e-5, rtol=1e-5, msg=name)
        for key, grad in grads.items():
            torch.testing.assert_close(grad, expected[1][key], atol=1e-5, rtol=1e-4, msg=key)
        _, trained = _gradients(net.train(), x, x_masks, readout)
        assert all(torch.isfinite(g).all() for g in trained.values()), name
        monkeypatch.undo()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_attention_without_gradients_keeps_the_dtype_of_its_inputs(dtype):
    """The written-out CPU path (no autograd, no dropout, heads under FUSED_CPU_HEAD_DIM) once
    returned float32 for any input, and the next float64 or bfloat16 layer then failed."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        out = attention(q.to(dtype), k.to(dtype), v.to(dtype))
    expected = F.scaled_dot_product_attention(q, k, v)
    assert out.dtype == dtype
    tolerance = 1e-12 if dtype == torch.float64 else 2e-2
    torch.testing.assert_close(out.double(), expected, atol=tolerance, rtol=tolerance)
    _, model = _pair()
    features, masks = _batch(ALIGNED)
    model = model.double()
    with torch.no_grad():
        inferred = model({m: x.double() for m, x in features.items()}, masks)
    assert inferred.dtype == torch.float64
    torch.testing.assert_close(inferred, model({m: x.double() for m, x in features.items()}, masks))
