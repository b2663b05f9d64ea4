"""One pass over a loader, training or validating: the inner loop of :func:`~.loop.fit`.

A model plugs in through its loss: ``loss_fn(model, batch, generator) -> (loss, extras)``
(:data:`LossFn`), where ``loss`` is a scalar tensor, ``extras`` a dict of floats to log and
``generator`` a ``torch.Generator`` for whatever randomness the loss needs. :class:`EpochRunner`
moves every batch to the device, runs the loss (under autocast; in training through the
``DistributedDataParallel`` replicas when there are any), refuses a loss that is not finite,
takes the optimiser step in training, and returns the sample-weighted means of the loss and the
extras (over every rank's samples in a data-parallel run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import nn

from cormult_lib.device import move_to_device
from cormult_lib.progress import tqdm
from cormult_lib.training.distributed import all_reduce_means, on_every_rank
from cormult_lib.training.precision import MixedPrecision

LossFn = Callable[[nn.Module, dict, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


def _refuse(value: float | None, train: bool, epoch: int) -> NoReturn:
    """Stop the run on a non-finite loss: ``value`` on this rank's batch, ``None`` when it was
    another rank's."""
    loss = f"{value}" if value is not None else "not finite"
    where = "a batch" if value is not None else "another rank's batch"
    raise FloatingPointError(
        f"epoch {epoch}: the {'training' if train else 'validation'} loss is {loss} on {where}; "
        "check the inputs for NaN/inf and lower lr"
    )


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


@dataclass(frozen=True, kw_only=True)
class EpochRunner:
    """Runs epochs of one training run: ``runner(loader, train, epoch, generator) -> means``.

    Attributes:
        model: the plain model (its mode is set, its gradients clipped).
        loss_fn: the loss, see :data:`LossFn`.
        runner: the module ``loss_fn`` gets: ``model`` or its compiled version.
        replicas: ``model`` and ``loss_fn`` inside ``DistributedDataParallel``, which training
            runs instead so that the gradients are averaged over ranks; ``None``: one process.
        optimizer, precision, grad_clip: the optimiser step (:meth:`MixedPrecision.step`).
        device: where batches go.
        progress: show a ``tqdm`` bar over the batches.
    """

    model: nn.Module
    loss_fn: LossFn
    runner: nn.Module
    replicas: nn.Module | None
    optimizer: torch.optim.Optimizer
    precision: MixedPrecision
    grad_clip: float | None
    device: torch.device
    progress: bool

    def __call__(
        self, loader: Iterable, train: bool, epoch: int, generator: torch.Generator
    ) -> dict[str, float]:
        """One pass over ``loader`` (with optimiser steps when ``train``).

        Returns:
            The sample-weighted means of the loss (key ``"loss"``) and of every extra.
        """
        split = "train" if train else "valid"
        distributed = self.replicas is not None
        self.model.train(train)
        totals: dict[str, float] = {}
        count = 0
        bad = None  # the first non-finite loss
        bar = tqdm(loader, desc=f"epoch {epoch} {split}", leave=False, disable=not self.progress)
        for batch in bar:
            batch = move_to_device(batch, self.device)
            n = batch_size_of(batch) or 1
            with torch.set_grad_enabled(train), self.precision.autocast():
                if train and distributed:
                    loss, extras = self.replicas(batch, generator)  # gradients averaged over ranks
                else:
                    loss, extras = self.loss_fn(self.runner, batch, generator)
            value = float(loss.detach())
            if not math.isfinite(value) and bad is None:
                bad = value
            if not distributed and bad is not None:
                _refuse(bad, train, epoch)
            # Data-parallel training: the ranks have the same number of batches and agree
            # before every step, so that all stop together (one rank stopping alone would leave
            # the others waiting in the gradients' all-reduce for ever).
            if train and distributed and not on_every_rank(bad is None, self.device):
                _refuse(bad, train, epoch)
            if bad is not None:
                continue  # validation shards may differ in length: the ranks agree at the end
            if train:
                self.precision.step(loss, self.optimizer, self.model, self.grad_clip)
            for key, item in {"loss": value, **extras}.items():
                totals[key] = totals.get(key, 0.0) + float(item) * n
            count += n
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if distributed:
            if not train and not on_every_rank(bad is None, self.device):
                _refuse(bad, train, epoch)
            means, count = all_reduce_means(totals, count, self.device)  # over every rank's samples
        else:
            means = {key: total / count for key, total in totals.items()} if count else {}
        if count == 0:
            raise ValueError(f"the {'training' if train else 'validation'} loader is empty")
        return means
