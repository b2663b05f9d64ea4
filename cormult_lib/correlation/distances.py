"""Distances in the shared correlation space and the bounded coefficients ``Cor`` made from them.

The Modality Correlation Evaluator maps every modality to the shared space ``R^{t x o}``
(CorMulT section 3.2.3): one embedding of shape ``(batch, t, o)`` per modality. Section 4.3 /
Table 3 compares five measures between two such embeddings ``x`` and ``y``. With
``a = x[i, s]`` and ``b = y[i, s]`` the ``o``-dim rows of sample ``i`` at step ``s``:

* cosine:       ``d = 1 - a.b / (|a| |b|)``                (in [0, 2]);
* euclidean:    ``d = |a - b|_2``;
* manhattan:    ``d = |a - b|_1``;
* chebyshev:    ``d = |a - b|_inf = max_k |a_k - b_k|``;
* mahalanobis:  ``d = sqrt((a - b)^T S^-1 (a - b))`` with ``S`` the covariance of the ``o``-dim
  rows of training embeddings (:meth:`Distance.fit`).

How the ``t`` steps are combined (``reduce``):

* ``"steps"`` (default): one distance per time step, averaged over the ``t`` steps,
  ``d(x, y) = mean_s d(x[:, s], y[:, s])``: the shared space keeps its temporal axis.
* ``"mean"``: the distance between the time means, ``d(mean_s x[:, s], mean_s y[:, s])``. This
  is what the authors' public code does (1 - cosine of the time-averaged projections).

The bounded correlation coefficient ``Cor`` (:meth:`Distance.similarity`), later used to weight
features, is

* cosine: the cosine similarity itself, ``Cor = 1 - d`` in [-1, 1] (with ``"steps"`` the mean
  over steps of the per-step cosine similarity);
* the other four: ``Cor = exp(-d / scale)`` in (0, 1], 1 for identical embeddings. ``scale`` is
  1.0 unless :meth:`Distance.fit` is given the embeddings of two or more modalities of the same
  samples: then it is the median distance of those positive (real, aligned) pairs, so a typical
  real pair gets ``Cor = exp(-1) ~ 0.37``.

The Mahalanobis covariance is shrunk so that it is invertible, also when the rows span fewer
than ``o`` dimensions: ``S_shrunk = (1 - lambda) S + lambda tr(S) / o I``
(:func:`sklearn.covariance.shrunk_covariance`), with ``S`` the empirical covariance (1/n) and
``lambda`` either given (``shrinkage=0.1``) or estimated by Ledoit-Wolf
(:class:`sklearn.covariance.LedoitWolf`, ``shrinkage=None``, the default).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf, empirical_covariance, shrunk_covariance

DISTANCES = ("cosine", "euclidean", "manhattan", "chebyshev", "mahalanobis")
REDUCTIONS = ("steps", "mean")
#: Modality pairs in canonical order; ``Cor`` and the loss terms are keyed by these.
PAIRS = (("T", "A"), ("T", "V"), ("A", "V"))
#: Rows used to estimate the Mahalanobis covariance at most (a random subset beyond that).
MAX_FIT_ROWS = 50_000


def present_pairs(modalities) -> list[tuple[str, str]]:
    """The pairs of :data:`PAIRS` whose two modalities are both in ``modalities``."""
    present = set(modalities)
    return [(a, b) for a, b in PAIRS if a in present and b in present]


class Distance:
    """One of :data:`DISTANCES` between shared-space embeddings ``(batch, t, o)``.

    ``distance(x, y)`` gives ``(batch,)`` distances (``>= 0``; cosine: ``1 - cos``) and
    ``distance.similarity(x, y)`` the bounded coefficient ``Cor`` (see the module docstring).
    Inputs may also be ``(batch, o)`` (one step). Differentiable, so it serves as the distance
    of the triplet loss too.

    Args:
        name: one of :data:`DISTANCES`.
        reduce: ``"steps"`` (distance per step, averaged over steps) or ``"mean"`` (distance of
            the time means, as the authors' code).
        shrinkage: Mahalanobis only: ``lambda`` in [0, 1] of ``(1 - lambda) S + lambda tr(S)/o I``,
            or ``None`` to estimate it with Ledoit-Wolf.
        scale: the ``scale`` of ``exp(-d / scale)`` until :meth:`fit` measures one.
        max_rows: at most this many rows estimate the covariance (a fixed random subset).
    """

    def __init__(
        self,
        name: str = "cosine",
        reduce: str = "steps",
        shrinkage: float | None = None,
        scale: float = 1.0,
        max_rows: int = MAX_FIT_ROWS,
    ):
        if name not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {name!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be None (Ledoit-Wolf) or in [0, 1], got {shrinkage}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.name = name
        self.reduce = reduce
        self.shrinkage = shrinkage
        self.scale = float(scale)
        self.max_rows = int(max_rows)
        #: Mahalanobis after :meth:`fit`: the shrunk covariance ``(o, o)``, its inverse, the
        #: ``lambda`` used, and ``L`` with ``S^-1 = L L^T`` (so ``d = |(a - b) L|_2``).
        self.covariance: np.ndarray | None = None
        self.inverse_covariance: np.ndarray | None = None
        self.shrinkage_: float | None = None
        self._whitener: np.ndarray | None = None
        self._whitener_cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def __repr__(self) -> str:
        fitted = "" if self.name != "mahalanobis" else f", fitted={self.covariance is not None}"
        return f"Distance({self.name!r}, reduce={self.reduce!r}, scale={self.scale:.4g}{fitted})"

    # ------------------------------------------------------------------------ fitting

    def fit(self, embeddings: torch.Tensor | Mapping[str, torch.Tensor]) -> Distance:
        """Estimate what the distance needs from training embeddings; returns ``self``.

        Args:
            embeddings: ``(n, t, o)`` shared-space embeddings, or modality -> ``(n, t, o)`` of
                the same ``n`` samples. Mahalanobis: the covariance of all their ``o``-dim rows
                (the per-step rows for ``reduce="steps"``, the time means for ``"mean"``, i.e.
                the vectors being compared). With two or more modalities, ``scale`` becomes the
                median distance of the positive pairs (cosine ignores ``scale``).
        """
        per_modality = (
            dict(embeddings) if isinstance(embeddings, Mapping) else {"embeddings": embeddings}
        )
        if not per_modality:
            raise ValueError("Distance.fit needs at least one (n, t, o) tensor of embeddings")
        for key, x in per_modality.items():
            if not isinstance(x, torch.Tensor) or x.ndim != 3:
                raise ValueError(
                    f"Distance.fit: {key} must be a tensor (n, t, o), got "
                    f"{getattr(x, 'shape', type(x).__name__)}"
                )
        with torch.no_grad():
            if self.name == "mahalanobis":
                rows = torch.cat(
                    [self._vectors(x).reshape(-1, x.shape[-1]) for x in per_modality.values()]
                )
                if len(rows) > self.max_rows:
                    generator = torch.Generator().manual_seed(0)
                    keep = torch.randperm(len(rows), generator=generator)[: self.max_rows]
                    rows = rows[keep.to(rows.device)]
                self._fit_covariance(rows.double().cpu().numpy())
            pairs = present_pairs(per_modality)
            if pairs and self.name != "cosine":
                d = torch.cat([self(per_modality[a], per_modality[b]) for a, b in pairs])
                median = float(d.median())
                if median > 0:
                    self.scale = median
        return self

    def _fit_covariance(self, rows: np.ndarray) -> None:
        n, o = rows.shape
        if n < 2:
            raise ValueError(f"Distance.fit: Mahalanobis needs at least 2 rows, got {n}")
        if self.shrinkage is None:
            estimator = LedoitWolf().fit(rows)
            covariance, lam = estimator.covariance_, float(estimator.shrinkage_)
        else:
            lam = self.shrinkage
            covariance = shrunk_covariance(empirical_covariance(rows), shrinkage=lam)
        eigenvalues = np.linalg.eigvalsh(covariance)
        if eigenvalues.min() <= 1e-12 * max(eigenvalues.max(), 1e-300):
            raise ValueError(
                f"Distance.fit: the shrunk covariance ({o}x{o}, lambda={lam:.3g}) is singular; "
                "the embeddings are (nearly) constant or shrinkage is 0 with fewer rows than "
                "dimensions: use more varied embeddings or a shrinkage > 0"
            )
        self._set_covariance(covariance, lam)

    def _set_covariance(self, covariance: np.ndarray, lam: float | None) -> None:
        inverse = np.linalg.inv(covariance)
        inverse = (inverse + inverse.T) / 2
        self.covariance, self.inverse_covariance, self.shrinkage_ = covariance, inverse, lam
        self._whitener = np.linalg.cholesky(inverse)
        self._whitener_cache.clear()

    def state_dict(self) -> dict:
        """What :meth:`from_state_dict` needs to rebuild a fitted distance (numpy / floats)."""
        return {
            "name": self.name,
            "reduce": self.reduce,
            "shrinkage": self.shrinkage,
            "scale": self.scale,
            "max_rows": self.max_rows,
            "covariance": self.covariance,
            "shrinkage_": self.shrinkage_,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> Distance:
        """The distance saved by :meth:`state_dict`."""
        distance = cls(
            state["name"], state["reduce"], state["shrinkage"], state["scale"], state["max_rows"]
        )
        if state["covariance"] is not None:
            covariance = np.asarray(state["covariance"], dtype=np.float64)
            distance._set_covariance(covariance, state["shrinkage_"])
        return distance

    # ------------------------------------------------------------------------ distances

    def _vectors(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, t, o)`` -> the rows compared: ``(batch, t, o)`` or ``(batch, 1, o)``."""
        return x.mean(dim=1, keepdim=True) if self.reduce == "mean" else x

    def rows(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance between ``o``-dim rows along the last axis: ``(..., o)`` -> ``(...)``."""
        if self.name == "cosine":
            return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-8)
        diff = a - b
        if self.name == "euclidean":
            return torch.linalg.vector_norm(diff, ord=2, dim=-1)
        if self.name == "manhattan":
            return diff.abs().sum(dim=-1)
        if self.name == "chebyshev":
            return diff.abs().amax(dim=-1)
        return torch.linalg.vector_norm(diff @ self._whitener_for(diff), ord=2, dim=-1)

    def _whitener_for(self, like: torch.Tensor) -> torch.Tensor:
        if self._whitener is None:
            raise RuntimeError(
                "Mahalanobis distance is not fitted: call Distance('mahalanobis').fit(embeddings) "
                "with training embeddings (n, t, o) first"
            )
        if like.shape[-1] != self._whitener.shape[0]:
            raise ValueError(
                f"Mahalanobis distance was fitted on {self._whitener.shape[0]}-dim rows, "
                f"got {like.shape[-1]}-dim rows"
            )
        key = (like.device, like.dtype)
        if key not in self._whitener_cache:
            self._whitener_cache[key] = torch.as_tensor(self._whitener).to(like.device, like.dtype)
        return self._whitener_cache[key]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances ``(batch,)`` between embeddings ``x``, ``y`` of shape ``(batch, t, o)``."""
        x, y = _as_steps(x, "x"), _as_steps(y, "y")
        if x.shape != y.shape:
            raise ValueError(
                f"distance: x and y must have the same shape, got {x.shape}, {y.shape}"
            )
        return self.rows(self._vectors(x), self._vectors(y)).mean(dim=1)

    def similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The bounded coefficient ``Cor`` ``(batch,)``: cosine in [-1, 1], else exp(-d / scale)."""
        d = self(x, y)
        return 1.0 - d if self.name == "cosine" else torch.exp(-d / self.scale)


def _as_steps(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
        raise ValueError(
            f"distance: {name} must be a tensor (batch, t, o) or (batch, o), got "
            f"{getattr(x, 'shape', type(x).__name__)}"
        )
    return x.unsqueeze(1) if x.ndim == 2 else x


def get_distance(distance: str | Distance) -> Distance:
    """A :class:`Distance` from its name (default options) or the distance itself."""
    if isinstance(distance, Distance):
        return distance
    if isinstance(distance, str):
        return Distance(distance)
    raise ValueError(
        f"distance must be a name out of {DISTANCES} or a Distance, got {type(distance).__name__}"
    )
