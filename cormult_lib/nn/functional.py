"""Dropout and attention written for small models on a CPU, with PyTorch's own kernels on CUDA.

The tutorial's transformers are small (``d = 16 .. 128``, heads of 4 .. 32 features, 50 steps).
On a CPU a training step of such a model is not bound by its matrix products but by two things
that PyTorch's general-purpose kernels do slowly at these sizes (measured with
``torch.profiler``, see ``benchmarks/training_benchmark.py``):

* **random numbers for dropout masks.** ``torch.bernoulli_`` draws one number from the
  Mersenne Twister per element, serially. A quick-profile MulT step needs 7 million of them,
  mostly for the attention weights ``(batch, heads, time_q, time_k)``.
* **attention with dropout.** With ``dropout_p > 0`` ``scaled_dot_product_attention`` leaves the
  fused CPU kernel for its reference ("math") path, which expands the mask, checks for rows of
  ``-inf`` and runs many passes over the ``time_q x time_k`` weights; without dropout the fused
  CPU kernel is itself slow for heads of 4 to 32 features.

What this module does instead, on the CPU only (on CUDA and inside ``torch.compile`` both
functions call PyTorch's own operations, which are fast there):

* :func:`dropout_scale` draws the mask from **16-bit slices of 64-bit random words**: one
  ``random_`` call fills ``n / 4`` int64 words from torch's global generator (so
  ``torch.manual_seed`` and the checkpoints of :func:`~cormult_lib.training.loop.fit` still
  control it), viewed as ``n`` uniform int16 values; an element is kept when its value is at
  least ``round(p * 65536) - 32768``. The drop rate is therefore ``round(p * 65536) / 65536``,
  within ``2^-17`` of ``p`` (0.1 becomes 0.1000061); kept elements are scaled by
  ``1 / (1 - p)`` as in :func:`torch.nn.functional.dropout`. One generator draw per four
  elements instead of one per element: measured six times faster than ``bernoulli_`` here.
* :func:`attention` is ``softmax(Q K^T / sqrt(d_head) + bias) V`` with dropout on the weights,
  as one ``torch.autograd.Function`` whose backward is written out (the gradients of softmax
  and of the two batched products), so each ``time_q x time_k`` tensor is read and written as
  few times as possible, laid out for the fast cases of MKL's batched product, and computed
  one member (or cache-sized chunk) at a time so that it stays in the cache between the
  operations that read it (:class:`_Attention`).

Both keep the function of the standard layers: the same outputs in eval mode (tests compare
them with ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``), masks of the same
rate and scaling in training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "attention",
    "dropout",
    "dropout_scale",
    "eager_cpu",
    "kept_fraction",
    "residual_dropout",
]

_LEVELS = 1 << 16  # values of one int16 slice
#: From this head size on, inference on the CPU goes through the fused kernel.
FUSED_CPU_HEAD_DIM = 16


def _threshold(p: float) -> int:
    """Keep an int16 value ``v`` when ``v >= threshold``; ``P(drop) = round(p * 2^16) / 2^16``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return round(p * _LEVELS) - _LEVELS // 2


def kept_fraction(p: float) -> float:
    """The exact probability that :func:`dropout_scale` keeps an element (``~ 1 - p``)."""
    return 1.0 - (_threshold(p) + _LEVELS // 2) / _LEVELS


def _uniform_int16(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``shape`` independent uniform int16 values from torch's global generator."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # every one of the 64 bits uniform
    return words.view(torch.int16)[:n].view(shape)


def dropout_scale(
    shape: tuple[int, ...], p: float | tuple[float, ...], like: torch.Tensor
) -> torch.Tensor:
    """A dropout mask as multipliers: ``0`` (dropped) or ``1 / (1 - p)`` (kept), shape ``shape``.

    Args:
        shape: the shape of the tensor to drop from.
        p: the drop probability, or one per slice of the first axis (``len(p) == shape[0]``,
            e.g. one rate per member of a stack).
        like: gives the dtype and device of the result.
    """
    out = torch.empty(shape, dtype=like.dtype, device=like.device)
    if not isinstance(p, tuple):
        return _fill_mask(out, p)
    if len(p) != shape[0]:
        raise ValueError(f"{len(p)} dropout rates for a first axis of {shape[0]}")
    if len(set(p)) == 1:
        return _fill_mask(out, p[0])
    for rate, part in zip(p, out, strict=True):  # a member without dropout draws nothing
        _fill_mask(part, rate)
    return out


def _fill_mask(out: torch.Tensor, p: float) -> torch.Tensor:
    """Fill ``out`` (contiguous) with dropout multipliers of rate ``p``, in place."""
    if p == 0.0:
        return out.fill_(1.0)
    torch.ge(_uniform_int16(tuple(out.shape), out.device), _threshold(p), out=out)
    return out.mul_(1.0 / (1.0 - p))


def eager_cpu(x: torch.Tensor) -> bool:
    """Whether the project's CPU kernels serve ``x`` (this module's, the separate products of
    :mod:`cormult_lib.nn.stacked`, the packing of :mod:`cormult_lib.nn.packing`): on the CPU,
    outside ``torch.compile`` (which generates fused code from PyTorch's own operations)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``; on the CPU with :func:`dropout_scale`'s cheaper masks."""
    if not training or p == 0.0:
        return x
    if not eager_cpu(x):
        return F.dropout(x, p, training=True)
    return x * dropout_scale(tuple(x.shape), p, x)


def residual_dropout(x: torch.Tensor, y: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``x + dropout(y)``, the residual join of a transformer; on the CPU one
    ``torch.addcmul(x, y, mask)`` instead of a product and a sum."""
    if not training or p == 0.0:
        return x + y
    if not eager_cpu(y):
        return x + F.dropout(y, p, training=True)
    return torch.addcmul(x, y, dropout_scale(tuple(y.shape), p, y))


#: Largest ``time_q x time_k`` block of attention weights (bytes) that :func:`attention` works
#: on at once on the CPU; a member's block larger than this is split by samples.
CHUNK_BYTES = 4 << 20


def _noise(
    rates: tuple[float, ...], rows: int, time_q: int, time_k: int, device: torch.device
) -> list[torch.Tensor | None]:
    """Per member, the int16 values its dropout mask compares with the threshold of its rate
    (:func:`dropout_scale`'s draws, in its order), ``(rows, time_q, time_k)``; ``None`` for a
    member without dropout."""
    if len(set(rates)) == 1:
        if rates[0] == 0.0:
            return [None] * len(rates)
        return list(_uniform_int16((len(rates), rows, time_q, time_k), device).unbind(0))
    return [_uniform_int16((rows, time_q, time_k), device) if p > 0 else None for p in rates]


class _Chunk:
    """Rows ``[start, stop)`` of the ``(batch * heads, time_q, time_k)`` weights of one member,
    whole samples (``heads`` rows each), with that member's dropout."""

    def __init__(self, start: int, stop: int, heads: int, member_start: int, noise, rate: float):
        self.rows = slice(start, stop)
        self.samples = slice(start // heads, stop // heads)
        self.noise = None if noise is None else noise[start - member_start : stop - member_start]
        self.threshold = None if noise is None else _threshold(rate)
        self.scale = 1.0 / (1.0 - rate)  # inverted dropout: kept weights count 1 / (1 - p)

    @staticmethod
    def split(shape: tuple[int, ...], heads: int, rates, noise) -> list[_Chunk]:
        """The chunks of weights ``shape`` ``(batch * heads, time_q, time_k)`` of
        ``len(rates)`` members: one per member, or slices of whole samples of at most
        :data:`CHUNK_BYTES` (counted in float32; at least one sample)."""
        n, time_q, time_k = shape
        member_rows = n // len(rates)
        rows = max(1, CHUNK_BYTES // (4 * heads * time_q * time_k)) * heads
        return [
            _Chunk(first, min(first + rows, begin + member_rows), heads, begin, noise[i], rate)
            for i, rate in enumerate(rates)
            for begin in (i * member_rows,)
            for first in range(begin, begin + member_rows, rows)
        ]

    def kept(self, out: torch.Tensor) -> torch.Tensor:
        """The binary dropout mask ``B`` of the chunk (1 kept, 0 dropped), written into ``out``."""
        return torch.ge(self.noise, self.threshold, out=out[: self.noise.shape[0]])


def _attend(q, k_t, v_t, bias, chunks, heads, probs) -> torch.Tensor:
    """The forward pass of :class:`_Attention`: ``O^T`` ``(n, d_h, time_q)`` from ``q * scale``
    ``(n, time_q, d_h)``, ``K^T`` and ``V^T`` ``(n, d_h, time_k)`` (``n = batch * heads``) and
    ``bias`` ``(batch or 1, 1 or heads, time_q or 1, time_k)`` (or ``None``), chunk by chunk;
    fills ``probs`` ``(n, time_q, time_k)`` with ``P`` when it is given."""
    n, time_q, head_dim = q.shape
    longest = max(c.rows.stop - c.rows.start for c in chunks)
    scratch = q.new_empty(2 if probs is None else 1, longest, time_q, k_t.shape[2])
    out_t = q.new_empty(n, head_dim, time_q)
    for c in chunks:
        scores = torch.bmm(q[c.rows], k_t[c.rows], out=scratch[0, : c.rows.stop - c.rows.start])
        if bias is not None:
            part = bias if bias.shape[0] == 1 else bias[c.samples]
            scores.view(-1, heads, *scores.shape[1:]).add_(part)
        p = probs[c.rows] if probs is not None else scratch[1, : scores.shape[0]]
        torch.softmax(scores, -1, out=p)
        values, weights = v_t[c.rows], p
        if c.noise is not None:  # W = P * B, with the 1 / (1 - p) of kept weights moved onto V
            weights = c.kept(scores).mul_(p)
            values = values * c.scale
        torch.bmm(values, weights.transpose(1, 2), out=out_t[c.rows])
    return out_t


class _Attention(torch.autograd.Function):
    """``O = (softmax(Q K^T * scale + bias) * B / (1 - p)) V`` with a constant ``bias`` and
    binary dropout masks ``B`` of rate ``p`` (one rate per member).

    Shapes: ``q`` ``(batch, heads, time_q, d_h)``, ``k`` and ``v`` ``(batch, heads, time_k,
    d_h)``, ``bias`` broadcasting to ``(batch, heads, time_q, time_k)`` or ``None``. With
    ``S = Q K^T * scale + bias``, ``P = softmax(S)``, ``W = P * B`` and ``s = 1 / (1 - p)``
    (``B = 1``, ``s = 1`` without dropout), ``O = W (s V)`` and the backward pass is::

        dV = s W^T dO        dW = s dO V^T        dP = dW * B
        dS = P * (dP - rowsum(dP * P))        dQ = dS K * scale        dK = dS^T Q * scale

    **Chunks.** The ``time_q x time_k`` tensors (``S``, ``P``, ``B``, ``W`` and their
    gradients) are the large ones: 1.9 million numbers per call for quick MulT's crossmodal
    stack. Both passes go through them one member at a time (slices of at most
    :data:`CHUNK_BYTES`), so each chunk stays in the CPU's cache from the first product to the
    second; only ``P`` and the int16 values of the masks are kept for the backward pass, which
    recomputes ``B`` and ``W`` per chunk. A member without dropout draws and applies no mask.

    Layout: MKL's batched product of a ``time x time`` matrix with a ``time x d_h`` one is
    three to four times faster when it is written as ``(d_h x time) @ (time x time)``, so the
    products that end in ``d_h`` columns compute their transposes (``O^T = V^T W^T``,
    ``dV^T = dO^T W``, ``dQ^T = K^T dS^T``, ``dK^T = Q^T dS``) from transposed copies of the
    small ``time x d_h`` inputs. Under CPU autocast it casts its inputs to float32.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, q, k, v, bias, rates, noise, scale):
        q, k_t, v_t = _head_layout(q, k, v, scale)
        heads = k.shape[1]
        probs = q.new_empty(q.shape[0], q.shape[1], k_t.shape[2])  # P, kept for backward
        ctx.chunks = _Chunk.split(tuple(probs.shape), heads, rates, noise)
        out_t = _attend(q, k_t, v_t, bias, ctx.chunks, heads, probs)
        ctx.save_for_backward(q.transpose(1, 2).contiguous(), k_t, v_t, probs)
        ctx.scale = scale
        return out_t.transpose(1, 2).reshape(k.shape[0], heads, -1, k.shape[3])

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out):
        q_t, k_t, v_t, probs = ctx.saved_tensors  # q_t is scaled
        shape = grad_out.shape
        n, head_dim, time_q = q_t.shape
        grad_out = grad_out.reshape(n, time_q, head_dim)
        grad_out_t = grad_out.transpose(1, 2).contiguous()
        grad_q_t, grad_k_t, grad_v_t = (torch.empty_like(t) for t in (q_t, k_t, v_t))
        longest = max(c.rows.stop - c.rows.start for c in ctx.chunks)
        scratch = probs.new_empty(2, longest, time_q, k_t.shape[2])
        for c in ctx.chunks:
            p, values = probs[c.rows], v_t[c.rows]
            weights = kept = None
            if c.noise is not None:
                kept = c.kept(scratch[0])
                weights, values = torch.mul(p, kept, out=scratch[1, : p.shape[0]]), values * c.scale
            torch.bmm(grad_out_t[c.rows], p if weights is None else weights, out=grad_v_t[c.rows])
            grad_weights = torch.bmm(grad_out[c.rows], values, out=scratch[1, : p.shape[0]])  # dW
            if kept is not None:
                grad_v_t[c.rows].mul_(c.scale)
                grad_weights.mul_(kept)  # dP
            grad_scores = torch._softmax_backward_data(
                grad_weights, p, -1, p.dtype, grad_input=scratch[0, : p.shape[0]]
            )
            torch.bmm(k_t[c.rows], grad_scores.transpose(1, 2), out=grad_q_t[c.rows])  # dQ^T
            torch.bmm(q_t[c.rows], grad_scores, out=grad_k_t[c.rows])  # dK^T (q_t is scaled)
        grad_q_t.mul_(ctx.scale)
        kv_shape = (*shape[:2], k_t.shape[2], head_dim)
        return (
            grad_q_t.transpose(1, 2).reshape(shape),
            grad_k_t.transpose(1, 2).reshape(kv_shape),
            grad_v_t.transpose(1, 2).reshape(kv_shape),
            None,
            None,
            None,
            None,
        )


def _head_layout(q, k, v, scale):
    """``q * scale`` ``(n, time_q, d_h)``, ``K^T`` and ``V^T`` ``(n, d_h, time_k)`` from
    ``(batch, heads, time, d_h)`` inputs (``n = batch * heads``)."""
    head_dim = q.shape[3]
    q = q.reshape(-1, q.shape[2], head_dim) * scale
    k_t = k.reshape(-1, k.shape[2], head_dim).transpose(1, 2).contiguous()
    v_t = v.reshape(-1, v.shape[2], head_dim).transpose(1, 2).contiguous()
    return q, k_t, v_t


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float | tuple[float, ...] = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d_h) + bias) V`` with dropout on the weights in training.

    The arguments of ``F.scaled_dot_product_attention``, with a float ``bias``:

    Args:
        q: queries ``(batch, heads, time_q, d_h)``.
        k, v: keys and values ``(batch, heads, time_k, d_h)``.
        bias: added to the scores, broadcasting to ``(batch, heads, time_q, time_k)`` with a
            first axis of ``batch`` or 1 (fewer axes count as leading 1s): ``0`` where a query
            may look, ``-inf`` where not; every row must allow at least one key. ``None``: no
            bias.
        dropout_p: drop probability of the attention weights, or one per member of a stack:
            a tuple of ``count`` rates when ``batch`` stacks ``count`` members, outermost
            (``batch`` a multiple of ``count``).
        training: apply the dropout.

    Returns:
        ``(batch, heads, time_q, d_h)``. On CUDA: ``F.scaled_dot_product_attention`` (fused
        kernels).
    """
    batch, heads, time_q, head_dim = q.shape
    rates = dropout_p if isinstance(dropout_p, tuple) else (float(dropout_p),)
    drop = training and max(rates) > 0
    if drop and batch % len(rates):
        raise ValueError(f"{len(rates)} dropout rates (one per member) for a batch of {batch}")
    if bias is not None:
        bias = bias.reshape((1,) * (4 - bias.ndim) + tuple(bias.shape))
        if bias.ndim != 4 or bias.shape[0] not in (1, batch):
            expected = (batch, heads, time_q, k.shape[2])
            raise ValueError(
                f"bias must broadcast to (batch, heads, time_q, time_k) = {expected} with a "
                f"first axis of {batch} or 1, got {tuple(bias.shape)}"
            )
    autograd = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    # Without autograd and dropout the fused CPU kernel is the faster one from heads of 16
    # features on (measured: 25% faster at d_h = 32, 30% slower at d_h = 8).
    inference_kernel = not autograd and not drop and head_dim >= FUSED_CPU_HEAD_DIM
    empty = q.numel() == 0 or k.shape[2] == 0
    if not eager_cpu(q) or inference_kernel or empty:
        return _fused_attention(q, k, v, bias, rates if drop else (0.0,))
    if not drop:
        rates = (0.0,)
    noise = _noise(rates, batch // len(rates) * heads, time_q, k.shape[2], q.device)
    scale = 1.0 / math.sqrt(head_dim)
    if autograd:
        return _Attention.apply(q, k, v, bias, rates, noise, scale)
    # At least float32 (bfloat16 under autocast would lose the softmax's precision); the
    # output keeps the inputs' dtype, as the other paths do.
    dtype, exact = q.dtype, torch.promote_types(q.dtype, torch.float32)
    q, k_t, v_t = _head_layout(q.to(exact), k.to(exact), v.to(exact), scale)
    chunks = _Chunk.split((q.shape[0], time_q, k_t.shape[2]), heads, rates, noise)
    out_t = _attend(q, k_t, v_t, bias, chunks, heads, None)
    return out_t.transpose(1, 2).reshape(batch, heads, time_q, head_dim).to(dtype)


def _fused_attention(q, k, v, bias, rates: tuple[float, ...]) -> torch.Tensor:
    """:func:`attention` through ``F.scaled_dot_product_attention``, one call per distinct
    rate (members with equal rates share a call)."""
    if len(set(rates)) == 1:
        mask = None if bias is None else bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=rates[0])
    count = len(rates)
    shared = bias is None or bias.shape[0] == 1  # one bias for every member
    biases = [bias] * count if shared else list(bias.chunk(count))
    parts = [
        _fused_attention(qi, ki, vi, bi, (rate,))
        for qi, ki, vi, bi, rate in zip(
            q.chunk(count), k.chunk(count), v.chunk(count), biases, rates, strict=True
        )
    ]
    return torch.cat(parts)
