"""The two sweeps of CorMulT's experiments, as chapters 05 and 06 and ``cormult-sweep`` run them.

* :func:`distance_sweep` (chapter 05, CorMulT section 4.3, Table 3): per distance measure and
  seed, pre-train the correlation evaluator, score it (ROC-AUC of real clips against negatives)
  and train CorMulT on it (the test metrics);
* :func:`shared_space_sweep` (chapter 06, section 4.4): per shared space ``(t, o)`` and seed,
  pre-train the evaluator and record its best validation loss and its epoch time.

Each returns a :class:`ChapterSweep`: the grid, the seeds, the ``run_point`` function and the
name of its Optuna study, which is derived from every setting that is fixed over the grid
(profile, data, budget, sampler, device type). The notebook and any number of command-line
workers given the same settings therefore work on the *same* study: start workers with
``cormult-sweep`` (:mod:`cormult_lib.tutorial.sweep_cli`) and the chapter finds their trials.
The torch thread count is not part of the name: it changes float sums in the last digits, not
the method, and a sweep spread over machines cannot keep it equal; each trial records it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from cormult_lib.config import DISTANCE_BUDGETS, DISTANCE_GRIDS, SHARED_SPACE_GRIDS, get_config
from cormult_lib.correlation.distances import DISTANCES
from cormult_lib.correlation.evaluation import separation_auc
from cormult_lib.correlation.negatives import STRATEGIES
from cormult_lib.data.dataset import MultimodalSplit
from cormult_lib.device import resolve_device
from cormult_lib.features.loading import load_splits
from cormult_lib.modalities import parse_modalities
from cormult_lib.parameters import check_choice, check_int
from cormult_lib.training.sweep import (
    SAMPLERS,
    grid_points,
    study_name,
    sweep_seeds,
)

__all__ = ["SWEEPS", "ChapterSweep", "distance_sweep", "shared_space_sweep"]


@dataclass(frozen=True)
class ChapterSweep:
    """Everything :func:`~cormult_lib.training.sweep.run_sweep` needs for one chapter's sweep.

    Attributes:
        name: ``"distances"`` or ``"shared_space"``.
        points: the grid (:func:`~cormult_lib.training.sweep.grid_points`).
        seeds: the seeds, a grid dimension of their own.
        run_point: ``run_point(settings, seed) -> metrics``.
        study: the Optuna study's name (:func:`~cormult_lib.training.sweep.study_name` of
            ``fixed``).
        fixed: the settings held fixed over the grid.
        objective: the metric a TPE study minimises.
        sampler: ``"grid"`` or ``"tpe"``.
        splits: the data the points train on (``train`` already cut to ``train_fraction``).
    """

    name: str
    points: list[dict]
    seeds: list[int]
    run_point: Callable[[dict, int], dict[str, float]]
    study: str
    fixed: dict[str, Any]
    objective: str
    sampler: str
    splits: dict[str, MultimodalSplit] = field(repr=False)

    @property
    def size(self) -> int:
        """Trials of the full grid: points times seeds."""
        return len(self.points) * len(self.seeds)


def _sweep(
    name: str,
    stem: str,
    axes: Mapping[str, Sequence],
    seeds: list[int],
    run_point: Callable[[dict, int], dict[str, float]],
    fixed: dict[str, Any],
    objective: str,
    splits: dict[str, MultimodalSplit],
) -> ChapterSweep:
    """A :class:`ChapterSweep` whose study is named by ``stem`` and the ``fixed`` settings."""
    return ChapterSweep(
        name=name,
        points=grid_points(axes),
        seeds=seeds,
        run_point=run_point,
        study=study_name(stem, fixed),
        fixed=fixed,
        objective=objective,
        sampler=fixed["sampler"],
        splits=splits,
    )


def _check_modalities(modalities: object) -> None:
    try:
        parse_modalities(modalities, min_count=2)
    except (TypeError, ValueError):
        raise ValueError(
            f"modalities={modalities!r}: the evaluator needs two or three of 'TAV', e.g. 'TAV'"
        ) from None


def _subset_train(splits: Mapping[str, MultimodalSplit], fraction: float, seed: int) -> dict:
    """The splits with ``train`` cut to a seeded ``fraction`` of its samples (at least 2)."""
    if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
        raise ValueError(f"train_fraction={fraction!r}: expected a number in (0, 1]")
    train = splits["train"]
    keep = np.random.default_rng(seed).permutation(len(train))[
        : max(2, round(fraction * len(train)))
    ]
    return {**splits, "train": train.select(np.sort(keep))}


def _axes(grids: Mapping[str, Mapping], grid: str, overrides: Mapping[str, object]) -> dict:
    """The grid's axes with the axes given in ``overrides`` (non-None) replaced."""
    axes = dict(grids[grid])
    for axis, values in overrides.items():
        if values is None:
            continue
        allowed = DISTANCES if axis == "distance" else None
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{axis}={values!r}: expected None or a non-empty list")
        for value in values:
            if allowed is None and (type(value) is not int or value < 1):
                raise ValueError(f"{axis}={list(values)}: expected ints >= 1")
            if allowed is not None and value not in allowed:
                raise ValueError(f"{axis}={list(values)}: expected a subset of {DISTANCES}")
        axes[axis] = tuple(values)
    return axes


def shared_space_sweep(
    *,
    profile: str = "quick",
    dataset: str = "synthetic",
    data_path: str | None = None,
    modalities: str = "TAV",
    seed: int = 0,
    grid: str | None = None,
    seeds: Sequence[int] | None = None,
    shared_time: Sequence[int] | None = None,
    shared_dim: Sequence[int] | None = None,
    train_fraction: float = 0.5,
    epochs: int = 3,
    batch_size: int | None = None,
    strategy: str = "B",
    sampler: str = "grid",
    device: str | torch.device = "cpu",
) -> ChapterSweep:
    """Chapter 06's sweep of the shared space ``(t, o)``; arguments as the chapter's parameters.

    A point pre-trains the evaluator for ``epochs`` epochs with ``shared_time = t`` and
    ``shared_dim = o`` and returns ``valid_loss`` (the best validation triplet loss, Eq. 8) and
    ``epoch_s`` (mean seconds per epoch). ``batch_size=None``: 16 in the quick and standard
    profiles, the profile's own otherwise.
    """
    from cormult_lib.training.pretrain import pretrain_evaluator

    grid = grid or profile
    _check_modalities(modalities)
    check_choice("grid", grid, tuple(SHARED_SPACE_GRIDS))
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("sampler", sampler, SAMPLERS)
    check_int("epochs", epochs, minimum=1)
    config = get_config(profile)
    small = profile in ("quick", "standard")  # more updates per epoch at the small scale
    batch = batch_size or (16 if small else config.correlation.batch_size)
    check_int("batch_size", batch, minimum=1)
    axes = _axes(SHARED_SPACE_GRIDS, grid, {"shared_time": shared_time, "shared_dim": shared_dim})
    device = resolve_device(device, verbose=False)
    splits = _subset_train(load_splits(dataset, data_path, modalities, config.data, seed),
                           train_fraction, seed)

    def run_point(settings: dict, point_seed: int) -> dict[str, float]:
        correlation = replace(
            config.correlation,
            shared_time=settings["shared_time"],
            shared_dim=settings["shared_dim"],
            epochs=epochs,
            batch_size=batch,
        )
        result = pretrain_evaluator(
            splits["train"], splits["valid"], correlation, strategy=strategy,
            modalities=modalities, device=device, seed=point_seed, progress=False,
        )
        return {
            "valid_loss": float(result.history["valid_loss"].min()),
            "epoch_s": float(result.history["seconds"].mean()),
        }

    fixed = {
        "profile": profile, "dataset": dataset, "data_path": data_path,
        "modalities": modalities, "seed": seed, "train_fraction": train_fraction,
        "epochs": epochs, "batch_size": batch, "strategy": strategy, "sampler": sampler,
        "device": device.type,
    }  # fmt: skip
    return _sweep("shared_space", f"06_shared_space_{grid}_{dataset}", axes,
                  sweep_seeds(seeds, grid), run_point, fixed, "valid_loss", splits)


#: Metrics of CorMulT on the test split that a distance point records.
DISTANCE_TEST_METRICS = ("acc7", "acc2_has0", "acc2_non0", "f1_non0", "mae", "corr")


def distance_sweep(
    *,
    profile: str = "quick",
    dataset: str = "synthetic",
    data_path: str | None = None,
    modalities: str = "TAV",
    seed: int = 0,
    grid: str | None = None,
    distances: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    strategy: str = "B",
    train_fraction: float = 1.0,
    pretrain_epochs: int | None = None,
    pretrain_batch_size: int | None = None,
    epochs: int | None = None,
    fusion: str = "product",
    sampler: str = "grid",
    device: str | torch.device = "cpu",
) -> ChapterSweep:
    """Chapter 05's sweep of the distance measure; arguments as the chapter's parameters.

    A point pre-trains the evaluator with that distance (early stopping after 3 epochs without
    improvement), scores its ROC-AUC of real test clips against negatives of strategies A, B
    and D, trains CorMulT on it and returns ``pretrain_loss``, ``pretrain_first_loss``,
    ``pretrain_best_epoch``, ``auc``, ``auc_A``/``auc_B``/``auc_D`` and the test metrics of
    :data:`DISTANCE_TEST_METRICS`. Budgets ``None``: :data:`DISTANCE_BUDGETS` of the profile
    (the profile's own config for ``paper``).
    """
    from cormult_lib.models import CorMulT
    from cormult_lib.models.cormult import FUSIONS
    from cormult_lib.models.mult import build_mult
    from cormult_lib.training.pretrain import pretrain_evaluator, text_vocab_size
    from cormult_lib.training.supervised import evaluate, train_model

    grid = grid or profile
    _check_modalities(modalities)
    check_choice("grid", grid, tuple(DISTANCE_GRIDS))
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("fusion", fusion, FUSIONS)
    check_choice("sampler", sampler, SAMPLERS)
    config = get_config(profile)
    own = DISTANCE_BUDGETS.get(profile, {
        "pretrain_epochs": config.correlation.epochs,
        "pretrain_batch_size": config.correlation.batch_size,
        "epochs": config.train.epochs,
    })  # fmt: skip
    budget = {
        "pretrain_epochs": pretrain_epochs or own["pretrain_epochs"],
        "pretrain_batch_size": pretrain_batch_size or own["pretrain_batch_size"],
        "epochs": epochs or own["epochs"],
    }
    for name, value in budget.items():
        check_int(name, value, minimum=1)
    axes = _axes(DISTANCE_GRIDS, grid, {"distance": distances})
    device = resolve_device(device, verbose=False)
    splits = _subset_train(load_splits(dataset, data_path, modalities, config.data, seed),
                           train_fraction, seed)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    vocab_size = text_vocab_size(train, valid, test)

    def run_point(settings: dict, point_seed: int) -> dict[str, float]:
        correlation = replace(
            config.correlation,
            epochs=budget["pretrain_epochs"],
            batch_size=budget["pretrain_batch_size"],
        )
        pretrained = pretrain_evaluator(
            train, valid, correlation, strategy=strategy, modalities=modalities,
            distance=settings["distance"], device=device, seed=point_seed, patience=3,
            progress=False,
        )
        auc = separation_auc(
            pretrained.model, test, pretrained.distance, strategies=("A", "B", "D"), seed=seed,
            negative_options=pretrained.settings["negative_options"],
        )
        torch.manual_seed(point_seed)
        model = CorMulT(
            build_mult(train.dims(), config.model, modalities, "regression", vocab_size),
            pretrained.model,
            pretrained.distance,
            fusion=fusion,
        )
        trained = train_model(
            model, train, valid, replace(config.train, epochs=budget["epochs"]),
            seed=point_seed, device=device, progress=False,
        )
        metrics = evaluate(trained.model, test)["all"]
        return {
            "pretrain_loss": float(pretrained.history["valid_loss"].min()),
            "pretrain_first_loss": float(pretrained.history["valid_loss"].iloc[0]),
            "pretrain_best_epoch": pretrained.best_epoch,
            "auc": float(auc["auc"].mean()),
            **{f"auc_{s}": float(group["auc"].mean()) for s, group in auc.groupby("strategy")},
            **{key: float(metrics[key]) for key in DISTANCE_TEST_METRICS},
        }

    fixed = {
        "profile": profile, "dataset": dataset, "data_path": data_path,
        "modalities": modalities, "seed": seed, "train_fraction": train_fraction,
        "strategy": strategy, "fusion": fusion, "sampler": sampler, "device": device.type,
        **budget,
    }  # fmt: skip
    return _sweep("distances", f"05_distances_{grid}_{dataset}", axes,
                  sweep_seeds(seeds, grid), run_point, fixed, "mae", splits)


#: The sweeps ``cormult-sweep --sweep NAME`` knows.
SWEEPS: dict[str, Callable[..., ChapterSweep]] = {
    "distances": distance_sweep,
    "shared_space": shared_space_sweep,
}
