"""Wall-clock comparisons that are fair on a busy machine and correct on CUDA."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

import torch

from cormult_lib.nn.packing import padded_layout

T = TypeVar("T")


def seconds_per_call(
    functions: dict[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    repeats: int = 5,
    autograd: bool = False,
) -> dict[str, list[float]]:
    """Wall time of each ``fn(x)`` in each of ``repeats`` runs, after one warm-up run each.

    The functions take turns within every repeat, so a busy machine slows them alike and the
    ``i``-th times of two functions form a pair; on CUDA the device is synchronised around each
    call so that the time covers the kernels. The calls run under ``torch.inference_mode``
    unless ``autograd=True`` (to time training steps).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")

    def sync() -> None:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    times: dict[str, list[float]] = {name: [] for name in functions}
    with torch.inference_mode(not autograd):
        for fn in functions.values():
            fn(x)
        sync()
        for _ in range(repeats):
            for name, fn in functions.items():
                start = time.perf_counter()
                fn(x)
                sync()
                times[name].append(time.perf_counter() - start)
    return times


def median_seconds(
    functions: dict[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    repeats: int = 5,
    autograd: bool = False,
) -> dict[str, float]:
    """The median of each function's :func:`seconds_per_call` (same arguments)."""
    times = seconds_per_call(functions, x, repeats, autograd)
    return {name: statistics.median(values) for name, values in times.items()}


def packed_and_padded(run: Callable[[], T], rounds: int) -> dict[str, list[T]]:
    """``run()``'s results with packing (:mod:`cormult_lib.nn.packing`, the default) and on the
    padded layout, ``rounds`` of each, taking turns as :func:`median_seconds`'s functions do:
    ``{"packed": [...], "padded": [...]}``."""
    results: dict[str, list[T]] = {"packed": [], "padded": []}
    for _ in range(rounds):
        for layout, values in results.items():
            with padded_layout() if layout == "padded" else nullcontext():
                values.append(run())
    return results
