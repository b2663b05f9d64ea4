"""Attention and the MulT transformer: reference math, masks, causality, fused kernel."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.models.attention import (
    MultiHeadAttention,
    TransformerBlock,
    TransformerEncoder,
    attention_mask,
    valid_ranks,
)

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


def _reference(
    attn: MultiHeadAttention, q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_head)) V per head, written out; ``allowed`` ``(b, tq, tk)``."""
    b, tq, _ = q.shape
    dh = DIM // HEADS

    def heads(x):
        return x.reshape(b, x.shape[1], HEADS, dh).transpose(1, 2)

    qh, kh, vh = heads(attn.q_proj(q)), heads(attn.k_proj(k)), heads(attn.v_proj(k))
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vh
    return attn.out_proj(out.transpose(1, 2).reshape(b, tq, DIM))


def test_attention_equals_hand_written_softmax_and_nn_multihead_attention():
    attn = _attention()
    q, k = _randn(3, 4, DIM, seed=1), _randn(3, 6, DIM, seed=2)
    key_mask = _lengths_mask([6, 4, 1], 6)
    with torch.no_grad():
        ours = attn(q, k, k, attention_mask(torch.ones(3, 4, dtype=torch.bool), key_mask))
        reference = _reference(attn, q, k, key_mask[:, None, :].expand(3, 4, 6))
        mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
        mha.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.load_state_dict(attn.out_proj.state_dict())
        torch_out = mha(q, k, k, key_padding_mask=~key_mask, need_weights=False)[0]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, torch_out, atol=1e-5, rtol=1e-5)


def test_equal_length_causal_mask_is_the_usual_triangle():
    attn = _attention()
    x = _randn(2, 5, DIM, seed=3)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        ours = attn(x, x, x, attention_mask(mask, mask, causal=True))
        triangle = torch.ones(5, 5, dtype=torch.bool).tril()
        reference = _reference(attn, x, x, triangle.expand(2, 5, 5))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_attention_goes_through_scaled_dot_product_attention(monkeypatch):
    calls = []
    fused = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("attn_mask"))
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x = _randn(2, 5, DIM)
    _attention()(x, x, x)
    assert len(calls) == 1 and calls[0] is None


def test_query_without_keys_gets_zero_output_not_nan():
    attn = _attention()
    q, k = _randn(2, 3, DIM, seed=1), _randn(2, 4, DIM, seed=2)
    key_mask = torch.tensor([[True, True, False, False], [False] * 4])
    allowed = attention_mask(torch.ones(2, 3, dtype=torch.bool), key_mask)
    out = attn(q, k, k, allowed)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all() and (out[0] != 0).any()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_block_is_pre_layernorm_attention_then_feed_forward():
    torch.manual_seed(0)
    block = TransformerBlock(DIM, HEADS).eval()
    x, src = _randn(2, 4, DIM, seed=1), _randn(2, 6, DIM, seed=2)
    with torch.no_grad():
        q = block.norm_attention(x)
        s = block.norm_attention(src)
        h = x + block.attention(q, s, s)
        expected = h + block.fc2(F.relu(block.fc1(block.norm_feed_forward(h))))
        torch.testing.assert_close(block(x, src), expected)
    assert block.fc1.out_features == 4 * DIM


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
