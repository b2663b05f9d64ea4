"""Supervised training and evaluation of the sentiment models (MulT, CorMulT, baselines).

Every model here maps ``(features, masks)`` (or, when it runs its own encoders, a batch of
prepared raw clips) to either one sentiment score per sample
(``head="regression"``, shape ``(batch,)``) or seven class logits (``head="classification"``,
shape ``(batch, 7)``; classes 0..6 stand for sentiment -3..3). Training goes through the one
loop of the repository, :func:`~cormult_lib.training.loop.fit`, which selects the best epoch on
the validation split. The test split is not an argument of :func:`train_model`: it is touched
once, at the end, by :func:`evaluate`.

:func:`run_seeds` repeats build -> train -> evaluate over seeds and :func:`summarize_seeds`
turns the per-seed metrics into mean and standard deviation, the way results in this field are
reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Unpack

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cormult_lib.config import TrainConfig
from cormult_lib.data.dataset import LoaderOptions, MultimodalSplit, make_loader
from cormult_lib.data.raw_clips import RawClipSplit, raw_clip_loader
from cormult_lib.device import move_to_device
from cormult_lib.metrics import METRIC_KEYS, classification_metrics, regression_metrics
from cormult_lib.models.mult import HEADS, MulT
from cormult_lib.progress import tqdm
from cormult_lib.seeding import seed_everything
from cormult_lib.training.epoch import LossFn
from cormult_lib.training.loop import FitResult, RunOptions, check_run_options, fit

#: Regression losses: MulT uses L1, CLIP-MSA SmoothL1.
REGRESSION_LOSSES = ("l1", "smooth_l1")


def _head_of(model: nn.Module) -> str:
    head = getattr(model, "head", None)
    if head not in HEADS:
        raise ValueError(f"model.head must be one of {HEADS}, got {head!r}")
    return head


Split = MultimodalSplit | RawClipSplit


def _loader(
    model: nn.Module,
    split: Split,
    batch_size: int,
    shuffle: bool,
    **options: Unpack[LoaderOptions],
) -> torch.utils.data.DataLoader:
    """Batches of features (``MultimodalSplit``, reduced to the model's modalities) or of
    prepared raw clips (``RawClipSplit``, for models that run their encoders)."""
    if isinstance(split, RawClipSplit):
        return raw_clip_loader(split, batch_size, shuffle, **options)
    split = split.with_modalities("".join(model.modalities))
    # A MulT without padding mask (the official code's) attends to every step: batches keep
    # the split's full length, so a sample's output does not depend on its batch.
    sees_padding = any(isinstance(m, MulT) and not m.use_padding_mask for m in model.modules())
    return make_loader(split, batch_size, shuffle, trim=not sees_padding, **options)


def _forward(model: nn.Module, batch: dict) -> torch.Tensor:
    """The model's output on a batch: ``model(inputs)`` for prepared raw clips,
    ``model(features, masks)`` otherwise."""
    if "inputs" in batch:
        return model(batch["inputs"])
    return model(batch["features"], batch["masks"])


def supervised_loss(head: str, loss: str = "l1") -> LossFn:
    """The loss function :func:`fit` calls: L1 / SmoothL1 on ``labels`` or cross-entropy on
    ``classes``. It reads the model's inputs (:func:`_forward`) and the target only."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if head == "regression" and loss not in REGRESSION_LOSSES:
        raise ValueError(f"loss must be one of {REGRESSION_LOSSES} for regression, got {loss!r}")

    def loss_fn(model: nn.Module, batch: dict, generator: torch.Generator):
        output = _forward(model, batch)
        if head == "classification":
            return F.cross_entropy(output.float(), batch["classes"]), {}
        target = batch["labels"]
        if loss == "l1":
            return F.l1_loss(output.float(), target), {}
        return F.smooth_l1_loss(output.float(), target), {}

    return loss_fn


def train_model(
    model: nn.Module,
    train_split: Split,
    valid_split: Split,
    config: TrainConfig,
    *,
    loss: str = "l1",
    seed: int = 0,
    device: str | torch.device = "cpu",
    **run: Unpack[RunOptions],
) -> FitResult:
    """Train ``model`` on ``train_split``, choosing the best epoch on ``valid_split``.

    Args:
        model: a sentiment model with ``model.head`` and ``model.modalities``; its input
            modalities are taken from the splits. On ``RawClipSplit`` s the model runs its
            encoders (:class:`~cormult_lib.models.clip_msa.ClipMSAEndToEnd`). A model with a
            ``param_groups(lr)`` method gives parts of itself their own learning rates
            (fine-tuned encoders); otherwise every parameter trains at ``config.lr``.
        config: ``epochs``, ``batch_size``, ``lr``, ``grad_clip``, ``patience``,
            ``num_workers``, ``compile``.
        loss: ``"l1"`` or ``"smooth_l1"`` for a regression head (ignored for classification,
            which uses cross-entropy).
        seed: seeds the shuffling of the training split. Dropout, like the model's initial
            weights, draws from torch's global generator, which is the caller's to seed (before
            building the model, as :func:`run_seeds` does with ``seed_everything``).
        device: CUDA gets mixed precision and pinned memory through :func:`fit`.
        run: :func:`fit`'s ``checkpoint_path``, ``resume`` and ``progress``
            (:class:`~cormult_lib.training.loop.RunOptions`).

    Returns:
        :func:`~cormult_lib.training.loop.fit`'s :class:`~cormult_lib.training.loop.FitResult`,
        model in eval mode; the test split was not used.
    """
    check_run_options(run, "train_model")
    head = _head_of(model)
    generator = torch.Generator().manual_seed(seed)
    # A lone last training sample would make a batch of one, which BatchNorm (CLIP-MSA)
    # cannot normalise in training mode: drop it (a different one each epoch, shuffled).
    drop_last = len(train_split) % config.batch_size == 1
    batch, workers = config.batch_size, config.num_workers
    loaders = (
        _loader(
            model, train_split, batch, True,
            generator=generator, device=device, num_workers=workers, drop_last=drop_last,
        ),
        _loader(model, valid_split, batch, False, device=device, num_workers=workers),
    )
    result = fit(
        model,
        *loaders,
        supervised_loss(head, loss),
        epochs=config.epochs,
        lr=config.lr,
        grad_clip=config.grad_clip,
        patience=config.patience,
        device=device,
        generator=generator,
        seed=seed,
        param_groups=model.param_groups(config.lr) if hasattr(model, "param_groups") else None,
        compile=config.compile,
        # A resumed run must train the same kind of model with the same loss.
        settings={
            "model": type(model).__name__,
            "head": head,
            "loss": loss if head == "regression" else "cross_entropy",
        },
        **run,
    )
    result.model.eval()
    return result


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 64) -> np.ndarray:
    """Model outputs for every sample of ``split`` in order: ``(n,)`` scores or ``(n, 7)``
    logits. The model is put in eval mode."""
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    for batch in _loader(model, split, batch_size, False):
        batch = move_to_device(batch, device)
        outputs.append(_forward(model, batch).float().cpu())
    return torch.cat(outputs).numpy()


def output_scores(outputs: np.ndarray) -> np.ndarray:
    """Predicted sentiment from :func:`predict`'s outputs: ``(n,)`` scores as they are,
    ``(n, 7)`` logits as their argmax class minus 3."""
    return outputs.argmax(axis=-1) - 3.0 if outputs.ndim == 2 else outputs


@torch.no_grad()
def correlation_sensitivity(
    model: nn.Module,
    split: MultimodalSplit,
    *,
    scales: Sequence[float] = (0.5, 2.0),
    batch_size: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """How much a trained CorMulT's predictions depend on its coefficients.

    The test predictions with the evaluator's ``Cor`` are compared with those where every
    coefficient is replaced: by 1, by 0, by another sample's (a fixed permutation of the
    split, drawn from ``seed``), and by ``Cor * c`` for each ``c`` in ``scales``.

    Args:
        model: a :class:`~cormult_lib.models.cormult.CorMulT` (``coefficients`` and
            ``forward_with``), in eval mode here.
        split: the samples to predict (features form).

    Returns:
        One row per replacement: ``replacement``, ``mean_abs_change`` (mean over samples of
        ``|prediction - prediction with Cor|``, on predicted sentiment), ``relative_change``
        (that divided by the standard deviation of the predictions with ``Cor``), ``mae``
        (of the changed predictions) and ``n``. The first row, ``"Cor (learned)"``, is the
        reference with change 0.
    """
    device = next(model.parameters()).device
    model.eval()
    batches = [
        move_to_device(b, device) for b in _loader(model, split, batch_size, shuffle=False)
    ]
    learned = [model.coefficients(b["features"], b["masks"]) for b in batches]
    pairs = list(learned[0])
    every = {p: torch.cat([c[p] for c in learned]) for p in pairs}
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    replacements = {
        "Cor (learned)": every,
        "Cor = 1": {p: torch.ones_like(v) for p, v in every.items()},
        "Cor = 0": {p: torch.zeros_like(v) for p, v in every.items()},
        "Cor of another sample": {p: v[order.to(v.device)] for p, v in every.items()},
        **{f"Cor x {c:g}": {p: v * c for p, v in every.items()} for c in scales},
    }
    predictions = {}
    for name, cor in replacements.items():
        outputs, start = [], 0
        for b in batches:
            size = len(b["labels"])
            chosen = {p: v[start : start + size] for p, v in cor.items()}
            outputs.append(model.forward_with(b["features"], b["masks"], chosen).float().cpu())
            start += size
        predictions[name] = output_scores(torch.cat(outputs).numpy())
    reference = predictions["Cor (learned)"]
    spread = float(reference.std())
    rows = []
    for name, values in predictions.items():
        change = float(np.abs(values - reference).mean())
        rows.append(
            {
                "replacement": name,
                "mean_abs_change": change,
                "relative_change": change / spread if spread > 0 else float("nan"),
                "mae": float(np.abs(values - split.labels).mean()),
                "n": len(split),
            }
        )
    return pd.DataFrame(rows)


def evaluate(
    model: nn.Module,
    split: Split,
    batch_size: int = 64,
    subsets: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """The eight MMSA metrics of ``model`` on ``split``, overall and on subsets of it.

    Args:
        subsets: optional name -> bool mask ``(n,)`` over ``split`` (e.g. the weakly
            correlated samples of one discrepancy type); a subset with fewer than 2 samples
            is reported as ``nan`` metrics with ``n = 0``/``1``.

    Returns:
        ``{"all": metrics, name: metrics, ...}``, each metrics dict with the keys of
        :data:`~cormult_lib.metrics.METRIC_KEYS` plus ``n`` (samples scored).
    """
    outputs = predict(model, split, batch_size)
    return score_outputs(outputs, split.labels, _head_of(model), subsets)


def score_outputs(
    outputs: np.ndarray,
    labels: np.ndarray,
    head: str,
    subsets: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` for outputs already computed: ``(n,)`` scores or ``(n, 7)`` logits."""
    score = regression_metrics if head == "regression" else classification_metrics
    groups = {"all": np.ones(len(labels), dtype=bool), **dict(subsets or {})}
    results = {}
    for name, chosen in groups.items():
        chosen = np.asarray(chosen, dtype=bool)
        if chosen.shape != (len(labels),):
            raise ValueError(
                f"subset {name!r} must be a bool mask of shape ({len(labels)},), got {chosen.shape}"
            )
        n = int(chosen.sum())
        if n < 2:
            results[name] = {**dict.fromkeys(METRIC_KEYS, float("nan")), "n": n}
            continue
        results[name] = {**score(outputs[chosen], labels[chosen]), "n": n}
    return results


def run_seeds(
    build: Callable[[int], nn.Module],
    splits: Mapping[str, Split],
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    loss: str = "l1",
    subsets: Mapping[str, np.ndarray] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    return_outputs: bool = False,
    after_training: Callable[[int, nn.Module], None] | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
    """Build, train and test one model per seed.

    Args:
        build: ``build(seed) -> model``; called after :func:`~cormult_lib.seeding.
            seed_everything` (seed), so initial weights follow the seed.
        splits: ``"train"``, ``"valid"``, ``"test"``; the test split is only evaluated.
        seeds: e.g. ``range(3)``.
        subsets: masks over the test split, see :func:`evaluate`.
        return_outputs: also return the test predictions, for paired comparisons
            (:mod:`cormult_lib.stats`).
        after_training: called as ``after_training(seed, model)`` with each trained model (in
            eval mode), to measure more than the metrics without keeping every model.

    Returns:
        Long format, one row per seed and subset: ``seed``, ``subset``, the eight metrics,
        ``n``, ``best_epoch``. With ``return_outputs``, ``(runs, scores)`` where ``scores``
        is ``(n_seeds, n_test)``: predicted sentiment per seed (the regression output, or the
        argmax class minus 3 for a classification head).
    """
    missing = [name for name in ("train", "valid", "test") if name not in splits]
    if missing:
        raise ValueError(f"splits lacks {missing}; expected train, valid and test")
    if not seeds:
        raise ValueError("seeds is empty")
    rows, scores = [], []
    for seed in tqdm(list(seeds), desc="seeds", disable=not progress):
        seed_everything(seed)
        model = build(seed)
        trained = train_model(
            model,
            splits["train"],
            splits["valid"],
            config,
            loss=loss,
            seed=seed,
            device=device,
            progress=False,
        )
        if after_training is not None:
            after_training(seed, trained.model)
        outputs = predict(trained.model, splits["test"])
        results = score_outputs(outputs, splits["test"].labels, _head_of(model), subsets)
        for subset, metrics in results.items():
            rows.append(
                {"seed": seed, "subset": subset, **metrics, "best_epoch": trained.best_epoch}
            )
        scores.append(output_scores(outputs))
    runs = pd.DataFrame(rows)
    return (runs, np.stack(scores)) if return_outputs else runs


def summarize_seeds(runs: pd.DataFrame, by: Sequence[str] = ("subset",)) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1, so NaN for a single seed) of every metric over seeds.

    Returns:
        Index ``by``, columns a ``(metric, "mean" | "std")`` MultiIndex and ``n_seeds``.
    """
    keys = [k for k in METRIC_KEYS if k in runs]
    grouped = runs.groupby(list(by), sort=False)
    table = grouped[keys].agg(["mean", "std"])
    table[("n_seeds", "")] = grouped["seed"].nunique()
    return table
