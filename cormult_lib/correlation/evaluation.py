"""How well the correlation coefficients ``Cor`` separate what they should.

Two questions, both answered with ROC-AUC (:func:`cormult_lib.stats.roc_auc`, from ranks: the
probability that a randomly drawn member of the first group gets a higher ``Cor`` than one of
the second; 0.5 is chance, 1.0 perfect):

* :func:`separation_auc`: real samples (positives) against the negatives of each strategy, per
  modality pair; a negative only counts for the pairs it actually broke
  (:func:`~cormult_lib.correlation.negatives.changed_pairs`). This is the task the evaluator was
  pre-trained on, measured on held-out data.
* :func:`weak_strong_auc`: on the synthetic corpus, whose samples are labelled strongly or
  weakly correlated with one of four discrepancies, strong samples against the weak samples of
  each discrepancy, per pair. Pre-training never saw these labels, so this checks whether what
  it learned transfers to the discrepancies of real interest.

:func:`coefficient_table` gives the per-sample coefficients behind both, for plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats

from cormult_lib.correlation.distances import Distance, present_pairs
from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator
from cormult_lib.correlation.negatives import (
    STRATEGIES,
    batch_size_without_a_lone_sample,
    changed_pairs,
    check_negative_options,
    make_negatives,
)
from cormult_lib.data.dataset import MultimodalSplit, make_loader
from cormult_lib.device import move_to_device
from cormult_lib.stats import CONFIDENCE, Comparison, auc_against_chance, stratified_method


def pair_name(pair: tuple[str, str]) -> str:
    """``("T", "A")`` -> ``"TA"``, the label used in tables and column names."""
    return "".join(pair)


def _auc_columns(higher: np.ndarray, lower: np.ndarray, seed: int = 0) -> dict[str, float]:
    """``auc`` of scores ``higher`` (label 1) against ``lower`` (label 0) and its 95% interval
    ``auc_low`` / ``auc_high`` (:func:`~cormult_lib.stats.auc_against_chance`); NaN where a
    group is empty (the interval: where a group has fewer than
    :data:`~cormult_lib.stats.MIN_BOOTSTRAP_SAMPLES`)."""
    result = auc_against_chance(higher, lower, seed=seed)
    return {"auc": result.a_value, "auc_low": result.ci_low + 0.5, "auc_high": result.ci_high + 0.5}


def _batches(model: ModalityCorrelationEvaluator, split: MultimodalSplit, batch_size: int):
    """Batches of ``split`` (its evaluator's modalities, in order) on the model's device."""
    device = next(model.parameters()).device
    loader = make_loader(split.with_modalities(model.modalities), batch_size, False, device=device)
    for batch in loader:
        yield move_to_device(batch, device)


@torch.no_grad()
def separation_auc(
    model: ModalityCorrelationEvaluator,
    split: MultimodalSplit,
    distance: Distance,
    strategies: Sequence[str] = STRATEGIES,
    seed: int = 0,
    batch_size: int = 64,
    steps_per_second: Mapping[str, float] | None = None,
    vocab_size: int | None = None,
    negative_options: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """ROC-AUC of ``Cor`` at telling real samples (label 1) from negatives (label 0).

    Every sample of ``split`` is a positive; per strategy every sample also gets one negative
    (:func:`~cormult_lib.correlation.negatives.make_negatives` with a generator seeded by
    ``seed``, so the table is reproducible). Strategy A mixes samples within a batch of
    ``batch_size``. For each pair only negatives that broke it enter (``n_neg`` may be smaller
    than the split).

    Args:
        model: a (pre-trained) evaluator; put in eval mode.
        split: held-out data (validation or test) holding the model's modalities.
        distance: the fitted distance whose ``similarity`` is ``Cor``.
        strategies: which negative strategies to evaluate.
        seed: seeds the negatives.
        batch_size: samples per forward pass (and the pool of strategy A).
        steps_per_second, vocab_size: passed to ``make_negatives`` (``vocab_size`` defaults to
            the model's, needed for token-id text).
        negative_options: ``shift_seconds``, ``noise_std``, ``replace_prob`` for
            ``make_negatives`` (use the pre-training's, ``settings["negative_options"]``).

    Returns:
        One row per strategy and pair: ``strategy``, ``pair`` (``"TA"``, ``"TV"``, ``"AV"``),
        ``auc`` with its 95% interval ``auc_low`` / ``auc_high``, ``paired`` (the share of
        negatives whose ``Cor`` is below that of the real
        sample they were made from: the per-sample ranking the triplet loss trains, where
        ``auc`` compares every real sample with every negative) with its 95% Wilson interval
        ``paired_low`` / ``paired_high`` over the ``n_neg`` negatives, ``n_pos``, ``n_neg``.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {STRATEGIES}, got {strategies}")
    if len(split) < 2:
        raise ValueError(f"{split.name}: separation_auc needs at least 2 samples, got {len(split)}")
    options = check_negative_options(negative_options)
    vocab_size = model.vocab_size if vocab_size is None else vocab_size
    pairs = present_pairs(model.modalities)
    model.eval()
    positives: dict[tuple[str, str], list[np.ndarray]] = {p: [] for p in pairs}
    negatives = {(s, p): [] for s in strategies for p in pairs}
    wins = {(s, p): [] for s in strategies for p in pairs}
    generators = {s: torch.Generator().manual_seed(seed + i) for i, s in enumerate(STRATEGIES)}
    # No batch of one: strategies A and D take a modality from another sample of the batch.
    for batch in _batches(model, split, batch_size_without_a_lone_sample(len(split), batch_size)):
        features, masks = batch["features"], batch["masks"]
        real = model.coefficients(features, masks, distance)
        for pair, cor in real.items():
            positives[pair].append(cor.float().cpu().numpy())
        for s in strategies:
            neg = make_negatives(
                features,
                masks,
                s,
                generators[s],
                steps_per_second=steps_per_second,
                vocab_size=vocab_size,
                **options,
            )
            broken = changed_pairs(neg, model.modalities)
            cors = model.coefficients(neg.features, neg.masks, distance)
            for pair in pairs:
                keep = broken[pair].cpu().numpy()
                fake = cors[pair].float().cpu().numpy()[keep]
                negatives[(s, pair)].append(fake)
                wins[(s, pair)].append(real[pair].float().cpu().numpy()[keep] > fake)
    rows = []
    for s in strategies:
        for pair in pairs:
            pos = np.concatenate(positives[pair])
            neg = np.concatenate(negatives[(s, pair)]) if negatives[(s, pair)] else np.array([])
            rows.append(
                {
                    "strategy": s,
                    "pair": pair_name(pair),
                    **_auc_columns(pos, neg, seed),
                    **_share_columns(np.concatenate(wins[(s, pair)] or [np.zeros(0, bool)])),
                    "n_pos": len(pos),
                    "n_neg": len(neg),
                }
            )
    return pd.DataFrame(rows)


def _share_columns(won: np.ndarray) -> dict[str, float]:
    """``paired``: the share of ``True`` in ``won``, with its 95% Wilson interval
    (:meth:`scipy.stats.binomtest`'s ``proportion_ci``); NaN when ``won`` is empty."""
    if len(won) == 0:
        return {"paired": np.nan, "paired_low": np.nan, "paired_high": np.nan}
    interval = scipy_stats.binomtest(int(won.sum()), len(won)).proportion_ci(
        confidence_level=CONFIDENCE, method="wilson"
    )
    return {"paired": won.mean(), "paired_low": interval.low, "paired_high": interval.high}


@torch.no_grad()
def coefficient_table(
    model: ModalityCorrelationEvaluator,
    split: MultimodalSplit,
    distance: Distance,
    batch_size: int = 64,
) -> pd.DataFrame:
    """One row per sample: ``id``, ``cor_TA`` / ``cor_TV`` / ``cor_AV`` (the pairs present),
    and, when ``split.meta`` has them, ``correlation`` and ``discrepancy``."""
    model.eval()
    pairs = present_pairs(model.modalities)
    values: dict[tuple[str, str], list[np.ndarray]] = {p: [] for p in pairs}
    for batch in _batches(model, split, batch_size):
        for pair, cor in model.coefficients(batch["features"], batch["masks"], distance).items():
            values[pair].append(cor.float().cpu().numpy())
    table = pd.DataFrame({"id": list(split.ids)})
    for pair in pairs:
        table[f"cor_{pair_name(pair)}"] = np.concatenate(values[pair])
    if split.meta is not None:
        for column in ("correlation", "discrepancy"):
            if column in split.meta:
                table[column] = split.meta[column].to_numpy()
    return table


def weak_strong_auc(
    model: ModalityCorrelationEvaluator,
    split: MultimodalSplit,
    distance: Distance,
    batch_size: int = 64,
) -> pd.DataFrame:
    """ROC-AUC of ``Cor`` at ranking strongly correlated samples above weakly correlated ones.

    Needs ``split.meta`` with ``correlation`` (``"strong"`` / ``"weak"``) and ``discrepancy``
    (the synthetic corpus). Per discrepancy type of the weak samples, and once for all of them
    (``discrepancy="all"``), and per pair: strong samples are label 1, weak ones label 0.

    Returns:
        One row per discrepancy and pair: ``discrepancy``, ``pair``, ``auc`` with its 95%
        interval ``auc_low`` / ``auc_high``, ``n_strong``, ``n_weak``.
    """
    meta = split.meta
    if meta is None or not {"correlation", "discrepancy"} <= set(meta.columns):
        raise ValueError(
            f"{split.name}: weak_strong_auc needs split.meta with columns 'correlation' and "
            "'discrepancy' (the synthetic corpus has them)"
        )
    table = coefficient_table(model, split, distance, batch_size)
    strong = table["correlation"] == "strong"
    weak = table["correlation"] == "weak"
    if not strong.any() or not weak.any():
        raise ValueError(
            f"{split.name}: needs both strong and weak samples, got {int(strong.sum())} strong "
            f"and {int(weak.sum())} weak"
        )
    kinds = sorted(table.loc[weak, "discrepancy"].unique())
    rows = []
    for kind in [*kinds, "all"]:
        chosen = weak if kind == "all" else weak & (table["discrepancy"] == kind)
        for pair in present_pairs(model.modalities):
            column = f"cor_{pair_name(pair)}"
            rows.append(
                {
                    "discrepancy": kind,
                    "pair": pair_name(pair),
                    **_auc_columns(
                        table.loc[strong, column].to_numpy(), table.loc[chosen, column].to_numpy()
                    ),
                    "n_strong": int(strong.sum()),
                    "n_weak": int(chosen.sum()),
                }
            )
    return pd.DataFrame(rows)


def auc_comparisons(table: pd.DataFrame, by: Sequence[str]) -> list[Comparison]:
    """The rows of :func:`separation_auc` or :func:`weak_strong_auc` as comparisons of ``Cor``
    with chance (AUC 0.5), for a chapter's ``comparisons``; ``subset`` joins the ``by``
    columns (e.g. ``"B TA"``), ``n`` counts both groups and ``groups`` gives each."""
    sizes = ("n_pos", "n_neg") if "n_pos" in table else ("n_strong", "n_weak")
    return [
        Comparison.build(
            subset=" ".join(str(row[c]) for c in by),
            n=row[sizes[0]] + row[sizes[1]],
            n_seeds=1,
            metric="roc_auc",
            names=("Cor", "chance"),
            values=(row["auc"], 0.5),
            interval=(row["auc_low"] - 0.5, row["auc_high"] - 0.5),
            method=stratified_method(row[sizes[0]], row[sizes[1]]),
            groups=(row[sizes[0]], row[sizes[1]]),
        )
        for _, row in table.iterrows()
    ]
