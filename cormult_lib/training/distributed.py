r"""Data-parallel training with ``torchrun``: process group, sharded loaders, metric averaging.

:func:`~cormult_lib.training.loop.fit` trains data-parallel on its own as soon as a process
group exists: it wraps the model in ``DistributedDataParallel``, averages the logged losses
across ranks, lets only rank 0 write checkpoints and show progress bars, and returns the plain
model with the best weights on every rank. A script only has to set the group up, give every
rank its shard of the data and tear the group down::

    info = init_distributed()  # NCCL on GPUs, gloo on the CPU; a no-op without torchrun
    train = make_distributed_loader(splits["train"], per_rank_batch, shuffle=True, seed=0,
                                    device=info.device)
    valid = make_distributed_loader(splits["valid"], per_rank_batch, shuffle=False,
                                    device=info.device, even=False)
    result = fit(model, train, valid, loss_fn, epochs=10, lr=1e-3, device=info.device,
                 progress=is_main_process())
    cleanup()

and is launched with one process per GPU (or, for gloo on the CPU, per core group)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 \
        -m cormult_lib.tutorial.ddp_demo --out runs/ddp

(``torchrun`` is the same launcher.) Each rank's batch is the global batch divided by the
number of ranks: DDP averages the ranks' gradients, so one step of ``W`` ranks on ``B / W``
samples each equals one step on the ``B`` samples together (up to float summation order) for a
loss that draws no random numbers; one that does (negative sampling) draws them from a stream
of each rank's own (``fit``'s ``seed``), so the step is an equally random one, not the same.
:mod:`cormult_lib.tutorial.ddp_demo` is a complete, runnable example.

Shutting down: a CPU (gloo) run can abort at exit ("terminate called ...", SIGABRT) after its
work is done, when background C++ threads (gloo's workers, the autograd engine's) are still
alive while the interpreter finalises and try to take the GIL it is tearing down (a race,
pytorch/pytorch#190489). Two precautions: :func:`cleanup` meets every rank at a barrier and
then destroys the group while the interpreter is fully alive, so no rank tears its connections
down while another is still in a collective with it; and a script that has written everything
leaves with ``os._exit(0)`` after flushing its output (see
:mod:`cormult_lib.tutorial.ddp_demo`), which skips interpreter finalisation altogether.
Neither is a fix for a failure reproduced here (dozens of 2-process runs on this machine ended
cleanly with and without them); they close the window.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from cormult_lib.data.dataset import (
    MultimodalDataset,
    MultimodalSplit,
    batch_loader,
    collate_multimodal,
)

# The environment variables torchrun sets for every worker process.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: the global index of this process, ``0 .. world_size - 1``; rank 0 is the main one.
        world_size: the number of processes (1 when not launched by ``torchrun``).
        local_rank: the index of this process on its machine; it picks the GPU.
        device: where this process trains: ``cuda:<local_rank>`` with NCCL, else the CPU (a
            single process without ``torchrun`` gets ``cuda`` when available).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group ``torchrun`` prepared, or describe a plain single process.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and, through ``env://``,
    ``MASTER_ADDR`` / ``MASTER_PORT``). Without them, nothing is initialised and the single
    process gets rank 0 of 1 on ``cuda`` when available, else the CPU. Calling it again once
    the group exists returns the same description.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; ``None`` picks NCCL when CUDA is available and gloo
            otherwise. With NCCL each process trains on ``cuda:<LOCAL_RANK>``, with gloo on the
            CPU.

    Raises:
        RuntimeError: only some of the torchrun variables are set, ``torch.distributed`` is not
            built into this torch, or there are fewer GPUs than processes on this machine.
    """
    present = [name for name in TORCHRUN_VARIABLES if name in os.environ]
    if not present:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    if len(present) != len(TORCHRUN_VARIABLES):
        missing = sorted(set(TORCHRUN_VARIABLES) - set(present))
        raise RuntimeError(
            f"found {present} but not {missing} in the environment; launch with torchrun "
            "(python -m torch.distributed.run), which sets all of them"
        )
    if not dist.is_available():
        raise RuntimeError(
            f"launched by torchrun, but this torch {torch.__version__} was built without "
            "torch.distributed"
        )
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} needs GPU {local_rank}, but only "
                f"{torch.cuda.device_count()} are visible; start at most that many processes "
                "per machine (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        # device_id binds NCCL to this rank's GPU at once (collectives and barriers use it).
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the running process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """``True`` on rank 0 and in a single process: the one that writes files and prints."""
    return rank_and_world_size()[0] == 0


def cleanup() -> None:
    """Meet every rank at a barrier, then destroy the process group (a no-op without one).

    The barrier keeps a fast rank from closing its connections while a slower one is still in
    a collective, which on gloo aborts the slower process at exit (see the module docstring).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def make_distributed_loader(
    split: MultimodalSplit,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    even: bool = True,
) -> DataLoader:
    """This rank's shard of ``split``, batched with the padding-aware collate.

    The rank and world size come from the running process group (rank 0 of 1 without one, so
    the same code also runs as a single process, then seeing every sample).

    Args:
        split: the data; every rank must hold the same split.
        batch_size: the per-rank batch: the global batch divided by the world size.
        shuffle: reshuffle every epoch. :func:`~cormult_lib.training.loop.fit` calls
            ``loader.sampler.set_epoch(epoch)`` before each epoch, so the permutation is a
            function of ``(seed, epoch)`` and a resumed run reshuffles exactly as an
            uninterrupted one.
        seed: the shuffling seed; must be the same on every rank.
        device: pins memory when it is a CUDA device.
        num_workers: ``DataLoader`` worker processes.
        even: ``True`` (training) uses ``DistributedSampler``: every rank gets
            ``ceil(n / world_size)`` samples (repeating up to ``world_size - 1`` of them), so
            every rank takes the same number of optimiser steps, which DDP requires. ``False``
            (validation) gives every sample to exactly one rank, so the ranks' shards may differ
            by one sample and the averaged validation loss is exact; ``fit`` runs no collective
            per validation batch, so uneven shards are fine there. Needs ``shuffle=False``.

    With the global batch ``B = batch_size * world_size`` and ``len(split)`` divisible by
    ``B``, the ranks' ``k``-th batches together hold exactly the samples of the ``k``-th batch
    of a single process with batch ``B`` and the same ``seed``: rank ``r`` takes every
    ``world_size``-th sample of the (permuted) order starting at ``r``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    rank, world_size = rank_and_world_size()
    if even:
        sampler = DistributedSampler(
            MultimodalDataset(split),
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
    elif shuffle:
        raise ValueError(
            "even=False is for validation and keeps the order; use even=True to shuffle"
        )
    else:
        sampler = range(rank, len(split), world_size)
    return batch_loader(
        MultimodalDataset(split), collate_multimodal, batch_size, False,
        sampler=sampler, device=device, num_workers=num_workers,
    )


def all_reduce_means(
    totals: Mapping[str, float], count: int, device: torch.device
) -> tuple[dict[str, float], int]:
    """Sample-weighted means over every rank's samples.

    Args:
        totals: ``{key: sum over this rank's samples}`` (e.g. a batch mean times the batch
            size, summed over batches). Ranks that saw samples must report the same keys; a
            rank with an empty shard (``count == 0``) may report none.
        count: the number of samples this rank saw.
        device: where the reduction runs: this rank's CUDA device for NCCL, the CPU for gloo.

    Returns:
        ``({key: global sum / global count}, global count)``, identical on every rank; the
        means are empty when no rank saw a sample. Without a process group, this rank's own
        means.

    Raises:
        ValueError: two ranks with samples reported different keys.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return ({key: total / count for key, total in totals.items()} if count else {}), count
    reports: list[tuple[list[str], int]] = [([], 0)] * dist.get_world_size()
    dist.all_gather_object(reports, (sorted(totals), count))
    key_sets = {tuple(keys) for keys, n in reports if n}
    if len(key_sets) > 1:
        raise ValueError(f"the ranks logged different quantities: {sorted(key_sets)}")
    keys = list(key_sets.pop()) if key_sets else []
    # float64: the sums of many samples would lose digits in float32.
    values = torch.tensor(
        [totals.get(key, 0.0) for key in keys] + [float(count)],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    sums, total_count = values[:-1].tolist(), int(values[-1].item())
    if total_count == 0:
        return {}, 0
    return {key: total / total_count for key, total in zip(keys, sums, strict=True)}, total_count


def on_every_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on every rank (a collective: every rank must call it); ``flag``
    without a group. Lets all ranks stop together when one of them must, e.g. on a non-finite
    loss, instead of leaving the others waiting in the next collective for ever.

    Args:
        device: where the reduction runs: this rank's CUDA device for NCCL, the CPU for gloo.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (any picklable object); ``obj`` without a group."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: object) -> list:
    """Every rank's ``obj``, in rank order (any picklable object); ``[obj]`` without a group."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
