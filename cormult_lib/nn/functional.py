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
  few times as possible, and laid out for the fast cases of MKL's batched product
  (:class:`_Attention`).

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


def _attend(q, k, v, bias, multiplier, scale):
    """The forward pass of :class:`_Attention`; also returns what its backward pass reads:
    ``(out, q * scale, K^T, V^T, P, W)`` with ``n = batch * heads`` leading the last five."""
    batch, heads, time_q, head_dim = q.shape
    n = batch * heads
    q = q.reshape(n, time_q, head_dim) * scale
    k_t = k.reshape(n, -1, head_dim).transpose(1, 2).contiguous()  # (n, d_h, time_k)
    v_t = v.reshape(n, -1, head_dim).transpose(1, 2).contiguous()
    scores = torch.bmm(q, k_t)  # (n, time_q, time_k)
    if bias is not None:
        scores.view(batch, heads, time_q, -1).add_(bias)
    probs = torch.softmax(scores, dim=-1)
    weights = probs if multiplier is None else probs * multiplier
    out_t = torch.bmm(v_t, weights.transpose(1, 2))  # O^T: (n, d_h, time_q)
    out = out_t.transpose(1, 2).reshape(batch, heads, time_q, head_dim)
    return out, q, k_t, v_t, probs, weights


def residual_dropout(x: torch.Tensor, y: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``x + dropout(y)``, the residual join of a transformer; on the CPU one
    ``torch.addcmul(x, y, mask)`` instead of a product and a sum."""
    if not training or p == 0.0:
        return x + y
    if not eager_cpu(y):
        return x + F.dropout(y, p, training=True)
    return torch.addcmul(x, y, dropout_scale(tuple(y.shape), p, y))


class _Attention(torch.autograd.Function):
    """``O = (softmax(Q K^T * scale + bias) * M) V`` with a constant ``bias`` and multiplier
    ``M`` (a dropout mask from :func:`dropout_scale`, or ``None``).

    Shapes: ``q`` ``(batch, heads, time_q, d_h)``, ``k`` and ``v`` ``(batch, heads, time_k,
    d_h)``, ``bias`` broadcasting to ``(batch, heads, time_q, time_k)`` or ``None``, ``M``
    ``(batch * heads, time_q, time_k)``. With ``S = Q K^T * scale + bias``, ``P = softmax(S)``
    and ``W = P * M`` the backward pass is::

        dV = W^T dO        dW = dO V^T        dP = dW * M
        dS = P * (dP - rowsum(dP * P))        dQ = dS K * scale        dK = dS^T Q * scale

    Layout: MKL's batched product of a ``time x time`` matrix with a ``time x d_h`` one is
    three to four times faster when it is written as ``(d_h x time) @ (time x time)``, so the
    products that end in ``d_h`` columns compute their transposes (``O^T = V^T W^T``,
    ``dV^T = dO^T W``, ``dQ^T = K^T dS^T``, ``dK^T = Q^T dS``) from transposed copies of the
    small ``time x d_h`` inputs. Runs in float32 (under CPU autocast too).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, q, k, v, bias, multiplier, scale):
        out, q, k_t, v_t, probs, weights = _attend(q, k, v, bias, multiplier, scale)
        ctx.save_for_backward(q.transpose(1, 2).contiguous(), k_t, v_t, probs, weights, multiplier)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out):
        q_t, k_t, v_t, probs, weights, multiplier = ctx.saved_tensors  # q_t is scaled
        shape = grad_out.shape
        n, head_dim, time_q = q_t.shape
        grad_out = grad_out.reshape(n, time_q, head_dim)
        grad_v_t = torch.bmm(grad_out.transpose(1, 2).contiguous(), weights)  # dV^T
        grad_probs = torch.bmm(grad_out, v_t)  # dW: (n, time_q, time_k)
        if multiplier is not None:
            grad_probs.mul_(multiplier)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_q_t = torch.bmm(k_t, grad_scores.transpose(1, 2)).mul_(ctx.scale)  # dQ^T
        grad_k_t = torch.bmm(q_t, grad_scores)  # dK^T (q_t carries the scale)
        kv_shape = (*shape[:2], k_t.shape[2], head_dim)
        return (
            grad_q_t.transpose(1, 2).reshape(shape),
            grad_k_t.transpose(1, 2).reshape(kv_shape),
            grad_v_t.transpose(1, 2).reshape(kv_shape),
            None,
            None,
            None,
        )


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
        bias: added to the scores, broadcasting to ``(batch, heads, time_q, time_k)``: ``0``
            where a query may look, ``-inf`` where not; every row must allow at least one key.
            ``None``: no bias.
        dropout_p: drop probability of the attention weights, or one per member of a stack:
            a tuple of ``count`` rates when ``batch`` stacks ``count`` members, outermost.
        training: apply the dropout.

    Returns:
        ``(batch, heads, time_q, d_h)``. On CUDA: ``F.scaled_dot_product_attention`` (fused
        kernels).
    """
    batch, heads, time_q, head_dim = q.shape
    rates = dropout_p if isinstance(dropout_p, tuple) else (float(dropout_p),)
    drop = training and max(rates) > 0
    autograd = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    # Without autograd and dropout the fused CPU kernel is the faster one from heads of 16
    # features on (measured: 25% faster at d_h = 32, 30% slower at d_h = 8).
    inference_kernel = not autograd and not drop and head_dim >= FUSED_CPU_HEAD_DIM
    if not eager_cpu(q) or inference_kernel:
        return _fused_attention(q, k, v, bias, rates if drop else (0.0,))
    multiplier = None
    if drop:
        count = len(rates)
        shape = (count, batch // count * heads, time_q, k.shape[2])
        multiplier = dropout_scale(shape, rates if count > 1 else rates[0], q)
        multiplier = multiplier.view(batch * heads, time_q, k.shape[2])
    scale = 1.0 / math.sqrt(head_dim)
    if autograd:
        return _Attention.apply(q, k, v, bias, multiplier, scale)
    return _attend(q.float(), k.float(), v.float(), bias, multiplier, scale)[0]


def _fused_attention(q, k, v, bias, rates: tuple[float, ...]) -> torch.Tensor:
    """:func:`attention` through ``F.scaled_dot_product_attention``, one call per distinct
    rate (members with equal rates share a call)."""
    if len(set(rates)) == 1:
        mask = None if bias is None else bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=rates[0])
    count = len(rates)
    biases = [None] * count if bias is None else list(bias.chunk(count))
    parts = [
        _fused_attention(qi, ki, vi, bi, (rate,))
        for qi, ki, vi, bi, rate in zip(
            q.chunk(count), k.chunk(count), v.chunk(count), biases, rates, strict=True
        )
    ]
    return torch.cat(parts)
