"""How :func:`~cormult_lib.training.loop.fit` sets up data-parallel training.

:func:`resolve_distributed` decides from ``fit``'s arguments and the running process group
whether this run is data-parallel, and on which device this rank trains; :func:`replicate`
wraps the model and its loss in ``DistributedDataParallel``. Setting up the process group, the
sharded loaders and the collectives are in :mod:`cormult_lib.training.distributed`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cormult_lib.training.distributed import all_gather_object, rank_and_world_size
from cormult_lib.training.epoch import LossFn


class ModelWithLoss(nn.Module):
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


def resolve_distributed(
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


def replicate(
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
        ModelWithLoss(model, loss_fn),
        device_ids=[device.index] if device.type == "cuda" else None,
    )
