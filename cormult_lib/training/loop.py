"""One training loop for every model of the tutorial: MCE pre-training, MulT, CorMulT, CLIP-MSA.

:func:`fit` owns what every model needs and none should re-implement: Adam, gradient clipping,
mixed precision on CUDA, a learning-rate schedule and early stopping driven by the validation
loss, model selection on the validation split, progress bars, and checkpoints that let a killed
run continue *exactly* where it stopped.

A model plugs in through its loss: ``loss_fn(model, batch, generator) -> (loss, extras)`` where
``loss`` is a scalar tensor, ``extras`` a dict of floats to log (e.g. the per-modality parts of
a loss), and ``generator`` a ``torch.Generator`` for whatever randomness the loss needs
(negative samples). Training batches get a stream that runs on from epoch to epoch; validation
batches get one that is re-seeded before every validation pass, so validation draws the same
negatives every epoch and the validation loss measures the model, not the dice.

Resuming exactly needs every random stream the run touches: torch's global CPU (and CUDA)
generator for dropout, the shuffling generator of the training loader (pass the same
``torch.Generator`` to :func:`~cormult_lib.data.dataset.make_loader` and to :func:`fit`), the
loss generator, and Python's and NumPy's global generators. All of them are saved after every
epoch together with the model, optimiser, scheduler and gradient-scaler states.

The same loop trains data-parallel under ``torchrun`` once a process group exists (see
:mod:`cormult_lib.training.distributed` for the set-up and the launch command): every rank
trains a ``DistributedDataParallel`` replica on its shard of the data, the logged losses are
averaged over all ranks' samples so every rank sees the same history and takes the same
early-stopping, schedule and model-selection decisions, and only rank 0 shows progress bars and
writes checkpoints (which also hold every rank's random streams).

:func:`fit` itself is the loop; each of its concerns is a small unit of its own:

- :mod:`~cormult_lib.training.epoch`: one pass over a loader (:class:`~.epoch.EpochRunner`),
  the loss protocol (:data:`~.epoch.LossFn`) and :func:`~.epoch.batch_size_of`;
- :mod:`~cormult_lib.training.precision`: autocast, gradient scaling, clipping and the
  optimiser step (:class:`~.precision.MixedPrecision`);
- :mod:`~cormult_lib.training.early_stopping`: the best epoch, its weights and patience
  (:class:`~.early_stopping.EarlyStopping`);
- :mod:`~cormult_lib.training.checkpoints`: the resumable checkpoint
  (:class:`~.checkpoints.Checkpoint`), random-stream states and data fingerprints;
- :mod:`~cormult_lib.training.data_parallel`: whether to train data-parallel, and the
  ``DistributedDataParallel`` replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cormult_lib.device import keep_freed_memory
from cormult_lib.progress import tqdm
from cormult_lib.training.checkpoints import (
    Checkpoint,
    data_fingerprint,
)
from cormult_lib.training.data_parallel import replicate, resolve_distributed
from cormult_lib.training.distributed import broadcast_object
from cormult_lib.training.early_stopping import EarlyStopping
from cormult_lib.training.epoch import EpochRunner, LossFn
from cormult_lib.training.precision import MixedPrecision

__all__ = [
    "PLATEAU_FACTOR",
    "PLATEAU_PATIENCE",
    "RANK_SEED_OFFSET",
    "VALID_SEED_OFFSET",
    "FitResult",
    "RunOptions",
    "check_run_options",
    "fit",
    "make_optimizer",
    "maybe_compile",
]

# ReduceLROnPlateau: halve the learning rate when more than this many epochs in a row have
# not lowered the validation loss by more than its relative threshold (1e-4), i.e. on the third.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 2
# Offset between the training and the validation loss stream, so they never coincide.
VALID_SEED_OFFSET = 1_000_003
# Offset between the loss streams of the ranks of a data-parallel run (rank 0 keeps ``seed``):
# each rank draws its own negatives for its own shard, as one process would for the whole batch.
RANK_SEED_OFFSET = 7_919_993
# The first columns of the history, in this order.
HISTORY_COLUMNS = ["epoch", "train_loss", "valid_loss", "lr", "seconds"]


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the model, with the weights of its best validation epoch loaded.
        history: one row per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``lr`` (the
            learning rate of the first parameter group during that epoch; the plateau
            scheduler scales every group by the same factor), ``seconds`` (wall time of the epoch),
            ``train_<key>`` / ``valid_<key>`` for every extra the loss reported, and the
            columns returned by ``log_extra``.
        best_epoch: the (1-based) epoch whose weights ``model`` holds.
        stopped_early: ``True`` when early stopping ended the run before ``epochs``.
    """

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    stopped_early: bool


def make_optimizer(
    params: Iterable[nn.Parameter] | list[dict], lr: float, weight_decay: float = 0.0
) -> torch.optim.Adam:
    """The optimiser of :func:`fit`: Adam with PyTorch's fused implementation, which updates
    every parameter in one kernel instead of a loop of small ones (on the CPU and on CUDA; the
    same update as the default implementation up to float rounding)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def make_scheduler(
    optimizer: torch.optim.Optimizer, scheduler: str | None
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """``fit``'s ``scheduler``: ``"plateau"`` multiplies the learning rate by
    ``PLATEAU_FACTOR`` at the ``PLATEAU_PATIENCE + 1``-th epoch in a row that does not lower the
    best validation loss by more than 0.01% (``ReduceLROnPlateau``'s default ``threshold``;
    early stopping counts any lower loss as better)."""
    if scheduler is None:
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
    )


def maybe_compile(model: nn.Module, enabled: bool, backend: str = "inductor") -> nn.Module:
    """``torch.compile(model)`` when ``enabled``, else ``model``.

    On CUDA the compiled model also records CUDA graphs (``mode="reduce-overhead"``), which
    removes the launch overhead of the many small kernels of these models; compiling takes a
    minute or two before the first step. On the CPU it does not pay (measured: 200 s to
    compile MulT, then slower than eager), hence off by default. The compiled module shares
    the parameters of ``model``: save and load ``model``'s state dict.
    """
    if not enabled:
        return model
    device = next(model.parameters()).device
    mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
    return torch.compile(model, backend=backend, mode=mode)


def _check_arguments(
    model: nn.Module,
    epochs: int,
    lr: float,
    grad_clip: float | None,
    patience: int | None,
    scheduler: str | None,
) -> None:
    """Refuse arguments of :func:`fit` it cannot train with."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int or None, got {patience!r}")
    if scheduler not in ("plateau", None):
        raise ValueError(f"scheduler must be 'plateau' or None, got {scheduler!r}")
    if isinstance(model, DistributedDataParallel):
        raise TypeError(
            "pass the plain model: fit wraps it in DistributedDataParallel itself when a "
            "process group is running (distributed=None or True)"
        )


def _history_row(epoch: int, lr: float, train: dict[str, float], valid: dict[str, float]) -> dict:
    """An epoch's row: ``epoch``, both losses, ``lr``, then ``train_<key>`` and
    ``valid_<key>`` for every extra of the loss."""
    row = {"epoch": epoch, "train_loss": train["loss"], "valid_loss": valid["loss"], "lr": lr}
    row.update({f"train_{k}": v for k, v in train.items() if k != "loss"})
    row.update({f"valid_{k}": v for k, v in valid.items() if k != "loss"})
    return row


def _history_frame(history: list[dict]) -> pd.DataFrame:
    """The history rows as a table, ``HISTORY_COLUMNS`` first."""
    frame = pd.DataFrame(history)
    return frame[HISTORY_COLUMNS + [c for c in frame.columns if c not in HISTORY_COLUMNS]]


class RunOptions(TypedDict, total=False):
    """How a run is kept and shown, not what it learns: the options that
    :func:`~cormult_lib.training.supervised.train_model` and
    :func:`~cormult_lib.training.pretrain.pretrain_evaluator` pass on to :func:`fit` as they
    are (``**run``), with :func:`fit`'s defaults when left out.

    ``checkpoint_path`` receives the complete training state after every epoch; ``resume``
    continues from it when it exists (``False``: start afresh); ``progress`` shows the bars.
    """

    checkpoint_path: str | Path | None
    resume: bool
    progress: bool


def check_run_options(run: Mapping[str, object], caller: str) -> None:
    """Refuse keyword options of ``caller`` that are not :class:`RunOptions`, naming the caller
    (not :func:`fit`, which would otherwise be the one to complain)."""
    unknown = sorted(set(run) - set(RunOptions.__annotations__))
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword arguments {unknown}; besides its own it takes "
            f"{sorted(RunOptions.__annotations__)}"
        )


def fit(
    model: nn.Module,
    train_loader: Iterable,
    valid_loader: Iterable,
    loss_fn: LossFn,
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
    patience: int | None = None,
    scheduler: str | None = "plateau",
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device = "cpu",
    amp: bool | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    progress: bool = True,
    log_extra: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    on_epoch_start: Callable[[nn.Module, int], None] | None = None,
    distributed: bool | None = None,
    param_groups: list[dict] | None = None,
    compile: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` with Adam, keep the weights of the best validation epoch.

    Args:
        model: any ``nn.Module`` (not wrapped in ``DistributedDataParallel``: ``fit`` wraps it
            itself when training data-parallel); it is moved to ``device``.
        train_loader: yields training batches (any nesting of dicts/lists of tensors).
        valid_loader: yields validation batches; its mean loss drives model selection, early
            stopping and the learning-rate schedule. The test split never enters here.
        loss_fn: ``loss_fn(model, batch, generator) -> (loss, extras)``; ``batch`` is already
            on ``device``; ``loss`` a scalar tensor; ``extras`` floats logged per epoch as
            sample-weighted means.
        epochs: the total number of epochs (a resumed run counts the ones already done).
        lr, weight_decay: Adam's learning rate and (L2) weight decay.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        patience: stop after this many epochs without a lower validation loss (``None``:
            train all ``epochs``).
        scheduler: ``"plateau"`` multiplies the learning rate by ``PLATEAU_FACTOR`` at the
            ``PLATEAU_PATIENCE + 1``-th epoch in a row without a lower validation loss
            (:func:`make_scheduler`); ``None`` keeps it.
        checkpoint_path: write the complete training state here after every epoch, atomically.
        resume: continue from ``checkpoint_path`` when it exists (``False``: start afresh and
            overwrite it).
        device: where to train.
        amp: mixed precision (float16 autocast + ``GradScaler`` on CUDA, bfloat16 autocast on
            the CPU); ``None`` means on for CUDA, off for the CPU.
        generator: the ``torch.Generator`` that shuffles ``train_loader`` (the one passed to
            ``make_loader``), so that a resumed run reshuffles exactly as an uninterrupted one.
            ``None`` when the loader shuffles with torch's global generator (also saved).
        seed: seeds the loss's random streams: training uses ``seed``, validation re-seeds
            ``seed + VALID_SEED_OFFSET`` before each pass; rank ``r`` of a data-parallel run
            adds ``r * RANK_SEED_OFFSET`` to both, so that the ranks draw different numbers
            (torch's global generator, which dropout uses, is the script's to seed per rank).
        progress: show ``tqdm`` bars for epochs and batches.
        log_extra: ``log_extra(model, epoch) -> {column: value}`` called after validation;
            the values join the epoch's history row (e.g. a validation ROC-AUC).
        on_epoch_start: ``on_epoch_start(model, epoch)`` called before each epoch's training,
            also the first epoch of a resumed run, e.g. to refit a statistic the loss needs
            from the current weights. For an exact resume it must depend only on the model
            (and draw no random numbers).
        distributed: train data-parallel over the ranks of the running process group
            (:func:`~cormult_lib.training.distributed.init_distributed`); ``None``: when one is
            initialised. Then ``model`` and ``loss_fn`` run inside ``DistributedDataParallel``
            (on ``device``, which must be this rank's GPU with NCCL), so every parameter that
            requires grad must get a gradient at every step; ``train_loader`` must give every
            rank its shard with the same number of batches (e.g.
            :func:`~cormult_lib.training.distributed.make_distributed_loader`) and
            ``valid_loader`` its validation shard (or the whole split); losses and extras are
            sample-weighted means over all ranks; ``log_extra``, ``on_epoch_start`` and
            ``loss_fn`` run on every rank with the plain model, and the history row of rank 0
            (its ``log_extra`` values and ``seconds``) is the one every rank keeps; only rank 0
            shows progress bars and writes ``checkpoint_path``, which every rank must be able
            to read to resume, with the same number of ranks. ``False`` with a group running:
            every process trains on its own (e.g. one configuration of a sweep per rank).
        param_groups: Adam's parameter groups when parts of the model need their own
            learning rate (each dict holds ``params`` and may hold ``lr``); ``None``: every
            parameter of ``model`` at ``lr``.
        compile: hand ``loss_fn`` a :func:`torch.compile` d model (:func:`maybe_compile`: with
            CUDA graphs on CUDA; it does not pay on the CPU). Checkpoints, ``log_extra``,
            ``on_epoch_start`` and the result still get the plain ``model``, whose parameters
            the compiled one shares. Data-parallel training runs the plain model inside
            ``DistributedDataParallel``, so there only validation runs compiled.
        settings: more settings a resumed run must share with the checkpoint, beyond the
            optimisation and data ones ``fit`` records itself: what ``loss_fn`` computes (its
            loss, margins, negatives) and the model's architecture (plain values).

    In every process, a training loader whose sampler has ``set_epoch`` (``DistributedSampler``)
    is told the epoch before it is iterated, so it reshuffles every epoch and on resume.

    Returns:
        A :class:`FitResult`; ``model`` holds the best validation epoch's weights (on every
        rank, the plain model).
    """
    _check_arguments(model, epochs, lr, grad_clip, patience, scheduler)
    distributed, rank, world_size, device = resolve_distributed(distributed, device)
    if device.type == "cpu":
        keep_freed_memory()
    model.to(device)
    replicas = replicate(model, loss_fn, device, train_loader) if distributed else None
    runner = maybe_compile(model, compile)
    params = model.parameters() if param_groups is None else param_groups
    optimizer = make_optimizer(params, lr, weight_decay)
    plateau = make_scheduler(optimizer, scheduler)
    precision = MixedPrecision(device, amp)
    show_progress = progress and rank == 0
    run_epoch = EpochRunner(
        model=model, loss_fn=loss_fn, runner=runner, replicas=replicas, optimizer=optimizer,
        precision=precision, grad_clip=grad_clip, device=device, progress=show_progress,
    )  # fmt: skip
    rank_seed = seed + rank * RANK_SEED_OFFSET
    loss_generator = torch.Generator().manual_seed(rank_seed)
    recorded = {
        "lr": lr, "weight_decay": weight_decay, "grad_clip": grad_clip, "patience": patience,
        "scheduler": scheduler, "amp": precision.enabled, "seed": seed, "world_size": world_size,
        "train_data": data_fingerprint(train_loader),
        "valid_data": data_fingerprint(valid_loader),
        **(settings or {}),
    }  # fmt: skip
    checkpoint = Checkpoint(
        checkpoint_path, recorded, model=model, optimizer=optimizer, scheduler=plateau,
        scaler=precision.scaler, generators={"shuffle": generator, "loss": loss_generator},
        device=device, rank=rank, distributed=distributed,
    )  # fmt: skip
    early = EarlyStopping(model, patience)
    history: list[dict] = []
    start = 1
    if checkpoint.found(resume):
        saved = checkpoint.restore()
        if saved["epoch"] > epochs:
            raise ValueError(
                f"epochs={epochs}, but checkpoint {checkpoint_path} already holds "
                f"{saved['epoch']} epochs: ask for at least as many to resume it, or pass "
                "resume=False to start afresh"
            )
        early.load_state_dict(saved)
        history, start = list(saved["history"]), saved["epoch"] + 1

    sampler = getattr(train_loader, "sampler", None)
    epoch_bar = tqdm(
        range(start, epochs + 1), desc="epochs", disable=not show_progress or early.stopped
    )
    for epoch in epoch_bar:
        if early.stopped:
            break
        began = time.perf_counter()
        current_lr = optimizer.param_groups[0]["lr"]
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # a DistributedSampler reshuffles every epoch
        if on_epoch_start is not None:
            on_epoch_start(model, epoch)
        train_means = run_epoch(train_loader, True, epoch, loss_generator)
        valid_stream = torch.Generator().manual_seed(rank_seed + VALID_SEED_OFFSET)
        valid_means = run_epoch(valid_loader, False, epoch, valid_stream)
        row = _history_row(epoch, current_lr, train_means, valid_means)
        if log_extra is not None:
            row.update({k: float(v) for k, v in log_extra(model, epoch).items()})
        row["seconds"] = time.perf_counter() - began
        if distributed:
            # Rank 0's row, bit for bit: every rank then takes the same decisions below.
            row = broadcast_object(row)
        early.update(row["valid_loss"], epoch, model, last_epoch=epochs)
        if plateau is not None:
            plateau.step(row["valid_loss"])
        history.append(row)
        epoch_bar.set_postfix(
            train=f"{row['train_loss']:.4f}", valid=f"{row['valid_loss']:.4f}", refresh=False
        )
        checkpoint.save(epoch, history, early.state_dict())

    model.load_state_dict(early.best_state)
    return FitResult(model, _history_frame(history), early.best_epoch, early.stopped)
