"""Layers that hold ``count`` independent members and compute them in one batched call.

A transformer of the tutorial is small; run one after another, several of them (MulT's six
crossmodal transformers, the evaluator's per-modality encoders) spend most of their time in
PyTorch's per-call overhead. Each layer here therefore holds ``count`` members: a weight ``W``
of ``nn.Linear(d_in, d_out)`` becomes a parameter ``(count, d_out, d_in)``, the inputs of all
members arrive stacked ``(count, ...)``, and one ``torch.baddbmm`` computes ``x_i W_i^T + b_i``
for every member ``i`` at once. Member ``i`` computes exactly what the single layer with its
weights would (``tests/test_attention.py`` compares them). ``members`` (indices) runs a subset,
for inputs whose lengths keep them out of one stack.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from cormult_lib.nn.functional import attention, eager_cpu
from cormult_lib.nn.packing import PackedRows, pack, unpack

__all__ = [
    "Members",
    "MultiHeadAttention",
    "StackedLayerNorm",
    "StackedLinear",
    "attention_bias",
    "dropout_rates",
    "stack_groups",
    "stacked_linear",
]

Members = Sequence[int] | None
K = TypeVar("K")
#: From this many multiply-adds per member (rows x in x out) on, :class:`StackedLinear` runs one
#: product per member on the CPU instead of one batched product (measured with 2 threads: 15%
#: faster for 3 members of 1600 x 32 x 96, 10% slower for 6 members of 1200 x 30 x 90).
SEPARATE_PRODUCT_MACS = 1 << 22


def _pick(parameter: torch.Tensor, members: Members) -> torch.Tensor:
    """The rows of a stacked parameter ``(count, ...)`` for ``members`` (all when ``None``)."""
    return parameter if members is None else parameter[list(members)]


class StackedLinear(nn.Module):
    """``count`` independent ``nn.Linear(in_features, out_features)`` layers.

    ``forward(x (count, ..., in_features))`` -> ``(count, ..., out_features)``: member ``i``
    computes ``x[i] @ weight[i].T + bias[i]``, all members at once (:func:`stacked_linear`). Each
    member is initialised as ``nn.Linear`` initialises itself (uniform in
    ``+-1 / sqrt(in_features)``, the bias too). A departure from MulT's code, which starts its
    linear layers Xavier-uniform with zero biases (``modules/transformer.py``'s ``Linear``),
    named in chapter 07 and not measured; loaded official weights are unaffected.
    """

    def __init__(self, count: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(count, out_features, in_features))
        nn.init.uniform_(self.weight, -bound, bound)
        self.bias = None
        if bias:
            self.bias = nn.Parameter(torch.empty(count, out_features))
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, members: Members = None) -> torch.Tensor:
        bias = None if self.bias is None else _pick(self.bias, members)
        return stacked_linear(x, _pick(self.weight, members), bias)


def stacked_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x[i] @ weight[i].T + bias[i]`` for every member ``i``: ``x`` ``(count, ..., in)``,
    ``weight`` ``(count, out, in)``, ``bias`` ``(count, out)`` -> ``(count, ..., out)``."""
    flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (count, n, in)
    large = flat.shape[1] * weight.shape[1] * weight.shape[2] >= SEPARATE_PRODUCT_MACS
    if large and eager_cpu(x) and not torch.is_autocast_enabled("cpu"):
        out = _SeparateProducts.apply(flat, weight, bias)
    elif bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias[:, None, :], flat, weight.transpose(1, 2))
    return out.view(*x.shape[:-1], out.shape[-1])


class _SeparateProducts(torch.autograd.Function):
    """:func:`stacked_linear` as one ``torch.addmm`` per member, forward and backward.

    On the CPU a batched product shares its members out between the threads (3 members on 2
    threads leave one idle half the time), while a single large product spreads over all of
    them. Each member's product therefore runs on its own, writing straight into its slice of
    one output tensor (``out=``), and the backward pass does the same for the gradients::

        out_i = x_i W_i^T + b_i     dx_i = dout_i W_i     dW_i = dout_i^T x_i     db_i = sum dout_i

    so no list of per-member results is stacked (copied) afterwards.
    Shapes: ``x`` ``(count, n, in)``, ``weight`` ``(count, out, in)``, ``bias`` ``(count, out)``
    or ``None``; the output is ``(count, n, out)``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        out = x.new_empty(x.shape[0], x.shape[1], weight.shape[1])
        for i in range(x.shape[0]):
            if bias is None:
                torch.mm(x[i], weight[i].t(), out=out[i])
            else:
                torch.addmm(bias[i], x[i], weight[i].t(), out=out[i])
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable  # the products write into their outputs (out=): no double backward
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = torch.empty_like(x) if need_x else None
        grad_weight = torch.empty_like(weight) if need_weight else None
        for i in range(x.shape[0]):
            if need_x:
                torch.mm(grad_out[i], weight[i], out=grad_x[i])
            if need_weight:
                torch.mm(grad_out[i].t(), x[i], out=grad_weight[i])
        grad_bias = grad_out.sum(dim=1) if ctx.has_bias and need_bias else None
        return grad_x, grad_weight, grad_bias


def stack_groups(shapes: Mapping[K, Hashable]) -> list[list[K]]:
    """The keys of ``shapes`` grouped by equal shape, in order of first appearance.

    A stack takes inputs of one shape: with aligned data (every modality ``time`` steps) all
    members form one group; unaligned data run one group per shape.
    """
    groups: dict[Hashable, list[K]] = {}
    for key, shape in shapes.items():
        groups.setdefault(shape, []).append(key)
    return list(groups.values())


class StackedLayerNorm(nn.Module):
    """``count`` independent ``nn.LayerNorm(dim)``: ``(count, ..., dim)`` -> the same shape."""

    def __init__(self, count: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(count, dim))
        self.bias = nn.Parameter(torch.zeros(count, dim))

    def forward(self, x: torch.Tensor, members: Members = None) -> torch.Tensor:
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        weight, bias = _pick(self.weight, members), _pick(self.bias, members)
        return torch.addcmul(bias.view(shape), normed, weight.view(shape))


def dropout_rates(value: float | Sequence[float], count: int, name: str) -> tuple[float, ...]:
    """One dropout rate per member from a number or a sequence of ``count`` numbers."""
    rates = (float(value),) * count if isinstance(value, int | float) else tuple(map(float, value))
    if len(rates) != count or not all(0.0 <= r < 1.0 for r in rates):
        raise ValueError(f"{name} must be a rate in [0, 1) or {count} of them, got {value!r}")
    return rates


class MultiHeadAttention(nn.Module):
    """Multi-head attention of ``count`` members (see the module docstring).

    Per member the function of ``nn.MultiheadAttention(dim, num_heads, dropout,
    batch_first=True)``: biased projections for queries, keys and values (stored together as
    ``in_proj``, rows ``[0, d)`` for queries, ``[d, 2d)`` keys, ``[2d, 3d)`` values, as in
    ``nn.MultiheadAttention.in_proj_weight``) and for the output, with a guard for queries
    that see no key.

    Args:
        dim: model width ``d``; ``num_heads`` must divide it.
        num_heads: heads; each works on ``d / num_heads`` features.
        dropout: dropout on the attention weights (training only); one rate or one per member.
        count: members.
    """

    def __init__(
        self, dim: int, num_heads: int, dropout: float | Sequence[float] = 0.0, count: int = 1
    ):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        self.dim, self.num_heads, self.count = dim, num_heads, count
        self.dropout = dropout_rates(dropout, count, "attention dropout")
        self.in_proj = StackedLinear(count, dim, 3 * dim)
        self.out_proj = StackedLinear(count, dim, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(count, batch, time, d)`` -> ``(count * batch, heads, time, d / heads)``."""
        count, batch, time, _ = x.shape
        heads = x.reshape(count, batch, time, self.num_heads, -1).permute(0, 1, 3, 2, 4)
        return heads.reshape(count * batch, self.num_heads, time, -1)

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor,
        bias: torch.Tensor | None = None,
        members: Members = None,
        packed: PackedRows | None = None,
        context_packed: PackedRows | None = None,
    ) -> torch.Tensor:
        """Attend from ``query`` ``(count, batch, time_q, d)`` to ``context``
        ``(count, batch, time_k, d)`` (keys and values; ``context is query`` for
        self-attention, which then takes one product for all three projections).

        ``bias``: ``(count * batch, 1, time_q or 1, time_k)``, ``0`` where a query may attend
        and ``-inf`` where not, every row with at least one ``0`` (:func:`attention_bias`).
        ``packed`` / ``context_packed``: ``query`` / ``context`` come packed
        ``(count, n_rows, d)`` (:class:`~cormult_lib.nn.packing.PackedRows`; for self-attention
        ``packed`` serves both): the projections run on the packed rows, the attention itself
        on the padded layout.
        Returns the layout of ``query``: ``(count, batch, time_q, d)`` or ``(count, n_rows, d)``.
        """
        count, d = query.shape[0], query.shape[-1]
        weight = _pick(self.in_proj.weight, members)
        bias_in = _pick(self.in_proj.bias, members)
        if context is query:
            q, k, v = unpack(stacked_linear(query, weight, bias_in), packed).split(d, dim=-1)
        else:
            q = unpack(stacked_linear(query, weight[:, :d], bias_in[:, :d]), packed)
            kv = stacked_linear(context, weight[:, d:], bias_in[:, d:])
            k, v = unpack(kv, context_packed).split(d, dim=-1)
        batch, time_q = q.shape[1:3]
        rates = self.dropout if members is None else tuple(self.dropout[i] for i in members)
        heads = attention(
            self._split_heads(q),
            self._split_heads(k),
            self._split_heads(v),
            bias,
            rates,
            self.training,
        )  # (count * batch, heads, time_q, d / heads)
        merged = heads.view(count, batch, self.num_heads, time_q, -1).permute(0, 1, 3, 2, 4)
        merged = merged.reshape(count, batch, time_q, d)
        return self.out_proj(pack(merged, packed), members)


def attention_bias(allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The additive bias of :class:`MultiHeadAttention` and which queries see a key.

    Args:
        allowed: bool ``(n, 1, time_q or 1, time_k)`` from :func:`attention_mask`.

    Returns:
        ``bias`` (float, the same shape: ``0`` allowed, ``-inf`` not) and ``has_key``
        ``(n, time_q or 1, 1)``. A query that may see no key would take a softmax over
        ``-inf`` everywhere (NaN): its row lets it see every key instead, and the caller
        zeroes its output with ``has_key``.
    """
    has_key = allowed.any(dim=-1, keepdim=True)
    bias = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
    bias.masked_fill_(~(allowed | ~has_key), float("-inf"))
    return bias, has_key[:, 0]
