"""Attention and the MulT transformer: reference math, masks, causality, stacks of members."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.nn.attention import (
    MultiHeadAttention,
    TransformerBlock,
    TransformerEncoder,
    attention_bias,
    attention_mask,
    valid_ranks,
)
from cormult_lib.nn.stacked import StackedLinear

DIM, HEADS = 8, 2


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _lengths_mask(lengths: list[int], time: int, start: bool = False) -> torch.Tensor:
    """End-padded (or start-padded) validity mask ``(batch, time)``."""
    steps = torch.arange(time)[None, :]
    lengths_t = torch.tensor(lengths)[:, None]
    return steps >= time - lengths_t if start else steps < lengths_t


def _attention() -> MultiHeadAttention:
    torch.manual_seed(0)
    return MultiHeadAttention(DIM, HEADS).eval()


def _attend(
    attn: MultiHeadAttention, q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """One attention of a single-member module, ``q`` ``(b, tq, d)``, with the zeroing of
    queries that see no key (done by the block)."""
    bias, has_key = attention_bias(allowed)
    context = q[None] if k is q else k[None]
    return attn(q[None], context, bias)[0] * has_key


def _projections(attn: MultiHeadAttention) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight, bias)`` of the query, key and value projections of a single member."""
    weight, bias = attn.in_proj.weight[0], attn.in_proj.bias[0]
    return [(weight[i * DIM : (i + 1) * DIM], bias[i * DIM : (i + 1) * DIM]) for i in range(3)]


def _reference(
    attn: MultiHeadAttention, q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_head)) V per head, written out; ``allowed`` ``(b, tq, tk)``."""
    b, tq, _ = q.shape
    dh = DIM // HEADS

    def heads(x):
        return x.reshape(b, x.shape[1], HEADS, dh).transpose(1, 2)

    (wq, bq), (wk, bk), (wv, bv) = _projections(attn)
    qh, kh, vh = heads(F.linear(q, wq, bq)), heads(F.linear(k, wk, bk)), heads(F.linear(k, wv, bv))
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vh
    return F.linear(
        out.transpose(1, 2).reshape(b, tq, DIM), attn.out_proj.weight[0], attn.out_proj.bias[0]
    )


def test_attention_equals_hand_written_softmax_and_nn_multihead_attention():
    attn = _attention()
    q, k = _randn(3, 4, DIM, seed=1), _randn(3, 6, DIM, seed=2)
    key_mask = _lengths_mask([6, 4, 1], 6)
    with torch.no_grad():
        ours = _attend(attn, q, k, attention_mask(torch.ones(3, 4, dtype=torch.bool), key_mask))
        reference = _reference(attn, q, k, key_mask[:, None, :].expand(3, 4, 6))
        mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
        mha.in_proj_weight.copy_(attn.in_proj.weight[0])
        mha.in_proj_bias.copy_(attn.in_proj.bias[0])
        mha.out_proj.weight.copy_(attn.out_proj.weight[0])
        mha.out_proj.bias.copy_(attn.out_proj.bias[0])
        torch_out = mha(q, k, k, key_padding_mask=~key_mask, need_weights=False)[0]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, torch_out, atol=1e-5, rtol=1e-5)


def test_equal_length_causal_mask_is_the_usual_triangle():
    attn = _attention()
    x = _randn(2, 5, DIM, seed=3)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        ours = _attend(attn, x, x, attention_mask(mask, mask, causal=True))
        triangle = torch.ones(5, 5, dtype=torch.bool).tril()
        reference = _reference(attn, x, x, triangle.expand(2, 5, 5))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def _member(stack: TransformerEncoder, i: int, **kwargs) -> TransformerEncoder:
    """A single transformer holding member ``i`` of ``stack``'s weights."""
    single = TransformerEncoder(DIM, HEADS, len(stack.layers), **kwargs)
    single.load_state_dict({k: v[i : i + 1] for k, v in stack.state_dict().items()})
    return single.eval()


@pytest.mark.parametrize("causal", [False, True])
def test_each_member_of_a_stack_computes_what_a_single_transformer_would(causal):
    torch.manual_seed(0)
    stack = TransformerEncoder(DIM, HEADS, num_layers=2, count=3, causal=causal).eval()
    with torch.no_grad():  # LayerNorms start as 1 and 0 in every member: make members differ
        for parameter in stack.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    x, src = _randn(3, 2, 4, DIM, seed=1), _randn(3, 2, 6, DIM, seed=2)
    mask = torch.stack([_lengths_mask([4, 2], 4), _lengths_mask([3, 4], 4, start=True)] * 2)[:3]
    source_mask = torch.stack([_lengths_mask([6, 1], 6)] * 3)
    out = stack(x, mask, src, source_mask)
    subset = stack(x[[2, 0]], mask[[2, 0]], src[[2, 0]], source_mask[[2, 0]], members=[2, 0])
    for i in range(3):
        single = _member(stack, i, causal=causal)
        expected = single(x[i], mask[i], src[i], source_mask[i])
        torch.testing.assert_close(out[i][mask[i]], expected[mask[i]], atol=1e-5, rtol=1e-5)
    # Padded steps' outputs are meaningless (packed computation leaves them zero): real steps.
    torch.testing.assert_close(subset[0][mask[2]], out[2][mask[2]])
    torch.testing.assert_close(subset[1][mask[0]], out[0][mask[0]])
    assert torch.isfinite(out).all() and torch.isfinite(subset).all()


def test_query_without_keys_gets_zero_output_not_nan():
    torch.manual_seed(0)
    block = TransformerBlock(DIM, HEADS).eval()
    q, k = _randn(2, 3, DIM, seed=1), _randn(2, 4, DIM, seed=2)
    key_mask = torch.tensor([[True, True, False, False], [False] * 4])
    bias, has_key = attention_bias(attention_mask(torch.ones(2, 3, dtype=torch.bool), key_mask))
    out = block(q[None], k[None], bias, has_key[None])[0]
    assert torch.isfinite(out).all()
    # Sample 1 sees no key: attention adds nothing, only the feed-forward acts.
    normed = F.layer_norm(q[1], (DIM,))
    hidden = F.relu(F.linear(normed, block.fc1.weight[0], block.fc1.bias[0]))
    torch.testing.assert_close(
        out[1], q[1] + F.linear(hidden, block.fc2.weight[0], block.fc2.bias[0])
    )
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters())


def test_block_is_pre_layernorm_attention_then_feed_forward():
    torch.manual_seed(0)
    block = TransformerBlock(DIM, HEADS).eval()
    nn.init.normal_(block.norm_attention.weight)  # LayerNorm affine parameters in play
    nn.init.normal_(block.norm_feed_forward.bias)
    x, src = _randn(2, 4, DIM, seed=1), _randn(2, 6, DIM, seed=2)

    def norm(layer, y):
        return F.layer_norm(y, (DIM,), layer.weight[0], layer.bias[0])

    with torch.no_grad():
        q = norm(block.norm_attention, x)
        s = norm(block.norm_attention, src)
        h = x + _attend(block.attention, q, s, torch.ones(2, 1, 1, 6, dtype=torch.bool))
        hidden = F.relu(
            F.linear(norm(block.norm_feed_forward, h), block.fc1.weight[0], block.fc1.bias[0])
        )
        expected = h + F.linear(hidden, block.fc2.weight[0], block.fc2.bias[0])
        torch.testing.assert_close(block(x[None], src[None])[0], expected)
    assert block.fc1.weight.shape == (1, 4 * DIM, DIM)


def _encoder(**kwargs) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(DIM, HEADS, num_layers=2, **kwargs).eval()


@pytest.mark.parametrize("crossmodal", [False, True])
def test_encoder_ignores_padding_wherever_it_is(crossmodal):
    encoder = _encoder(causal=True)
    x, src = _randn(1, 4, DIM, seed=1), _randn(1, 6, DIM, seed=2)
    reference = encoder(x, source=src if crossmodal else None)

    def padded(seq: torch.Tensor, pad: int, start: bool) -> tuple[torch.Tensor, torch.Tensor]:
        garbage = torch.full((1, pad, DIM), float("nan"))
        parts = [garbage, seq] if start else [seq, garbage]
        mask = _lengths_mask([seq.shape[1]], seq.shape[1] + pad, start=start)
        return torch.cat(parts, dim=1), mask

    for start in (False, True):
        xp, xm = padded(x, 3, start)
        sp, sm = padded(src, 2, not start)
        out = encoder(xp, xm, sp, sm) if crossmodal else encoder(xp, xm)
        torch.testing.assert_close(out[xm].reshape(1, 4, DIM), reference, atol=1e-5, rtol=1e-5)


def test_valid_ranks_count_real_steps():
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, False, False]])
    assert valid_ranks(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


def test_causal_self_attention_hides_the_future_and_is_off_by_default():
    x = _randn(1, 6, DIM, seed=1)
    changed = x.clone()
    changed[:, 4] += _randn(DIM, seed=9)  # not a constant: LayerNorm would remove it
    causal = _encoder(causal=True)
    torch.testing.assert_close(causal(changed)[:, :4], causal(x)[:, :4])
    assert not torch.allclose(causal(changed)[:, 4:], causal(x)[:, 4:])
    default = _encoder()
    assert default.causal is False
    assert not torch.allclose(default(changed)[:, :4], default(x)[:, :4])


def test_causal_crossmodal_uses_relative_positions():
    """4 queries over 8 source steps: query i sees source steps j < 2 (i + 1)."""
    allowed = attention_mask(
        torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 8, dtype=torch.bool), causal=True
    )
    expected = torch.arange(8)[None, :] < 2 * (torch.arange(4)[:, None] + 1)
    assert torch.equal(allowed[0, 0], expected)
    encoder = _encoder(causal=True)
    x, src = _randn(1, 4, DIM, seed=1), _randn(1, 8, DIM, seed=2)
    changed = src.clone()
    changed[:, 6] += _randn(DIM, seed=9)  # visible from query 3 only
    before, after = encoder(x, source=src), encoder(x, source=changed)
    torch.testing.assert_close(after[:, :3], before[:, :3])
    assert not torch.allclose(after[:, 3], before[:, 3])


def test_causal_mask_counts_valid_steps_of_padded_rows():
    """The relative rule applies to valid ranks: start padding shifts nothing."""
    query = _lengths_mask([2], 4, start=True)
    key = _lengths_mask([4], 6, start=True)
    allowed = attention_mask(query, key, causal=True)[0, 0]
    # Valid query 0 sees valid keys 0, 1; valid query 1 sees all four.
    assert allowed[2].tolist() == [False, False, True, True, False, False]
    assert allowed[3].tolist() == [False, False, True, True, True, True]


def test_encoder_with_an_all_padding_source_is_finite():
    encoder = _encoder()
    x, src = _randn(2, 3, DIM, seed=1), torch.full((2, 4, DIM), float("nan"))
    source_mask = torch.zeros(2, 4, dtype=torch.bool)
    out = encoder(x, torch.ones(2, 3, dtype=torch.bool), src, source_mask)
    assert torch.isfinite(out).all()


def test_encoder_rejects_bad_inputs():
    encoder = _encoder(max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        encoder(_randn(1, 9, DIM))
    with pytest.raises(ValueError, match=r"x must be \(batch, time, 8\)"):
        encoder(_randn(1, 3, DIM + 1))
    with pytest.raises(ValueError, match="mask must be bool"):
        encoder(_randn(1, 3, DIM), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_heads=3"):
        MultiHeadAttention(DIM, 3)


@pytest.mark.parametrize("rows", [10, 300], ids=["one-batched-product", "one-product-each"])
@pytest.mark.parametrize("bias", [True, False])
def test_stacked_linear_is_one_linear_per_member(rows, bias):
    """Small products run batched, large ones (rows x 256 x 256 >= SEPARATE_PRODUCT_MACS, 2^22)
    one per member."""
    torch.manual_seed(0)
    layer = StackedLinear(3, 256, 256, bias=bias)
    x = _randn(3, rows, 256, seed=1)
    out = layer(x)
    for i in range(3):
        expected = F.linear(x[i], layer.weight[i], None if layer.bias is None else layer.bias[i])
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(layer(x[[2, 0]], members=[2, 0]), out[[2, 0]])
    # Gradients too: each member's weights get the gradient of their own linear layer.
    x.requires_grad_(True)
    upstream = _randn(3, rows, 256, seed=2)
    (layer(x) * upstream).sum().backward()
    for i in range(3):
        torch.testing.assert_close(layer.weight.grad[i], upstream[i].T @ x[i].detach(),
                                   atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(x.grad[i], upstream[i] @ layer.weight[i].detach(),
                                   atol=1e-3, rtol=1e-4)
        if layer.bias is not None:
            torch.testing.assert_close(layer.bias.grad[i], upstream[i].sum(0), atol=1e-3,
                                       rtol=1e-4)
