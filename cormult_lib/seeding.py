"""One place that makes a run reproducible."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python's ``random``, NumPy and torch (CPU and every CUDA device).

    With ``deterministic=True`` torch is asked for deterministic kernels where that is cheap
    (``warn_only`` so that an operation without a deterministic version warns instead of
    failing) and cuDNN autotuning is switched off. The same seed on the CPU then gives the
    same numbers run after run. Not switched on with them: torch's
    ``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid that writes NaN
    into every new tensor so that a kernel reading memory it never wrote shows up. A MulT
    training step on the CPU reads no such memory (``tests/test_core.py`` runs it both ways
    and compares the bits; CUDA kernels are not checked), and the writes cost 4-7% of a
    training step on the CPU (``benchmarks/training_benchmark.py
    --fill-uninitialized-memory`` times both).

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream
    (data shuffling, negative sampling) without touching the global one.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global stream is the point
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # Required by cuBLAS for deterministic matrix products on CUDA >= 10.2.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for one random initialisation without touching the caller's RNG state (the
    CPU generator and every CUDA device's, which ``torch.manual_seed`` seeds too)."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        yield
