"""How far an undecided comparison is from a verdict: a rough power calculation.

A "no measurable difference" says the interval holds 0 at this ``n``; it does not say whether a
larger run could decide. :func:`samples_to_decide` extrapolates: if the difference stayed as
measured, about how many samples would narrow the interval until it excludes 0.
"""

from __future__ import annotations

import numpy as np

from cormult_lib.stats import Comparison

__all__ = ["decide_sentence", "samples_to_decide"]


def samples_to_decide(comparison: Comparison) -> float:
    """About how many samples would let an interval of ``comparison``'s kind exclude 0 if the
    difference stayed as measured: ``n * (half_width / |difference|)^2``.

    It rests on an interval's width shrinking as ``1 / sqrt(n)`` and ignores what more seeds
    would add, so read it as an order of magnitude: a few times ``n`` means a larger run may
    decide, a hundred times ``n`` means the difference is too small to chase. Two groups: ``n``
    counts both. NaN without an interval or with a zero difference.
    """
    half_width = (comparison.ci_high - comparison.ci_low) / 2
    if not (np.isfinite(half_width) and comparison.difference != 0):
        return float("nan")
    return comparison.n * (half_width / abs(comparison.difference)) ** 2


def decide_sentence(comparison: Comparison) -> str:
    """:func:`samples_to_decide` in words, e.g. ``"weak:voice: mae difference -0.030 at n=142;
    about 1,900 samples (13.4x) would decide it if it stayed so"``."""
    needed = samples_to_decide(comparison)
    head = (f"{comparison.subset}: {comparison.metric} difference {comparison.difference:+.3f} "
            f"at n={comparison.n}")
    if not np.isfinite(needed):
        return f"{head}; no interval or no difference to extrapolate from"
    if needed <= comparison.n:
        return f"{head}; already decided by its interval"
    return (f"{head}; about {needed:,.0f} samples ({needed / comparison.n:.1f}x) would decide "
            "it if it stayed so")
