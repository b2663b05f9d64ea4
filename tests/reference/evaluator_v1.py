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
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from cormult_lib.correlation.distances import Distance, get_distance, present_pairs
from cormult_lib.modalities import MODALITY_NAMES, parse_modalities


class SinusoidalPositionalEncoding(nn.Module):
    """``pe[p, 2i] = sin(p / 10000^(2i/d))``, ``pe[p, 2i+1] = cos(p / 10000^(2i/d))``.

    ``forward(positions)`` maps integer positions ``(batch, time)`` to ``(batch, time, d)``.
    """

    def __init__(self, dim: int, max_len: int = 1024):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float64)[:, None]
        frequency = torch.exp(
            -math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim
        )
        pe = torch.zeros(max_len, dim, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(position * frequency)
        pe[:, 1::2] = torch.cos(position * frequency[: dim // 2])
        self.register_buffer("pe", pe.float(), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.pe[positions]


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
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, time, d_in)`` floats or ``(batch, time)`` ids; ``mask``: ``(batch,
        time)`` bool, ``True`` on real steps. Padded steps are zeroed (id 0) before embedding."""
        if x.shape[1] > self.max_len:
            raise ValueError(
                f"sequence of {x.shape[1]} steps exceeds max_len={self.max_len} of the positional "
                "encoding; build the evaluator with a larger max_len"
            )
        if self.vocab_size is None:
            h = self.embed(torch.where(mask[..., None], x, 0.0))
        else:
            h = self.embed(torch.where(mask, x, 0))
        # The p-th *valid* step gets position p, wherever the padding is.
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return self.dropout(h * self.scale + self.positions(positions))


class FeedForward(nn.Sequential):
    """``Linear(d -> ff) -> ReLU -> Dropout -> Linear(ff -> d) -> Dropout`` per time step."""

    def __init__(self, dim: int, ff_dim: int, dropout: float = 0.1):
        super().__init__(
            nn.Linear(dim, ff_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, dim),
            nn.Dropout(dropout),
        )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


class EncoderLayer(nn.Module):
    """One transformer encoding layer written as Eq. 4-7 (see the module docstring).

    ``forward(x (batch, time, d), key_padding_mask (batch, time) True = padding)`` ->
    ``(batch, time, d)``. Attention is ``nn.MultiheadAttention`` (batch first, no weights
    returned), so it runs PyTorch's fused kernels. ``attention_dropout`` (dropout on the
    attention weights) defaults to ``dropout``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
    ):
        super().__init__()
        self.norm_input = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(
            dim, num_heads, dropout=_or(attention_dropout, dropout), batch_first=True
        )
        self.dropout = nn.Dropout(dropout)
        self.norm_attention = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, ff_dim, dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        x1 = self.norm_input(x)  # Eq. 4
        x2 = self.attention(x1, x1, x1, key_padding_mask=key_padding_mask, need_weights=False)[
            0
        ]  # Eq. 5
        x3 = self.norm_attention(x1 + self.dropout(x2))  # Eq. 6: the residual is X1, not X
        return x3 + self.feed_forward(x3)  # Eq. 7


class CrossModalAttention(nn.Module):
    """Query one modality, keys/values the other modalities; residual + LayerNorm, then FFN.

    ``forward(query (batch, time_q, d), context (batch, time_c, d), context_padding_mask
    (batch, time_c) True = padding)`` -> ``(batch, time_q, d)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
    ):
        super().__init__()
        self.attention = nn.MultiheadAttention(
            dim, num_heads, dropout=_or(attention_dropout, dropout), batch_first=True
        )
        self.dropout = nn.Dropout(dropout)
        self.norm_attention = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, ff_dim, dropout)
        self.norm_output = nn.LayerNorm(dim)

    def forward(
        self, query: torch.Tensor, context: torch.Tensor, context_padding_mask: torch.Tensor
    ) -> torch.Tensor:
        attended = self.attention(
            query, context, context, key_padding_mask=context_padding_mask, need_weights=False
        )[0]
        y = self.norm_attention(query + self.dropout(attended))
        return self.norm_output(y + self.feed_forward(y))


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


def _padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """``key_padding_mask`` (True = ignore) from a validity mask ``(batch, time)``.

    A row with no valid step keeps its first step as the one key, so softmax never sees a row
    of ``-inf`` (no NaN). Padded inputs are zeroed, so that key is a fixed "empty" vector and
    the result does not depend on how much padding there is.
    """
    empty = ~mask.any(dim=1, keepdim=True)
    first = torch.zeros_like(mask)
    first[:, :1] = empty
    return ~(mask | first)


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
        attention_dropout: dropout on the attention weights; ``None``: ``dropout``, as
            ``nn.TransformerEncoderLayer`` and the authors' code. On CPU, 0.0 is about a third
            faster in training: with dropout on the weights attention leaves the fused kernel
            for the unfused ("math") path.
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
        attention_dropout: float | None = None,
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
        self.hidden_dim, self.num_layers, self.num_heads = hidden_dim, num_layers, num_heads
        self.ff_dim, self.dropout = ff_dim, dropout
        self.attention_dropout = _or(attention_dropout, dropout)
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
        self.encoders = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    EncoderLayer(hidden_dim, num_heads, ff_dim, dropout, self.attention_dropout)
                    for _ in range(num_layers)
                )
                for m in self.modalities
            }
        )
        self.cross = nn.ModuleDict(
            {
                m: CrossModalAttention(
                    hidden_dim, num_heads, ff_dim, dropout, self.attention_dropout
                )
                for m in self.modalities
            }
            if cross_attention
            else {}
        )
        self.projections = nn.ModuleDict(
            {m: nn.Linear(hidden_dim, shared_dim) for m in self.modalities}
        )

    def _is_ids(self, m: str) -> bool:
        return m == "T" and self.vocab_size is not None

    def _check_inputs(
        self, features: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """Validate shapes and dtypes; returns the masks (all ``True`` where none was given)."""
        if set(features) != set(self.modalities):
            raise ValueError(
                f"evaluator was built for modalities {''.join(self.modalities)}, got features "
                f"for {''.join(sorted(features))}"
            )
        masks = dict(masks or {})
        batch = {features[m].shape[0] for m in self.modalities}
        if len(batch) != 1:
            raise ValueError(f"features have different batch sizes: {sorted(batch)}")
        for m in self.modalities:
            x = features[m]
            name = f"features[{m!r}] ({MODALITY_NAMES[m]})"
            if self._is_ids(m):
                if x.ndim != 2 or x.is_floating_point():
                    raise ValueError(
                        f"{name} must be integer token ids (batch, time) since vocab_size is set; "
                        f"got {x.dtype} {tuple(x.shape)}"
                    )
            elif x.ndim != 3 or x.shape[2] != self.input_dims[m] or not x.is_floating_point():
                hint = " (token ids need vocab_size)" if x.ndim == 2 else ""
                raise ValueError(
                    f"{name} must be float (batch, time, {self.input_dims[m]}); got {x.dtype} "
                    f"{tuple(x.shape)}{hint}"
                )
            mask = masks.get(m)
            if mask is None:
                masks[m] = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            elif mask.dtype != torch.bool or mask.shape != x.shape[:2]:
                raise ValueError(
                    f"masks[{m!r}] must be bool {tuple(x.shape[:2])} (True = real step), got "
                    f"{mask.dtype} {tuple(mask.shape)}"
                )
            if self._is_ids(m) and x.numel():
                valid = torch.where(masks[m], x, 0)
                low, high = torch.stack([valid.min(), valid.max()]).tolist()
                if low < 0 or high >= self.vocab_size:
                    raise ValueError(
                        f"{name} holds ids in [{low}, {high}] on real steps, outside "
                        f"[0, {self.vocab_size}); vocab_size must be the size of the vocabulary "
                        "that encoded them"
                    )
        return masks

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
        masks = self._check_inputs(features, masks)
        hidden = {}
        for m in self.modalities:
            h = self.transformations[m](features[m], masks[m])
            padding = _padding_mask(masks[m])
            for layer in self.encoders[m]:
                h = layer(h, padding)
            hidden[m] = h
        if self.cross_attention:
            hidden = {m: self._attend_others(m, hidden, masks) for m in self.modalities}
        out = {}
        for m in self.modalities:
            pooled = masked_time_pool(hidden[m], masks[m], self.shared_time)
            present = masks[m].any(dim=1)[:, None, None]
            out[m] = self.projections[m](pooled) * present
        return out

    def _attend_others(
        self, m: str, hidden: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        others = [o for o in self.modalities if o != m]
        context = torch.cat([hidden[o] for o in others], dim=1)
        context_mask = torch.cat([masks[o] for o in others], dim=1)
        return self.cross[m](hidden[m], context, _padding_mask(context_mask))

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
        blocks = {
            "transformation": self.transformations,
            "encoder": self.encoders,
            "cross_attention": self.cross,
            "projection": self.projections,
        }
        rows = {
            m: {
                name: sum(p.numel() for p in block[m].parameters()) if m in block else 0
                for name, block in blocks.items()
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
            f"{self.dropout} (attention {self.attention_dropout}); shared space (t, o) = "
            f"({self.shared_time}, {self.shared_dim}); "
            f"cross-attention {'on' if self.cross_attention else 'off'}"
            + (f"; text as {text}, vocab {self.vocab_size}" if "T" in self.modalities else "")
            + ")"
        )
        table = self.parameter_table()
        total = int(table.loc["total", "total"])
        return f"{header}\n{table.to_string()}\n{total:,} parameters"
