"""The co-attention unit and the hierarchical co-attention fusion of CLIP-MSA (section 2.3).

CLIP-MSA fuses three *utterance-level* vectors ``F_t, F_a, F_v`` of size ``d``. Its co-attention
unit (CT) takes two of them, ``X1`` and ``X2``, and computes per head ``i``

    h_i = Softmax((X1 W_i^Q)(X2 W_i^K)^T / sqrt(d_h)) X2 W_i^V,   W_i^Q, W_i^K, W_i^V: 1 x d_h
    h   = (h_1; ...; h_m) W^O,                                    W^O: m d_h x 1
    F_{1<-2} = Norm(Norm(X1 + h) + FFN(Norm(X1 + h)))

The shapes of the projections say how the vectors are read: ``W^Q`` maps a *scalar* to
``d_h`` numbers, so each of the ``d`` features of ``X1`` is one query token and each feature of
``X2`` one key/value token. The attention map of one head is therefore ``(d, d)``: which
features of modality 2 each feature of modality 1 draws on. ``W^O`` maps the concatenated
heads back to one scalar per token, so ``h`` is again a ``d``-vector.

Two readings we had to choose (the paper gives no code):

* The paper writes ``Norm(X1 + hX1)``; with ``h`` and ``X1`` both ``d``-vectors the product is
  undefined, and the text speaks of "residual connections": we use the residual ``X1 + h``.
* ``Norm`` is LayerNorm over the ``d`` features (over a single scalar token it would return
  zeros) and the FFN acts on the ``d``-vector (``d -> ff -> d``, ReLU).

A fusion layer holds two units, ``F_{1<-2} = CT(X1, X2)`` and ``F_{2<-1} = CT(X2, X1)``, and
``F_12 = Linear([F_{1<-2}; F_{2<-1}])`` (``2d -> d``). The hierarchy fuses the first two
modalities of ``order`` and then the result with the third: ``(A, V)`` then ``T`` in the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CoAttention", "CoAttentionUnit", "FusionLayer", "HierarchicalFusion"]


class CoAttention(nn.Module):
    """Multi-head attention between the *features* of two vectors (the ``h`` of CLIP-MSA).

    Args:
        num_heads: ``m``.
        head_dim: ``d_h``; the paper sets ``d_h = d / m``.
        dropout: on the attention weights, during training.
    """

    def __init__(self, num_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        if num_heads < 1 or head_dim < 1:
            raise ValueError(f"num_heads and head_dim must be >= 1, got {num_heads}, {head_dim}")
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        inner = num_heads * head_dim
        # Column i * d_h ... (i + 1) * d_h - 1 of each weight is W_i^Q (resp. K, V): 1 x d_h.
        self.query = nn.Linear(1, inner, bias=False)
        self.key = nn.Linear(1, inner, bias=False)
        self.value = nn.Linear(1, inner, bias=False)
        self.out = nn.Linear(inner, 1, bias=False)  # W^O: m d_h x 1

    def _heads(self, x: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
        """``(batch, d)`` -> ``(batch, m, d, d_h)``: each feature a token, projected per head."""
        batch, d = x.shape
        projected = projection(x.unsqueeze(-1))  # (batch, d, m d_h)
        return projected.view(batch, d, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Queries from ``x1`` ``(batch, d1)``, keys and values from ``x2`` ``(batch, d2)``.

        Returns:
            ``h`` ``(batch, d1)`` and, with ``return_weights``, the attention maps
            ``(batch, m, d1, d2)`` (each row sums to 1), else ``None``.
        """
        if x1.ndim != 2 or x2.ndim != 2 or len(x1) != len(x2):
            raise ValueError(
                f"co-attention needs x1 (batch, d1) and x2 (batch, d2), got {tuple(x1.shape)}, "
                f"{tuple(x2.shape)}"
            )
        q, k, v = (
            self._heads(x1, self.query),
            self._heads(x2, self.key),
            self._heads(x2, self.value),
        )
        dropout = self.dropout if self.training else 0.0
        weights = None
        if return_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            weights = scores.softmax(dim=-1)
            heads = F.dropout(weights, dropout, self.training) @ v
        else:
            heads = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        batch, _, d1, _ = heads.shape
        merged = heads.transpose(1, 2).reshape(batch, d1, self.num_heads * self.head_dim)
        return self.out(merged).squeeze(-1), weights


class CoAttentionUnit(nn.Module):
    """One CT unit: ``F_{1<-2} = Norm(Norm(X1 + h) + FFN(Norm(X1 + h)))``, shapes ``(batch, d)``.

    Args:
        dim: ``d``, the size of both inputs.
        num_heads: ``m``; ``d_h = d / m`` (``dim`` must be divisible by ``num_heads``).
        ff_dim: hidden size of the FFN (default ``2 d``).
        dropout: on the attention weights and inside the FFN.
    """

    def __init__(
        self, dim: int, num_heads: int = 4, ff_dim: int | None = None, dropout: float = 0.1
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads} (d_h = d / m)")
        self.attention = CoAttention(num_heads, dim // num_heads, dropout)
        self.norm_attention = nn.LayerNorm(dim)
        self.norm_output = nn.LayerNorm(dim)
        ff_dim = ff_dim or 2 * dim
        self.ffn = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(batch, d)``, ``(batch, d)`` -> ``F_{1<-2}`` ``(batch, d)`` and the maps or None."""
        h, weights = self.attention(x1, x2, return_weights)
        attended = self.norm_attention(x1 + h)
        return self.norm_output(attended + self.ffn(attended)), weights


class FusionLayer(nn.Module):
    """Two CT units and a Linear: ``F_12 = Linear([CT(X1, X2); CT(X2, X1)])``, ``(batch, d)``."""

    def __init__(
        self, dim: int, num_heads: int = 4, ff_dim: int | None = None, dropout: float = 0.1
    ):
        super().__init__()
        self.one_from_two = CoAttentionUnit(dim, num_heads, ff_dim, dropout)
        self.two_from_one = CoAttentionUnit(dim, num_heads, ff_dim, dropout)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns ``F_12`` ``(batch, d)`` and, with ``return_weights``, the maps
        ``{"1<-2": (batch, m, d, d), "2<-1": ...}`` (else an empty dict)."""
        f12, w12 = self.one_from_two(x1, x2, return_weights)
        f21, w21 = self.two_from_one(x2, x1, return_weights)
        maps = {"1<-2": w12, "2<-1": w21} if return_weights else {}
        return self.linear(torch.cat([f12, f21], dim=-1)), maps


class HierarchicalFusion(nn.Module):
    """Fuse ``order[0]`` with ``order[1]``, then the result with ``order[2]``.

    Args:
        order: three modality letters, e.g. ``("A", "V", "T")`` (paper), ``("A", "T", "V")``
            or ``("V", "T", "A")`` (Table 2).

    ``forward({"T": (batch, d), "A": ..., "V": ...})`` returns ``F_m`` ``(batch, d)``.
    """

    def __init__(
        self,
        dim: int,
        order: tuple[str, str, str] = ("A", "V", "T"),
        num_heads: int = 4,
        ff_dim: int | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        if sorted(order) != ["A", "T", "V"]:
            raise ValueError(f"order must be the three letters T, A, V in some order, got {order}")
        self.order = tuple(order)
        self.first = FusionLayer(dim, num_heads, ff_dim, dropout)
        self.second = FusionLayer(dim, num_heads, ff_dim, dropout)

    def forward(
        self, vectors: dict[str, torch.Tensor], return_weights: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``F_m`` ``(batch, d)`` and, with ``return_weights``, the four attention maps keyed
        like ``"A<-V"``, ``"V<-A"``, ``"AV<-T"``, ``"T<-AV"`` ``(batch, m, d, d)``."""
        a, b, c = self.order
        pair, maps1 = self.first(vectors[a], vectors[b], return_weights)
        fused, maps2 = self.second(pair, vectors[c], return_weights)
        maps = {}
        if return_weights:
            maps = {
                f"{a}<-{b}": maps1["1<-2"],
                f"{b}<-{a}": maps1["2<-1"],
                f"{a}{b}<-{c}": maps2["1<-2"],
                f"{c}<-{a}{b}": maps2["2<-1"],
            }
        return fused, maps
