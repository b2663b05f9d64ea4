"""The eight numbers every CMU-MOSI / CMU-MOSEI paper reports, computed the MMSA way.

Sentiment labels are continuous scores in ``[-3, 3]``. MMSA, the community framework, turns a
run's predictions into eight numbers, always in the order of :data:`METRIC_KEYS`:

``acc7``
    Seven-class accuracy: clip prediction and truth to ``[-3, 3]``, round, compare.
``acc5``
    Five-class accuracy: clip both to ``[-2, 2]``, round, compare.
``acc2_has0`` / ``f1_has0``
    Negative / non-negative over *all* samples: ``>= 0`` is positive, for prediction and truth.
``acc2_non0`` / ``f1_non0``
    Negative / positive: samples whose truth is exactly 0 are dropped, then ``> 0`` is
    positive (a prediction of exactly 0 counts as negative).
``mae``
    Mean absolute error on the *unclipped* values.
``corr``
    Pearson correlation on the *unclipped* values.

Rounding is NumPy's ``np.round``, which rounds half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2,
-0.5 -> -0. The F1 scores are sklearn's weighted F1 (per-class F1 averaged with the class
supports as weights) of the same binary split as the accuracy next to them.

Every value is a python ``float``; accuracies and F1 scores are fractions in ``[0, 1]``, not
percentages (:func:`metrics_frame` with ``percent=True`` scales them for tables).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score

from cormult_lib.data.dataset import label_to_class

METRIC_KEYS = ("acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "mae", "corr")
# The keys that are fractions in [0, 1]; metrics_frame(percent=True) scales these.
SCORE_KEYS = METRIC_KEYS[:6]
NUM_CLASSES = 7
TRUTH_KINDS = ("auto", "sentiment", "class")

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _to_numpy(values: ArrayLike, name: str) -> np.ndarray:
    """Any array-like to a non-empty, finite, numeric NumPy array; errors name the argument."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.double()  # NumPy has no bfloat16
        values = values.numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integers or floats, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); expected at least one sample")
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(
            f"{name} (shape {array.shape}) holds {int((~finite).sum())} non-finite value(s) "
            "(NaN or inf); expected finite numbers only"
        )
    return array


def _is_one_per_sample(shape: tuple[int, ...]) -> bool:
    """True for shapes such as ``()``, ``(N,)``, ``(N, 1)``, ``(N, 1, 1)``, ``(1, N)``."""
    return sum(size > 1 for size in shape) <= 1


def _flatten(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as a 1-D ``(N,)`` array, refusing shapes with more than one value per sample."""
    if not _is_one_per_sample(array.shape):
        raise ValueError(
            f"{name} must hold one value per sample, i.e. a shape such as (N,), (N, 1) or "
            f"(N, 1, 1); got shape {array.shape}"
        )
    return array.reshape(-1)


def _check_same_length(
    pred: np.ndarray, truth: np.ndarray, pred_name: str, pred_shape: tuple, truth_shape: tuple
) -> None:
    if len(pred) != len(truth):
        raise ValueError(
            f"{pred_name} has shape {pred_shape} ({len(pred)} samples) and truth has shape "
            f"{truth_shape} ({len(truth)} samples); expected the same number of samples"
        )


def _binary_scores(pred_positive: np.ndarray, truth_positive: np.ndarray) -> tuple[float, float]:
    """Accuracy and weighted F1 of a boolean split; a class never predicted has precision 0."""
    accuracy = accuracy_score(truth_positive, pred_positive)
    f1 = f1_score(truth_positive, pred_positive, average="weighted", zero_division=0.0)
    return float(accuracy), float(f1)


def _pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation, or nan with a warning when either side is constant."""
    constant = [
        label
        for label, values in (("predictions", pred), ("truth values", truth))
        if np.ptp(values) == 0
    ]
    if constant:
        warnings.warn(
            f"Pearson correlation is undefined because the {' and the '.join(constant)} are "
            "constant; corr is nan",
            RuntimeWarning,
            stacklevel=4,
        )
        return float("nan")
    return float(np.corrcoef(pred, truth)[0, 1])


def _compute(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The eight metrics of two validated 1-D float arrays of equal length."""
    acc7 = accuracy_score(label_to_class(truth), label_to_class(pred))
    acc5 = accuracy_score(np.round(np.clip(truth, -2.0, 2.0)), np.round(np.clip(pred, -2.0, 2.0)))
    acc2_has0, f1_has0 = _binary_scores(pred >= 0, truth >= 0)
    non_zero = truth != 0
    if non_zero.any():
        acc2_non0, f1_non0 = _binary_scores(pred[non_zero] > 0, truth[non_zero] > 0)
    else:
        warnings.warn(
            "acc2_non0 and f1_non0 are undefined because every truth value is exactly 0 "
            "(the non-zero split drops them all); both are nan",
            RuntimeWarning,
            stacklevel=3,
        )
        acc2_non0 = f1_non0 = float("nan")
    return {
        "acc7": float(acc7),
        "acc5": float(acc5),
        "acc2_has0": acc2_has0,
        "f1_has0": f1_has0,
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "mae": float(np.mean(np.abs(pred - truth))),
        "corr": _pearson(pred, truth),
    }


def regression_metrics(pred: ArrayLike, truth: ArrayLike) -> dict[str, float]:
    """The eight MMSA metrics of continuous sentiment predictions.

    Args:
        pred: predicted sentiment scores, any shape with one value per sample: ``(N,)``,
            ``(N, 1)`` or MulT's ``(N, 1, 1)``; NumPy array, list or torch tensor.
        truth: true sentiment scores in ``[-3, 3]``, same conventions, ``N`` values.

    Returns:
        ``{key: float}`` with exactly the keys of :data:`METRIC_KEYS`, in that order.
        Accuracies and F1 scores are fractions in ``[0, 1]``. ``acc7`` and ``acc5`` clip and
        round half to even (2.5 -> 2); ``mae`` and ``corr`` use the unclipped values. ``corr``
        is nan, with a ``RuntimeWarning``, when the predictions or the truth are constant;
        ``acc2_non0`` and ``f1_non0`` are nan, with a ``RuntimeWarning``, when every truth is 0.

    Raises:
        ValueError: ``pred`` or ``truth`` is empty, holds NaN or inf, has more than one value
            per sample, or the two differ in length.
        TypeError: an argument is not numeric.
    """
    pred_array, truth_array = _to_numpy(pred, "pred"), _to_numpy(truth, "truth")
    pred_flat, truth_flat = _flatten(pred_array, "pred"), _flatten(truth_array, "truth")
    _check_same_length(pred_flat, truth_flat, "pred", pred_array.shape, truth_array.shape)
    return _compute(pred_flat.astype(np.float64), truth_flat.astype(np.float64))


def _check_class_range(classes: np.ndarray, name: str, hint: str = "") -> None:
    bad = np.unique(classes[(classes < 0) | (classes >= NUM_CLASSES)])
    if bad.size:
        raise ValueError(
            f"{name} must hold classes 0..{NUM_CLASSES - 1}, found {bad.tolist()}{hint}"
        )


def _predicted_classes(scores: np.ndarray) -> np.ndarray:
    """``(N, 7)`` logits/probabilities -> argmax, or ``(N,)`` integer classes checked."""
    if scores.ndim == 2 and scores.shape[1] == NUM_CLASSES:
        return scores.argmax(axis=1)
    if scores.dtype.kind == "f" or not _is_one_per_sample(scores.shape):
        raise ValueError(
            f"logits_or_classes must be logits or probabilities of shape (N, {NUM_CLASSES}) or "
            f"integer classes of shape (N,); got a {scores.dtype} array of shape {scores.shape}"
        )
    classes = scores.reshape(-1)
    _check_class_range(classes, "logits_or_classes")
    return classes


def _truth_sentiment(truth: np.ndarray, truth_kind: str) -> np.ndarray:
    """1-D truth as float sentiment values: scores as they are, classes ``c`` as ``c - 3``."""
    kind = truth_kind
    if kind == "auto":
        kind = "class" if truth.dtype.kind in "iu" else "sentiment"
    if kind == "sentiment":
        return truth.astype(np.float64)
    hint = (
        " (integer truth is read as classes when truth_kind='auto'; pass "
        "truth_kind='sentiment' for integer sentiment scores)"
        if truth_kind == "auto"
        else ""
    )
    fractional = truth != np.round(truth)
    if fractional.any():
        raise ValueError(
            "truth with truth_kind='class' must hold whole numbers 0..6, found "
            f"{np.unique(truth[fractional])[:5].tolist()}"
        )
    classes = truth.astype(np.int64)
    _check_class_range(classes, "truth", hint)
    return (classes - NUM_CLASSES // 2).astype(np.float64)


def classification_metrics(
    logits_or_classes: ArrayLike, truth: ArrayLike, truth_kind: str = "auto"
) -> dict[str, float]:
    """The eight MMSA metrics of a 7-class head, so its table lines up with regression runs.

    Predicted classes ``0..6`` are mapped back to sentiment values ``class - 3`` (-3..3) and
    then scored exactly as :func:`regression_metrics` scores them: ``acc7`` is then the plain
    class accuracy, ``acc5`` clips the class values to ``[-2, 2]``, a predicted class 3
    (value 0) is positive in has0 and negative in non0, and ``mae``/``corr`` compare the class
    values with the truth sentiment.

    Args:
        logits_or_classes: either logits or probabilities of shape ``(N, 7)`` (the argmax is
            taken; any 2-D array with 7 columns is read this way) or integer classes ``0..6``
            of shape ``(N,)`` (or ``(N, 1)``). NumPy array, list or torch tensor.
        truth: ``N`` values, one per sample, read according to ``truth_kind``.
        truth_kind: ``"sentiment"``: continuous scores in ``[-3, 3]`` (the class is
            ``clip + round + 3``, via :func:`~cormult_lib.data.dataset.label_to_class`; ``mae``
            and ``corr`` use the score itself). ``"class"``: whole numbers ``0..6`` (float
            dtype allowed), whose sentiment value is ``class - 3``. ``"auto"`` (default):
            integer dtype means ``"class"``, float dtype means ``"sentiment"``.

    Returns:
        ``{key: float}`` with exactly the keys of :data:`METRIC_KEYS`; see
        :func:`regression_metrics` for the conventions and the nan cases.

    Raises:
        ValueError: bad shapes (not ``(N, 7)`` scores or ``(N,)`` classes), classes outside
            ``0..6``, an unknown ``truth_kind``, empty or non-finite input, or different
            numbers of samples.
        TypeError: an argument is not numeric.
    """
    if truth_kind not in TRUTH_KINDS:
        raise ValueError(f"truth_kind must be one of {TRUTH_KINDS}, got {truth_kind!r}")
    scores = _to_numpy(logits_or_classes, "logits_or_classes")
    pred_classes = _predicted_classes(scores)
    truth_array = _to_numpy(truth, "truth")
    truth_flat = _flatten(truth_array, "truth")
    _check_same_length(
        pred_classes, truth_flat, "logits_or_classes", scores.shape, truth_array.shape
    )
    pred_values = (pred_classes - NUM_CLASSES // 2).astype(np.float64)
    return _compute(pred_values, _truth_sentiment(truth_flat, truth_kind))


Metric = Callable[[np.ndarray, np.ndarray], float]
#: Metrics that are a (masked) mean over samples: resampled with one matrix product.
PER_SAMPLE = ("mae", "acc7", "acc5", "acc2_has0", "acc2_non0")


def per_sample_scores(metric: str, predictions: np.ndarray, labels: np.ndarray):
    """``(scores, counted)`` with ``metric = (scores * counted).sum(-1) / counted.sum()``.

    ``predictions`` is ``(..., n)``, ``labels`` ``(n,)``; ``scores`` has the shape of
    ``predictions`` (absolute error, or 1.0 for a correct class), ``counted`` ``(n,)`` is 0
    for the samples the metric drops (truth exactly 0 for ``acc2_non0``). Same definitions as
    :func:`regression_metrics` (a test compares them); the bootstrap of
    :mod:`cormult_lib.stats` resamples these scores.
    """
    counted = np.ones(len(labels))
    if metric == "mae":
        return np.abs(predictions - labels), counted
    if metric in ("acc7", "acc5"):
        bound = 3.0 if metric == "acc7" else 2.0
        rounded = np.round(np.clip(predictions, -bound, bound))
        return (rounded == np.round(np.clip(labels, -bound, bound))).astype(float), counted
    if metric == "acc2_has0":
        return ((predictions >= 0) == (labels >= 0)).astype(float), counted
    if metric == "acc2_non0":
        return ((predictions > 0) == (labels > 0)).astype(float), (labels != 0).astype(float)
    raise ValueError(f"{metric!r} is not a per-sample metric; expected one of {PER_SAMPLE}")


def metric_function(name: str) -> Metric:
    """``metric(predictions (n,), labels (n,)) -> float`` for one of :data:`METRIC_KEYS`."""
    if name not in METRIC_KEYS:
        raise ValueError(f"metric must be one of {METRIC_KEYS}, got {name!r}")
    if name in PER_SAMPLE:

        def score(predictions: np.ndarray, labels: np.ndarray) -> float:
            values, counted = per_sample_scores(name, predictions, labels)
            total = counted.sum()
            return float((values * counted).sum() / total) if total else float("nan")

        return score
    if name == "corr":
        return lambda predictions, labels: float(np.corrcoef(predictions, labels)[0, 1])
    return lambda predictions, labels: regression_metrics(predictions, labels)[name]


def resampled_metric(
    metric: str, predictions: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``metric`` of one model on many bootstrap resamples at once.

    Args:
        predictions, labels: ``(n,)``.
        weights: ``(resamples, n)``, how often each sample was drawn in each resample.

    Returns:
        ``(resamples,)``: the metric of each resample, equal to
        :func:`regression_metrics` on the drawn samples (a test compares
        them). Means of per-sample scores, the Pearson correlation and the weighted F1 of the
        sign split are all sums over samples, so one matrix product serves every resample.
    """
    w = np.asarray(weights, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric in PER_SAMPLE:
            scores, counted = per_sample_scores(metric, predictions, labels)
            w = w * counted
            return (w @ scores) / w.sum(1)
        if metric == "corr":
            total = w.sum(1)
            mean_p, mean_y = w @ predictions / total, w @ labels / total
            cov = w @ (predictions * labels) / total - mean_p * mean_y
            var_p = w @ predictions**2 / total - mean_p**2
            var_y = w @ labels**2 / total - mean_y**2
            return cov / np.sqrt(var_p * var_y)
        if metric in ("f1_non0", "f1_has0"):
            if metric == "f1_non0":
                w = w * (labels != 0)
                pred, truth = predictions > 0, labels > 0
            else:
                pred, truth = predictions >= 0, labels >= 0
            tp, fp = w @ (pred & truth), w @ (pred & ~truth)
            fn, tn = w @ (~pred & truth), w @ (~pred & ~truth)
            # sklearn's average="weighted" with zero_division=0: a class's F1 weighted by its
            # support, 0 when the class is never predicted nor true.
            f1_pos = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
            f1_neg = np.nan_to_num(2 * tn / (2 * tn + fn + fp))
            return (f1_pos * (tp + fn) + f1_neg * (tn + fp)) / (tp + fn + tn + fp)
    raise ValueError(f"no resampled form of {metric!r}; expected one of {METRIC_KEYS}")


def metrics_frame(
    results: Mapping[str, Mapping[str, float]], percent: bool = False
) -> pd.DataFrame:
    """Several runs' metric dicts as one table for notebooks.

    Args:
        results: ``{run name: metrics dict}``, each dict holding at least :data:`METRIC_KEYS`
            (as returned by :func:`regression_metrics` / :func:`classification_metrics`).
        percent: multiply the accuracies and F1 scores (not ``mae``/``corr``) by 100, the way
            papers print them.

    Returns:
        A DataFrame with one row per run (index named ``"run"``) and the columns
        :data:`METRIC_KEYS` in canonical order, followed by any extra keys the dicts carry.

    Raises:
        ValueError: a run lacks one of :data:`METRIC_KEYS`.
    """
    for run, metrics in results.items():
        missing = [key for key in METRIC_KEYS if key not in metrics]
        if missing:
            raise ValueError(f"run {run!r} lacks the metric(s) {missing}")
    frame = pd.DataFrame.from_records([dict(m) for m in results.values()], index=list(results))
    extra = [column for column in frame.columns if column not in METRIC_KEYS]
    frame = frame.reindex(columns=[*METRIC_KEYS, *extra])
    frame.index.name = "run"
    if percent:
        frame[list(SCORE_KEYS)] *= 100.0
    return frame
