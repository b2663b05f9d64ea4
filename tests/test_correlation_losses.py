"""The triplet loss and Eq. 8, against torch and by hand."""

import pytest
import torch

from cormult_lib.correlation.distances import DISTANCES, Distance
from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator
from cormult_lib.correlation.losses import correlation_triplet_loss, triplet_loss


def _emb(seed: int, shape=(5, 3, 4)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _distance(name: str) -> Distance:
    if name == "mahalanobis":
        return Distance(name).fit(_emb(99, (30, 3, 4)))
    return Distance(name)


@pytest.mark.parametrize("name", DISTANCES)
@pytest.mark.parametrize("reduce", ["steps", "mean"])
def test_triplet_loss_matches_torch(name: str, reduce: str) -> None:
    d = _distance(name)
    d.reduce = reduce
    a, p, n = _emb(0), _emb(1), _emb(2)
    reference = torch.nn.TripletMarginWithDistanceLoss(distance_function=d, margin=0.7)
    torch.testing.assert_close(triplet_loss(a, p, n, d, margin=0.7), reference(a, p, n))


def test_triplet_loss_by_hand() -> None:
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    positive = torch.tensor([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0]])
    negative = torch.tensor([[6.0, 8.0], [0.0, 0.5], [1.0, 1.1]])
    # Euclidean, margin 0.2:
    #   sample 0: d(a,p) = 5,  d(a,n) = 10,  max(0, 5 - 10 + 0.2)  = 0
    #   sample 1: d(a,p) = 1,  d(a,n) = 0.5, max(0, 1 - 0.5 + 0.2) = 0.7
    #   sample 2: d(a,p) = 0,  d(a,n) = 0.1, max(0, 0 - 0.1 + 0.2) = 0.1
    #   mean = (0 + 0.7 + 0.1) / 3 = 0.8 / 3
    loss = triplet_loss(anchor, positive, negative, "euclidean", margin=0.2)
    assert loss.item() == pytest.approx(0.8 / 3)
    terms = triplet_loss(anchor, positive, negative, "euclidean", 0.2, reduction="none")
    torch.testing.assert_close(terms, torch.tensor([0.0, 0.7, 0.1]))
    # keep = (False, True, True): only samples 1 and 2 count, (0.7 + 0.1) / 2 = 0.4.
    kept = triplet_loss(anchor, positive, negative, "euclidean", 0.2, torch.tensor([0, 1, 1]) > 0)
    assert kept.item() == pytest.approx(0.4)
    # Cosine, margin 0.2, anchor (1, 0), positive (1, 1), negative (0, 1):
    #   d(a,p) = 1 - 1/sqrt(2) = 0.29289, d(a,n) = 1 - 0 = 1, max(0, 0.29289 - 1 + 0.2) = 0
    #   with margin 0.8: 0.29289 - 1 + 0.8 = 0.09289
    a, p, n = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    assert triplet_loss(a, p, n, "cosine", 0.2).item() == 0.0
    assert triplet_loss(a, p, n, "cosine", 0.8).item() == pytest.approx(0.8 - 2**-0.5, abs=1e-6)


def _pos_neg(modalities: str) -> tuple[dict, dict]:
    pos = {m: _emb(10 + i) for i, m in enumerate(modalities)}
    neg = {m: _emb(20 + i) for i, m in enumerate(modalities)}
    return pos, neg


def test_eq_8_three_modalities() -> None:
    pos, neg = _pos_neg("TAV")
    d, margin = Distance("cosine"), 0.5

    def tl(anchor, other):
        return triplet_loss(pos[anchor], pos[other], neg[other], d, margin)

    loss_a = tl("A", "T") + tl("A", "V")
    loss_t = tl("T", "A") + tl("T", "V")
    loss_v = tl("V", "T") + tl("V", "A")
    loss, parts = correlation_triplet_loss(pos, neg, d, margin)
    torch.testing.assert_close(loss, (loss_a + loss_t + loss_v) / 3)
    torch.testing.assert_close(parts["LOSS_A"], loss_a)
    torch.testing.assert_close(parts["LOSS_T"], loss_t)
    torch.testing.assert_close(parts["LOSS_V"], loss_v)
    torch.testing.assert_close(parts["TL_V_A"], tl("V", "A"))
    assert set(parts) == {"LOSS", "LOSS_T", "LOSS_A", "LOSS_V"} | {
        f"TL_{x}_{y}" for x in "TAV" for y in "TAV" if x != y
    }
    assert not parts["LOSS"].requires_grad


def test_own_anchor_by_hand_and_equal_to_eq_8_when_the_anchor_is_unchanged() -> None:
    # Euclidean, margin 0.2, one sample, modalities T and A:
    #   real T (0, 0), real A (3, 4); negative T (1, 0) (moved by cross-attention),
    #   negative A (1, 1)
    #   TL_T_A own:  d(Tp, Ap) = 5, d(Tn, An) = 1,        max(0, 5 - 1 + 0.2)    = 4.2
    #   TL_T_A real: d(Tp, Ap) = 5, d(Tp, An) = sqrt(2),  max(0, 5 - 1.41421 + 0.2) = 3.78579
    #   TL_A_T own:  d(Ap, Tp) = 5, d(An, Tn) = 1,        4.2
    #   TL_A_T real: d(Ap, Tp) = 5, d(Ap, Tn) = sqrt(20), max(0, 5 - 4.47214 + 0.2) = 0.72786
    pos = {"T": torch.tensor([[0.0, 0.0]]), "A": torch.tensor([[3.0, 4.0]])}
    neg = {"T": torch.tensor([[1.0, 0.0]]), "A": torch.tensor([[1.0, 1.0]])}
    own, parts = correlation_triplet_loss(pos, neg, "euclidean", 0.2, anchor="own")
    assert parts["TL_T_A"].item() == pytest.approx(4.2) == parts["TL_A_T"].item()
    assert own.item() == pytest.approx(4.2)
    real, parts = correlation_triplet_loss(pos, neg, "euclidean", 0.2)
    assert parts["TL_T_A"].item() == pytest.approx(5 - 2**0.5 + 0.2)
    assert parts["TL_A_T"].item() == pytest.approx(5 - 20**0.5 + 0.2)
    assert real.item() == pytest.approx((5 - 2**0.5 + 0.2 + 5 - 20**0.5 + 0.2) / 2)
    # Without cross-attention an untouched anchor is the same in both: "own" is Eq. 8 there.
    pos3, neg3 = _pos_neg("TAV")
    for m in "TV":
        neg3[m] = pos3[m]
    keep = {pair: torch.ones(5, dtype=torch.bool) for pair in [("T", "A"), ("A", "V")]}
    keep[("T", "V")] = torch.zeros(5, dtype=torch.bool)  # A alone changed: T-V unbroken
    a = correlation_triplet_loss(pos3, neg3, "cosine", 0.3, pair_mask=keep, anchor="own")
    b = correlation_triplet_loss(pos3, neg3, "cosine", 0.3, pair_mask=keep, anchor="real")
    torch.testing.assert_close(a[1]["TL_T_A"], b[1]["TL_T_A"])
    torch.testing.assert_close(a[1]["TL_V_A"], b[1]["TL_V_A"])
    with pytest.raises(ValueError, match="anchor must be one of"):
        correlation_triplet_loss(pos, neg, anchor="negative")


def test_eq_8_two_modalities_divides_by_two() -> None:
    pos, neg = _pos_neg("AV")
    loss, parts = correlation_triplet_loss(pos, neg, "euclidean", 1.0)
    expected = (
        triplet_loss(pos["A"], pos["V"], neg["V"], "euclidean", 1.0)
        + triplet_loss(pos["V"], pos["A"], neg["A"], "euclidean", 1.0)
    ) / 2
    torch.testing.assert_close(loss, expected)
    assert set(parts) == {"LOSS", "LOSS_A", "LOSS_V", "TL_A_V", "TL_V_A"}


def test_unbroken_pairs_without_and_with_pair_mask() -> None:
    # Only V was changed in every negative: neg T, A equal pos T, A.
    pos, _ = _pos_neg("TAV")
    pos = {m: x.clone().requires_grad_() for m, x in pos.items()}
    neg = {"T": pos["T"], "A": pos["A"], "V": _emb(30)}
    margin = 0.3
    # Without a mask (the paper), TL(T, A) = TL(A, T) = margin exactly: d(a,p) - d(a,n) = 0.
    loss, parts = correlation_triplet_loss(pos, neg, "cosine", margin)
    assert parts["TL_T_A"].item() == pytest.approx(margin)
    assert parts["TL_A_T"].item() == pytest.approx(margin)
    # ... and those constant terms carry no gradient:
    grads = torch.autograd.grad(loss, [pos["T"], pos["A"]], retain_graph=True)
    only_v_terms = (
        triplet_loss(pos["T"], pos["V"], neg["V"], "cosine", margin)
        + triplet_loss(pos["A"], pos["V"], neg["V"], "cosine", margin)
        + triplet_loss(pos["V"], pos["T"], neg["T"], "cosine", margin)
        + triplet_loss(pos["V"], pos["A"], neg["A"], "cosine", margin)
    ) / 3
    expected = torch.autograd.grad(only_v_terms, [pos["T"], pos["A"]])
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)
    # With a mask from changed_pairs, the unbroken pair TA is left out: its terms are 0.
    batch = pos["T"].shape[0]
    broken = torch.ones(batch, dtype=torch.bool)
    pair_mask = {("T", "A"): ~broken, ("T", "V"): broken, ("A", "V"): broken}
    masked, masked_parts = correlation_triplet_loss(pos, neg, "cosine", margin, pair_mask)
    assert masked_parts["TL_T_A"].item() == 0.0 and masked_parts["TL_A_T"].item() == 0.0
    torch.testing.assert_close(masked, loss - 2 * margin / 3)


def test_pair_mask_averages_over_kept_triplets_only() -> None:
    pos, neg = _pos_neg("TA")
    keep = torch.tensor([True, False, True, False, False])
    # Either order of the pair's letters is accepted.
    _, parts = correlation_triplet_loss(pos, neg, "euclidean", 2.0, {("A", "T"): keep})
    terms = triplet_loss(pos["T"], pos["A"], neg["A"], "euclidean", 2.0, reduction="none")
    torch.testing.assert_close(parts["TL_T_A"], terms[keep].mean())
    assert terms[keep].mean() != terms.mean()


def test_bad_inputs_are_clear_errors() -> None:
    pos, neg = _pos_neg("TAV")
    with pytest.raises(ValueError, match="same modalities"):
        correlation_triplet_loss(pos, {"T": neg["T"], "A": neg["A"]})
    with pytest.raises(ValueError, match="no entry for the pair TV"):
        correlation_triplet_loss(pos, neg, pair_mask={("T", "A"): torch.ones(5, dtype=torch.bool)})
    with pytest.raises(ValueError, match="two or three"):
        correlation_triplet_loss({"A": pos["A"]}, {"A": neg["A"]})
    with pytest.raises(ValueError, match="keep must be bool"):
        triplet_loss(pos["T"], pos["A"], neg["A"], keep=torch.ones(5))
    with pytest.raises(ValueError, match="margin"):
        triplet_loss(pos["T"], pos["A"], neg["A"], margin=-1.0)


def test_training_on_eq_8_separates_aligned_from_mixed_pairs() -> None:
    """A few Adam steps on aligned A/V (two views of one latent) halve the loss, and every
    clip's own pair ends more similar than its pair with the previous clip's vision."""
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(64, 6, 3, generator=g)
    features = {
        "A": latent @ torch.randn(3, 5, generator=g),
        "V": torch.tanh(latent @ torch.randn(3, 4, generator=g)),
    }
    torch.manual_seed(0)
    model = ModalityCorrelationEvaluator(
        {"A": 5, "V": 4}, hidden_dim=16, num_layers=1, ff_dim=16, dropout=0.0,
        shared_time=2, shared_dim=8, cross_attention=False,
    )  # fmt: skip
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Negatives pair sample i with sample i - 1's audio and vision: every triplet compares the
    # anchor's own partner with another sample's.
    negative = {m: x.roll(1, dims=0) for m, x in features.items()}

    def loss() -> torch.Tensor:
        return correlation_triplet_loss(model(features), model(negative), "cosine", 0.5)[0]

    start = loss().item()
    for _ in range(30):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
    assert loss().item() < 0.5 * start
    # ... and the coefficients separate them: Cor(A_i, V_i) against Cor(A_i, V_{i-1}).
    model.eval()
    with torch.no_grad():
        aligned, mixed = model(features), model(negative)
    cosine = Distance("cosine")
    real = cosine.similarity(aligned["A"], aligned["V"])
    shuffled = cosine.similarity(aligned["A"], mixed["V"])
    assert (real > shuffled).all() and real.min() > shuffled.median()
