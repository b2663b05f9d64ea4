"""Text-only sentiment baselines on real transcripts (chapter 09).

Two ways to use a pretrained sentence encoder, the floor and the usual recipe:

* **frozen**: sentence embeddings computed once (``(n, dim)``), a ridge regression on top,
  its penalty chosen on the validation split (:func:`fit_ridge_on_valid`);
* **fine-tuned**: the encoder trained end to end with a linear head
  (:class:`~cormult_lib.models.sentence.SentenceRegressor`) in the repository's training loop.

:func:`result_entry` turns test predictions into the chapter's ``real_text`` record: the six
CMU-MOSEI metrics, each with a 95% bootstrap interval over test segments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from cormult_lib.stats import metric_intervals

#: The metrics reported on CMU-MOSEI (the CorMulT paper's Table 4 columns, both Acc-2 forms).
REAL_TEXT_METRICS = ("acc2_non0", "f1_non0", "acc2_has0", "acc7", "mae", "corr")


def fit_ridge_on_valid(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    alphas: Sequence[float] = tuple(np.logspace(-2, 3, 11)),
) -> tuple[Ridge, pd.DataFrame]:
    """A ridge regression per penalty on ``train``; the one with the lowest validation MAE.

    Args:
        train_x, valid_x: ``(n, dim)`` embeddings; train_y, valid_y: ``(n,)`` sentiment.
        alphas: the penalties tried.

    Returns:
        The chosen (fitted) model and a table ``alpha -> valid_mae`` of every penalty.
    """
    if len(train_x) != len(train_y) or len(valid_x) != len(valid_y):
        raise ValueError(
            f"embeddings and labels differ in length: train {len(train_x)} vs {len(train_y)}, "
            f"valid {len(valid_x)} vs {len(valid_y)}"
        )
    rows, models = [], []
    for alpha in alphas:
        model = Ridge(alpha=float(alpha)).fit(train_x, train_y)
        rows.append({"alpha": float(alpha), "valid_mae": float(
            np.abs(model.predict(valid_x) - valid_y).mean()
        )})
        models.append(model)
    table = pd.DataFrame(rows)
    return models[int(table["valid_mae"].idxmin())], table


def result_entry(
    predictions: np.ndarray,
    labels: np.ndarray,
    *,
    encoder: str,
    finetuned: bool,
    seed: int = 0,
) -> dict:
    """The ``real_text`` record of one model: ``{metric: {"value", "ci_low", "ci_high"}}`` for
    :data:`REAL_TEXT_METRICS`, plus ``n_test``, ``encoder`` and ``finetuned``."""
    intervals = metric_intervals(predictions, labels, REAL_TEXT_METRICS, seed=seed)
    return {**intervals, "n_test": int(len(labels)), "encoder": encoder, "finetuned": finetuned}
