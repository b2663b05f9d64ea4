"""How far an undecided comparison is from a verdict: a rough power calculation.

A "no measurable difference" says the interval holds 0 at this ``n``; it does not say whether a
larger run could decide. :func:`samples_to_decide` extrapolates: if the difference stayed as
measured, about how many samples would narrow the interval until it excludes 0. It is a lower
bound with even odds, not a study plan; see its docstring. :func:`chance_sentence` says how
many of a chapter's verdicts chance alone would decide.
"""

from __future__ import annotations

import numpy as np

from cormult_lib.stats import CONFIDENCE, SEED_METHOD, Comparison

__all__ = ["chance_sentence", "decide_sentence", "samples_to_decide"]


def samples_to_decide(comparison: Comparison) -> float:
    """About how many samples would let an interval of ``comparison``'s kind just exclude 0 if
    the difference stayed as measured: ``n * (reach / |difference|)^2``, with ``reach`` the
    distance from the difference to the interval's bound on the side of 0 (an interval need
    not be centred on its difference). Below ``n`` for a comparison already decided.

    Read it as an optimistic order of magnitude, for three reasons. It assumes the interval
    shrinks as ``1 / sqrt(n)``, which holds for its test-sample part only: the seed-to-seed part
    of an interval over seeds does not shrink with more samples, and where it dominates no
    ``n`` decides. It puts the bound just at 0, so a rerun of that size would decide with about
    even odds; 80% power needs about twice as many samples (``((1.96 + 0.84) / 1.96)^2``).
    And it ignores what more seeds would add. A few times ``n`` means a larger run may decide,
    a hundred times ``n`` that the difference is too small to chase. Two groups: ``n`` counts
    both. NaN without an interval, with a zero difference, without test samples (``n = 0``)
    and for an interval over seeds only (:func:`~cormult_lib.stats.seed_interval`), which more
    test samples do not narrow.
    """
    d = comparison.difference
    reach = d - comparison.ci_low if d > 0 else comparison.ci_high - d
    if comparison.method == SEED_METHOD or comparison.n <= 0:
        return float("nan")
    if not (np.isfinite(reach) and d != 0):
        return float("nan")
    return comparison.n * (reach / abs(d)) ** 2


def decide_sentence(comparison: Comparison) -> str:
    """:func:`samples_to_decide` in words, e.g. ``"weak:voice: mae difference -0.030 at n=142;
    at least about 1,900 samples (13.4x) to decide it, if it stayed so"``."""
    head = (f"{comparison.subset}: {comparison.metric} difference {comparison.difference:+.3f} "
            f"at n={comparison.n}")
    if comparison.verdict != "no measurable difference":
        return f"{head}; already decided by its interval"
    if comparison.method == SEED_METHOD:
        return f"{head}; its interval is over seeds: more seeds, not more samples, would narrow it"
    needed = samples_to_decide(comparison)
    if not np.isfinite(needed):
        return f"{head}; no interval or no difference to extrapolate from"
    return (f"{head}; at least about {needed:,.0f} samples ({needed / comparison.n:.1f}x) to "
            "decide it, if it stayed so")


def chance_sentence(decided: int, total: int) -> str:
    """``decided`` of ``total`` comparisons decided by their intervals, against how many chance
    alone would decide.

    Each 95% interval excludes 0 with probability 5% when the true difference is 0, so among
    ``total`` comparisons without any real difference about ``0.05 * total`` are decided anyway
    (fewer when comparisons share data and move together; the count says nothing about
    *which*). A chapter that reads many verdicts one by one should read them against that count.
    """
    if not 0 <= decided <= total:
        raise ValueError(f"decided must lie in [0, total={total}], got {decided}")
    expected = total * (1 - CONFIDENCE)
    return (
        f"{decided} of {total} comparisons are decided by their {CONFIDENCE:.0%} interval; if no "
        f"difference were real, about {expected:.1f} would be decided by chance alone, so a lone "
        "decided verdict among many is weak evidence"
    )
