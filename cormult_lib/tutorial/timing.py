"""Wall-clock comparisons that are fair on a busy machine and correct on CUDA."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(
    functions: dict[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    repeats: int = 5,
    autograd: bool = False,
) -> dict[str, float]:
    """Median wall time of each ``fn(x)`` over ``repeats`` runs after one warm-up run each.

    The functions take turns within every repeat, so a busy machine slows them alike; on CUDA
    the device is synchronised around each call so that the time covers the kernels. The calls
    run under ``torch.inference_mode`` unless ``autograd=True`` (to time training steps).
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
    return {name: statistics.median(values) for name, values in times.items()}
