"""The triplet loss of CorMulT section 3.2.4 (Eq. 8).

The triplet loss ``TL(a, p, n) = mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin)`` pulls
an anchor ``a`` towards its positive ``p`` and pushes it from its negative ``n`` until the
negative is ``margin`` further away (:func:`triplet_loss`; the same as
``torch.nn.TripletMarginWithDistanceLoss``). ``d`` is a
:class:`~cormult_lib.correlation.distances.Distance` between shared-space embeddings
``(batch, t, o)``.

Eq. 8 applies it to every ordered pair of modalities (:func:`correlation_triplet_loss`)::

    LOSS_A = TL(F'_A, F_Tp, F_Tn) + TL(F'_A, F_Vp, F_Vn)
    LOSS_T = TL(F'_T, F_Ap, F_An) + TL(F'_T, F_Vp, F_Vn)
    LOSS_V = TL(F'_V, F_Tp, F_Tn) + TL(F'_V, F_Ap, F_An)
    LOSS   = (LOSS_A + LOSS_T + LOSS_V) / 3

The anchor ``F'_X`` is the real sample's embedding of modality ``X``, the positive ``F_Yp`` the
real sample's embedding of the other modality ``Y`` and the negative ``F_Yn`` the negative
sample's embedding of ``Y``. With two modalities each ``LOSS_X`` has one term and the final
division is by 2.

**Which anchor for the negative?** Without cross-attention (the authors' code) a modality's
embedding depends on that modality alone, so when ``X`` is untouched by the negative the real
``F'_X`` is also the negative's own. With the evaluator's cross-attention it is not: ``X`` of
the negative attends to the changed ``Y`` and moves. The coefficient of a negative,
``Cor = sim(F_Xn, F_Yn)``, compares the negative's *own* embeddings, while Eq. 8 compares the
real ``F'_X`` with ``F_Yn``, so the loss can fall without the coefficients of negatives falling
(chapter 04 measures both: the loss, and the ROC-AUC of the coefficients of real clips against
their negatives).
``anchor="own"`` trains what the coefficient measures::

    TL_own = max(0, d(F_Xp, F_Yp) - d(F_Xn, F_Yn) + margin)

which equals Eq. 8 whenever ``F_Xn == F_Xp``. ``anchor="real"`` (default) is Eq. 8 as printed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cormult_lib.correlation.distances import Distance, get_distance, present_pairs

#: How :func:`correlation_triplet_loss` anchors the negative distance.
ANCHORS = ("real", "own")


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    distance: str | Distance = "cosine",
    margin: float = 0.2,
    keep: torch.Tensor | None = None,
    reduction: str = "mean",
    negative_anchor: torch.Tensor | None = None,
) -> torch.Tensor:
    """``max(0, d(anchor, positive) - d(anchor, negative) + margin)``, averaged over the batch.

    Args:
        anchor, positive, negative: embeddings ``(batch, t, o)`` (or ``(batch, o)``).
        distance: a :class:`~cormult_lib.correlation.distances.Distance` or its name.
        margin: how much further the negative must be than the positive.
        keep: optional bool ``(batch,)``: only these triplets enter the mean (0 if none does).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (the ``(batch,)`` hinge terms, ``keep``
            not applied).
        negative_anchor: optional anchor for the negative distance only,
            ``d(negative_anchor, negative)`` (see ``anchor="own"`` of
            :func:`correlation_triplet_loss`).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    d = get_distance(distance)
    far = d(anchor if negative_anchor is None else negative_anchor, negative)
    terms = torch.clamp_min(d(anchor, positive) - far + margin, 0.0)
    if reduction == "none":
        return terms
    if keep is None:
        return terms.mean()
    if keep.shape != terms.shape or keep.dtype != torch.bool:
        raise ValueError(f"keep must be bool {tuple(terms.shape)}, got {keep.dtype} {keep.shape}")
    weights = keep.to(terms.dtype)
    return (terms * weights).sum() / weights.sum().clamp(min=1.0)


def correlation_triplet_loss(
    pos: Mapping[str, torch.Tensor],
    neg: Mapping[str, torch.Tensor],
    distance: str | Distance = "cosine",
    margin: float = 0.2,
    pair_mask: Mapping[tuple[str, str], torch.Tensor] | None = None,
    anchor: str = "real",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 8 over the modalities present (two or three).

    Args:
        pos: modality -> embeddings ``(batch, t, o)`` of the real samples.
        neg: modality -> embeddings ``(batch, t, o)`` of their negatives (same keys).
        distance: a :class:`~cormult_lib.correlation.distances.Distance` or its name.
        margin: triplet margin (authors: 0.2).
        pair_mask: optional pair -> bool ``(batch,)``, ``True`` where the negative broke that
            pair (:func:`~cormult_lib.correlation.negatives.changed_pairs`; either order of the
            pair's letters). ``None`` keeps every triplet, as the paper. With a mask, the
            triplets of a pair that the negative left intact are left out of that term's mean:
            they are no negatives for that pair (without cross-attention their negative equals
            the positive, a constant ``margin`` with no gradient; with it, they differ only
            through the other, changed modality). A term with no triplet left is 0. The mask is
            per pair, not per term: a term ``TL(F'_X, F_Yp, F_Yn)`` of a broken pair whose
            anchor ``X`` alone changed keeps ``F_Yn = F_Yp`` without cross-attention.
        anchor: ``"real"``: Eq. 8, the real sample's ``F'_X`` in both distances; ``"own"``: the
            negative's own ``F_Xn`` in the negative distance (see the module docstring).

    Returns:
        ``(loss, parts)``: the scalar ``LOSS`` and, detached for logging, ``parts`` with
        ``"LOSS_X"`` per modality present, ``"TL_X_Y"`` per anchor ``X`` / other ``Y`` term and
        ``"LOSS"``.
    """
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    if set(pos) != set(neg):
        raise ValueError(
            f"pos and neg must hold the same modalities, got {sorted(pos)} and {sorted(neg)}"
        )
    pairs = present_pairs(pos)
    modalities = [m for m in ("T", "A", "V") if m in pos]
    if len(modalities) < 2 or len(modalities) != len(pos):
        raise ValueError(
            f"correlation_triplet_loss needs two or three of the modalities T, A, V; got "
            f"{sorted(pos)}"
        )
    d = get_distance(distance)
    parts: dict[str, torch.Tensor] = {}
    per_modality = {}
    for x in modalities:
        total = pos[x].new_zeros(())
        for other in modalities:
            if other == x:
                continue
            keep = _keep(pair_mask, x, other, pairs)
            term = triplet_loss(
                pos[x],
                pos[other],
                neg[other],
                d,
                margin,
                keep=keep,
                negative_anchor=neg[x] if anchor == "own" else None,
            )
            parts[f"TL_{x}_{other}"] = term.detach()
            total = total + term
        per_modality[x] = total
        parts[f"LOSS_{x}"] = total.detach()
    loss = sum(per_modality.values()) / len(modalities)
    parts["LOSS"] = loss.detach()
    return loss, parts


def _keep(
    pair_mask: Mapping[tuple[str, str], torch.Tensor] | None,
    anchor: str,
    other: str,
    pairs: list[tuple[str, str]],
) -> torch.Tensor | None:
    """Which triplets of the term ``TL(F'_anchor, F_other_p, F_other_n)`` enter its mean."""
    if pair_mask is None:
        return None
    key = (anchor, other) if (anchor, other) in pair_mask else (other, anchor)
    if key not in pair_mask:
        raise ValueError(
            f"pair_mask has no entry for the pair {''.join(sorted(key, key='TAV'.index))}; "
            f"expected keys {pairs}, got {sorted(pair_mask)}"
        )
    return pair_mask[key]
