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
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from cormult_lib.device import keep_freed_memory, move_to_device
from cormult_lib.files import read_torch_state, write_atomically
from cormult_lib.training.distributed import (
    all_gather_object,
    all_reduce_means,
    broadcast_object,
    rank_and_world_size,
)

LossFn = Callable[[nn.Module, dict, torch.Generator], tuple[torch.Tensor, dict[str, float]]]
CHECKPOINT_FORMAT = 1
# ReduceLROnPlateau: halve the learning rate after this many epochs without a better
# validation loss.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 2
# Offset between the training and the validation loss stream, so they never coincide.
VALID_SEED_OFFSET = 1_000_003


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the model, with the weights of its best validation epoch loaded.
        history: one row per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``lr`` (the
            learning rate used during that epoch), ``seconds`` (wall time of the epoch),
            ``train_<key>`` / ``valid_<key>`` for every extra the loss reported, and the
            columns returned by ``log_extra``.
        best_epoch: the (1-based) epoch whose weights ``model`` holds.
        stopped_early: ``True`` when early stopping ended the run before ``epochs``.
    """

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    stopped_early: bool


class _ModelWithLoss(nn.Module):
    """The model and its loss as one module, for ``DistributedDataParallel`` to wrap.

    DDP synchronises gradients only for computations that run inside its ``forward``. Running
    the whole ``loss_fn`` there lets the loss call any method of the plain model (an encoder,
    a projection head), not only ``model(...)``, and still have every gradient averaged.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        return self.loss_fn(self.model, batch, generator)


def batch_size_of(batch: object) -> int:
    """The number of samples in a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values: Iterable = ()
    if isinstance(batch, Mapping):
        values = batch.values()
    elif isinstance(batch, list | tuple):
        values = batch
    for value in values:
        size = batch_size_of(value)
        if size:
            return size
    return 0


def save_atomic(obj: object, path: str | Path) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``
    (:func:`cormult_lib.files.write_atomically`)."""
    write_atomically(path, lambda stream: torch.save(obj, stream))


def rng_states(device: torch.device, generators: Mapping[str, torch.Generator | None]) -> dict:
    """Every random stream a run touches, in a form ``torch.load(weights_only=True)`` reads."""
    name, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), position, has_gauss, cached),
        "generators": {k: g.get_state() for k, g in generators.items() if g is not None},
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(
    states: Mapping, device: torch.device, generators: Mapping[str, torch.Generator | None]
) -> None:
    """Undo :func:`rng_states`: set every stream back to the saved state."""
    torch.set_rng_state(states["torch"])
    random.setstate(_as_tuples(states["python"]))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state(  # noqa: NPY002 - the legacy global stream is what libraries use
        (name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached)
    )
    for key, generator in generators.items():
        if generator is None:
            continue
        if key not in states["generators"]:
            raise ValueError(
                f"the checkpoint holds no state for the {key!r} generator; it was written by "
                "a run without one. Start again with resume=False."
            )
        generator.set_state(states["generators"][key])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: object) -> object:
    """Lists back to tuples (``random.setstate`` insists on tuples)."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's weights that later training does not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_optimizer(
    params: Iterable[nn.Parameter] | list[dict], lr: float, weight_decay: float = 0.0
) -> torch.optim.Adam:
    """The optimiser of :func:`fit`: Adam with PyTorch's fused implementation, which updates
    every parameter in one kernel instead of a loop of small ones (on the CPU and on CUDA; the
    same update as the default implementation up to float rounding)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


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


def data_fingerprint(loader: Iterable) -> dict | None:
    """What a loader feeds: ``samples``, ``batch_size`` and ``ids_sha1`` (a hash of the sample
    ids, when its dataset has them, e.g. a MultimodalSplit); None for a plain iterable."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return None
    ids = getattr(getattr(dataset, "split", dataset), "ids", None)
    digest = None
    if ids is not None:
        digest = hashlib.sha1("\n".join(map(str, ids)).encode()).hexdigest()[:16]
    batch_size = getattr(loader, "batch_size", None) or getattr(
        getattr(loader, "batch_sampler", None), "batch_size", None
    )
    return {"samples": len(dataset), "batch_size": batch_size, "ids_sha1": digest}


def _check_settings(saved: Mapping, current: Mapping, path: Path) -> None:
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in changed.items())
        raise ValueError(
            f"checkpoint {path} was written with other training settings ({details}); "
            "resuming would mix two runs. Delete it or call fit(..., resume=False)."
        )


def _resolve_distributed(
    distributed: bool | None, device: str | torch.device
) -> tuple[bool, int, int, torch.device]:
    """``fit``'s ``distributed`` and ``device`` arguments to ``(distributed, rank, world_size,
    device)``; a bare ``"cuda"`` becomes this rank's current GPU in a data-parallel run."""
    group_running = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = group_running
    elif distributed and not group_running:
        raise RuntimeError(
            "distributed=True needs a process group: launch with torchrun and call "
            "cormult_lib.training.distributed.init_distributed() before fit"
        )
    device = torch.device(device)
    if not distributed:
        return False, 0, 1, device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if dist.get_backend() == "nccl" and device.type != "cuda":
        raise ValueError(f"the NCCL backend trains on this rank's GPU, got device={device}")
    return True, *rank_and_world_size(), device


def _replicate(
    model: nn.Module, loss_fn: LossFn, device: torch.device, train_loader: Iterable
) -> DistributedDataParallel:
    """``model`` and ``loss_fn`` wrapped for data-parallel training on ``device``.

    DDP broadcasts rank 0's weights and buffers, so every replica starts alike. A training
    loader with a length must have the same on every rank: a rank that runs out of batches
    first would leave the others waiting forever in the gradient all-reduce.
    """
    if hasattr(train_loader, "__len__"):
        lengths = all_gather_object(len(train_loader))
        if len(set(lengths)) > 1:
            raise ValueError(
                f"the ranks' training loaders have {lengths} batches; DDP needs the same "
                "number on every rank (use make_distributed_loader(..., even=True))"
            )
    return DistributedDataParallel(
        _ModelWithLoss(model, loss_fn),
        device_ids=[device.index] if device.type == "cuda" else None,
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
        scheduler: ``"plateau"`` multiplies the learning rate by ``PLATEAU_FACTOR`` after
            ``PLATEAU_PATIENCE`` epochs without a lower validation loss; ``None`` keeps it.
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
            ``seed + VALID_SEED_OFFSET`` before each pass.
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
            the compiled one shares.

    In every process, a training loader whose sampler has ``set_epoch`` (``DistributedSampler``)
    is told the epoch before it is iterated, so it reshuffles every epoch and on resume.

    Returns:
        A :class:`FitResult`; ``model`` holds the best validation epoch's weights (on every
        rank, the plain model).
    """
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
    distributed, rank, world_size, device = _resolve_distributed(distributed, device)
    if device.type == "cpu":
        keep_freed_memory()
    amp = device.type == "cuda" if amp is None else bool(amp)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    model.to(device)
    replicas = _replicate(model, loss_fn, device, train_loader) if distributed else None
    runner = maybe_compile(model, compile)

    params = model.parameters() if param_groups is None else param_groups
    optimizer = make_optimizer(params, lr, weight_decay)
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
        )
        if scheduler == "plateau"
        else None
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    loss_generator = torch.Generator().manual_seed(seed)
    streams = {"shuffle": generator, "loss": loss_generator}
    settings = {
        "lr": lr,
        "weight_decay": weight_decay,
        "grad_clip": grad_clip,
        "patience": patience,
        "scheduler": scheduler,
        "amp": amp,
        "seed": seed,
        "world_size": world_size,
        "train_data": data_fingerprint(train_loader),
        "valid_data": data_fingerprint(valid_loader),
    }

    history: list[dict] = []
    best_state = _state_copy(model)
    best_loss, best_epoch, bad_epochs, stopped_early, start = math.inf, 0, 0, False, 1
    path = None if checkpoint_path is None else Path(checkpoint_path)
    resuming = path is not None and resume and path.exists()
    if distributed:
        seen = all_gather_object(resuming)
        if any(seen) and not all(seen):
            raise RuntimeError(
                f"only the ranks {[r for r, f in enumerate(seen) if f]} see the checkpoint "
                f"{path}; put it on a file system every rank shares"
            )
    if resuming:
        state = read_torch_state(path, "a checkpoint written by fit()", map_location=device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a checkpoint written by cormult_lib's fit()")
        # Checkpoints from before data-parallel training came from single processes.
        _check_settings({"world_size": 1, **state["settings"]}, settings, path)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint {path} holds weights of a different model; delete it or call "
                "fit(..., resume=False)"
            ) from err
        optimizer.load_state_dict(state["optimizer"])
        if plateau is not None:
            plateau.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        # A data-parallel checkpoint holds every rank's streams; a single process's only "rng".
        restore_rng_states(state.get("rng_per_rank", [state["rng"]])[rank], device, streams)
        history = list(state["history"])
        best_state, best_loss = state["best_state"], state["best_loss"]
        best_epoch, bad_epochs = state["best_epoch"], state["bad_epochs"]
        stopped_early = state["stopped_early"]
        start = state["epoch"] + 1

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp else nullcontext()

    def run_epoch(loader: Iterable, train: bool, epoch: int, stream: torch.Generator) -> dict:
        model.train(train)
        totals: dict[str, float] = {}
        count = 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch} {'train' if train else 'valid'}",
            leave=False,
            disable=not show_progress,
        )
        for batch in bar:
            batch = move_to_device(batch, device)
            n = batch_size_of(batch) or 1
            with torch.set_grad_enabled(train), autocast():
                if train and replicas is not None:
                    loss, extras = replicas(batch, stream)  # gradients averaged over ranks
                else:
                    loss, extras = loss_fn(runner, batch, stream)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"epoch {epoch}: the {'training' if train else 'validation'} loss is "
                    f"{value} on a batch; check the inputs for NaN/inf and lower lr"
                )
            if train:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
            for key, item in {"loss": value, **extras}.items():
                totals[key] = totals.get(key, 0.0) + float(item) * n
            count += n
            bar.set_postfix(loss=f"{value:.4f}")
        if distributed:
            means, count = all_reduce_means(totals, count, device)  # over every rank's samples
        else:
            means = {key: total / count for key, total in totals.items()} if count else {}
        if count == 0:
            raise ValueError(f"the {'training' if train else 'validation'} loader is empty")
        return means

    show_progress = progress and rank == 0
    sampler = getattr(train_loader, "sampler", None)
    epoch_bar = tqdm(
        range(start, epochs + 1), desc="epochs", disable=not show_progress or stopped_early
    )
    for epoch in epoch_bar:
        if stopped_early:
            break
        began = time.perf_counter()
        current_lr = optimizer.param_groups[0]["lr"]
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if on_epoch_start is not None:
            on_epoch_start(model, epoch)
        train_means = run_epoch(train_loader, True, epoch, loss_generator)
        valid_stream = torch.Generator().manual_seed(seed + VALID_SEED_OFFSET)
        valid_means = run_epoch(valid_loader, False, epoch, valid_stream)
        row = {
            "epoch": epoch,
            "train_loss": train_means.pop("loss"),
            "valid_loss": valid_means.pop("loss"),
            "lr": current_lr,
        }
        row.update({f"train_{k}": v for k, v in train_means.items()})
        row.update({f"valid_{k}": v for k, v in valid_means.items()})
        if log_extra is not None:
            row.update({k: float(v) for k, v in log_extra(model, epoch).items()})
        row["seconds"] = time.perf_counter() - began
        if distributed:
            # Rank 0's row, bit for bit: every rank then takes the same decisions below.
            row = broadcast_object(row)
        valid_loss = row["valid_loss"]
        if valid_loss < best_loss:
            best_loss, best_epoch, bad_epochs = valid_loss, epoch, 0
            best_state = _state_copy(model)
        else:
            bad_epochs += 1
        if plateau is not None:
            plateau.step(valid_loss)
        stopped_early = patience is not None and bad_epochs >= patience and epoch < epochs
        history.append(row)
        epoch_bar.set_postfix(train=f"{row['train_loss']:.4f}", valid=f"{valid_loss:.4f}")
        if path is not None:
            rng = rng_states(device, streams)
            # Every rank's streams (they differ when, e.g., dropout is seeded per rank).
            per_rank = {"rng_per_rank": all_gather_object(rng)} if distributed else {}
            if rank == 0:
                save_atomic(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch,
                        "settings": settings,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": None if plateau is None else plateau.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": rng,
                        "history": history,
                        "best_state": best_state,
                        "best_loss": best_loss,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "stopped_early": stopped_early,
                        **per_rank,
                    },
                    path,
                )
    model.load_state_dict(best_state)
    columns = ["epoch", "train_loss", "valid_loss", "lr", "seconds"]
    frame = pd.DataFrame(history)
    frame = frame[columns + [c for c in frame.columns if c not in columns]]
    return FitResult(model=model, history=frame, best_epoch=best_epoch, stopped_early=stopped_early)
