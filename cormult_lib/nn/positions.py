"""Positions of the tutorial's transformers: sinusoidal encodings of *valid* step ranks.

Two layouts of the sinusoidal table are available; both map the rank ``p`` (0-based) of a valid
step to a fixed vector of ``d`` channels, built from sines and cosines of ``p`` at geometrically
spaced frequencies. They differ in the order of the channels, the frequencies and where the
count starts, so weights trained with one do not fit the other (outputs of the official MulT's
weights differ by up to 0.05 with the wrong one).

``"tutorial"`` (:class:`SinusoidalPositionalEncoding`, the default everywhere), the formula of
"Attention Is All You Need" (section 3.5), sine and cosine **interleaved**, counted from 0::

    pe[p, 2i]     = sin(p / 10000^(2i / d))
    pe[p, 2i + 1] = cos(p / 10000^(2i / d))

``"fairseq"`` (:func:`fairseq_sinusoidal_table`, :class:`FairseqPositionalEncoding`), the table
of tensor2tensor / fairseq that the official MulT code (``modules/position_embedding.py``)
uses: with ``h = d // 2`` and ``w_i = exp(-i * log(10000) / (h - 1))`` for ``i < h``, sines in
the **first half** of the channels and cosines in the second, then a zero column when ``d`` is
odd; row 0 is the padding row (all zeros) and positions count from 1::

    table[n, i]     = sin(n * w_i)          n = p + 1 for the step of valid rank p
    table[n, h + i] = cos(n * w_i)
    table[0, :]     = 0

Why the tutorial keeps its own layout as the default: it is the formula the chapters derive and
plot, the correlation evaluator uses it too, and every number the chapters report was measured
with it; nothing in training from scratch favours either layout. ``"fairseq"`` exists to run
weights trained by the official MulT code
(:func:`~cormult_lib.models.mult.mult_from_official`).

**Which steps are counted.** fairseq's ``make_positions`` numbers the tokens that differ from
``padding_idx`` (0) from ``padding_idx + 1``, by their index in the row (``left_pad=False``),
and gives padding tokens row 0. The official MulT passes ``x_in[:, :, 0]``, the first feature
channel of each step of the encoder's input, as those "tokens": a step whose first feature is
exactly ``0.0`` counts as padding there (it gets no positional term) while the steps after it
keep their index. This project never reads positions from feature values: the masks decide
(:func:`valid_ranks`), a feature equal to 0 is an ordinary value, and the ``p``-th valid step
gets ``table[p + 1]`` wherever the padding is. Both agree whenever every step is real and no
first feature channel is exactly 0 (as the parity tests use); on zero-padded inputs the official
code gives its real steps their absolute index + 1 and its padding no position, which this
project deliberately does not reproduce.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Values of the ``positional`` option of the encoders (see the module docstring).
POSITIONAL_LAYOUTS = ("tutorial", "fairseq")


def valid_ranks(mask: torch.Tensor) -> torch.Tensor:
    """Index of each step among the valid steps of its row: ``(..., time)`` bool -> int64.

    Padding before the first valid step gets 0, padding after a valid step repeats its rank.
    """
    return (mask.long().cumsum(dim=-1) - 1).clamp(min=0)


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


def fairseq_sinusoidal_table(
    num_positions: int, dim: int, padding_idx: int | None = 0
) -> torch.Tensor:
    """fairseq's sinusoidal table (module docstring): ``(num_positions, dim)`` float32.

    Row ``n`` holds ``[sin(n * w_0) .. sin(n * w_{h-1}) | cos(n * w_0) .. cos(n * w_{h-1})]``
    with ``h = dim // 2`` and ``w_i = exp(-i * log(10000) / (h - 1))``, then one zero column
    when ``dim`` is odd; row ``padding_idx`` (``None``: none) is all zeros. Computed in float64
    and rounded once to float32; fairseq computes it in float32, whose rounded angles put its
    rows up to 2e-6 off the formula at position 50 and 3e-5 at position 500 (outputs of the
    official MulT's weights still agree to 5e-6 at 500 steps).

    Raises:
        ValueError: ``dim < 4`` (the formula divides by ``h - 1``) or ``num_positions < 1``.
    """
    if dim < 4:
        raise ValueError(f"the fairseq table needs dim >= 4 (it divides by dim // 2 - 1): {dim}")
    if num_positions < 1:
        raise ValueError(f"num_positions must be >= 1, got {num_positions}")
    half = dim // 2
    frequency = torch.exp(
        torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / (half - 1))
    )
    angle = torch.arange(num_positions, dtype=torch.float64)[:, None] * frequency  # (n, half)
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, :half] = torch.sin(angle)
    table[:, half : 2 * half] = torch.cos(angle)
    if padding_idx is not None:
        table[padding_idx] = 0.0
    return table.float()


class FairseqPositionalEncoding(nn.Module):
    """fairseq's layout for valid ranks: rank ``p`` -> ``table[p + 1]`` (row 0 is padding).

    ``forward(positions)`` maps 0-based ranks ``(batch, time)`` (as :func:`valid_ranks` gives)
    to ``(batch, time, d)``; ``max_len`` ranks are covered.
    """

    def __init__(self, dim: int, max_len: int = 1024):
        super().__init__()
        self.register_buffer(
            "table", fairseq_sinusoidal_table(max_len + 1, dim, padding_idx=0), persistent=False
        )

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions + 1]


def positional_encoding(layout: str, dim: int, max_len: int = 1024) -> nn.Module:
    """The encoding of ``layout`` (``"tutorial"`` or ``"fairseq"``) for ``max_len`` ranks."""
    if layout == "tutorial":
        return SinusoidalPositionalEncoding(dim, max_len)
    if layout == "fairseq":
        return FairseqPositionalEncoding(dim, max_len)
    raise ValueError(f"positional must be one of {POSITIONAL_LAYOUTS}, got {layout!r}")
