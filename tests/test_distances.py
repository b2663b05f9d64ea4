"""Distances in the shared correlation space against scipy, and the coefficients made from them."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial import distance as scipy_distance
from sklearn.covariance import LedoitWolf

from cormult_lib.correlation.distances import (
    DISTANCES,
    PAIRS,
    Distance,
    get_distance,
    present_pairs,
)

SCIPY = {
    "cosine": scipy_distance.cosine,
    "euclidean": scipy_distance.euclidean,
    "manhattan": scipy_distance.cityblock,
    "chebyshev": scipy_distance.chebyshev,
}


def _embeddings(seed: int, shape=(6, 4, 5)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _fitted_mahalanobis(reduce: str = "steps", shrinkage: float | None = None) -> Distance:
    return Distance("mahalanobis", reduce=reduce, shrinkage=shrinkage).fit(
        _embeddings(10, (40, 4, 5)) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    )


@pytest.mark.parametrize("name", list(SCIPY))
def test_distance_per_step_mean_matches_scipy(name: str) -> None:
    x, y = _embeddings(0), _embeddings(1)
    expected = [
        np.mean([SCIPY[name](x[i, s].numpy(), y[i, s].numpy()) for s in range(x.shape[1])])
        for i in range(x.shape[0])
    ]
    got = Distance(name)(x, y)
    assert got.shape == (x.shape[0],)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("name", list(SCIPY))
def test_reduce_mean_compares_time_means(name: str) -> None:
    x, y = _embeddings(2), _embeddings(3)
    xm, ym = x.mean(1).numpy(), y.mean(1).numpy()
    expected = [SCIPY[name](xm[i], ym[i]) for i in range(len(xm))]
    np.testing.assert_allclose(Distance(name, reduce="mean")(x, y).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("reduce", ["steps", "mean"])
def test_mahalanobis_matches_scipy_with_same_inverse_covariance(reduce: str) -> None:
    d = _fitted_mahalanobis(reduce)
    x, y = _embeddings(4), _embeddings(5)
    vi = d.inverse_covariance
    if reduce == "mean":
        x, y = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    expected = [
        np.mean(
            [
                scipy_distance.mahalanobis(x[i, s].numpy(), y[i, s].numpy(), vi)
                for s in range(x.shape[1])
            ]
        )
        for i in range(x.shape[0])
    ]
    np.testing.assert_allclose(d(x, y).numpy(), expected, rtol=1e-8)
    # The covariance was estimated with Ledoit-Wolf shrinkage, strictly between 0 and 1.
    assert 0.0 < d.shrinkage_ < 1.0


@pytest.mark.parametrize("reduce", ["steps", "mean"])
def test_mahalanobis_fits_ledoit_wolf_on_the_vectors_it_compares(reduce: str) -> None:
    """The covariance is sklearn's Ledoit-Wolf estimate of the per-step rows (``steps``) or of
    the time means (``mean``), pooled over modalities; ``max_rows`` keeps a seeded subset."""
    x = _embeddings(10, (40, 4, 5)) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    y = _embeddings(11, (40, 4, 5))
    d = Distance("mahalanobis", reduce=reduce).fit({"T": x, "A": y})
    vectors = [v.mean(1) if reduce == "mean" else v.reshape(-1, 5) for v in (x, y)]
    expected = LedoitWolf().fit(torch.cat(vectors).numpy())
    np.testing.assert_allclose(d.covariance, expected.covariance_, rtol=1e-10)
    assert d.shrinkage_ == pytest.approx(expected.shrinkage_)
    capped = Distance("mahalanobis", max_rows=50).fit(x)
    again = Distance("mahalanobis", max_rows=50).fit(x)
    np.testing.assert_array_equal(capped.covariance, again.covariance)
    assert not np.allclose(capped.covariance, Distance("mahalanobis").fit(x).covariance)


def test_mahalanobis_with_identity_covariance_is_euclidean() -> None:
    state = Distance("mahalanobis").state_dict() | {"covariance": np.eye(5)}
    d = Distance.from_state_dict(state)
    x, y = _embeddings(6), _embeddings(7)
    torch.testing.assert_close(d(x, y), Distance("euclidean")(x, y))


def test_explicit_shrinkage_is_the_documented_formula() -> None:
    rows = _embeddings(8, (30, 1, 5))
    lam = 0.3
    d = Distance("mahalanobis", shrinkage=lam).fit(rows)
    r = rows[:, 0].numpy()
    centred = r - r.mean(0)
    s = centred.T @ centred / len(r)  # empirical covariance, 1/n
    expected = (1 - lam) * s + lam * np.trace(s) / 5 * np.eye(5)
    np.testing.assert_allclose(d.covariance, expected, rtol=1e-10)
    np.testing.assert_allclose(d.inverse_covariance @ expected, np.eye(5), atol=1e-8)


@pytest.mark.parametrize("shrinkage", [None, 0.1])
def test_shrinkage_makes_rank_deficient_covariance_invertible(shrinkage: float | None) -> None:
    # 200 rows of dimension 8 that span only a 2-dim subspace: the covariance has rank 2.
    g = torch.Generator().manual_seed(9)
    rows = torch.randn(200, 2, generator=g, dtype=torch.float64) @ torch.randn(
        2, 8, generator=g, dtype=torch.float64
    )
    empirical = np.cov(rows.numpy(), rowvar=False)
    assert np.linalg.matrix_rank(empirical) == 2
    d = Distance("mahalanobis", shrinkage=shrinkage).fit(rows[:, None, :])
    assert np.linalg.matrix_rank(d.covariance) == 8
    np.testing.assert_allclose(d.covariance @ d.inverse_covariance, np.eye(8), atol=1e-6)
    out = d(_embeddings(0, (3, 2, 8)), _embeddings(1, (3, 2, 8)))
    assert torch.isfinite(out).all() and (out > 0).all()


def test_singular_without_shrinkage_is_a_clear_error() -> None:
    rows = torch.randn(3, 1, 8, dtype=torch.float64)  # 3 rows in 8 dimensions, no shrinkage
    with pytest.raises(ValueError, match="singular"):
        Distance("mahalanobis", shrinkage=0.0).fit(rows)


def test_unfitted_mahalanobis_errors() -> None:
    with pytest.raises(RuntimeError, match=r"not fitted.*fit\(embeddings\)"):
        Distance("mahalanobis")(_embeddings(0), _embeddings(1))


def test_mahalanobis_dimension_mismatch_errors() -> None:
    d = _fitted_mahalanobis()
    with pytest.raises(ValueError, match="fitted on 5-dim rows, got 3-dim"):
        d(_embeddings(0, (2, 2, 3)), _embeddings(1, (2, 2, 3)))


def test_unknown_name_lists_distances() -> None:
    with pytest.raises(ValueError, match="cosine.*euclidean.*manhattan.*chebyshev.*mahalanobis"):
        Distance("hamming")
    with pytest.raises(ValueError, match="mahalanobis"):
        get_distance("cityblock")
    with pytest.raises(ValueError, match="reduce"):
        Distance("cosine", reduce="max")


@pytest.mark.parametrize("name", DISTANCES)
def test_similarity_bounds_and_identity(name: str) -> None:
    d = _fitted_mahalanobis() if name == "mahalanobis" else Distance(name)
    x, y = _embeddings(11), _embeddings(12)
    cor = d.similarity(x, y)
    low = -1.0 if name == "cosine" else 0.0
    assert cor.shape == (x.shape[0],)
    assert (cor >= low).all() and (cor <= 1.0).all()
    # Identical embeddings: distance 0, Cor 1; opposite ones under cosine: Cor -1.
    torch.testing.assert_close(d(x, x), torch.zeros(x.shape[0], dtype=x.dtype))
    torch.testing.assert_close(d.similarity(x, x), torch.ones(x.shape[0], dtype=x.dtype))
    if name == "cosine":
        torch.testing.assert_close(d.similarity(x, -x), -torch.ones(x.shape[0], dtype=x.dtype))
    else:
        torch.testing.assert_close(cor, torch.exp(-d(x, y) / d.scale))


def test_fit_sets_scale_to_median_positive_distance() -> None:
    pos = {"T": _embeddings(13, (9, 3, 4)), "A": _embeddings(14, (9, 3, 4))}
    pos["V"] = pos["A"] + 0.1 * _embeddings(15, (9, 3, 4))
    d = Distance("euclidean").fit(pos)
    expected = torch.cat([Distance("euclidean")(pos[a], pos[b]) for a, b in PAIRS]).median()
    assert d.scale == pytest.approx(float(expected))
    # Cor = exp(-d / scale): the median real pair gets exp(-1) ~ 0.37, a pair twice as far
    # apart exp(-2), whatever the distances' units.
    x, y = pos["T"][:4], pos["A"][:4]
    raw = Distance("euclidean")(x, y)
    torch.testing.assert_close(d.similarity(x, y), torch.exp(-raw / float(expected)))
    assert d.similarity(x, x + (y - x) * float(expected) / raw[:, None, None]) == pytest.approx(
        [math.exp(-1)] * 4
    )
    # A single tensor (no pairs) leaves the scale alone; cosine never uses it.
    assert Distance("euclidean").fit(pos["T"]).scale == 1.0
    assert Distance("cosine").fit(pos).scale == 1.0


def test_state_dict_round_trip() -> None:
    d = _fitted_mahalanobis(shrinkage=0.2)
    d.scale = 2.5
    again = Distance.from_state_dict(d.state_dict())
    x, y = _embeddings(16), _embeddings(17)
    torch.testing.assert_close(again.similarity(x, y), d.similarity(x, y))


def test_distances_are_differentiable_at_zero() -> None:
    for name in DISTANCES:
        d = _fitted_mahalanobis() if name == "mahalanobis" else Distance(name)
        x = _embeddings(18).requires_grad_()
        d(x, x.detach().clone()).sum().backward()
        assert torch.isfinite(x.grad).all(), name


def test_present_pairs_canonical_order() -> None:
    assert present_pairs("VAT") == [("T", "A"), ("T", "V"), ("A", "V")]
    assert present_pairs(["V", "A"]) == [("A", "V")]


def test_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        Distance()(_embeddings(0), _embeddings(1, (6, 3, 5)))
    with pytest.raises(ValueError, match=r"\(batch, t, o\)"):
        Distance()(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match=r"must be a tensor \(n, t, o\)"):
        Distance("mahalanobis").fit(torch.zeros(4, 5))
