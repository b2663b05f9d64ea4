"""The resumable checkpoint of :func:`~cormult_lib.training.loop.fit`.

A checkpoint is what a killed run needs to continue *exactly* where it stopped, written
atomically after every epoch: the model, optimiser, learning-rate scheduler and gradient-scaler
states, the history so far, the early-stopping state (best weights, best loss, ...), and every
random stream the run touches (:func:`rng_states`): torch's global CPU (and CUDA) generator for
dropout, the named generators of the run (the loader's shuffling one, the loss's), and Python's
and NumPy's global generators. It also holds the training settings, including a fingerprint of
the data (:func:`data_fingerprint`), so that resuming refuses a checkpoint of another run
instead of mixing two, and a format version.

In a data-parallel run every rank calls :meth:`Checkpoint.found` and :meth:`Checkpoint.save`
(both gather from every rank); only rank 0 writes the file, which then holds every rank's
random streams (``rng_per_rank``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cormult_lib.files import read_torch_state, write_atomically
from cormult_lib.training.distributed import all_gather_object

CHECKPOINT_FORMAT = 1


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
    """Refuse to resume from ``path`` when a setting of ``current`` differs from ``saved``."""
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in changed.items())
        raise ValueError(
            f"checkpoint {path} was written with other training settings ({details}); "
            "resuming would mix two runs. Delete it or call fit(..., resume=False)."
        )


class Checkpoint:
    """The checkpoint file of one run, and the objects whose states it saves and restores.

    Args:
        path: the file; ``None`` for a run without checkpoints (nothing is found or saved).
        settings: the training settings the checkpoint must match to be resumed.
        model, optimizer, scaler: saved and restored with ``state_dict`` /
            ``load_state_dict``.
        scheduler: the learning-rate scheduler, or ``None`` (saved as ``None``).
        generators: the run's named random streams (``None`` values are skipped), saved with
            the global ones.
        device: where the run trains (its CUDA streams are saved too).
        rank, distributed: this process's rank; whether every rank of a process group runs
            this checkpoint's calls together.
    """

    def __init__(
        self,
        path: str | Path | None,
        settings: Mapping,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None,
        scaler: torch.amp.GradScaler,
        generators: Mapping[str, torch.Generator | None],
        device: torch.device,
        rank: int = 0,
        distributed: bool = False,
    ):
        self.path = None if path is None else Path(path)
        self.settings = settings
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.generators = generators
        self.device, self.rank, self.distributed = device, rank, distributed

    def found(self, resume: bool) -> bool:
        """Whether to resume: ``resume`` and the file exists (on every rank, or on none)."""
        resuming = self.path is not None and resume and self.path.exists()
        if self.distributed:
            seen = all_gather_object(resuming)
            if any(seen) and not all(seen):
                raise RuntimeError(
                    f"only the ranks {[r for r, f in enumerate(seen) if f]} see the checkpoint "
                    f"{self.path}; put it on a file system every rank shares"
                )
        return resuming

    def restore(self) -> dict:
        """Load the file into the model, optimiser, scheduler, scaler and random streams.

        Returns:
            The whole checkpoint, for what the caller keeps itself (``epoch``, ``history``,
            the early-stopping state).

        Raises:
            ValueError: the file is not a checkpoint of ``fit``, or one of another model or
                other settings.
        """
        path = self.path
        # Read onto the CPU: the random streams' states must be CPU tensors (torch.set_rng_state
        # refuses CUDA ones); load_state_dict moves the weights and the optimiser's state to
        # the device of the parameters.
        state = read_torch_state(path, "a checkpoint written by fit()", map_location="cpu")
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a checkpoint written by cormult_lib's fit()")
        # Checkpoints from before data-parallel training came from single processes.
        _check_settings({"world_size": 1, **state["settings"]}, self.settings, path)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint {path} holds weights of a different model; delete it or call "
                "fit(..., resume=False)"
            ) from err
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        # A data-parallel checkpoint holds every rank's streams; a single process's only "rng".
        rng = state.get("rng_per_rank", [state["rng"]])[self.rank]
        restore_rng_states(rng, self.device, self.generators)
        return state

    def save(self, epoch: int, history: list[dict], early_stopping: Mapping) -> None:
        """Write the complete state after ``epoch`` (on rank 0; every rank must call this).

        Args:
            history: the history rows of the epochs so far.
            early_stopping: the early-stopping state, stored as top-level entries
                (:meth:`~cormult_lib.training.early_stopping.EarlyStopping.state_dict`).
        """
        if self.path is None:
            return
        rng = rng_states(self.device, self.generators)
        # Every rank's streams (they differ when, e.g., dropout is seeded per rank).
        per_rank = {"rng_per_rank": all_gather_object(rng)} if self.distributed else {}
        if self.rank != 0:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "settings": self.settings,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "history": history,
            **early_stopping,
            **per_rank,
        }
        save_atomic(state, self.path)
