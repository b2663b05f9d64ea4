"""Checks of a caller's parameters, with messages that name the parameter and what it expects.

The notebooks check their papermill parameters with these, and so do the library functions
that take the same settings (the sweeps of chapters 05 and 06), so a wrong value reads the same
wherever it is given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise ``ValueError`` naming ``name``.

    >>> check_choice("pooling", "mean", ("mean", "max"))
    'mean'
    """
    allowed = tuple(allowed)
    # True == 1 in Python: a bool is one of the allowed values only when a bool is listed.
    same_kind = not isinstance(value, bool) or any(isinstance(a, bool) for a in allowed)
    if not same_kind or value not in allowed:
        expected = ", ".join(repr(option) for option in allowed)
        raise ValueError(f"{name}={value!r} is not allowed: expected one of {expected}")
    return value


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) and ``>= minimum``.

    >>> check_int("epochs", 3, minimum=1)
    3
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}={value!r} is not valid: expected an integer")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value!r} is not valid: expected an integer >= {minimum}")
    return int(value)


def check_float(
    name: str, value: Any, minimum: float | None = None, maximum: float | None = None
) -> float:
    """Return ``value`` as a ``float`` if it is a finite number (not a bool, NaN or infinite)
    within bounds.

    Both bounds are inclusive. Integers are accepted, so ``-p lr 1`` works as well as ``1.0``.

    >>> check_float("dropout", 0.1, minimum=0.0, maximum=1.0)
    0.1
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}={value!r} is not valid: expected a number")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ValueError(f"{name}={value!r} is not valid: expected a finite number")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else minimum
        high = "inf" if maximum is None else maximum
        raise ValueError(f"{name}={value!r} is not valid: expected a number in [{low}, {high}]")
    return float(value)
