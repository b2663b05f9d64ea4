"""Multi-head attention on PyTorch's fused kernel, and the pre-LayerNorm transformer of MulT.

One encoder serves both uses of MulT (Tsai et al., 2019) and CorMulT section 3.3:

* **self-attention**: ``encoder(x, mask)``: queries, keys and values all come from ``x``;
* **crossmodal attention**: ``encoder(x, mask, source, source_mask)``: queries come from the
  target modality ``x`` ``(batch, time_x, d)``, keys and values from the source modality
  ``source`` ``(batch, time_s, d)``; the output has the target's length ``time_x``.

Per layer (:class:`TransformerBlock`, pre-LayerNorm, as MulT)::

    x = x + Dropout_res(Attention(LN_a(x), LN_a(source)))          (source = x for self-attention)
    x = x + Dropout_res(W2 Dropout_relu(ReLU(W1 LN_f(x))))         (W1: d -> 4d, W2: 4d -> d)

``LN_a`` normalises queries and keys/values with the same LayerNorm, as MulT's code does. The
encoder (:class:`TransformerEncoder`) first scales its inputs by ``sqrt(d)``, adds sinusoidal
positions and applies the embedding dropout (to the source too), runs the layers and ends with
a LayerNorm. Attention (:class:`MultiHeadAttention`) has its own query / key / value / output
projections and computes ``softmax(Q K^T / sqrt(d_head)) V`` per head with
:func:`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel.

Masks (``True`` on real steps) make padding irrelevant: padded input steps are zeroed (so
garbage, even NaN, cannot leak), keys on padded steps are ignored, and the ``p``-th *valid*
step gets position ``p`` wherever the padding is, so start-padded (MulT pickles) and end-padded
(MMSA) sequences give the same outputs on their real steps. A query that may see no key at all
(a sample whose source is all padding) attends to nothing: its attention output is zero and
the residual passes ``x`` on unchanged, never NaN.

**Causal attention** (``causal=True``, off by default): a query may not see the future. With
``n_q`` valid query steps and ``n_k`` valid key steps, the query of valid rank ``i`` may see the
key of valid rank ``j`` when ``j * n_q < (i + 1) * n_k``, i.e. when the key lies before the
query's *relative* position ``(i + 1) / n_q`` in its own sequence. For self-attention
(``n_q = n_k``) this is the usual ``j <= i``; the last query always sees every key and every
query sees at least the first key. MulT's code instead shifts the diagonal by the length
difference (query ``i`` sees keys ``j <= i + |time_s - time_x|``), which coincides for equal
lengths (aligned data) but lets the first of 50 queries see 451 of 500 unaligned audio steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.correlation.evaluator import SinusoidalPositionalEncoding


def valid_ranks(mask: torch.Tensor) -> torch.Tensor:
    """Index of each step among the valid steps of its row: ``(batch, time)`` bool -> int64.

    Padding before the first valid step gets 0, padding after a valid step repeats its rank.
    """
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def attention_mask(
    query_mask: torch.Tensor, key_mask: torch.Tensor, causal: bool = False
) -> torch.Tensor:
    """Which keys each query may attend to, ``True`` = allowed.

    Args:
        query_mask: ``(batch, time_q)`` bool, ``True`` on real query steps.
        key_mask: ``(batch, time_k)`` bool, ``True`` on real key steps.
        causal: also hide the future (see the module docstring for unequal lengths).

    Returns:
        ``(batch, 1, 1, time_k)`` without ``causal``, else ``(batch, 1, time_q, time_k)``;
        broadcasts over the heads of :class:`MultiHeadAttention`.
    """
    allowed = key_mask[:, None, None, :]
    if not causal:
        return allowed
    n_q = query_mask.sum(dim=1).clamp(min=1)[:, None, None]
    n_k = key_mask.sum(dim=1).clamp(min=1)[:, None, None]
    query_rank = valid_ranks(query_mask)[:, :, None]
    key_rank = valid_ranks(key_mask)[:, None, :]
    visible = key_rank * n_q < (query_rank + 1) * n_k  # (batch, time_q, time_k)
    return allowed & visible[:, None]


class MultiHeadAttention(nn.Module):
    """Multi-head attention through :func:`torch.nn.functional.scaled_dot_product_attention`.

    The same function as ``nn.MultiheadAttention(dim, num_heads, dropout, batch_first=True)``
    (biased ``Linear(dim, dim)`` projections for queries, keys, values and output), with
    separate projection matrices and a guard for queries that see no key.

    Args:
        dim: model width ``d``; ``num_heads`` must divide it.
        num_heads: heads; each works on ``d / num_heads`` features.
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, time, d)`` -> ``(batch, heads, time, d / heads)``."""
        batch, time, _ = x.shape
        return x.view(batch, time, self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``query`` ``(batch, time_q, d)`` to ``key`` / ``value``
        ``(batch, time_k, d)``.

        ``mask``: bool ``(batch, 1, time_q or 1, time_k)``, ``True`` where a query may attend
        (see :func:`attention_mask`); ``None`` attends everywhere. A query with no allowed key
        gets a zero output. Returns ``(batch, time_q, d)``.
        """
        batch, time_q, _ = query.shape
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))
        has_key = None
        if mask is not None:
            if mask.ndim != 4 or mask.dtype != torch.bool:
                raise ValueError(
                    "mask must be bool (batch, 1, time_q or 1, time_k), got "
                    f"{mask.dtype} {tuple(mask.shape)}"
                )
            # A row of only False would be softmax over -inf everywhere (NaN): let it see every
            # key and zero its output below instead.
            has_key = mask.any(dim=-1, keepdim=True)  # (batch, 1, time_q or 1, 1)
            mask = mask | ~has_key
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.out_proj(attended.transpose(1, 2).reshape(batch, time_q, self.dim))
        if has_key is not None:
            out = torch.where(has_key[:, 0], out, 0.0)
        return out


class TransformerBlock(nn.Module):
    """One pre-LayerNorm layer: attention, then a ``d -> 4d -> d`` ReLU feed-forward.

    Args:
        dim: width ``d``.
        num_heads: attention heads (divide ``dim``).
        attn_dropout: dropout on the attention weights.
        relu_dropout: dropout after the ReLU of the feed-forward.
        res_dropout: dropout on both sublayer outputs before they join the residual.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
    ):
        super().__init__()
        self.attention = MultiHeadAttention(dim, num_heads, attn_dropout)
        self.norm_attention = nn.LayerNorm(dim)
        self.norm_feed_forward = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.relu_dropout = nn.Dropout(relu_dropout)
        self.res_dropout = nn.Dropout(res_dropout)

    def forward(
        self,
        x: torch.Tensor,
        source: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` ``(batch, time_x, d)``; ``source`` ``(batch, time_s, d)`` for crossmodal
        attention (``None``: self-attention); ``mask`` as :class:`MultiHeadAttention`.
        Returns ``(batch, time_x, d)``."""
        query = self.norm_attention(x)
        context = query if source is None else self.norm_attention(source)
        x = x + self.res_dropout(self.attention(query, context, context, mask))
        hidden = self.relu_dropout(F.relu(self.fc1(self.norm_feed_forward(x))))
        return x + self.res_dropout(self.fc2(hidden))


def _check_mask(mask: torch.Tensor | None, x: torch.Tensor, name: str) -> torch.Tensor:
    """The validity mask of ``x`` ``(batch, time, d)``: all ``True`` when ``mask`` is None."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(
            f"{name} must be bool {tuple(x.shape[:2])} (True = real step), got {mask.dtype} "
            f"{tuple(mask.shape)}"
        )
    return mask


class TransformerEncoder(nn.Module):
    """MulT's transformer: ``num_layers`` :class:`TransformerBlock` and a final LayerNorm.

    Args:
        dim: width ``d`` of the inputs and outputs.
        num_heads: attention heads (divide ``dim``).
        num_layers: blocks.
        attn_dropout, relu_dropout, res_dropout: see :class:`TransformerBlock`.
        embed_dropout: dropout on the inputs after scaling and positions.
        causal: hide future keys (module docstring); off by default.
        max_len: longest sequence the positional encoding covers.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_layers: int,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        causal: bool = False,
        max_len: int = 1024,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.dim, self.causal, self.max_len = dim, causal, max_len
        self.scale = math.sqrt(dim)
        self.positions = SinusoidalPositionalEncoding(dim, max_len)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            TransformerBlock(dim, num_heads, attn_dropout, relu_dropout, res_dropout)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: torch.Tensor, mask: torch.Tensor, name: str) -> torch.Tensor:
        """``sqrt(d) * x + PE(valid rank)`` with padded steps zeroed, then embedding dropout."""
        if x.ndim != 3 or x.shape[2] != self.dim:
            raise ValueError(f"{name} must be (batch, time, {self.dim}), got {tuple(x.shape)}")
        if x.shape[1] > self.max_len:
            raise ValueError(
                f"{name} has {x.shape[1]} steps, more than max_len={self.max_len} of the "
                "positional encoding; build the model with a larger max_len"
            )
        x = torch.where(mask[..., None], x, 0.0)
        return self.embed_dropout(x * self.scale + self.positions(valid_ranks(mask)))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode ``x``, attending to itself or, when given, to ``source``.

        Args:
            x: queries ``(batch, time_x, d)`` (the target modality for crossmodal attention).
            mask: ``(batch, time_x)`` bool, ``True`` on real steps; ``None``: all real.
            source: keys and values ``(batch, time_s, d)``; ``None``: self-attention.
            source_mask: ``(batch, time_s)`` bool for ``source``; ``None``: all real.

        Returns:
            ``(batch, time_x, d)``. Outputs on padded steps of ``x`` are finite but meaningless.
        """
        unmasked = mask is None and source_mask is None
        mask = _check_mask(mask, x, "mask")
        h = self._embed(x, mask, "x")
        context, context_mask = None, mask
        if source is not None:
            if source.shape[0] != x.shape[0]:
                raise ValueError(
                    f"source has batch size {source.shape[0]}, x has {x.shape[0]}; they must match"
                )
            context_mask = _check_mask(source_mask, source, "source_mask")
            context = self._embed(source, context_mask, "source")
        allowed = (
            None
            if unmasked and not self.causal
            else attention_mask(mask, context_mask, self.causal)
        )
        for layer in self.layers:
            h = layer(h, context, allowed)
        return self.norm(h)
