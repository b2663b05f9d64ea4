"""The comparison statistics: library agreement, coverage under the null, verdict logic."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, roc_auc_score

from cormult_lib.metrics import METRIC_KEYS, metric_function
from cormult_lib.stats import (
    LOWER_IS_BETTER,
    MIN_BOOTSTRAP_SAMPLES,
    auc_against_chance,
    compare_on_subsets,
    mean_difference,
    mean_interval,
    paired_bootstrap,
    seed_interval,
    verdict,
)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Multiples of 1/3 in [-3, 3] with exact zeros, like CMU-MOSEI's labels."""
    return np.clip(np.round(rng.normal(0.2, 1.3, n) * 3) / 3, -3, 3)


def _library_metric(metric: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    """MMSA's definition of ``metric`` written with sklearn and SciPy, independently of
    :mod:`cormult_lib.metrics`."""
    non0 = labels != 0
    if metric in ("acc7", "acc5"):
        bound = 3 if metric == "acc7" else 2
        rounded = [np.round(np.clip(x, -bound, bound)) for x in (labels, predictions)]
        return accuracy_score(*rounded)
    return {
        "mae": lambda: mean_absolute_error(labels, predictions),
        "corr": lambda: scipy_stats.pearsonr(predictions, labels).statistic,
        "acc2_has0": lambda: accuracy_score(labels >= 0, predictions >= 0),
        "f1_has0": lambda: f1_score(labels >= 0, predictions >= 0, average="weighted"),
        "acc2_non0": lambda: accuracy_score(labels[non0] > 0, predictions[non0] > 0),
        "f1_non0": lambda: f1_score(labels[non0] > 0, predictions[non0] > 0, average="weighted"),
    }[metric]()


@pytest.mark.parametrize("metric", METRIC_KEYS)
def test_metric_functions_equal_the_mmsa_definitions(metric):
    rng = np.random.default_rng(1)
    labels = _labels(rng, 300)
    predictions = labels + rng.normal(0, 0.9, 300)
    predictions[:5] = 0.0  # a prediction of exactly 0 (negative in non0, positive in has0)
    expected = _library_metric(metric, predictions, labels)
    assert metric_function(metric)(predictions, labels) == pytest.approx(expected, abs=1e-12)


def test_one_seed_bootstrap_matches_scipy_paired_percentile_bootstrap():
    rng = np.random.default_rng(2)
    labels = _labels(rng, 400)
    a = labels + rng.normal(0, 0.6, 400)
    b = labels + rng.normal(0, 0.7, 400)
    ours = paired_bootstrap(a, b, labels, "mae", n_resamples=4000, seed=3)
    theirs = scipy_stats.bootstrap(
        (a, b, labels),
        lambda x, y, t: np.abs(x - t).mean() - np.abs(y - t).mean(),
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        rng=np.random.default_rng(4),
    ).confidence_interval
    assert ours.difference == pytest.approx(np.abs(a - labels).mean() - np.abs(b - labels).mean())
    # Two independent Monte Carlo runs of the same interval: equal within resampling noise.
    assert ours.ci_low == pytest.approx(theirs.low, abs=0.006)
    assert ours.ci_high == pytest.approx(theirs.high, abs=0.006)
    assert ours.n == 400 and ours.n_seeds == 1 and "one seed" in ours.method


def test_seed_interval_is_the_paired_t_interval():
    a = np.array([0.70, 0.72, 0.69, 0.75, 0.71])
    b = np.array([0.74, 0.73, 0.74, 0.78, 0.72])
    result = seed_interval(a, b, "mae", names=("CorMulT", "MulT"))
    d = a - b
    half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert result.ci_low == pytest.approx(d.mean() - half)
    assert result.ci_high == pytest.approx(d.mean() + half)
    assert result.verdict == "a better"
    single = seed_interval(a[:1], b[:1], "mae")
    assert np.isnan(single.ci_low) and single.verdict == "no measurable difference"


def test_under_the_null_the_interval_covers_zero_about_95_percent_of_the_time():
    """Two models with the same error distribution: 'no measurable difference' ~95% of runs."""
    rng = np.random.default_rng(5)
    decided = 0
    runs = 300
    for run in range(runs):
        labels = _labels(rng, 150)
        a = labels + rng.normal(0, 0.8, (3, 150))
        b = labels + rng.normal(0, 0.8, (3, 150))
        result = paired_bootstrap(a, b, labels, "mae", n_resamples=400, seed=run)
        decided += result.verdict != "no measurable difference"
    assert 0.01 <= decided / runs <= 0.10, decided


def test_a_real_difference_is_found_and_swapping_models_flips_the_verdict():
    rng = np.random.default_rng(6)
    labels = _labels(rng, 500)
    good = labels + rng.normal(0, 0.5, (4, 500))
    bad = labels + rng.normal(0, 0.8, (4, 500))
    forward = paired_bootstrap(good, bad, labels, "mae", names=("good", "bad"))
    backward = paired_bootstrap(bad, good, labels, "mae", names=("bad", "good"))
    assert forward.verdict == "a better" and backward.verdict == "b better"
    assert forward.ci_high < 0 < backward.ci_low
    assert forward.difference == pytest.approx(-backward.difference)
    assert "good - bad mae" in forward.sentence() and "good better" in forward.sentence()
    on_corr = paired_bootstrap(good, bad, labels, "corr", n_resamples=300)
    assert on_corr.verdict == "a better"  # higher correlation is better


def test_verdict_reads_the_interval_only():
    assert verdict(-0.2, -0.1, "mae") == "a better"
    assert verdict(0.1, 0.2, "mae") == "b better"
    assert verdict(-0.1, 0.2, "mae") == "no measurable difference"
    assert verdict(0.1, 0.2, "acc2_non0") == "a better"
    assert verdict(-0.2, -0.1, "corr") == "b better"
    assert verdict(float("nan"), 0.1, "mae") == "no measurable difference"


def test_subsets_are_compared_separately_and_bad_shapes_are_named():
    rng = np.random.default_rng(7)
    labels = _labels(rng, 60)
    a, b = labels + rng.normal(0, 0.5, 60), labels + rng.normal(0, 0.5, 60)
    weak = np.arange(60) < 20
    rows = compare_on_subsets(a, b, labels, {"weak": weak, "tiny": np.arange(60) < 1})
    assert [(r.subset, r.n) for r in rows] == [("all", 60), ("weak", 20), ("tiny", 1)]
    assert np.isnan(rows[2].ci_low) and rows[2].verdict == "no measurable difference"
    with pytest.raises(ValueError, match=r"a_predictions must have shape \(n_seeds, 60\)"):
        paired_bootstrap(a[:50], b, labels)
    with pytest.raises(ValueError, match="one row per shared seed"):
        paired_bootstrap(np.stack([a, a]), b, labels)
    with pytest.raises(ValueError, match="subset 'weak' must be a bool mask"):
        compare_on_subsets(a, b, labels, {"weak": weak[:10]})
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_bootstrap(a, b, labels, "rmse")


def test_compare_models_covers_every_pair_metric_and_subset_and_plots(tmp_path):
    from cormult_lib.stats import compare_models
    from cormult_lib.tutorial.plots import plot_comparisons

    rng = np.random.default_rng(8)
    labels = _labels(rng, 80)
    outputs = {m: labels + rng.normal(0, s, (2, 80)) for m, s in [("x", 0.4), ("y", 0.9)]}
    rows = compare_models(
        outputs, labels, [("x", "y")], {"half": np.arange(80) < 40}, ("mae", "acc2_non0")
    )
    assert [(r.metric, r.subset) for r in rows] == [
        ("mae", "all"), ("mae", "half"), ("acc2_non0", "all"), ("acc2_non0", "half")
    ]  # fmt: skip
    assert rows[0].verdict == "a better"
    fig = plot_comparisons(rows)
    assert len(fig.axes) == 2, "one panel per metric"
    labels_drawn = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels_drawn[1] == "x - y, half (n=40, 2 seeds)", "n is shown on the figure"
    assert "negative: a better" in fig.axes[0].get_xlabel()
    assert "acc2_non0 (positive: a better)" in fig.axes[1].get_xlabel()
    # A comparison without an interval is a hollow point, and its label says so.
    one_seed = seed_interval([0.5], [0.6], "mae", names=("x", "y"), n=80)
    fig = plot_comparisons([rows[0], one_seed])
    labels_drawn = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels_drawn[1] == "x - y, all (n=80, 1 seed), no interval"
    faces = [line.get_markerfacecolor() for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert faces[1] == "none" and faces[0] != "none"
    # A percentile interval need not hold its point estimate (a skewed metric): drawn from
    # bound to bound, not as distances from the point (negative error bars raised before).
    skewed = replace(rows[0], difference=rows[0].ci_high + 0.01)
    fig = plot_comparisons([skewed])
    (segments,) = [c.get_segments() for c in fig.axes[0].collections]
    assert segments[0][:, 0].tolist() == pytest.approx([skewed.ci_low, skewed.ci_high])
    with pytest.raises(ValueError, match=r"models \['z'\]"):
        compare_models(outputs, labels, [("x", "z")])


def test_roc_auc_from_ranks_equals_sklearn_and_its_interval_covers_it():
    from sklearn.metrics import roc_auc_score

    from cormult_lib.stats import auc_against_chance, roc_auc

    rng = np.random.default_rng(9)
    higher = np.round(rng.normal(0.6, 1, 40), 1)  # rounded: ties between the groups
    lower = np.round(rng.normal(0, 1, 25), 1)
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(25)], np.r_[higher, lower])
    assert roc_auc(higher, lower) == pytest.approx(expected)
    result = auc_against_chance(higher, lower, subset="clarity")
    assert result.a_value == pytest.approx(expected) and result.n == 65
    assert result.ci_low < result.difference < result.ci_high
    assert result.verdict == "a better"
    tiny = auc_against_chance(higher[:1], lower)
    assert np.isnan(tiny.ci_low) and tiny.verdict == "no measurable difference"


def test_mean_difference_paired_and_two_group_intervals():
    rng = np.random.default_rng(10)
    real = rng.normal(0, 1, 200)
    negative = real - 0.3 + rng.normal(0, 0.1, 200)  # made from each real clip, lower
    paired = mean_difference(negative, real, paired=True, metric="agreement")
    two_group = mean_difference(negative, real, paired=False, metric="agreement")
    assert paired.difference == pytest.approx(two_group.difference)
    assert paired.verdict == "b better" and paired.n == 200 and two_group.n == 400
    assert paired.groups is None and "(n=200, 1 seed)" in paired.sentence()
    assert two_group.groups == (200, 200) and "(n=200 vs 200, 1 seed)" in two_group.sentence()
    # Pairing removes the variation the two share: a much narrower interval.
    assert (paired.ci_high - paired.ci_low) < (two_group.ci_high - two_group.ci_low) / 5
    theirs = scipy_stats.bootstrap(
        (negative - real,), np.mean, n_resamples=4000, method="percentile", rng=1
    ).confidence_interval
    assert paired.ci_low == pytest.approx(theirs.low, abs=0.004)
    assert paired.ci_high == pytest.approx(theirs.high, abs=0.004)
    # Values averaged over seeds beforehand: the seeds are recorded, the interval is the same.
    averaged = mean_difference(negative, real, paired=False, metric="agreement", n_seeds=5)
    assert (averaged.n_seeds, two_group.n_seeds) == (5, 1)
    assert (averaged.ci_low, averaged.ci_high) == (two_group.ci_low, two_group.ci_high)
    assert "averaged over 5 seeds" in averaged.method and "seeds" not in two_group.method
    assert "5 seeds" in averaged.sentence()
    lower = mean_difference(negative, real, paired=True, metric="loss", lower_is_better=True)
    assert lower.verdict == "a better"
    with pytest.raises(ValueError, match="equally long"):
        mean_difference(negative[:5], real, paired=True, metric="agreement")


def test_mean_interval_is_the_one_sample_t_interval():
    values = np.array([0.10, 0.14, 0.09, 0.12, 0.15])
    mean, low, high = mean_interval(values)
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half))
    assert mean_interval([0.2, 0.2]) == (0.2, 0.2, 0.2)
    assert np.isnan(mean_interval([0.3])[1])
    with pytest.raises(ValueError, match="empty"):
        mean_interval([])


def test_undefined_resamples_are_counted_in_a_warning():
    """Corr of a resample whose predictions are constant is undefined: such resamples are left
    out of the interval, and the warning says how many."""
    labels = np.array([1.0, -1.0, 2.0, -2.0, 0.5] * 2)
    a = np.array([0.25] * 9 + [0.9])  # constant unless the last sample is drawn (35%: not)
    b = np.array([0.8, -0.9, 1.7, -2.1, 0.4] * 2)
    with pytest.warns(UserWarning, match=r"corr difference: \d+ of 2000 resamples are undefined"):
        result = paired_bootstrap(a, b, labels, metric="corr", n_resamples=2000)
    assert np.isfinite([result.ci_low, result.ci_high]).all()


def test_a_group_too_small_to_resample_gets_no_interval_and_no_verdict():
    """Three correct answers out of three resample to 100% every time: a percentile bootstrap
    would decide on such a group alone. Below MIN_BOOTSTRAP_SAMPLES there is no interval."""
    rng = np.random.default_rng(0)
    strong = (rng.random(50) < 0.7).astype(float)  # a probe right on ~70% of 50 clips
    few = np.ones(MIN_BOOTSTRAP_SAMPLES - 1)  # right on every one of a few weak clips
    small = mean_difference(few, strong, paired=False, metric="acc", names=("weak", "strong"))
    assert np.isnan([small.ci_low, small.ci_high]).all()
    assert small.verdict == "no measurable difference" and "no interval" in small.method
    assert small.difference == pytest.approx(1 - strong.mean()) and small.groups == (9, 50)
    assert "(no interval)" in small.sentence() and "nan" not in small.sentence()
    # One more sample and the bootstrap runs: the same all-correct group now decides.
    enough = mean_difference(np.ones(MIN_BOOTSTRAP_SAMPLES), strong, paired=False, metric="acc")
    assert np.isfinite([enough.ci_low, enough.ci_high]).all() and enough.verdict == "a better"
    paired = mean_difference(few, few - 1, paired=True, metric="acc")
    assert np.isnan(paired.ci_low) and paired.n == 9
    labels = _labels(rng, MIN_BOOTSTRAP_SAMPLES - 1)
    models = paired_bootstrap(labels, labels + 1.0, labels, "mae")
    assert np.isnan(models.ci_low) and models.verdict == "no measurable difference"
    # A subset of 12 samples whose Non0 metrics read only the 4 with a non-zero label.
    zeros = np.r_[np.zeros(8), 1.0, -1.0, 2.0, -2.0]
    non0 = paired_bootstrap(zeros + 0.5, zeros - 0.5, zeros, "acc2_non0")
    assert np.isnan(non0.ci_low) and "no interval" in non0.method
    assert non0.n == 4 and "(n=4," in non0.sentence(), "n counts the samples the metric reads"
    assert np.isfinite(paired_bootstrap(zeros + 0.5, zeros - 0.5, zeros, "mae").ci_low)
    auc = auc_against_chance(np.arange(3.0) + 100, np.arange(40.0))
    assert auc.a_value == 1.0 and np.isnan(auc.ci_low) and "no interval" in auc.method


@pytest.mark.parametrize(
    "call",
    [
        lambda bad: seed_interval(bad, [0.8, 0.8, 0.8], "mae"),
        lambda bad: mean_difference(bad, [0.0] * 3, paired=True, metric="x"),
        lambda bad: mean_difference([0.0] * 3, bad, paired=False, metric="x"),
        lambda bad: paired_bootstrap([0.1] * 3, [0.2] * 3, bad, "mae"),
        lambda bad: auc_against_chance(bad, [0.0] * 3),
    ],
    ids=["seed_interval", "mean_difference-a", "mean_difference-b", "labels", "auc"],
)
def test_non_finite_values_are_refused_not_turned_into_a_verdict(call):
    """seed_interval([0.7, nan, 0.7], ...) gave 'a better' with a zero-width interval: NaN
    passed the spread check. Every interval function refuses NaN and inf, naming the input."""
    for bad in ([0.7, np.nan, 0.7], [0.7, np.inf, 0.7]):
        with pytest.raises(ValueError, match="non-finite"):
            call(bad)


def _f1_non0(predictions: np.ndarray, labels: np.ndarray) -> float:
    """sklearn's weighted F1 of positive vs negative on the non-zero labels."""
    non_zero = labels != 0
    return f1_score(labels[non_zero] > 0, predictions[non_zero] > 0, average="weighted")


#: Independent scores for the metrics that are not means of per-sample scores.
WHOLE_SAMPLE_SCORES = {
    "corr": lambda predictions, labels: scipy_stats.pearsonr(predictions, labels).statistic,
    "f1_non0": _f1_non0,
}


@pytest.mark.parametrize("metric", ["mae", "acc2_non0", "acc7", "corr", "f1_non0"])
def test_multi_seed_bootstrap_equals_resampling_seeds_and_samples_by_brute_force(metric):
    """Both paths of the interval against the definition: each resample draws seeds and
    samples (the same draws as the library, from the same generator) and averages metric(a) -
    metric(b) over the drawn seeds, on the drawn samples. The per-sample metrics take a
    weighted-sum shortcut; corr and F1 are scored here by SciPy and scikit-learn."""
    rng = np.random.default_rng(5)
    labels = _labels(rng, 60)
    a = labels + rng.normal(0, 0.8, (3, 60))
    b = labels + rng.normal(0.1, 0.9, (3, 60))
    ours = paired_bootstrap(a, b, labels, metric, n_resamples=300, seed=7)
    draws = np.random.default_rng(7)
    rows = draws.integers(0, 3, (300, 3))
    samples = draws.integers(0, 60, (300, 60))
    score = WHOLE_SAMPLE_SCORES.get(metric, metric_function(metric))
    deltas = [
        np.mean([score(a[s, i], labels[i]) - score(b[s, i], labels[i]) for s in r])
        for r, i in zip(rows, samples, strict=True)
    ]
    low, high = np.percentile(deltas, [2.5, 97.5])
    assert (ours.ci_low, ours.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert ours.n_seeds == 3 and "seeds and test samples" in ours.method


def test_two_group_mean_difference_matches_scipy_independent_bootstrap():
    rng = np.random.default_rng(8)
    a, b = rng.normal(0.3, 1, 40), rng.normal(0, 1.5, 70)
    ours = mean_difference(a, b, paired=False, metric="x", n_resamples=4000, seed=1)
    theirs = scipy_stats.bootstrap(
        (a, b), lambda x, y: x.mean() - y.mean(), method="percentile", n_resamples=4000,
        rng=np.random.default_rng(2),
    ).confidence_interval
    assert ours.difference == pytest.approx(a.mean() - b.mean())
    assert (ours.ci_low, ours.ci_high) == pytest.approx((theirs.low, theirs.high), abs=0.03)


@pytest.mark.parametrize("metric", sorted(LOWER_IS_BETTER))
def test_every_lower_is_better_metric_favours_the_lower_value(metric):
    assert verdict(-2.0, -1.0, metric) == "a better" and verdict(1.0, 2.0, metric) == "b better"
    assert verdict(-2.0, -1.0, metric, lower_is_better=False) == "b better"
    assert verdict(-1.0, 1.0, metric) == "no measurable difference"


def test_auc_against_chance_is_scipys_two_sample_bootstrap_of_sklearns_auc():
    """Resampling each group at its own size is what scipy.stats.bootstrap does with two
    independent samples; the AUC itself is sklearn's."""
    rng = np.random.default_rng(9)
    higher, lower = rng.normal(0.6, 1, 30), rng.normal(0, 1, 45)
    ours = auc_against_chance(higher, lower, n_resamples=4000, seed=3)
    truth = np.r_[np.ones(30), np.zeros(45)]
    assert ours.a_value == pytest.approx(roc_auc_score(truth, np.r_[higher, lower]))
    theirs = scipy_stats.bootstrap(
        (higher, lower),
        lambda h, lo: roc_auc_score(np.r_[np.ones(len(h)), np.zeros(len(lo))], np.r_[h, lo]) - 0.5,
        vectorized=False, method="percentile", n_resamples=4000, rng=np.random.default_rng(4),
    ).confidence_interval
    assert (ours.ci_low, ours.ci_high) == pytest.approx((theirs.low, theirs.high), abs=0.02)
    assert ours.groups == (30, 45) and ours.n == 75


def test_metric_intervals_are_drawn_from_bound_to_bound_with_n():
    from cormult_lib.tutorial.plots import plot_metric_intervals

    entries = {  # the second holds its point outside its percentile interval
        "ridge": {"corr": {"value": 0.6, "ci_low": 0.55, "ci_high": 0.65}, "n_test": 90},
        "tuned": {"corr": {"value": 0.7, "ci_low": 0.71, "ci_high": 0.8}, "n_test": 90},
    }
    fig = plot_metric_intervals(entries, ["corr"], title="test")
    spans = [c.get_segments()[0][:, 1].tolist() for c in fig.axes[0].collections]
    assert spans == [pytest.approx([0.55, 0.65]), pytest.approx([0.71, 0.8])]
    assert "n=90" in fig._suptitle.get_text()
