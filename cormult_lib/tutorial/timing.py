"""Wall-clock comparisons that are fair on a busy machine and correct on CUDA."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from scipy import stats as scipy_stats

from cormult_lib.nn.packing import padded_layout
from cormult_lib.stats import CONFIDENCE, MIN_BOOTSTRAP_SAMPLES

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


@dataclass(frozen=True)
class TimeRatio:
    """How many times longer one function took than another: ``ratio`` of their median times,
    with a 95% interval over ``n`` paired rounds (NaN below ``MIN_BOOTSTRAP_SAMPLES`` rounds)."""

    ratio: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        """``"1.18 [1.15, 1.22] (n=20 rounds)"``, or ``"1.18 (no interval, n=5 rounds)"``."""
        if np.isfinite(self.low) and np.isfinite(self.high):
            return f"{self.ratio:.2f} [{self.low:.2f}, {self.high:.2f}] (n={self.n} rounds)"
        return f"{self.ratio:.2f} (no interval, n={self.n} rounds)"

    def against(self, target: float, at_most: bool) -> str:
        """The verdict on ``ratio <= target`` (``at_most``) or ``ratio >= target``: "met" or
        "missed" when the interval lies on one side of ``target``, else "undecided"."""
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return "undecided (no interval)"
        below, above = self.high <= target, self.low >= target
        if below or above:
            return "met" if (below if at_most else above) else "missed"
        return "undecided (the interval holds the target)"


def median_ratio(
    numerator: Sequence[float], denominator: Sequence[float], seed: int = 0
) -> TimeRatio:
    """``median(numerator) / median(denominator)`` of paired times (the ``i``-th of each from
    the same round of :func:`seconds_per_call`), with SciPy's paired percentile bootstrap over
    the rounds."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need two equally long lists of times, got {a.shape} and {b.shape}")
    ratio = float(np.median(a) / np.median(b))
    if len(a) < MIN_BOOTSTRAP_SAMPLES:
        return TimeRatio(ratio, float("nan"), float("nan"), len(a))
    result = scipy_stats.bootstrap(
        (a, b),
        lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis),
        paired=True,
        vectorized=True,
        confidence_level=CONFIDENCE,
        method="percentile",
        n_resamples=2000,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return TimeRatio(ratio, float(interval.low), float(interval.high), len(a))


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
