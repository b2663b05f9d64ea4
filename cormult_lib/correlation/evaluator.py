"""The Modality Correlation Evaluator (MCE) of CorMulT section 3.2.3 (Fig. 3).

Per modality ``m`` of the two or three present (T text, A audio, V vision):

1. **Modality transformation** (:class:`ModalityTransformation`): ``F_m`` -> ``F'_m`` of shape
   ``(batch, time, d)``: ``Linear(d_in -> d)`` for float features or
   ``Embedding(vocab_size, d, padding_idx=0)`` for text token ids, times ``sqrt(d)``, plus a
   sinusoidal positional encoding (:class:`SinusoidalPositionalEncoding`).
2. **Transformer encoding** (:class:`EncoderLayer`, ``num_layers`` of them), exactly Eq. 4-7::

       X1 = LayerNorm(X)                            (4)
       X2 = MultiheadAttention(Q, K, V: X1)         (5)
       X3 = LayerNorm(X1 + X2)                      (6)
       X_out = X3 + FeedForward(X3)                 (7)

   Note the residual of Eq. 6 starts from the *normalised* ``X1``, not from the layer input
   ``X`` as in the usual pre-norm Transformer (``X + Attention(LayerNorm(X))``); we implement
   what the equations say.
3. **Cross-attention** (:class:`CrossModalAttention`): the sequence of ``m`` (query) attends to
   the concatenated sequences of the other present modalities (keys and values, with their
   padding masks): ``Y = LayerNorm(H_m + Attention(H_m, H_others))``, then the feed-forward
   layers ``Z = LayerNorm(Y + FeedForward(Y))``. ``cross_attention=False`` drops this step,
   which is what the authors' public code does (every modality encoded on its own).
4. **Mapping into the shared correlation space** ``R^{t x o}``: the time axis to ``t`` steps by
   masked average pooling of the valid steps into ``t`` equal bins (:func:`masked_time_pool`),
   the feature axis by ``Linear(d -> o)``.

Padding never changes the output: padded input steps are zeroed before anything else (so
garbage, even NaN, cannot leak), attention ignores padded keys, positions count *valid* steps
(start-padded MulT and end-padded MMSA sequences give the same embedding) and pooling uses only
valid steps. A sample with no valid step in a modality gets a zero embedding for it.

:meth:`ModalityCorrelationEvaluator.coefficients` turns the embeddings into the pairwise
coefficients ``Cor_{T,A}``, ``Cor_{T,V}``, ``Cor_{A,V}`` with a
:class:`~cormult_lib.correlation.distances.Distance`.

The modalities' encoders have the same shape, so each layer holds one *member* per modality
(:mod:`cormult_lib.nn.stacked`) and computes all of them in one batched call; modalities of
different lengths run as separate groups of members; on the CPU their per-step layers run on
the steps that some member attends to (:mod:`cormult_lib.nn.packing`). ``tests/test_equivalence.py``
checks the outputs and gradients against the per-modality implementation this replaced and
against the padded computation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.config import CorrelationConfig
from cormult_lib.correlation.distances import Distance, get_distance, present_pairs
from cormult_lib.modalities import parse_modalities
from cormult_lib.nn.checks import check_inputs
from cormult_lib.nn.functional import dropout, residual_dropout
from cormult_lib.nn.packing import PackedRows, pack, unpack
from cormult_lib.nn.positions import SinusoidalPositionalEncoding, valid_ranks
from cormult_lib.nn.stacked import (
    Members,
    MultiHeadAttention,
    StackedLayerNorm,
    StackedLinear,
    attention_bias,
    stack_groups,
)

__all__ = [
    "CrossModalAttention",
    "EncoderLayer",
    "FeedForward",
    "ModalityCorrelationEvaluator",
    "ModalityTransformation",
    "SinusoidalPositionalEncoding",
    "attendable",
    "key_bias",
    "masked_time_pool",
]


class ModalityTransformation(nn.Module):
    """``F_m`` -> ``F'_m = sqrt(d) * embed(F_m) + PE`` of shape ``(batch, time, d)``.

    Args:
        input_dim: feature size of float features ``(batch, time, input_dim)``; ignored when
            ``vocab_size`` is given.
        dim: hidden size ``d``.
        vocab_size: token ids ``(batch, time)`` in ``[0, vocab_size)`` (0 = <pad>) are embedded
            with ``nn.Embedding(vocab_size, d, padding_idx=0)`` instead of a linear layer.
        max_len: longest sequence the positional encoding covers.
        dropout: dropout on the result.
    """

    def __init__(
        self,
        input_dim: int,
        dim: int,
        vocab_size: int | None = None,
        max_len: int = 1024,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.embed: nn.Module = (
            nn.Linear(input_dim, dim)
            if vocab_size is None
            else nn.Embedding(vocab_size, dim, padding_idx=0)
        )
        self.scale = math.sqrt(dim)
        self.positions = SinusoidalPositionalEncoding(dim, max_len)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, packed: PackedRows | None = None
    ) -> torch.Tensor:
        """``x``: ``(batch, time, d_in)`` floats or ``(batch, time)`` ids; ``mask``: ``(batch,
        time)`` bool, ``True`` on real steps. Padded steps are zeroed (id 0) before embedding.
        Returns ``(batch, time, d)``, or ``(n_rows, d)`` packed by ``packed``
        (:mod:`cormult_lib.nn.packing`)."""
        if x.shape[1] > self.max_len:
            raise ValueError(
                f"sequence of {x.shape[1]} steps exceeds max_len={self.max_len} of the positional "
                "encoding; build the evaluator with a larger max_len"
            )
        if self.vocab_size is None:
            h = self.embed(pack(torch.where(mask[..., None], x, 0.0), packed))
        else:
            h = pack(self.embed(torch.where(mask, x, 0)), packed)
        # The p-th *valid* step gets position p, wherever the padding is.
        embedded = h * self.scale + pack(self.positions(valid_ranks(mask)), packed)
        return dropout(embedded, self.dropout, self.training)


class FeedForward(nn.Module):
    """``Linear(d -> ff) -> ReLU -> Dropout -> Linear(ff -> d) -> Dropout`` per time step, for
    ``count`` members: ``(count, ..., d)`` -> the same shape."""

    def __init__(self, dim: int, ff_dim: int, dropout: float = 0.1, count: int = 1):
        super().__init__()
        self.linear1 = StackedLinear(count, dim, ff_dim)
        self.linear2 = StackedLinear(count, ff_dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, members: Members = None) -> torch.Tensor:
        hidden = dropout(F.relu(self.linear1(x, members)), self.dropout, self.training)
        return dropout(self.linear2(hidden, members), self.dropout, self.training)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


class _AttentionBlock(nn.Module):
    """What both layers below hold, for ``count`` members of width ``dim``: multi-head attention
    (dropout ``attn_dropout`` on its weights, default ``dropout``), the LayerNorm after it and
    the feed-forward network."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        attn_dropout: float | None = None,
        count: int = 1,
    ):
        super().__init__()
        self.attention = MultiHeadAttention(dim, num_heads, _or(attn_dropout, dropout), count)
        self.dropout = dropout
        self.norm_attention = StackedLayerNorm(count, dim)
        self.feed_forward = FeedForward(dim, ff_dim, dropout, count)


class EncoderLayer(_AttentionBlock):
    """One transformer encoding layer written as Eq. 4-7 (see the module docstring), for
    ``count`` members (the evaluator's modalities, each with its own weights).

    ``forward(x (count, batch, time, d), bias)`` -> the same shape; ``bias`` is the additive
    attention mask of :func:`attention_bias` ``(count * batch, 1, 1, time)``. With ``packed``
    (:class:`~cormult_lib.nn.packing.PackedRows`) ``x`` comes and goes packed,
    ``(count, n_rows, d)``: only attention's scores see the padded layout. Attention is
    :class:`~cormult_lib.nn.stacked.MultiHeadAttention`, the function of
    ``nn.MultiheadAttention``. ``attn_dropout`` (dropout on the attention weights)
    defaults to ``dropout``.
    """

    def __init__(self, dim: int, *args: Any, count: int = 1, **kwargs: Any):
        """Arguments as :class:`_AttentionBlock`'s (``num_heads``, ``ff_dim``, ``dropout``,
        ``attn_dropout``), plus the LayerNorm of Eq. 4."""
        super().__init__(dim, *args, count=count, **kwargs)
        self.norm_input = StackedLayerNorm(count, dim)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        members: Members = None,
        packed: PackedRows | None = None,
    ) -> torch.Tensor:
        x1 = self.norm_input(x, members)  # Eq. 4
        x2 = self.attention(x1, x1, bias, members, packed)  # Eq. 5
        # Eq. 6, X2 after dropout: the residual is X1, not X
        x3 = self.norm_attention(residual_dropout(x1, x2, self.dropout, self.training), members)
        return x3 + self.feed_forward(x3, members)  # Eq. 7


class CrossModalAttention(_AttentionBlock):
    """Query one modality, keys/values the other modalities; residual + LayerNorm, then FFN.

    ``forward(query (count, batch, time_q, d), context (count, batch, time_c, d), bias
    (count * batch, 1, 1, time_c))`` -> ``(count, batch, time_q, d)``; one member per modality.
    ``packed`` / ``context_packed``: ``query`` / ``context`` come packed (as in
    :class:`EncoderLayer`); the output has the layout of ``query``.
    """

    def __init__(self, dim: int, *args: Any, count: int = 1, **kwargs: Any):
        """Arguments as :class:`_AttentionBlock`'s, plus the LayerNorm after the FFN."""
        super().__init__(dim, *args, count=count, **kwargs)
        self.norm_output = StackedLayerNorm(count, dim)

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor,
        bias: torch.Tensor,
        members: Members = None,
        packed: PackedRows | None = None,
        context_packed: PackedRows | None = None,
    ) -> torch.Tensor:
        attended = self.attention(query, context, bias, members, packed, context_packed)
        y = self.norm_attention(
            residual_dropout(query, attended, self.dropout, self.training), members
        )
        return self.norm_output(y + self.feed_forward(y, members), members)


def masked_time_pool(x: torch.Tensor, mask: torch.Tensor, bins: int) -> torch.Tensor:
    """Average the valid steps of ``x`` ``(batch, time, d)`` into ``bins`` equal bins.

    With ``L`` valid steps (``mask`` ``(batch, time)``, anywhere in the sequence), the ``k``-th
    valid step (``k = 0..L-1``) falls into bin ``floor(k * bins / L)``; bin sizes differ by at
    most one and every bin is the mean of its steps. When ``L < bins`` steps repeat: bin ``j``
    is the step ``floor(j * L / bins)``. ``L = 0`` gives zeros. Returns ``(batch, bins, d)``.
    """
    length = mask.sum(dim=1)  # (batch,)
    rank = mask.long().cumsum(dim=1) - 1  # index among valid steps, (batch, time)
    safe_length = length.clamp(min=1)[:, None]
    bin_index = torch.arange(bins, device=x.device)
    step_bin = (rank.clamp(min=0) * bins) // safe_length  # (batch, time)
    pooled = step_bin[:, None, :] == bin_index[None, :, None]  # (batch, bins, time)
    bin_step = (bin_index[None, :] * safe_length) // bins  # (batch, bins)
    repeated = rank[:, None, :] == bin_step[:, :, None]  # (batch, bins, time)
    weights = torch.where((length >= bins)[:, None, None], pooled, repeated) & mask[:, None, :]
    weights = weights.to(x.dtype)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1)
    return weights @ x


def attendable(mask: torch.Tensor) -> torch.Tensor:
    """The steps that serve as keys: ``mask`` ``(..., time)`` bool, plus the first step of
    every row without a valid step.

    A row with no valid step keeps its first step as the one key, so softmax never sees a row
    of ``-inf`` (no NaN). Padded inputs are zeroed, so that key is a fixed "empty" vector and
    the result does not depend on how much padding there is.
    """
    first = torch.zeros_like(mask)
    first[..., 0] = ~mask.any(dim=-1)
    return mask | first


def key_bias(mask: torch.Tensor) -> torch.Tensor:
    """The additive attention mask over keys with validity mask ``mask`` ``(n, time)``:
    ``(n, 1, 1, time)``, ``0`` on the :func:`attendable` steps and ``-inf`` elsewhere."""
    bias, _ = attention_bias(attendable(mask)[:, None, None, :])  # every row has a key
    return bias


class ModalityCorrelationEvaluator(nn.Module):
    """The MCE: features of two or three modalities -> embeddings ``(batch, t, o)`` each.

    Args:
        input_dims: modality letter -> feature size ``d_in`` (``"T"``, ``"A"``, ``"V"``; two or
            three of them). ``input_dims["T"]`` is ignored when ``vocab_size`` is given.
        hidden_dim: ``d`` (authors: 128).
        num_layers: encoder layers per modality (paper: 3).
        num_heads: attention heads (authors: 4); must divide ``hidden_dim``.
        ff_dim: feed-forward width (authors: 256).
        dropout: dropout everywhere (authors: 0.1).
        attn_dropout: dropout on the attention weights; ``None``: ``dropout``, as
            ``nn.TransformerEncoderLayer`` and the authors' code.
        shared_time: ``t`` of the shared space (paper: 64).
        shared_dim: ``o`` of the shared space (paper: 200).
        vocab_size: text comes as token ids ``(batch, time)`` int64 (0 = <pad>) embedded with
            ``nn.Embedding(vocab_size, d, padding_idx=0)``; ``None``: text is float features.
            Only applies when ``"T"`` is present.
        max_len: longest input sequence (positional encoding).
        cross_attention: the cross-attention layer of Fig. 3 (``False``: authors' code).
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        hidden_dim: int = 128,
        num_layers: int = 3,
        num_heads: int = 4,
        ff_dim: int = 256,
        dropout: float = 0.1,
        attn_dropout: float | None = None,
        shared_time: int = 64,
        shared_dim: int = 200,
        vocab_size: int | None = None,
        max_len: int = 1024,
        cross_attention: bool = True,
    ):
        super().__init__()
        self.modalities = parse_modalities(list(input_dims), min_count=2)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} must be divisible by num_heads={num_heads}")
        for name, value in {
            "num_layers": num_layers,
            "shared_time": shared_time,
            "shared_dim": shared_dim,
            "max_len": max_len,
        }.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if vocab_size is not None and vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (0 = <pad>, 1 = <unk>), got {vocab_size}")
        self.input_dims = {m: int(input_dims[m]) for m in self.modalities}
        self.vocab_size = vocab_size if "T" in self.modalities else None
        self.id_modalities = ("T",) if self.vocab_size is not None else ()
        self.hidden_dim, self.num_layers, self.num_heads = hidden_dim, num_layers, num_heads
        self.ff_dim, self.dropout = ff_dim, dropout
        self.attn_dropout = _or(attn_dropout, dropout)
        self.shared_time, self.shared_dim = shared_time, shared_dim
        self.cross_attention = cross_attention
        self.transformations = nn.ModuleDict(
            {
                m: ModalityTransformation(
                    self.input_dims[m],
                    hidden_dim,
                    vocab_size=self.vocab_size if m == "T" else None,
                    max_len=max_len,
                    dropout=dropout,
                )
                for m in self.modalities
            }
        )
        # One stack member per modality (member i: self.modalities[i]), see
        # cormult_lib.nn.stacked: the modalities' encoders run as one batched computation.
        count = len(self.modalities)
        self.encoders = nn.ModuleList(
            EncoderLayer(hidden_dim, num_heads, ff_dim, dropout, self.attn_dropout, count=count)
            for _ in range(num_layers)
        )
        self.cross = (
            CrossModalAttention(
                hidden_dim, num_heads, ff_dim, dropout, self.attn_dropout, count=count
            )
            if cross_attention
            else None
        )
        self.projections = StackedLinear(count, hidden_dim, shared_dim)

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Embeddings in the shared correlation space.

        Args:
            features: modality -> ``(batch, time, d_in)`` floats, or ``(batch, time)`` int64 ids
                for text when ``vocab_size`` is set. Times may differ between modalities.
            masks: modality -> bool ``(batch, time)``, ``True`` on real steps (all real when
                missing).

        Returns:
            modality -> ``(batch, shared_time, shared_dim)``; zeros for a sample with no valid
            step in that modality.
        """
        masks = check_inputs(
            features, masks, self.input_dims, self.id_modalities, self.vocab_size, exact=True
        )
        hidden = {}
        for group in stack_groups({m: masks[m].shape[1] for m in self.modalities}):
            group_masks = torch.stack([masks[m] for m in group])  # (len(group), batch, time)
            # Per-step layers run on the steps some member attends to (nn.packing).
            packed = PackedRows.of(attendable(group_masks))
            h = torch.stack([self.transformations[m](features[m], masks[m], packed) for m in group])
            bias = key_bias(group_masks.flatten(0, 1))  # (len(group) * batch, ...)
            members = self._members(group)
            for layer in self.encoders:
                h = layer(h, bias, members, packed)  # (len(group), batch, time, d) or packed
            hidden.update(zip(group, unpack(h, packed), strict=True))
        if self.cross is not None:
            hidden = self._attend_others(hidden, masks)
        out = {}
        for group in stack_groups({m: masks[m].shape[1] for m in self.modalities}):
            h = torch.stack([hidden[m] for m in group])  # (len(group), batch, time, d)
            members = self._members(group)
            # Pooling and the projection are linear and the weights of every bin sum to 1, so
            # their order does not change the result: project whichever has fewer steps.
            project_first = h.shape[2] < self.shared_time
            if project_first:
                packed = PackedRows.of(torch.stack([masks[m] for m in group]))
                h = unpack(self.projections(pack(h, packed), members), packed)
            pooled = torch.stack(
                [
                    masked_time_pool(x, masks[m], self.shared_time)
                    for m, x in zip(group, h, strict=True)
                ]
            )  # (len(group), batch, t, d), or o when projected first
            if not project_first:
                pooled = self.projections(pooled, members)
            for m, e in zip(group, pooled, strict=True):
                out[m] = e * masks[m].any(dim=1)[:, None, None]
        return out

    def _members(self, group: list[str]) -> list[int] | None:
        """Stack indices of the modalities in ``group`` (``None``: all, in order)."""
        if len(group) == len(self.modalities):
            return None
        return [self.modalities.index(m) for m in group]

    def _attend_others(
        self, hidden: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The cross-attention step: each modality queries the concatenation of the others."""
        others = {m: [o for o in self.modalities if o != m] for m in self.modalities}
        contexts = {m: torch.cat([hidden[o] for o in others[m]], dim=1) for m in self.modalities}
        context_masks = {m: torch.cat([masks[o] for o in others[m]], dim=1) for m in others}
        lengths = {m: (masks[m].shape[1], context_masks[m].shape[1]) for m in self.modalities}
        out = {}
        for group in stack_groups(lengths):
            # Queries and keys packed to the steps attended to (nn.packing): a padded query's
            # output is never read, an empty context's first step is its one key.
            packed = PackedRows.of(attendable(torch.stack([masks[m] for m in group])))
            context_mask = torch.stack([context_masks[m] for m in group])
            context_packed = PackedRows.of(attendable(context_mask))
            attended = self.cross(
                pack(torch.stack([hidden[m] for m in group]), packed),
                pack(torch.stack([contexts[m] for m in group]), context_packed),
                key_bias(context_mask.flatten(0, 1)),
                self._members(group),
                packed,
                context_packed,
            )
            out.update(zip(group, unpack(attended, packed), strict=True))
        return out

    def coefficients(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
        distance: str | Distance = "cosine",
    ) -> dict[tuple[str, str], torch.Tensor]:
        """Pair (``("T", "A")``, ``("T", "V")``, ``("A", "V")`` as present) -> ``Cor`` ``(batch,)``.

        ``distance`` is a name from :data:`~cormult_lib.correlation.distances.DISTANCES` or a
        (fitted) :class:`~cormult_lib.correlation.distances.Distance`; ``Cor`` is its
        :meth:`~cormult_lib.correlation.distances.Distance.similarity`. A sample missing one of
        the two modalities (zero embedding) gets ``Cor = 0`` under cosine.
        """
        measure = get_distance(distance)
        embeddings = self(features, masks)
        return {
            (a, b): measure.similarity(embeddings[a], embeddings[b])
            for a, b in present_pairs(self.modalities)
        }

    def parameter_table(self) -> pd.DataFrame:
        """Parameter counts: one row per modality, one column per block, plus totals."""
        count = len(self.modalities)

        def per_member(module: nn.Module | None) -> int:
            """A stacked block's parameters per modality (every member has the same size)."""
            return 0 if module is None else sum(p.numel() for p in module.parameters()) // count

        rows = {
            m: {
                "transformation": sum(p.numel() for p in self.transformations[m].parameters()),
                "encoder": per_member(self.encoders),
                "cross_attention": per_member(self.cross),
                "projection": per_member(self.projections),
            }
            for m in self.modalities
        }
        table = pd.DataFrame.from_dict(rows, orient="index")
        table["total"] = table.sum(axis=1)
        table.loc["total"] = table.sum(axis=0)
        table.index.name = "modality"
        return table

    def describe(self) -> str:
        """Hyperparameters and the parameter table, for printing."""
        text = "ids" if self.vocab_size is not None else "features"
        header = (
            f"ModalityCorrelationEvaluator({'+'.join(self.modalities)}; hidden {self.hidden_dim}, "
            f"{self.num_layers} layers, {self.num_heads} heads, ff {self.ff_dim}, dropout "
            f"{self.dropout} (attention {self.attn_dropout}); shared space (t, o) = "
            f"({self.shared_time}, {self.shared_dim}); "
            f"cross-attention {'on' if self.cross_attention else 'off'}"
            + (f"; text as {text}, vocab {self.vocab_size}" if "T" in self.modalities else "")
            + ")"
        )
        table = self.parameter_table()
        total = int(table.loc["total", "total"])
        return f"{header}\n{table.to_string()}\n{total:,} parameters"


def evaluator_arguments(config: CorrelationConfig) -> dict:
    """:class:`~cormult_lib.correlation.evaluator.ModalityCorrelationEvaluator`'s keyword
    arguments for the sizes of a :class:`~cormult_lib.config.CorrelationConfig`."""
    return {
        "hidden_dim": config.hidden_dim,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "ff_dim": config.ff_dim,
        "dropout": config.dropout,
        "shared_time": config.shared_time,
        "shared_dim": config.shared_dim,
    }


def build_evaluator(
    input_dims: Mapping[str, int],
    config: CorrelationConfig,
    vocab_size: int | None = None,
    max_len: int = 1024,
    cross_attention: bool = True,
) -> ModalityCorrelationEvaluator:
    """An untrained :class:`ModalityCorrelationEvaluator` over ``input_dims`` with the sizes of
    ``config`` (a profile's ``correlation`` section), as :func:`~cormult_lib.models.mult.build_mult`
    builds MulT from ``model``."""
    return ModalityCorrelationEvaluator(
        dict(input_dims),
        **evaluator_arguments(config),
        vocab_size=vocab_size,
        max_len=max_len,
        cross_attention=cross_attention,
    )
