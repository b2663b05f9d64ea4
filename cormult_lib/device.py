"""Choosing where tensors live: the CPU on a laptop, CUDA when a GPU is present."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Mapping

import torch


def resolve_device(spec: str | torch.device = "auto", verbose: bool = True) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a ``torch.device``.

    ``"auto"`` picks the first CUDA device when one is present and the CPU otherwise. Asking
    for CUDA on a machine without it is an error rather than a silent fall-back, so a
    researcher never benchmarks the CPU by accident.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif text == "cpu":
        device = torch.device("cpu")
    elif text.startswith("cuda"):
        try:
            device = torch.device(text)
        except RuntimeError as err:
            raise ValueError(f"device={spec!r} is not a valid CUDA device name") from err
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={spec!r} was requested but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}). "
                "Use device='auto' or device='cpu'."
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device={spec!r} was requested but only {torch.cuda.device_count()} "
                "CUDA device(s) are visible."
            )
    else:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    if verbose:
        print(f"Using device: {describe_device(device)}")
    return device


def describe_device(device: torch.device) -> str:
    """A one-line human description, e.g. ``cuda:0 (NVIDIA H100, 79.1 GiB)``."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return f"{device} ({torch.get_num_threads()} threads)"


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_LIMIT = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Let the CPU reuse freed tensor memory instead of returning it to the system (glibc).

    By default glibc serves every allocation above 128 KiB to 32 MiB with a fresh ``mmap`` and
    gives it back on ``free``. A training step of these models allocates and frees tensors of
    several MiB (the ``time x time`` attention weights of every head), so every step pays the
    kernel for zeroing and mapping the same pages again: about a fifth of a quick MulT step on
    this project's 2-core CPU (``benchmarks/training_benchmark.py``). Raising glibc's mmap and
    trim thresholds to 1 GiB (``mallopt``) keeps such blocks in the heap for reuse; the price
    is that the process keeps its peak memory. The same effect as the jemalloc / tcmalloc
    preloading of PyTorch's CPU performance guide, without a preload.

    Called by :func:`~cormult_lib.training.loop.fit` when it trains on the CPU; safe to call
    again. Returns ``True`` when the setting took effect (``False`` off glibc, e.g. macOS).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _HEAP_LIMIT) and mallopt(_M_TRIM_THRESHOLD, _HEAP_LIMIT))


def move_to_device(batch: object, device: torch.device) -> object:
    """Move every tensor in a (nested) dict/list/tuple to ``device``; leave the rest alone.

    Transfers are ``non_blocking`` on CUDA, which overlaps them with computation when the
    loader pins memory (as :func:`~cormult_lib.data.dataset.make_loader` does on CUDA).
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch
