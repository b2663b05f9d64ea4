"""The rough power calculation: how many samples would decide an undecided comparison."""

from dataclasses import replace

import numpy as np
import pytest

from cormult_lib.stats import Comparison, mean_difference, seed_interval
from cormult_lib.tutorial.power import chance_sentence, decide_sentence, samples_to_decide


def test_samples_to_decide_scales_with_the_squared_width_ratio():
    undecided = Comparison.build(
        subset="weak:voice", n=100, n_seeds=5, metric="mae", names=("a", "b"),
        values=(0.75, 0.70), interval=(-0.05, 0.15), method="test",
    )
    assert samples_to_decide(undecided) == pytest.approx(400)  # reach 0.1, difference 0.05
    decided = replace(undecided, ci_low=0.04, ci_high=0.06, verdict="a better")
    assert samples_to_decide(decided) < decided.n
    assert np.isnan(samples_to_decide(replace(undecided, difference=0.0)))
    assert np.isnan(samples_to_decide(replace(undecided, ci_low=float("nan"))))
    assert decide_sentence(undecided) == (
        "weak:voice: mae difference +0.050 at n=100; at least about 400 samples (4.0x) to "
        "decide it, if it stayed so"
    )
    assert decide_sentence(decided).endswith("already decided by its interval")
    # A negative difference (a's error lower, the usual hope for CorMulT on MAE): its reach
    # towards 0 is the upper end, 0.05 - (-0.05) = 0.10 for a difference of -0.05.
    negative = Comparison.build(
        subset="weak", n=100, n_seeds=5, metric="mae", names=("a", "b"),
        values=(0.70, 0.75), interval=(-0.15, 0.05), method="test",
    )
    assert samples_to_decide(negative) == pytest.approx(400)
    # A lopsided (percentile) interval: what counts is its reach towards 0, not its half-width
    # (0.105 here, which would call n=100 already enough although the interval holds 0).
    lopsided = Comparison.build(
        subset="all", n=100, n_seeds=1, metric="mae", names=("a", "b"),
        values=(0.62, 0.50), interval=(-0.01, 0.20), method="test",
    )
    assert lopsided.verdict == "no measurable difference"
    assert samples_to_decide(lopsided) == pytest.approx(100 * (0.13 / 0.12) ** 2)
    assert "already decided" not in decide_sentence(lopsided)
    # the 1/sqrt(n) rule it rests on: a bootstrap interval at 4n is about half as wide
    rng = np.random.default_rng(0)
    widths = []
    for n in (200, 800):
        a, b = rng.normal(0.05, 1, n), rng.normal(0, 1, n)
        c = mean_difference(a, b, paired=True, metric="agreement")
        widths.append(c.ci_high - c.ci_low)
    assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.1)


def test_no_sample_count_is_extrapolated_from_an_interval_over_seeds():
    over_seeds = seed_interval([0.50, 0.53, 0.49], [0.51, 0.50, 0.50], "mae", n=200)
    assert over_seeds.verdict == "no measurable difference"
    assert np.isnan(samples_to_decide(over_seeds))
    assert decide_sentence(over_seeds).endswith(
        "its interval is over seeds: more seeds, not more samples, would narrow it"
    )
    no_samples = seed_interval([0.50, 0.53, 0.49], [0.51, 0.50, 0.50], "mae")  # n = 0
    assert np.isnan(samples_to_decide(no_samples))
    without_n = Comparison.build(
        subset="all", n=0, n_seeds=1, metric="mae", names=("a", "b"),
        values=(0.75, 0.70), interval=(-0.05, 0.15), method="test",
    )
    assert np.isnan(samples_to_decide(without_n))
    assert "no interval or no difference" in decide_sentence(without_n)


def test_chance_sentence_counts_the_decided_against_five_percent_of_all():
    rng = np.random.default_rng(0)
    comparisons = [
        mean_difference(rng.normal(shift, 1, 30), rng.normal(0, 1, 30), paired=False,
                        metric="x", n_resamples=500, seed=i)
        for i, shift in enumerate([0.0] * 36 + [2.0] * 4)
    ]  # fmt: skip
    decided = sum(c.verdict != "no measurable difference" for c in comparisons)
    assert 4 <= decided < 40
    sentence = chance_sentence(decided, len(comparisons))
    assert sentence.startswith(f"{decided} of 40 comparisons are decided by their 95% interval")
    assert "about 2.0 would be decided by chance alone" in sentence
    with pytest.raises(ValueError, match="decided"):
        chance_sentence(41, 40)
