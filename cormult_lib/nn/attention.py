"""The pre-LayerNorm transformer of MulT, as stacks of independent members.

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
positions (``positional``: the tutorial's interleaved table or fairseq's, see
:mod:`cormult_lib.nn.positions`) and applies the embedding dropout (to the source too), runs the
layers and ends with a LayerNorm. One mask is drawn for the source, which feeds both the keys and
the values (one fused projection); MulT's code drops its key and value copies of the source
with a mask each. The two agree in eval mode (a departure in training only). Attention
(:class:`~cormult_lib.nn.stacked.MultiHeadAttention`) has its own query / key / value / output
projections and computes ``softmax(Q K^T / sqrt(d_head)) V`` per head
(:func:`~cormult_lib.nn.functional.attention`).

Masks (``True`` on real steps) make padding irrelevant: padded input steps are zeroed (so
garbage, even NaN, cannot leak), keys on padded steps are ignored, and the ``p``-th *valid*
step gets position ``p`` wherever the padding is, so start-padded (MulT pickles) and end-padded
(MMSA) sequences give the same outputs on their real steps. A query that may see no key at all
(a sample whose source is all padding) attends to nothing: its attention output is zero and
the residual passes ``x`` on unchanged, never NaN.

**Causal attention** (``causal=True``, off by default): a query may not see the future. With
``n_q`` valid query steps and ``n_k`` valid key steps, the query of valid rank ``i`` may see the
key of valid rank ``j`` when ``j * n_q < (i + 1) * n_k``, i.e. when the key lies before the
query's *relative* position ``(i + 1) / n_q`` in its own sequence (``causal_rule="relative"``,
the default). For self-attention (``n_q = n_k``) this is the usual ``j <= i``; the last query
always sees every key and every query sees at least the first key. MulT's code instead shifts
the diagonal by the length difference (query ``i`` sees keys ``j <= i + |time_s - time_x|``),
which coincides for equal lengths (aligned data) but lets the first of 50 queries see 451 of 500
unaligned audio steps; ``causal_rule="shifted"`` reproduces it (with valid counts ``n_q``,
``n_k`` in place of the lengths) for weights trained by that code.

**Stacks of transformers.** MulT runs six crossmodal transformers (one per direction) and three
memory transformers of the same shape. Run one after another, each of their small products and
kernels pays PyTorch's per-call overhead, which dominates at these sizes. Every module here
therefore holds ``count`` independent members (``count = 1`` is a plain transformer) built from
the layers of :mod:`cormult_lib.nn.stacked`: a weight ``W`` of ``nn.Linear(d_in, d_out)``
becomes a parameter ``(count, d_out, d_in)``, the inputs of all members arrive stacked
``(count, batch, time, d)``, and one batched product ``torch.baddbmm`` computes
``x_i W_i^T + b_i`` for every member ``i`` at once; the attention heads of all members and
samples form the batch of one attention call. Member ``i`` computes exactly what a single
transformer with its weights would (``tests/test_attention.py`` compares them). Members whose
inputs differ in length cannot share a stack; the caller passes ``members`` to run a subset.

Attention and dropout go through :mod:`cormult_lib.nn.functional` (cheaper dropout masks
and a written-out attention on the CPU; PyTorch's fused kernels on CUDA). On the CPU the layers
of a padded batch run packed to the steps real in some member (:mod:`cormult_lib.nn.packing`):
only the attention scores see the padded layout. The encoder returns the padded layout either
way; what it holds on padded steps is not defined (zeros where packing dropped the step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.nn.functional import dropout, residual_dropout
from cormult_lib.nn.packing import PackedRows, pack, unpack
from cormult_lib.nn.positions import positional_encoding, valid_ranks
from cormult_lib.nn.stacked import (
    Members,
    MultiHeadAttention,
    StackedLayerNorm,
    StackedLinear,
    attention_bias,
)

#: How a causal mask lines up queries and keys of unequal lengths (module docstring).
CAUSAL_RULES = ("relative", "shifted")


def attention_mask(
    query_mask: torch.Tensor,
    key_mask: torch.Tensor,
    causal: bool = False,
    causal_rule: str = "relative",
) -> torch.Tensor:
    """Which keys each query may attend to, ``True`` = allowed.

    Args:
        query_mask: ``(batch, time_q)`` bool, ``True`` on real query steps.
        key_mask: ``(batch, time_k)`` bool, ``True`` on real key steps.
        causal: also hide the future (see the module docstring for unequal lengths).
        causal_rule: ``"relative"`` (key rank ``j`` visible from query rank ``i`` when
            ``j * n_q < (i + 1) * n_k``) or ``"shifted"`` (MulT's code: ``j <= i + |n_k - n_q|``),
            with ``n_q``, ``n_k`` the valid steps of the row.

    Returns:
        ``(batch, 1, 1, time_k)`` without ``causal``, else ``(batch, 1, time_q, time_k)``;
        broadcasts over the heads of :class:`MultiHeadAttention`.
    """
    if causal_rule not in CAUSAL_RULES:
        raise ValueError(f"causal_rule must be one of {CAUSAL_RULES}, got {causal_rule!r}")
    allowed = key_mask[:, None, None, :]
    if not causal:
        return allowed
    n_q = query_mask.sum(dim=1).clamp(min=1)[:, None, None]
    n_k = key_mask.sum(dim=1).clamp(min=1)[:, None, None]
    query_rank = valid_ranks(query_mask)[:, :, None]
    key_rank = valid_ranks(key_mask)[:, None, :]
    if causal_rule == "relative":
        visible = key_rank * n_q < (query_rank + 1) * n_k  # (batch, time_q, time_k)
    else:
        visible = key_rank <= query_rank + (n_k - n_q).abs()
    return allowed & visible[:, None]


class TransformerBlock(nn.Module):
    """One pre-LayerNorm layer of ``count`` members: attention, then a ``d -> 4d -> d`` ReLU
    feed-forward.

    Args:
        dim: width ``d``.
        num_heads: attention heads (divide ``dim``).
        attn_dropout: dropout on the attention weights (one rate or one per member).
        relu_dropout: dropout after the ReLU of the feed-forward.
        res_dropout: dropout on both sublayer outputs before they join the residual.
        count: members.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attn_dropout: float | Sequence[float] = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        count: int = 1,
    ):
        super().__init__()
        self.attention = MultiHeadAttention(dim, num_heads, attn_dropout, count)
        self.norm_attention = StackedLayerNorm(count, dim)
        self.norm_feed_forward = StackedLayerNorm(count, dim)
        self.fc1 = StackedLinear(count, dim, 4 * dim)
        self.fc2 = StackedLinear(count, 4 * dim, dim)
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout

    def forward(
        self,
        x: torch.Tensor,
        source: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        has_key: torch.Tensor | None = None,
        members: Members = None,
        packed: PackedRows | None = None,
        source_packed: PackedRows | None = None,
    ) -> torch.Tensor:
        """``x`` ``(count, batch, time_x, d)``; ``source`` ``(count, batch, time_s, d)`` for
        crossmodal attention (``None``: self-attention); ``bias`` and ``has_key`` from
        :func:`attention_bias` (``has_key`` ``(count, batch, time_x or 1, 1)``). Returns
        ``(count, batch, time_x, d)``. With ``packed`` / ``source_packed``
        (:class:`~cormult_lib.nn.packing.PackedRows`) ``x`` and ``has_key`` / ``source`` come
        packed, ``(count, n_rows, .)``, and so does the output."""
        query = self.norm_attention(x, members)
        context = query if source is None else self.norm_attention(source, members)
        attended = self.attention(query, context, bias, members, packed, source_packed)
        if has_key is not None:
            attended = attended * has_key
        x = residual_dropout(x, attended, self.res_dropout, self.training)
        hidden = F.relu(self.fc1(self.norm_feed_forward(x, members), members))
        hidden = dropout(hidden, self.relu_dropout, self.training)
        return residual_dropout(x, self.fc2(hidden, members), self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """MulT's transformer: ``num_layers`` :class:`TransformerBlock` and a final LayerNorm, for
    ``count`` members at once.

    Args:
        dim: width ``d`` of the inputs and outputs.
        num_heads: attention heads (divide ``dim``).
        num_layers: blocks.
        attn_dropout: see :class:`TransformerBlock`; one rate or one per member.
        relu_dropout, res_dropout: see :class:`TransformerBlock`.
        embed_dropout: dropout on the inputs after scaling and positions.
        causal: hide future keys (module docstring); off by default.
        max_len: longest sequence the positional encoding covers.
        count: members (independent transformers with their own weights).
        positional: layout of the sinusoidal positions, ``"tutorial"`` (interleaved, from 0;
            the default) or ``"fairseq"`` (the official MulT's: sine half, cosine half, from
            1); see :mod:`cormult_lib.nn.positions`.
        causal_rule: how ``causal`` aligns unequal lengths, ``"relative"`` (default) or
            ``"shifted"`` (MulT's code); see :func:`attention_mask`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_layers: int,
        attn_dropout: float | Sequence[float] = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        causal: bool = False,
        max_len: int = 1024,
        count: int = 1,
        positional: str = "tutorial",
        causal_rule: str = "relative",
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if causal_rule not in CAUSAL_RULES:
            raise ValueError(f"causal_rule must be one of {CAUSAL_RULES}, got {causal_rule!r}")
        self.dim, self.causal, self.max_len, self.count = dim, causal, max_len, count
        self.positional, self.causal_rule = positional, causal_rule
        self.scale = math.sqrt(dim)
        self.positions = positional_encoding(positional, dim, max_len)  # checks ``positional``
        self.embed_dropout = embed_dropout
        self.layers = nn.ModuleList(
            TransformerBlock(dim, num_heads, attn_dropout, relu_dropout, res_dropout, count)
            for _ in range(num_layers)
        )
        self.norm = StackedLayerNorm(count, dim)

    def _stacked(
        self, x: torch.Tensor, mask: torch.Tensor | None, name: str, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` as ``(count, batch, time, d)`` and its mask ``(count, batch, time)``."""
        if x.ndim == 3 and count == 1:
            x = x[None]
            mask = None if mask is None else mask[None]
        if x.ndim != 4 or x.shape[0] != count or x.shape[3] != self.dim:
            expected = f"({count}, batch, time, {self.dim})"
            if count == 1:
                expected = f"(batch, time, {self.dim}) or {expected}"
            raise ValueError(f"{name} must be {expected}, got {tuple(x.shape)}")
        if x.shape[2] > self.max_len:
            raise ValueError(
                f"{name} has {x.shape[2]} steps, more than max_len={self.max_len} of the "
                "positional encoding; build the model with a larger max_len"
            )
        if mask is None:
            return x, torch.ones(x.shape[:3], dtype=torch.bool, device=x.device)
        if mask.dtype != torch.bool or mask.shape != x.shape[:3]:
            label = "mask" if name == "x" else "source_mask"
            raise ValueError(
                f"{label} must be bool {tuple(x.shape[:3])} (True = real step), got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        return x, mask

    def _embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``sqrt(d) * x + PE(valid rank)`` with padded steps zeroed, then embedding dropout."""
        x = torch.where(mask[..., None], x, 0.0)
        embedded = x * self.scale + self.positions(valid_ranks(mask))
        return dropout(embedded, self.embed_dropout, self.training)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        members: Members = None,
    ) -> torch.Tensor:
        """Encode ``x``, attending to itself or, when given, to ``source``.

        Args:
            x: queries ``(count, batch, time_x, d)`` (the target modality for crossmodal
                attention), or ``(batch, time_x, d)`` for a single transformer.
            mask: ``(count, batch, time_x)`` (or ``(batch, time_x)``) bool, ``True`` on real
                steps; ``None``: all real.
            source: keys and values ``(count, batch, time_s, d)``; ``None``: self-attention.
            source_mask: bool mask of ``source``; ``None``: all real.
            members: run only these members (``x`` then stacks ``len(members)``); ``None``:
                all ``count``.

        Returns:
            The shape of ``x``. Outputs on padded steps of ``x`` are finite but meaningless.
        """
        count = self.count if members is None else len(members)
        single = x.ndim == 3
        unmasked = mask is None and source_mask is None
        x, mask = self._stacked(x, mask, "x", count)
        batch = x.shape[1]
        h = self._embed(x, mask)
        context, context_mask = None, mask
        if source is not None:
            source, context_mask = self._stacked(source, source_mask, "source", count)
            if source.shape[1] != batch:
                raise ValueError(
                    f"source has batch size {source.shape[1]}, x has {batch}; they must match"
                )
            context = self._embed(source, context_mask)
        if not unmasked and x.device.type == "cpu":
            # No step is padding: the same function without a mask, one pass less over the
            # scores (checked on the CPU only, where reading the masks costs no sync).
            unmasked = bool(mask.all()) and bool(context_mask.all())
        bias = has_key = None
        if unmasked and self.causal:
            # Every sample has the same causal pattern: one (1, 1, time_x, time_s) bias.
            whole_x = torch.ones(1, x.shape[2], dtype=torch.bool, device=x.device)
            whole_s = torch.ones(1, context_mask.shape[2], dtype=torch.bool, device=x.device)
            bias, _ = attention_bias(
                attention_mask(whole_x, whole_s, causal=True, causal_rule=self.causal_rule)
            )
        elif not unmasked:
            allowed = attention_mask(
                mask.flatten(0, 1), context_mask.flatten(0, 1), self.causal, self.causal_rule
            )  # (count * batch, 1, time_x or 1, time_s)
            bias, has_key = attention_bias(allowed)
            has_key = has_key.view(count, batch, *has_key.shape[1:])
        # Per-step layers run on the real steps only (cormult_lib.nn.packing): padded queries'
        # outputs are never read, padded keys never attended to.
        packed = source_packed = None
        if not unmasked:
            packed = PackedRows.of(mask)
            source_packed = packed if source is None else PackedRows.of(context_mask)
            h, context = pack(h, packed), None if context is None else pack(context, source_packed)
            has_key = pack(has_key.expand(count, batch, x.shape[2], 1), packed)
        for layer in self.layers:
            h = layer(h, context, bias, has_key, members, packed, source_packed)
        out = unpack(self.norm(h, members), packed)
        return out[0] if single else out
