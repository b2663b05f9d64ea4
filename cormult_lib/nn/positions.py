"""Positions of the tutorial's transformers: sinusoidal encodings of *valid* step ranks."""

from __future__ import annotations

import math

import torch
from torch import nn


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
