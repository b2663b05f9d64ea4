"""The stated rule that turns a complete sweep into one choice of setting.

A sweep (chapter 06's shared space :math:`(t, o)`) gives every point a loss and a cost per
seed. Loss alone always favours the biggest setting that still learns, cost alone the
smallest, and point estimates of either favour whichever point was lucky. The rule reads both
the way the tutorial reads every comparison, with a paired 95% interval over seeds
(:func:`~cormult_lib.stats.seed_interval`):

1. **Not measurably worse.** Let ``best`` be the point of lowest mean loss. A point is
   *worse* when the interval of its loss minus ``best``'s lies entirely above
   ``tolerance * loss(best)``.
2. **Not measurably slower.** Among the points left, let ``fastest`` be the one of lowest mean
   time. A point is *slower* when the interval of its time minus ``fastest``'s lies entirely
   above ``tolerance * time(fastest)``.
3. **The lowest loss** among the points that are neither (ties: the faster one).

Step 2 treats time as step 1 treats loss. Taking the fastest point of step 1 instead lets
timing noise decide whenever the epoch times differ by less than their spread between runs:
chapter 06's reference results at commits 7cccccd and 60e328a, every loss equal to the digit,
chose ``o = 8`` and then ``o = 32`` that way (``tests/test_sweep_choice.py`` shows it on
generated times). With one seed there is no interval, and both steps read the point
estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cormult_lib.stats import Comparison, seed_interval
from cormult_lib.training.sweep import setting_labels

__all__ = ["SweepChoice", "choose_point"]


@dataclass(frozen=True)
class SweepChoice:
    """What :func:`choose_point` decided.

    Attributes:
        points: one row per point: the key columns, ``loss`` and ``loss_sd``, ``seconds`` and
            ``seconds_sd`` (mean and sd over seeds), ``n_seeds``, and the flags ``worse``,
            ``slower`` and ``chosen`` of the rule's three steps.
        choice, best, fastest: rows of ``points``: the chosen point, the point of lowest mean
            loss, and the fastest point that is not worse.
        comparisons: every interval the rule read: each point's loss against ``best``'s, then
            each remaining point's time against ``fastest``'s.
        keys: the columns that name a point.
        tolerance: the relative margin of both steps.
        margins: the margins in the metrics' own units, by metric (the loss column:
            ``tolerance * best loss``; the time column: ``tolerance * fastest time``).
    """

    points: pd.DataFrame
    choice: pd.Series
    best: pd.Series
    fastest: pd.Series
    comparisons: list[Comparison]
    keys: tuple[str, ...]
    tolerance: float
    margins: dict[str, float]

    def name(self, row: pd.Series) -> str:
        """A point's key as ``(value, value)``."""
        return _name(tuple(row[k] for k in self.keys))

    def sentences(self) -> list[str]:
        """The decision in words, every number read from :attr:`points`."""
        points, choice = self.points, self.choice
        seeds = int(points["n_seeds"].iloc[0])
        method = "paired t intervals" if seeds > 1 else "point estimates, one seed"
        fast = int((~points["worse"] & ~points["slower"]).sum())
        lines = [
            f"best loss {self.best['loss']:.4f} at {self.name(self.best)}; "
            f"{int((~points['worse']).sum())} of {len(points)} point(s) not measurably worse "
            f"by more than {self.tolerance:.0%} (margin {self.tolerance * self.best['loss']:.4f}; "
            f"{seeds} seeds, {method})",
            f"fastest of them {self.name(self.fastest)} at {self.fastest['seconds']:.3f} s; "
            f"{fast} point(s) not measurably slower by more than {self.tolerance:.0%} (margin "
            f"{self.tolerance * self.fastest['seconds']:.3f} s)",
            f"chosen {self.name(choice)}, the lowest loss of those: {choice['loss']:.4f}, "
            f"{choice['seconds']:.3f} s",
        ]
        if fast == len(points):
            lines.append(
                "no point is measurably worse or slower: at this budget and number of seeds "
                "neither the loss nor the time separates the points"
            )
        return lines

    def interval_lines(self) -> list[str]:
        """Each interval the rule read, with the rule's call on it: whether its lower end (the
        point estimate with one seed) lies beyond the step's margin. A comparison's own verdict
        uses no margin, so "b better" can sit beside "within the margin"."""
        lines = []
        for c in self.comparisons:
            margin = self.margins[c.metric]
            flag = "worse" if c.subset == "validation loss" else "slower"  # step 1 or step 2
            call = f"beyond the margin {margin:.4g}: {flag}" if _beyond(c, margin) else (
                f"within the margin {margin:.4g}: kept"
            )
            interval = f"[{c.ci_low:+.4g}, {c.ci_high:+.4g}]", "lower end"
            if np.isnan(c.ci_low):  # one seed: the rule reads the point estimate
                interval = "(no interval)", "point estimate"
            lines.append(
                f"{c.subset}: {c.a} - {c.b} = {c.difference:+.4g} {interval[0]} "
                f"({c.n_seeds} seed{'s' * (c.n_seeds != 1)}); {interval[1]} {call}"
            )
        return lines


def _name(key: tuple) -> str:
    """A point's key, a tuple of values, as ``(value, value)``."""
    return "(" + ", ".join(str(value) for value in key) + ")"


def _beyond(result: Comparison, margin: float) -> bool:
    """Whether ``a - b`` is measurably above ``margin``: the whole interval, or the point
    estimate when there is no interval (one seed)."""
    low = result.ci_low if np.isfinite(result.ci_low) else result.difference
    return bool(low > margin)


def _points(table: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct points of ``table`` (its ``keys`` columns), and each row's point number.

    Points are told apart by their exact values (:func:`~cormult_lib.training.sweep.setting_labels`:
    ``None`` is not NaN, ``True`` is not ``1``) and keep them; they are ordered
    by their keys, the first key slowest, a missing value (``None``, NaN) first.
    """
    codes, _ = pd.factorize(setting_labels(table, keys))  # numbered by first appearance
    _, first_rows = np.unique(codes, return_index=True)
    points = table.iloc[first_rows][keys].reset_index(drop=True)
    order = np.lexsort([pd.factorize(points[key], sort=True)[0] for key in reversed(keys)])
    number = np.empty(len(order), dtype=int)
    number[order] = np.arange(len(order))
    return points.iloc[order].reset_index(drop=True), number[codes]


def _per_seed(
    table: pd.DataFrame, keys: list[str], point: np.ndarray, names: list[str], column: str
) -> pd.DataFrame:
    """``column`` as a ``point x seed`` matrix, its rows the point numbers ``point`` gives each
    row of ``table`` (named ``names``); every point must have every seed once, with a finite
    value."""
    values = table[column].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        bad = table.loc[~np.isfinite(values), keys + ["seed"]].to_dict(orient="records")
        raise ValueError(f"{column}: non-finite values (a diverged run?) at {bad[:5]}")
    frame = pd.DataFrame({"point": point, "seed": table["seed"].to_numpy(), column: values})
    repeated = frame.loc[frame.duplicated(["point", "seed"]), ["point", "seed"]].drop_duplicates()
    if len(repeated):
        pairs = [f"{names[i]} seed {seed}" for i, seed in repeated.itertuples(index=False)]
        raise ValueError(
            f"table: {len(pairs)} (point, seed) pair(s) appear twice or more: {pairs[:5]}"
        )
    matrix = frame.pivot(index="point", columns="seed", values=column)
    missing = matrix.isna().any(axis=1)
    if missing.any():
        lacking = [names[i] for i in matrix.index[missing]]
        raise ValueError(
            f"table: point(s) {lacking} lack some of the seeds {list(matrix.columns)}; the rule "
            "needs a complete grid"
        )
    return matrix


def choose_point(
    table: pd.DataFrame,
    keys: Sequence[str],
    *,
    loss: str,
    seconds: str,
    tolerance: float,
    n_loss: int = 0,
    n_seconds: int = 0,
) -> SweepChoice:
    """Choose one point of a complete sweep by the module's rule.

    Args:
        table: one row per trial: the ``keys`` columns (the point), ``seed``, ``loss`` and
            ``seconds``; every point with the same seeds.
        keys: the columns that name a point, e.g. ``["shared_time", "shared_dim"]``.
        loss: the column to minimise (lower is better).
        seconds: the cost column (lower is better).
        tolerance: relative margin of both steps (``>= 0``); 0: any measurable difference.
        n_loss, n_seconds: samples behind each loss (validation) and each time (an epoch's
            training samples), reported in the comparisons.

    Raises:
        ValueError naming the parameter: a negative ``tolerance``, missing columns, a point
        without every seed, or a (point, seed) pair twice.
    """
    keys = list(keys)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not keys:
        raise ValueError("keys must name at least one column")
    missing = [c for c in (*keys, "seed", loss, seconds) if c not in table.columns]
    if missing:
        raise ValueError(f"table: columns {missing} missing from {list(table.columns)}")
    if table.empty:
        raise ValueError("table has no trials: nothing to choose from")
    points, point = _points(table, keys)
    names = [_name(key) for key in points.itertuples(index=False, name=None)]
    losses = _per_seed(table, keys, point, names, loss)
    times = _per_seed(table, keys, point, names, seconds)
    points["loss"], points["loss_sd"] = losses.mean(axis=1).values, losses.std(axis=1).values
    points["seconds"], points["seconds_sd"] = times.mean(axis=1).values, times.std(axis=1).values
    points["n_seeds"] = losses.shape[1]
    losses, times = losses.to_numpy(), times.to_numpy()
    comparisons: list[Comparison] = []

    def step(values: np.ndarray, base: int, rows, metric: str, subset: str, n: int, margin):
        """One flag per point: measurably above point ``base`` by more than ``margin`` (only
        ``rows`` are compared; the others are ``False``)."""
        flags = {}
        for i in rows:
            if i != base:
                result = seed_interval(
                    values[i], values[base], metric, names=(names[i], names[base]),
                    subset=subset, n=n, lower_is_better=True,
                )
                comparisons.append(result)
                flags[i] = _beyond(result, margin)
        return [flags.get(i, False) for i in points.index]

    best = int(points["loss"].idxmin())
    margins = {loss: float(tolerance * points.loc[best, "loss"])}
    points["worse"] = step(
        losses, best, points.index, loss, "validation loss", n_loss, margins[loss]
    )
    kept = points.index[~points["worse"]]
    fastest = int(points.loc[kept, "seconds"].idxmin())
    margins[seconds] = float(tolerance * points.loc[fastest, "seconds"])
    points["slower"] = step(
        times, fastest, kept, seconds, "epoch time", n_seconds, margins[seconds]
    )
    candidates = points[~points["worse"] & ~points["slower"]]
    chosen = int(candidates.sort_values(["loss", "seconds"], kind="stable").index[0])
    points["chosen"] = points.index == chosen
    return SweepChoice(
        points=points,
        choice=points.loc[chosen],
        best=points.loc[best],
        fastest=points.loc[fastest],
        comparisons=comparisons,
        keys=tuple(keys),
        tolerance=tolerance,
        margins=margins,
    )
