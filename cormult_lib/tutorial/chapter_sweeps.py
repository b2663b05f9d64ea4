"""The two sweeps of CorMulT's experiments, as chapters 05 and 06 and ``cormult-sweep`` run them.

* :func:`distance_sweep` (chapter 05, CorMulT section 4.3, Table 3): per distance measure and
  seed, pre-train the correlation evaluator, score it (ROC-AUC of real clips against negatives)
  and train CorMulT on it (the test metrics);
* :func:`shared_space_sweep` (chapter 06, section 4.4): per shared space ``(t, o)`` and seed,
  pre-train the evaluator and record its best validation loss and its epoch time.

Both take a :class:`SweepSetup` (the data, the grid, the seeds and how the points run, the
same for both) and options of their own (the axes' values and the budget). Each returns a
:class:`ChapterSweep`: the grid, the seeds, the ``run_point`` function and the name of its
Optuna study, which is derived from every setting that is fixed over the grid (profile, data,
budget, sampler, device type). The notebook and any number of command-line
workers given the same settings therefore work on the *same* study: start workers with
``cormult-sweep`` (:mod:`cormult_lib.tutorial.sweep_cli`) and the chapter finds their trials.
The torch thread count is not part of the name: it changes float sums in the last digits, not
the method, and a sweep spread over machines cannot keep it equal; each trial records it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from cormult_lib.config import (
    DISTANCE_BUDGETS,
    DISTANCE_GRIDS,
    SHARED_SPACE_GRIDS,
    ExperimentConfig,
    get_config,
)
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

__all__ = ["SWEEPS", "ChapterSweep", "SweepSetup", "distance_sweep", "shared_space_sweep"]

#: Fields of :class:`SweepSetup` that do not name a study as they are: the grid and the seeds
#: name it by the points and seeds they resolve to; the data by its content, not its path.
NOT_FIXED = ("grid", "seeds", "data_path")


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


@dataclass(frozen=True)
class SweepSetup:
    """What both sweeps share: the data they train on, the grid and how its points are run.

    The fields are the chapters' parameters of the same names.

    Attributes:
        profile: ``"quick"``, ``"standard"`` or ``"paper"``
            (:func:`~cormult_lib.config.get_config`).
        dataset, data_path: the data (:func:`~cormult_lib.features.loading.load_splits`).
        modalities: two or three of ``"TAV"``.
        seed: splits the data, draws the ``train_fraction`` subset and (chapter 05) the test
            negatives the ROC-AUC is scored on; each trial's own seed comes from ``seeds``.
        grid: the named grid of the sweep (``None``: the profile's name).
        seeds: the trials' seeds (``None``: the grid's,
            :func:`~cormult_lib.training.sweep.sweep_seeds`).
        strategy: the negative sampling strategy of pre-training, one of ``"A"``-``"D"``.
        sampler: ``"grid"`` or ``"tpe"``.
        device: where the points train.
    """

    profile: str = "quick"
    dataset: str = "synthetic"
    data_path: str | None = None
    modalities: str = "TAV"
    seed: int = 0
    grid: str | None = None
    seeds: Sequence[int] | None = None
    strategy: str = "B"
    sampler: str = "grid"
    device: str | torch.device = "cpu"

    @property
    def config(self) -> ExperimentConfig:
        """The profile's configuration (:func:`~cormult_lib.config.get_config`)."""
        return get_config(self.profile)

    def _prepare(
        self,
        grids: Mapping[str, Mapping],
        overrides: Mapping[str, object],
        train_fraction: float,
    ) -> _Prepared:
        """Check the setup against a sweep's named ``grids``, build its axes (the grid's, with
        the non-``None`` ``overrides``) and load the data with ``train`` cut to
        ``train_fraction``."""
        grid = self.grid or self.profile
        _check_modalities(self.modalities)
        check_choice("grid", grid, tuple(grids))
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("sampler", self.sampler, SAMPLERS)
        axes = _axes(grids, grid, overrides)
        device = resolve_device(self.device, verbose=False)
        data = self.config.data
        splits = load_splits(self.dataset, self.data_path, self.modalities, data, self.seed)
        fixed = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_FIXED}
        fixed.update(
            device=device.type,
            train_fraction=train_fraction,
            config=_digest(json.dumps(asdict(self.config), sort_keys=True, default=str).encode()),
            data=splits_digest(splits),
        )
        return _Prepared(
            grid=grid,
            axes=axes,
            seeds=sweep_seeds(self.seeds, grid),
            device=device,
            splits=_subset_train(splits, train_fraction, self.seed),
            fixed=fixed,
        )


@dataclass(frozen=True)
class _Prepared:
    """A :class:`SweepSetup` checked and its data loaded, for one sweep (see
    ``SweepSetup._prepare``); ``fixed`` holds the setup's settings that name the study."""

    grid: str
    axes: dict[str, tuple]
    seeds: list[int]
    device: torch.device
    splits: dict[str, MultimodalSplit]
    fixed: dict[str, Any]

    def sweep(
        self,
        name: str,
        stem: str,
        run_point: Callable[[dict, int], dict[str, float]],
        own: Mapping[str, Any],
        objective: str,
    ) -> ChapterSweep:
        """The :class:`ChapterSweep` whose study is named by ``stem``, the grid, the data and
        the fixed settings: the setup's and the sweep's ``own`` (its budget, say)."""
        fixed = {**self.fixed, **own}
        # The grid names the study too: a study belongs to one grid of points and seeds, so
        # other axes or seeds (a chapter's seeds=[0, 1, 2], say) start a study of their own.
        grid = json.dumps({"axes": self.axes, "seeds": self.seeds}, sort_keys=True, default=str)
        return ChapterSweep(
            name=name,
            points=grid_points(self.axes),
            seeds=self.seeds,
            run_point=run_point,
            study=study_name(f"{stem}_{self.grid}_{fixed['dataset']}", {**fixed, "grid": grid}),
            fixed=fixed,
            objective=objective,
            sampler=fixed["sampler"],
            splits=self.splits,
        )


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:16]


def splits_digest(splits: Mapping[str, MultimodalSplit]) -> str:
    """A hash of the splits' ids, labels, features and masks: the same data under another path
    (another machine's mount) finds its study, other data at the same path does not."""
    parts = []
    for name in sorted(splits):
        split = splits[name]
        parts += [name.encode(), "\n".join(map(str, split.ids)).encode(), split.labels.tobytes()]
        for m in sorted(split.features):
            parts += [np.ascontiguousarray(split.features[m]), np.ascontiguousarray(split.masks[m])]
    return _digest(*parts)


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
    setup: SweepSetup | None = None,
    *,
    shared_time: Sequence[int] | None = None,
    shared_dim: Sequence[int] | None = None,
    train_fraction: float = 0.5,
    epochs: int = 3,
    batch_size: int | None = None,
) -> ChapterSweep:
    """Chapter 06's sweep of the shared space ``(t, o)``; arguments as the chapter's parameters.

    A point pre-trains the evaluator for ``epochs`` epochs with ``shared_time = t`` and
    ``shared_dim = o`` and returns ``valid_loss`` (the best validation triplet loss, Eq. 8) and
    ``epoch_s`` (mean seconds per epoch). ``setup=None``: ``SweepSetup()``.
    ``batch_size=None``: 16 in the quick and standard profiles, the profile's own otherwise.
    """
    from cormult_lib.training.pretrain import pretrain_evaluator

    setup = setup or SweepSetup()
    config = setup.config
    check_int("epochs", epochs, minimum=1)
    small = setup.profile in ("quick", "standard")  # more updates per epoch at the small scale
    batch = (16 if small else config.correlation.batch_size) if batch_size is None else batch_size
    check_int("batch_size", batch, minimum=1)
    axes = {"shared_time": shared_time, "shared_dim": shared_dim}
    prepared = setup._prepare(SHARED_SPACE_GRIDS, axes, train_fraction)
    train, valid = prepared.splits["train"], prepared.splits["valid"]

    def run_point(settings: dict, point_seed: int) -> dict[str, float]:
        correlation = replace(
            config.correlation,
            shared_time=settings["shared_time"],
            shared_dim=settings["shared_dim"],
            epochs=epochs,
            batch_size=batch,
        )
        result = pretrain_evaluator(
            train, valid, correlation, strategy=setup.strategy, modalities=setup.modalities,
            device=prepared.device, seed=point_seed, progress=False,
        )  # fmt: skip
        return {
            "valid_loss": float(result.history["valid_loss"].min()),
            "epoch_s": float(result.history["seconds"].mean()),
        }

    budget = {"epochs": epochs, "batch_size": batch}
    return prepared.sweep("shared_space", "06_shared_space", run_point, budget, "valid_loss")


#: Metrics of CorMulT on the test split that a distance point records.
DISTANCE_TEST_METRICS = ("acc7", "acc2_has0", "acc2_non0", "f1_non0", "mae", "corr")


def distance_sweep(
    setup: SweepSetup | None = None,
    *,
    distances: Sequence[str] | None = None,
    train_fraction: float = 1.0,
    pretrain_epochs: int | None = None,
    pretrain_batch_size: int | None = None,
    epochs: int | None = None,
    fusion: str = "product",
) -> ChapterSweep:
    """Chapter 05's sweep of the distance measure; arguments as the chapter's parameters.

    A point pre-trains the evaluator with that distance (early stopping after 3 epochs without
    improvement), scores its ROC-AUC of real test clips against negatives of strategies A, B
    and D, trains CorMulT on it and returns ``pretrain_loss``, ``pretrain_first_loss``,
    ``pretrain_best_epoch``, ``auc``, ``auc_A``/``auc_B``/``auc_D`` and the test metrics of
    :data:`DISTANCE_TEST_METRICS`. ``setup=None``: ``SweepSetup()``. Budgets ``None``:
    :data:`DISTANCE_BUDGETS` of the profile (the profile's own config for ``paper``).
    """
    from cormult_lib.models import CorMulT
    from cormult_lib.models.cormult import FUSIONS
    from cormult_lib.models.mult import build_mult
    from cormult_lib.training.pretrain import pretrain_evaluator, text_vocab_size
    from cormult_lib.training.supervised import evaluate, train_model

    setup = setup or SweepSetup()
    check_choice("fusion", fusion, FUSIONS)
    config = setup.config
    own = DISTANCE_BUDGETS.get(setup.profile, {
        "pretrain_epochs": config.correlation.epochs,
        "pretrain_batch_size": config.correlation.batch_size,
        "epochs": config.train.epochs,
    })  # fmt: skip
    given = {
        "pretrain_epochs": pretrain_epochs,
        "pretrain_batch_size": pretrain_batch_size,
        "epochs": epochs,
    }
    budget = {name: own[name] if value is None else value for name, value in given.items()}
    for name, value in budget.items():
        check_int(name, value, minimum=1)
    prepared = setup._prepare(DISTANCE_GRIDS, {"distance": distances}, train_fraction)
    train, valid, test = (prepared.splits[name] for name in ("train", "valid", "test"))
    vocab_size = text_vocab_size(train, valid, test)

    def run_point(settings: dict, point_seed: int) -> dict[str, float]:
        correlation = replace(
            config.correlation,
            epochs=budget["pretrain_epochs"],
            batch_size=budget["pretrain_batch_size"],
        )
        pretrained = pretrain_evaluator(
            train, valid, correlation, strategy=setup.strategy, modalities=setup.modalities,
            distance=settings["distance"], device=prepared.device, seed=point_seed, patience=3,
            progress=False,
        )
        auc = separation_auc(
            pretrained.model, test, pretrained.distance, strategies=("A", "B", "D"),
            seed=setup.seed, negative_options=pretrained.settings["negative_options"],
        )
        torch.manual_seed(point_seed)
        model = CorMulT(
            build_mult(train.dims(), config.model, setup.modalities, "regression", vocab_size),
            pretrained.model,
            pretrained.distance,
            fusion=fusion,
        )
        trained = train_model(
            model, train, valid, replace(config.train, epochs=budget["epochs"]),
            seed=point_seed, device=prepared.device, progress=False,
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

    own = {"fusion": fusion, **budget}
    return prepared.sweep("distances", "05_distances", run_point, own, "mae")


#: The sweeps ``cormult-sweep --sweep NAME`` knows.
SWEEPS: dict[str, Callable[..., ChapterSweep]] = {
    "distances": distance_sweep,
    "shared_space": shared_space_sweep,
}
