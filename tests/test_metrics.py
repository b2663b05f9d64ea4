"""Tests for cormult_lib.metrics: every expected value is worked out by hand in the comments."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

from cormult_lib.metrics import (
    METRIC_KEYS,
    classification_metrics,
    metrics_frame,
    regression_metrics,
)


def test_keys_are_canonical_and_values_are_python_floats():
    result = regression_metrics([-1.0, 0.5, 2.0, -2.5], [-1.0, 1.0, 2.0, -3.0])
    assert METRIC_KEYS == (
        "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "mae", "corr"
    )  # fmt: skip
    assert tuple(result) == METRIC_KEYS
    assert all(type(value) is float for value in result.values())


def test_ties_at_zero_has0_counts_zero_positive_non0_drops_zero_truth():
    truth = [-2.0, 0.0, 0.0, 1.0, 2.0, -1.0]
    pred = [-1.0, 0.0, -0.5, 0.0, 1.5, 0.5]
    result = regression_metrics(pred, truth)
    # has0, ">= 0" is positive:  truth  [N, P, P, P, P, N]
    #                            pred   [N, P, N, P, P, P]
    #                            right  [y, y, n, y, y, n] -> 4/6
    assert result["acc2_has0"] == pytest.approx(4 / 6)
    # positive class: TP 3 (1, 3, 4), FP 1 (5), FN 1 (2) -> F1 = 2*3/(2*3+1+1) = 3/4, support 4
    # negative class: TP 1 (0),       FP 1 (2), FN 1 (5) -> F1 = 2*1/(2*1+1+1) = 1/2, support 2
    # weighted: (4 * 3/4 + 2 * 1/2) / 6 = 4/6
    assert result["f1_has0"] == pytest.approx(4 / 6)
    # non0 drops samples 1 and 2 (truth exactly 0); "> 0" is positive, so pred 0.0 is negative:
    #   truth [N, P, P, N] (samples 0, 3, 4, 5)
    #   pred  [N, N, P, P] (-1.0, 0.0, 1.5, 0.5)
    #   right [y, n, y, n] -> 2/4; sample 3 is right in has0 but wrong in non0
    assert result["acc2_non0"] == pytest.approx(2 / 4)
    # positive: TP 1, FP 1, FN 1 -> 1/2; negative: TP 1, FP 1, FN 1 -> 1/2; weighted 1/2
    assert result["f1_non0"] == pytest.approx(1 / 2)


def test_rounding_is_half_to_even_for_acc7_and_acc5():
    # np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 (half to even, not half away from 0)
    truth = [0.0, 2.0, 2.0, 1.0]
    pred = [0.5, 1.5, 2.5, -0.5]
    result = regression_metrics(pred, truth)
    # acc7: rounded pred [0, 2, 2, 0] vs truth [0, 2, 2, 1] -> 3/4
    # (half away from zero would give [1, 2, 3, -1] -> 1/4)
    assert result["acc7"] == pytest.approx(3 / 4)
    # acc5: clip to [-2, 2] first: pred [0.5, 1.5, 2, -0.5] -> [0, 2, 2, 0] vs [0, 2, 2, 1] -> 3/4
    assert result["acc5"] == pytest.approx(3 / 4)


def test_acc5_rounds_half_to_even_after_clipping():
    truth = [0.0, 2.0, -2.0, 1.0]
    pred = [0.5, 2.5, -1.5, 1.5]
    # clip to [-2, 2]: [0.5, 2, -1.5, 1.5]; round: [0, 2, -2, 2] vs truth [0, 2, -2, 1] -> 3/4
    assert regression_metrics(pred, truth)["acc5"] == pytest.approx(3 / 4)


def test_clipping_for_acc7_and_acc5_but_not_for_mae():
    truth = [3.0, 3.0, -3.0, 1.0]
    pred = [5.0, 2.2, -4.0, 1.0]
    result = regression_metrics(pred, truth)
    # acc7: clip pred to [-3, 3]: [3, 2.2, -3, 1], round: [3, 2, -3, 1] vs [3, 3, -3, 1] -> 3/4
    # (5.0 vs 3 counts as correct, 2.2 vs 3 does not)
    assert result["acc7"] == pytest.approx(3 / 4)
    # acc5: clip both to [-2, 2]: pred [2, 2, -2, 1], truth [2, 2, -2, 1] -> 4/4
    # (truth 3 and pred 2.2 both become 2)
    assert result["acc5"] == pytest.approx(1.0)
    # mae unclipped: |5-3| + |2.2-3| + |-4+3| + 0 = 2 + 0.8 + 1 = 3.8 -> 3.8/4 = 0.95
    assert result["mae"] == pytest.approx(0.95)


def test_mae_and_corr_use_unclipped_values():
    truth = [3.0, 1.0, -1.0, -3.0]
    pred = [10.0, 0.0, -2.0, -8.0]
    result = regression_metrics(pred, truth)
    # errors: |10-3| = 7, |0-1| = 1, |-2+1| = 1, |-8+3| = 5 -> 14/4 = 3.5
    # (clipping pred to [-3, 3] first would give 0 + 1 + 1 + 0 -> 0.5)
    assert result["mae"] == pytest.approx(3.5)
    # both means are 0: sum(t*p) = 30 + 0 + 2 + 24 = 56, sum(t^2) = 20, sum(p^2) = 168
    # r = 56 / sqrt(20 * 168) = 56 / sqrt(3360) = sqrt(3136 / 3360) = sqrt(14 / 15)
    assert result["corr"] == pytest.approx(math.sqrt(14 / 15))


def test_weighted_f1_by_hand_asymmetric():
    truth = [1.0, 2.0, 3.0, 0.5, -1.0, -2.0]
    pred = [1.0, 2.0, -1.0, -1.0, -1.0, 1.0]
    result = regression_metrics(pred, truth)
    # truth [P, P, P, P, N, N]  pred [P, P, N, N, N, P] -> right 0, 1, 4 -> 3/6
    assert result["acc2_has0"] == pytest.approx(3 / 6)
    # positive (support 4): TP 2, FP 1, FN 2 -> F1 = 2*2/(2*2+1+2) = 4/7
    # negative (support 2): TP 1, FP 2, FN 1 -> F1 = 2*1/(2*1+2+1) = 2/5
    # weighted: (4 * 4/7 + 2 * 2/5) / 6 = (80/35 + 28/35) / 6 = 18/35 (macro would be 17/35)
    assert result["f1_has0"] == pytest.approx(18 / 35)
    # no truth is 0 and no pred is 0, so the non0 split is the same
    assert result["acc2_non0"] == pytest.approx(3 / 6)
    assert result["f1_non0"] == pytest.approx(18 / 35)


def test_constant_predictions_give_nan_corr_with_one_warning():
    truth = [1.0, -1.0, 2.0, 0.0]
    pred = [1.0, 1.0, 1.0, 1.0]
    with pytest.warns(RuntimeWarning, match="predictions are constant") as record:
        result = regression_metrics(pred, truth)
    assert len(record) == 1  # and no sklearn UndefinedMetricWarning on top
    assert math.isnan(result["corr"])
    # acc7 and acc5: rounded pred 1 vs truth [1, -1, 2, 0] -> 1/4
    assert result["acc7"] == pytest.approx(1 / 4)
    assert result["acc5"] == pytest.approx(1 / 4)
    # has0: truth [P, N, P, P], pred all P -> 3/4
    assert result["acc2_has0"] == pytest.approx(3 / 4)
    # positive: TP 3, FP 1, FN 0 -> 6/7 (support 3); negative never predicted -> 0 (support 1)
    # weighted: (3 * 6/7 + 1 * 0) / 4 = 9/14
    assert result["f1_has0"] == pytest.approx(9 / 14)
    # non0 drops sample 3: truth [P, N, P], pred all P -> 2/3
    assert result["acc2_non0"] == pytest.approx(2 / 3)
    # positive: TP 2, FP 1, FN 0 -> 4/5 (support 2); negative 0 (support 1) -> (2 * 4/5) / 3
    assert result["f1_non0"] == pytest.approx(8 / 15)
    # mae: 0 + 2 + 1 + 1 = 4 -> 4/4
    assert result["mae"] == pytest.approx(1.0)


def test_constant_truth_gives_nan_corr_with_warning():
    with pytest.warns(RuntimeWarning, match="truth values are constant"):
        result = regression_metrics([0.0, 1.0, 2.0, 3.0], [2.0, 2.0, 2.0, 2.0])
    assert math.isnan(result["corr"])
    # mae: 2 + 1 + 0 + 1 = 4 -> 4/4
    assert result["mae"] == pytest.approx(1.0)


def test_all_zero_truth_makes_non0_nan_with_warning():
    with pytest.warns(RuntimeWarning) as record:
        result = regression_metrics([1.0, -1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0])
    # an all-zero truth is also constant, so corr warns as well
    messages = [str(warning.message) for warning in record]
    assert len(messages) == 2
    assert "every truth value is exactly 0" in messages[0]
    assert "truth values are constant" in messages[1]
    assert math.isnan(result["acc2_non0"])
    assert math.isnan(result["f1_non0"])
    # has0: truth all P, pred [P, N, P, P] -> 3/4
    assert result["acc2_has0"] == pytest.approx(3 / 4)


@pytest.mark.parametrize(
    ("pred", "truth", "pattern"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], r"pred has shape \(3,\).*truth has shape \(4,\)"),
        ([], [1.0], r"pred is empty"),
        ([1.0, 2.0], [], r"truth is empty"),
        ([1.0, float("nan"), 0.0], [1.0, 2.0, 3.0], r"pred .*1 non-finite"),
        ([1.0, 2.0, 3.0], [float("inf"), 2.0, 3.0], r"truth .*1 non-finite"),
        (np.zeros((3, 2)), np.zeros(3), r"pred must hold one value per sample.*\(3, 2\)"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(pred, truth, pattern):
    with pytest.raises(ValueError, match=pattern):
        regression_metrics(pred, truth)


def test_torch_and_mult_shaped_inputs_match_flat_numpy():
    pred = np.array([-2.4, 0.0, 1.6, 2.9, -0.7, 0.3, 3.8, -1.1])
    truth = np.array([-2.0, 0.0, 1.4, 3.0, -1.0, 0.6, 2.2, 0.0])
    expected = regression_metrics(pred, truth)
    as_torch = regression_metrics(torch.tensor(pred), torch.tensor(truth, dtype=torch.float32))
    as_mult = regression_metrics(pred.reshape(-1, 1, 1), truth.reshape(-1, 1, 1))
    as_list = regression_metrics(pred.tolist(), truth.tolist())
    assert as_torch == pytest.approx(expected)
    assert as_mult == expected
    assert as_list == expected


def test_matches_direct_sklearn_and_scipy_on_random_data():
    rng = np.random.default_rng(0)
    truth = np.round(rng.uniform(-3.0, 3.0, 200), 1)
    truth[::10] = 0.0  # exact zeros, so has0 and non0 differ
    pred = truth + rng.normal(0.0, 1.0, 200)
    pred[::25] = 0.0  # exact zero predictions too

    def rounded(values, bound):
        return np.round(np.clip(values, -bound, bound))

    non0 = truth != 0
    expected = {
        "acc7": accuracy_score(rounded(truth, 3), rounded(pred, 3)),
        "acc5": accuracy_score(rounded(truth, 2), rounded(pred, 2)),
        "acc2_has0": accuracy_score(truth >= 0, pred >= 0),
        "f1_has0": f1_score(truth >= 0, pred >= 0, average="weighted"),
        "acc2_non0": accuracy_score(truth[non0] > 0, pred[non0] > 0),
        "f1_non0": f1_score(truth[non0] > 0, pred[non0] > 0, average="weighted"),
        "mae": mean_absolute_error(truth, pred),
        "corr": pearsonr(pred, truth).statistic,
    }
    result = regression_metrics(pred, truth)
    assert list(result) == list(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-12), key


def _one_hot_logits(classes: list[int]) -> np.ndarray:
    logits = np.full((len(classes), 7), -1.0)
    logits[np.arange(len(classes)), classes] = 2.0
    return logits


def test_classification_from_logits_with_sentiment_truth():
    logits = _one_hot_logits([3, 6, 0, 4])  # argmax classes 3, 6, 0, 4 -> values 0, 3, -3, 1
    truth = [0.2, 2.6, -3.0, -1.0]  # classes: round(0.2)+3 = 3, round(2.6)+3 = 6, 0, -1+3 = 2
    result = classification_metrics(logits, truth)
    # acc7: [3, 6, 0, 4] vs [3, 6, 0, 2] -> 3/4
    assert result["acc7"] == pytest.approx(3 / 4)
    # acc5: pred values clipped [0, 2, -2, 1] vs truth clipped+rounded [0, 2, -2, -1] -> 3/4
    assert result["acc5"] == pytest.approx(3 / 4)
    # has0: pred values [0, 3, -3, 1] -> [P, P, N, P]; truth [P, P, N, N] -> 3/4
    assert result["acc2_has0"] == pytest.approx(3 / 4)
    # positive: TP 2, FP 1, FN 0 -> 4/5 (support 2); negative: TP 1, FP 0, FN 1 -> 2/3 (support 2)
    # weighted: (2 * 4/5 + 2 * 2/3) / 4 = 11/15
    assert result["f1_has0"] == pytest.approx(11 / 15)
    # non0 (no truth is 0): class 3 = value 0 is negative: pred [N, P, N, P] vs [P, P, N, N] -> 2/4
    assert result["acc2_non0"] == pytest.approx(2 / 4)
    # positive: TP 1, FP 1, FN 1 -> 1/2; negative: TP 1, FP 1, FN 1 -> 1/2
    assert result["f1_non0"] == pytest.approx(1 / 2)
    # mae on values vs unclipped truth: 0.2 + 0.4 + 0 + 2 = 2.6 -> 2.6/4
    assert result["mae"] == pytest.approx(0.65)
    # the same numbers as scoring the class values as regression predictions
    assert result == pytest.approx(regression_metrics([0.0, 3.0, -3.0, 1.0], truth))
    probabilities = torch.softmax(torch.tensor(logits), dim=1)
    assert classification_metrics(probabilities, truth) == pytest.approx(result)


def test_classification_from_integer_classes_and_integer_truth():
    pred = np.array([0, 3, 6, 5])  # values -3, 0, 3, 2
    truth = np.array([0, 3, 6, 4])  # integer dtype -> classes (auto); values -3, 0, 3, 1
    result = classification_metrics(pred, truth)
    # acc7: 3/4; acc5: clipped [-2, 0, 2, 2] vs [-2, 0, 2, 1] -> 3/4
    assert result["acc7"] == pytest.approx(3 / 4)
    assert result["acc5"] == pytest.approx(3 / 4)
    # has0: pred [N, P, P, P], truth [N, P, P, P] -> 1; non0 drops sample 1: [N, P, P] both -> 1
    assert result["acc2_has0"] == pytest.approx(1.0)
    assert result["f1_has0"] == pytest.approx(1.0)
    assert result["acc2_non0"] == pytest.approx(1.0)
    assert result["f1_non0"] == pytest.approx(1.0)
    # mae: only |2 - 1| = 1 -> 1/4
    assert result["mae"] == pytest.approx(0.25)
    # corr: means 0.5 and 0.25; deviations p [-3.5, -0.5, 2.5, 1.5], t [-3.25, -0.25, 2.75, 0.75]
    # sum(p*t) = 11.375 + 0.125 + 6.875 + 1.125 = 19.5; sum(p^2) = 21; sum(t^2) = 18.75
    assert result["corr"] == pytest.approx(19.5 / math.sqrt(21 * 18.75))
    assert classification_metrics(torch.tensor(pred), torch.tensor(truth)) == pytest.approx(result)


def test_truth_kind_decides_how_float_truth_is_read():
    pred = [0, 3, 6]
    truth = [0.0, 3.0, 6.0]
    # as classes: [0, 3, 6] vs [0, 3, 6] -> 1
    assert classification_metrics(pred, truth, truth_kind="class")["acc7"] == pytest.approx(1.0)
    # as sentiment (the auto choice for floats): clip+round+3 -> [3, 6, 6] vs [0, 3, 6] -> 1/3
    assert classification_metrics(pred, truth)["acc7"] == pytest.approx(1 / 3)
    assert classification_metrics(pred, truth, truth_kind="sentiment")["acc7"] == pytest.approx(
        1 / 3
    )


def test_classification_perfect_predictions():
    truth = np.array([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
    result = classification_metrics(_one_hot_logits([0, 1, 2, 3, 4, 5, 6]), truth)
    assert result["acc7"] == 1.0
    assert result == pytest.approx(
        {"acc7": 1, "acc5": 1, "acc2_has0": 1, "f1_has0": 1, "acc2_non0": 1, "f1_non0": 1,
         "mae": 0, "corr": 1}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("pred", "truth", "kwargs", "pattern"),
    [
        (np.zeros((4, 5)), [0.0] * 4, {}, r"shape \(N, 7\).*\(4, 5\)"),
        (np.array([0.0, 1.0, 2.0]), [0.0] * 3, {}, r"logits_or_classes .*float64.*\(3,\)"),
        (np.array([0, 7, -1]), [0.0] * 3, {}, r"logits_or_classes must hold classes 0\.\.6.*-1, 7"),
        (np.array([0, 1]), np.array([0, 9]), {}, r"truth must hold classes 0\.\.6.*9.*sentiment"),
        (np.array([0, 1]), [0.0, 3.5], {"truth_kind": "class"}, r"truth .*whole numbers.*3\.5"),
        (np.array([0, 1]), [0.0, 1.0], {"truth_kind": "label"}, r"truth_kind must be one of"),
        (_one_hot_logits([0, 1, 2]), [0.0, 1.0], {}, r"logits_or_classes has shape \(3, 7\)"),
    ],
)
def test_classification_bad_inputs(pred, truth, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        classification_metrics(pred, truth, **kwargs)


def test_metrics_frame_rows_columns_and_percent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither run is degenerate
        first = regression_metrics([1.0, -1.0, 2.0, 0.5], [1.0, -1.0, 1.0, 0.5])
        second = classification_metrics([4, 2, 5, 3], [1.0, -1.0, 2.0, -0.4])
    frame = metrics_frame({"regression": {**first, "loss": 0.1}, "classes": second}, percent=True)
    assert list(frame.index) == ["regression", "classes"]
    assert list(frame.columns) == [*METRIC_KEYS, "loss"]
    # acc7 of the first run: rounded pred [1, -1, 2, 0] vs [1, -1, 1, 0] -> 3/4 -> 75 %
    assert frame.loc["regression", "acc7"] == pytest.approx(75.0)
    # mae is not scaled: |2 - 1| = 1 -> 1/4
    assert frame.loc["regression", "mae"] == pytest.approx(0.25)
    assert math.isnan(frame.loc["classes", "loss"])
    assert metrics_frame({"run": first}).loc["run", "acc7"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"run 'broken' lacks the metric\(s\) \['corr'\]"):
        metrics_frame({"broken": {key: 0.0 for key in METRIC_KEYS[:-1]}})
