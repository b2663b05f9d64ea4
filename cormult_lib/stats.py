"""Paired comparisons of two models with 95% intervals, and verdicts decided by the interval.

Every comparison in the tutorial asks one question: on the same test samples, trained with the
same seeds, is model ``a`` better than model ``b`` on a metric, and by how much? A difference
of means says nothing without its uncertainty, which has two sources:

* **seeds**: another initialisation and shuffling gives another model;
* **test samples**: another draw of the test split gives another score.

:func:`paired_bootstrap` resamples both. One resample draws ``n_seeds`` seeds and ``n``
test samples with replacement, the *same* draws for ``a`` and ``b`` (paired: the two models
are compared on identical samples, which removes the variation that both share), and computes

.. math::

    \\Delta^* = \\frac{1}{n_{seeds}} \\sum_{s \\in S^*} \\big(m(\\hat y^a_{s, I^*}, y_{I^*})
              - m(\\hat y^b_{s, I^*}, y_{I^*})\\big).

The 2.5% and 97.5% quantiles of many :math:`\\Delta^*` are the percentile interval. With one
seed only the samples are resampled, and a warning in :attr:`Comparison.method` says that
training randomness is not in the interval. :func:`seed_interval` is the classical
alternative when only per-seed metrics exist: a paired *t* interval over seeds
(:func:`scipy.stats.ttest_rel`), which ignores test-sample variation.

:func:`verdict` reads the interval and nothing else: ``"a better"`` when the whole interval
favours ``a``, ``"b better"`` when it favours ``b``, otherwise ``"no measurable difference"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as scipy_stats

from cormult_lib.metrics import (
    METRIC_KEYS,
    PER_SAMPLE,
    metric_function,
    per_sample_scores,
    regression_metrics,
    resampled_metric,
)

#: Metrics where a lower value is better (errors, losses, times); every other is higher-better.
LOWER_IS_BETTER = frozenset({"mae", "valid_loss", "L_ave", "epoch_time_s", "epoch_s"})
CONFIDENCE = 0.95
#: Fewest samples (per group, or pairs) that a bootstrap over samples resamples. With fewer, a
#: resample holds a handful of distinct values and the percentile interval is far too narrow:
#: three correct answers out of three resample to 100% every time, so a group of three would
#: decide a comparison on its own. The interval is then NaN ("no measurable difference"), and
#: the comparison's method says why.
MIN_BOOTSTRAP_SAMPLES = 10
#: The method of :func:`seed_interval`: its interval is over seeds only, not test samples.
SEED_METHOD = "paired t interval over seeds"
TOO_FEW = f"; fewer than {MIN_BOOTSTRAP_SAMPLES} samples to resample: no interval"

def verdict(ci_low: float, ci_high: float, metric: str, lower_is_better: bool | None = None) -> str:
    """``"a better"``, ``"b better"`` or ``"no measurable difference"`` for the interval of
    ``a - b`` on ``metric``, decided by the interval alone. ``lower_is_better`` defaults to
    ``metric in LOWER_IS_BETTER``.

    >>> verdict(-0.05, -0.01, "mae"), verdict(-0.05, 0.01, "mae"), verdict(0.01, 0.02, "corr")
    ('a better', 'no measurable difference', 'a better')
    """
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "no measurable difference"
    lower = metric in LOWER_IS_BETTER if lower_is_better is None else lower_is_better
    a_favoured = ci_high < 0 if lower else ci_low > 0
    b_favoured = ci_low > 0 if lower else ci_high < 0
    if a_favoured:
        return "a better"
    if b_favoured:
        return "b better"
    return "no measurable difference"


def stratified_method(n_higher: int, n_lower: int) -> str:
    """The ``method`` of an AUC against chance (:func:`auc_against_chance`) over two groups of
    these sizes, saying when a group is too small for an interval."""
    method = f"stratified bootstrap over {n_higher} + {n_lower} samples"
    return method + TOO_FEW if min(n_higher, n_lower) < MIN_BOOTSTRAP_SAMPLES else method


def interval_text(low: float, high: float) -> str:
    """An interval as printed: ``"[-0.058, -0.004]"``, or ``"(no interval)"`` when it is NaN
    (one seed, or a group too small to resample)."""
    finite = np.isfinite(low) and np.isfinite(high)
    return f"[{low:+.3f}, {high:+.3f}]" if finite else "(no interval)"


def estimate_text(cell: dict[str, float]) -> str:
    """A value with its interval, ``{"value", "ci_low", "ci_high"}`` as :func:`metric_intervals`
    gives it: ``"0.712 [0.688, 0.735]"``, or ``"0.712 (no interval)"`` when the interval is NaN
    (``None`` once written to JSON)."""
    low, high = (np.nan if cell[k] is None else cell[k] for k in ("ci_low", "ci_high"))
    interval = f"[{low:.3f}, {high:.3f}]" if np.isfinite(low) and np.isfinite(high) else (
        "(no interval)"
    )
    return f"{cell['value']:.3f} {interval}"


def sample_sizes(n: int, groups: Sequence[int] | None) -> str:
    """How a comparison's ``n`` is printed: ``"120"``, or ``"3 vs 50"`` when ``groups`` gives
    the sizes of two groups of different samples."""
    return str(n) if groups is None else f"{groups[0]} vs {groups[1]}"


@dataclass(frozen=True)
class Comparison:
    """One row of a chapter's ``comparisons`` list: ``a - b`` on ``metric`` over ``subset``.

    ``n`` is the number of test samples the metric reads (a Non0 metric: those with a
    non-zero label) and ``n_seeds`` the seeds; ``a_value`` / ``b_value``
    are the metrics averaged over seeds; ``difference = a_value - b_value``; ``[ci_low,
    ci_high]`` its 95% interval; ``verdict`` from :func:`verdict`; ``method`` says how the
    interval was made. ``groups``: for two groups of different samples, the size of each
    (``n`` is their sum), so that a verdict resting on a small group shows it; ``None`` when
    ``a`` and ``b`` are scored on the same ``n`` samples. ``lower_is_better``: the direction the
    verdict was read in, kept so that whoever reads the comparison back (a results file, a
    figure) reads it the same way; ``None`` in records written before it was kept (then
    :attr:`lower_better` falls back on :data:`LOWER_IS_BETTER`).
    """

    subset: str
    n: int
    n_seeds: int
    metric: str
    a: str
    b: str
    a_value: float
    b_value: float
    difference: float
    ci_low: float
    ci_high: float
    verdict: str
    method: str
    groups: tuple[int, int] | None = None
    lower_is_better: bool | None = None

    @classmethod
    def build(
        cls,
        *,
        subset: str,
        n: int,
        n_seeds: int,
        metric: str,
        names: tuple[str, str],
        values: tuple[float, float],
        interval: tuple[float, float],
        method: str,
        lower_is_better: bool | None = None,
        groups: tuple[int, int] | None = None,
    ) -> Comparison:
        """The one way comparisons are made: ``difference`` and ``verdict`` computed here from
        the ``values`` of ``a`` and ``b`` (named by ``names``, in that order) and the 95%
        ``interval`` of ``a - b``."""
        a_value, b_value = values
        low, high = (float(x) for x in interval)
        lower = metric in LOWER_IS_BETTER if lower_is_better is None else bool(lower_is_better)
        return cls(
            subset=subset,
            n=int(n),
            n_seeds=int(n_seeds),
            metric=metric,
            a=names[0],
            b=names[1],
            a_value=float(a_value),
            b_value=float(b_value),
            difference=float(a_value - b_value),
            ci_low=low,
            ci_high=high,
            verdict=verdict(low, high, metric, lower),
            method=method,
            groups=None if groups is None else (int(groups[0]), int(groups[1])),
            lower_is_better=lower,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def lower_better(self) -> bool:
        """Whether a lower value of :attr:`metric` is the better one, as the verdict read it."""
        if self.lower_is_better is None:  # an older record: the metric's default direction
            return self.metric in LOWER_IS_BETTER
        return self.lower_is_better

    @property
    def sizes(self) -> str:
        """``n`` as printed: ``"120"``, or ``"3 vs 50"`` for two groups."""
        return sample_sizes(self.n, self.groups)

    def sentence(self) -> str:
        """The result in words, printed from the numbers, e.g. ``"weak:voice (n=120, 5
        seeds): CorMulT - MulT MAE = -0.031 [-0.058, -0.004], CorMulT better"``."""
        verdict_words = {
            "a better": f"{self.a} better",
            "b better": f"{self.b} better",
            "no measurable difference": "no measurable difference",
        }[self.verdict]
        return (
            f"{self.subset} (n={self.sizes}, {self.n_seeds} seed{'s' * (self.n_seeds != 1)}): "
            f"{self.a} - {self.b} {self.metric} = {self.difference:+.3f} "
            f"{interval_text(self.ci_low, self.ci_high)}, {verdict_words}"
        )


def _percentile(deltas: np.ndarray, what: str = "statistic") -> tuple[float, float]:
    """The 95% percentile interval of resampled values (undefined ones, e.g. Pearson r of a
    constant resample, left out with a warning that counts them); NaN when none is left."""
    finite = np.isfinite(deltas)
    if not finite.all():
        warnings.warn(
            f"{what}: {int((~finite).sum())} of {len(deltas)} resamples are undefined (e.g. a "
            "correlation of a constant resample, or no non-zero label drawn) and left out of "
            "the 95% interval",
            UserWarning,
            stacklevel=3,
        )
    deltas = deltas[finite]
    if not len(deltas):
        return float("nan"), float("nan")
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(deltas, [tail, 100 - tail])
    return float(low), float(high)


def _finite(values, name: str, flat: bool = True) -> np.ndarray:
    """``values`` as a float array (``(n,)`` when ``flat``), refusing NaN and inf: a NaN would
    otherwise pass through a mean or a spread unnoticed and leave a confident verdict."""
    array = np.asarray(values, dtype=float)
    if not np.isfinite(array).all():
        raise ValueError(
            f"{name} holds {int((~np.isfinite(array)).sum())} non-finite value(s) (NaN or inf) "
            f"of {array.size}; expected finite numbers"
        )
    return array.reshape(-1) if flat else array


def _as_seed_matrix(predictions: np.ndarray, name: str, n: int) -> np.ndarray:
    array = np.asarray(predictions, dtype=float)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != n:
        raise ValueError(
            f"{name} must have shape (n_seeds, {n}) or ({n},) (one row of test predictions "
            f"per seed), got {np.asarray(predictions).shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(array)).sum())} non-finite values")
    return array


def paired_bootstrap(
    a_predictions: np.ndarray,
    b_predictions: np.ndarray,
    labels: np.ndarray,
    metric: str = "mae",
    *,
    names: tuple[str, str] = ("a", "b"),
    subset: str = "all",
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare two models on the same test samples, resampling seeds and samples (see module).

    Args:
        a_predictions, b_predictions: ``(n_seeds, n)`` regression outputs (or predicted
            sentiment scores), row ``s`` trained with the ``s``-th seed of both models; a
            ``(n,)`` array is one seed.
        labels: ``(n,)`` true sentiment.
        metric: one of :data:`~cormult_lib.metrics.METRIC_KEYS`.
        names: how ``a`` and ``b`` are called in the result.
        n_resamples: bootstrap resamples; ``seed`` makes them reproducible.

    Returns:
        A :class:`Comparison`; with fewer than :data:`MIN_BOOTSTRAP_SAMPLES` samples its
        interval is NaN and its verdict ``"no measurable difference"``.
    """
    labels = _finite(labels, "labels")
    n = len(labels)
    a = _as_seed_matrix(a_predictions, "a_predictions", n)
    b = _as_seed_matrix(b_predictions, "b_predictions", n)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must have one row per shared seed, got {a.shape[0]} and {b.shape[0]} rows"
        )
    score = metric_function(metric)
    n_seeds = a.shape[0]
    method = f"paired bootstrap over {'seeds and ' * (n_seeds > 1)}test samples"
    if n_seeds == 1:
        method += " (one seed: training randomness is not in the interval)"
    a_value = float(np.mean([score(row, labels) for row in a])) if n else float("nan")
    b_value = float(np.mean([score(row, labels) for row in b])) if n else float("nan")
    interval = (float("nan"), float("nan"))
    read = _samples_read(metric, labels)
    if read >= MIN_BOOTSTRAP_SAMPLES:
        interval = _percentile_interval(a, b, labels, metric, n_resamples, seed)
    else:
        method += TOO_FEW
    return Comparison.build(
        subset=subset,
        n=read,
        n_seeds=n_seeds,
        metric=metric,
        names=names,
        values=(a_value, b_value),
        interval=interval,
        method=method,
    )


def _percentile_interval(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray, metric: str, n_resamples: int, seed: int
) -> tuple[float, float]:
    """The 95% percentile interval of the resampled differences (see :func:`paired_bootstrap`)."""
    (n_seeds, n), score = a.shape, metric_function(metric)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_seeds, (n_resamples, n_seeds))  # (resamples, n_seeds)
    samples = rng.integers(0, n, (n_resamples, n))  # (resamples, n)
    if metric in PER_SAMPLE:
        # The metric is a masked mean of per-sample scores, so a resample's difference is a
        # weighted sum: seed weights (how often each seed was drawn) times sample weights.
        scores_a, counted = per_sample_scores(metric, a, labels)
        scores_b, _ = per_sample_scores(metric, b, labels)
        d = scores_a - scores_b  # (n_seeds, n)
        seed_weights = np.stack([np.bincount(r, minlength=n_seeds) for r in rows]) / n_seeds
        sample_weights = np.stack([np.bincount(i, minlength=n) for i in samples]) * counted
        with np.errstate(invalid="ignore", divide="ignore"):  # no counted sample drawn: NaN
            deltas = ((seed_weights @ d) * sample_weights).sum(1) / sample_weights.sum(1)
    else:
        # An undefined resample (NaN) is counted once by _percentile, not warned per resample.
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            deltas = np.array(
                [
                    np.mean([score(a[s, i], labels[i]) - score(b[s, i], labels[i]) for s in r])
                    for r, i in zip(rows, samples, strict=True)
                ]
            )
    return _percentile(deltas, f"{metric} difference")


def seed_interval(
    a_values: Sequence[float],
    b_values: Sequence[float],
    metric: str,
    *,
    names: tuple[str, str] = ("a", "b"),
    subset: str = "all",
    n: int = 0,
    lower_is_better: bool | None = None,
) -> Comparison:
    """Paired *t* interval of ``a - b`` over seeds, from one metric value per seed and model.

    ``a_values[i]`` and ``b_values[i]`` come from the same seed. ``n`` is the number of test
    samples behind each value (reported only). With one seed the interval is NaN.
    ``lower_is_better`` as in :func:`verdict` (for metrics such as a loss or a time).
    """
    a, b = _finite(a_values, "a_values", flat=False), _finite(b_values, "b_values", flat=False)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(
            f"a_values and b_values must be equally long 1-D sequences, got {a.shape}, {b.shape}"
        )
    if len(a) > 1 and np.ptp(a - b) > 0:
        interval = scipy_stats.ttest_rel(a, b).confidence_interval(CONFIDENCE)
        low, high = float(interval.low), float(interval.high)
    elif len(a) > 1:  # identical differences: a zero-width interval at that difference
        low = high = float((a - b)[0])
    else:
        low = high = float("nan")
    return Comparison.build(
        subset=subset,
        n=n,
        n_seeds=len(a),
        metric=metric,
        names=names,
        values=(a.mean(), b.mean()),
        interval=(low, high),
        method=SEED_METHOD,
        lower_is_better=lower_is_better,
    )


def compare_on_subsets(
    a_predictions: np.ndarray,
    b_predictions: np.ndarray,
    labels: np.ndarray,
    subsets: dict[str, np.ndarray] | None = None,
    metric: str = "mae",
    *,
    names: tuple[str, str] = ("a", "b"),
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[Comparison]:
    """:func:`paired_bootstrap` on all test samples and on each subset.

    ``subsets`` maps a name to a bool mask ``(n,)`` over the test samples (for example
    :func:`~cormult_lib.data.synthetic.correlation_subsets`); ``"all"`` comes first.
    """
    labels = np.asarray(labels, dtype=float).reshape(-1)
    a = _as_seed_matrix(a_predictions, "a_predictions", len(labels))
    b = _as_seed_matrix(b_predictions, "b_predictions", len(labels))
    groups = {"all": np.ones(len(labels), dtype=bool), **dict(subsets or {})}
    results = []
    for name, chosen in groups.items():
        chosen = np.asarray(chosen, dtype=bool)
        if chosen.shape != labels.shape:
            raise ValueError(
                f"subset {name!r} must be a bool mask of shape {labels.shape}, got {chosen.shape}"
            )
        results.append(
            paired_bootstrap(
                a[:, chosen],
                b[:, chosen],
                labels[chosen],
                metric,
                names=names,
                subset=name,
                n_resamples=n_resamples,
                seed=seed,
            )
        )
    return results


def compare_models(
    outputs: dict[str, np.ndarray],
    labels: np.ndarray,
    pairs: Sequence[tuple[str, str]],
    subsets: dict[str, np.ndarray] | None = None,
    metrics: Sequence[str] = ("mae",),
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[Comparison]:
    """:func:`compare_on_subsets` for every ``(a, b)`` of ``pairs`` and every metric.

    ``outputs`` maps a model name to its ``(n_seeds, n)`` test predictions (same seeds for
    every model, as :func:`~cormult_lib.training.supervised.run_seeds` returns them).
    """
    unknown = sorted({name for pair in pairs for name in pair} - set(outputs))
    if unknown:
        raise ValueError(f"pairs name models {unknown} that outputs lacks; it has {list(outputs)}")
    return [
        comparison
        for a, b in pairs
        for metric in metrics
        for comparison in compare_on_subsets(
            outputs[a],
            outputs[b],
            labels,
            subsets,
            metric,
            names=(a, b),
            n_resamples=n_resamples,
            seed=seed,
        )
    ]


def roc_auc(higher: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """ROC-AUC of scores ``higher`` (label 1) against ``lower`` (label 0), from ranks (the
    Mann-Whitney U over ``n_higher * n_lower``; ties count one half). Works along the last
    axis, so ``(resamples, n)`` arrays give ``(resamples,)`` AUCs."""
    n_high, n_low = higher.shape[-1], lower.shape[-1]
    ranks = scipy_stats.rankdata(np.concatenate([higher, lower], axis=-1), axis=-1)
    u = ranks[..., :n_high].sum(axis=-1) - n_high * (n_high + 1) / 2
    return u / (n_high * n_low)


def auc_against_chance(
    higher: np.ndarray,
    lower: np.ndarray,
    *,
    name: str = "Cor",
    subset: str = "all",
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Is ``name`` better than chance at ranking ``higher`` above ``lower``? ROC-AUC minus 0.5.

    The interval is a stratified bootstrap: each resample draws both groups with replacement,
    each at its own size. ``n`` is ``len(higher) + len(lower)``. With an empty group the AUC
    is NaN; with fewer than :data:`MIN_BOOTSTRAP_SAMPLES` in a group, the interval.
    """
    higher, lower = _finite(higher, "higher"), _finite(lower, "lower")
    n = len(higher) + len(lower)
    auc = float(roc_auc(higher, lower)) if len(higher) and len(lower) else float("nan")
    interval = (float("nan"), float("nan"))
    if min(len(higher), len(lower)) >= MIN_BOOTSTRAP_SAMPLES:
        rng = np.random.default_rng(seed)
        resampled_high = higher[rng.integers(0, len(higher), (n_resamples, len(higher)))]
        resampled_low = lower[rng.integers(0, len(lower), (n_resamples, len(lower)))]
        interval = _percentile(roc_auc(resampled_high, resampled_low) - 0.5)
    return Comparison.build(
        subset=subset,
        n=n,
        n_seeds=1,
        metric="roc_auc",
        names=(name, "chance"),
        values=(auc, 0.5),
        interval=interval,
        method=stratified_method(len(higher), len(lower)),
        groups=(len(higher), len(lower)),
    )


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean of ``values`` (one per seed) and its 95% *t* interval: ``(mean, low, high)``.

    One value: the interval is NaN; identical values: a zero-width interval at the mean. NaN
    and inf are refused.
    """
    x = _finite(values, "values")
    if len(x) == 0:
        raise ValueError("values is empty: nothing to average")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    if np.ptp(x) == 0:
        return mean, mean, mean
    interval = scipy_stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return mean, float(interval.low), float(interval.high)


def mean_difference(
    a_values: np.ndarray,
    b_values: np.ndarray,
    *,
    paired: bool,
    metric: str,
    names: tuple[str, str] = ("a", "b"),
    subset: str = "all",
    lower_is_better: bool | None = None,
    n_seeds: int = 1,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """``mean(a) - mean(b)`` of per-sample values with a 95% percentile bootstrap interval.

    ``paired=True``: ``a_values[i]`` and ``b_values[i]`` belong to the same sample (a negative
    and the real clip it was made from), resampled together; ``n`` is the number of pairs.
    ``paired=False``: two groups of different samples (weak and strong clips), each resampled
    at its own size; ``n`` counts both. Fewer than :data:`MIN_BOOTSTRAP_SAMPLES` values in a
    group: NaN interval. Non-finite values are refused.
    ``n_seeds``: how many training seeds each value is already averaged over (a model's
    per-sample error, say); recorded and named in ``method``, since the interval resamples
    samples only and leaves the differences between seeds out.
    """
    a, b = _finite(a_values, "a_values"), _finite(b_values, "b_values")
    if paired and a.shape != b.shape:
        raise ValueError(f"paired values must be equally long, got {len(a)} and {len(b)}")
    a_value = float(a.mean()) if len(a) else float("nan")
    b_value = float(b.mean()) if len(b) else float("nan")
    interval = (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    method = f"{'paired' if paired else 'two-group'} bootstrap over samples" + (
        f" of values averaged over {n_seeds} seeds" if n_seeds > 1 else ""
    )
    if min(len(a), len(b)) < MIN_BOOTSTRAP_SAMPLES:
        method += TOO_FEW
    elif paired:
        rows = rng.integers(0, len(a), (n_resamples, len(a)))
        interval = _percentile((a - b)[rows].mean(axis=1))
    else:
        interval = _percentile(
            a[rng.integers(0, len(a), (n_resamples, len(a)))].mean(axis=1)
            - b[rng.integers(0, len(b), (n_resamples, len(b)))].mean(axis=1)
        )
    return Comparison.build(
        subset=subset,
        n=len(a) if paired else len(a) + len(b),
        n_seeds=n_seeds,
        metric=metric,
        names=names,
        values=(a_value, b_value),
        interval=interval,
        method=method,
        lower_is_better=lower_is_better,
        groups=None if paired else (len(a), len(b)),
    )


def _samples_read(metric: str, labels: np.ndarray) -> int:
    """How many of ``labels`` ``(n,)`` a metric reads: the non-zero ones for a Non0 metric."""
    return int((labels != 0).sum()) if metric.endswith("_non0") else len(labels)


def metric_intervals(
    predictions: np.ndarray,
    labels: np.ndarray,
    metrics: Sequence[str] = METRIC_KEYS,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Each metric of one model with a 95% percentile bootstrap interval over test samples.

    Args:
        predictions, labels: ``(n,)`` predicted and true sentiment.
        metrics: keys of :data:`~cormult_lib.metrics.METRIC_KEYS`.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high", "n"}}``, ``n`` the samples the metric reads
        (a Non0 metric: those with a non-zero label); ``value`` is
        :func:`~cormult_lib.metrics.regression_metrics` on all samples. Every metric uses the
        same resamples. A metric that reads fewer than :data:`MIN_BOOTSTRAP_SAMPLES` samples
        (non-zero labels for a Non0 metric) gets a NaN interval (printed by
        :func:`estimate_text` as "(no interval)").
    """
    predictions = np.asarray(predictions, dtype=float).reshape(-1)
    labels = np.asarray(labels, dtype=float).reshape(-1)
    if len(predictions) != len(labels) or len(labels) < 2:
        raise ValueError(
            f"need as many predictions as labels, at least 2; got {len(predictions)} and "
            f"{len(labels)}"
        )
    values = regression_metrics(predictions, labels)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(labels), (n_resamples, len(labels)))
    weights = np.stack([np.bincount(row, minlength=len(labels)) for row in drawn])
    out = {}
    for metric in metrics:
        low, high = float("nan"), float("nan")
        read = _samples_read(metric, labels)
        if read >= MIN_BOOTSTRAP_SAMPLES:
            resampled = resampled_metric(metric, predictions, labels, weights)
            low, high = _percentile(resampled, metric)
        out[metric] = {"value": float(values[metric]), "ci_low": low, "ci_high": high, "n": read}
    return out
