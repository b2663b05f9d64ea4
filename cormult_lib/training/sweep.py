"""Parameter sweeps on Optuna: one trial per (settings, seed) pair, persisted as it finishes.

CorMulT sections 4.3 and 4.4 sweep the distance measure of the correlation evaluator and the
size ``(t, o)`` of its shared space, each over several seeds. This module runs such sweeps on
`Optuna <https://optuna.org>`_, an engine made for exactly this:

* :func:`grid_points` expands named axes into the list of settings (the cartesian product);
* :func:`run_sweep` runs ``run_point(settings, seed)`` as the trials of one Optuna study, its
  ``GridSampler`` over the axes *and* the seeds, so each (point, seed) is one trial;
* :func:`load_sweep` reads the finished trials back as a table, :func:`sweep_status` counts
  them, :func:`~cormult_lib.training.sweep_summary.summarize_sweep` gives the mean and standard
  deviation over seeds per setting.

Storage. ``storage`` is a path (an embedded SQLite file, the default: several processes on
one machine may share it), any SQLAlchemy URL (``postgresql+psycopg://user@host/db``, the
psycopg 3 driver the dev extra installs; ``mysql://...``: machines that reach the same database
server share the sweep) or an Optuna storage object
(for a shared file system without a database, ``optuna.storages.JournalStorage(
optuna.storages.journal.JournalFileBackend("sweep.log"))``). Every finished trial is committed
at once, so an interrupted sweep loses at most the trials that were running.

Workers. Any number of processes may call :func:`run_sweep` on the same storage and study at
any time; each pulls the next unclaimed (point, seed), so a slow or dead worker holds one
trial, never a share of the grid. A finished pair never runs again. A running trial sends a
heartbeat; a worker killed mid-trial (even with ``SIGKILL``) stops sending it, and after the
grace period the next worker that looks marks the trial failed and queues it again
(``RetryHeartbeatStaleTrialCallback``). A trial whose ``run_point`` raised is queued again by
the next call (the exception itself propagates). ``optuna-dashboard <storage URL>`` shows a
sweep live.

Example::

    from cormult_lib.training.sweep import grid_points, load_sweep, run_sweep
    from cormult_lib.training.sweep_summary import summarize_sweep

    def run_point(settings: dict, seed: int) -> dict[str, float]:
        ...  # pre-train with shared_time=settings["shared_time"], ...; return the metrics
        return {"roc_auc": auc}

    points = grid_points(SHARED_SPACE_GRIDS["quick"])
    run_sweep(points, SWEEP_SEEDS["quick"], run_point, "runs/sweeps.db", study="shared-space")
    # ... the same call in a second process or on a second machine adds a worker; then:
    table = load_sweep("runs/sweeps.db", "shared-space")
    summary = summarize_sweep(table, by=["shared_time", "shared_dim"], metrics=["roc_auc"])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from sklearn.model_selection import ParameterGrid

from cormult_lib.config import SWEEP_SEEDS
from cormult_lib.progress import tqdm
from cormult_lib.training.sweep_storage import HEARTBEAT_S, open_storage, stable_api

__all__ = [
    "SAMPLERS",
    "SweepStatus",
    "count_finished",
    "grid_points",
    "load_sweep",
    "run_sweep",
    "study_name",
    "sweep_seeds",
    "sweep_status",
]

#: Columns of a sweep table besides the settings and the metrics.
RESERVED_COLUMNS = ("seed", "seconds", "key", "trial")
#: The layout of a trial's records and what its numbers mean; part of every study name, so a
#: study written by an older layout is never mixed with this one (a new study starts beside it
#: in the same storage). The chapters' studies are also named by their configuration and a
#: hash of their data (``cormult_lib.tutorial.chapter_sweeps``), not by the library's code: a
#: change of the code that changes what a trial computes must raise this number.
SWEEP_FORMAT = 2
_SCALAR_TYPES = (str, int, float, bool, type(None))
#: ``"grid"``: every (point, seed) once (``GridSampler``); ``"tpe"``: ``n_trials`` trials
#: chosen by Optuna's TPE sampler over the same axes and seeds, minimising ``objective``.
SAMPLERS = ("grid", "tpe")
#: How often a worker with nothing to claim looks again for a stale or retried trial.
POLL_S = 1.0
#: A TPE worker stops after this many trials per wanted trial (duplicates are pruned).
TPE_ATTEMPTS = 20
# Optuna logs every trial at INFO and a failed one with its traceback at WARNING; the progress
# bar says the first, and the exception, which run_sweep lets through, the second.
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _check_scalar(value: object, where: str) -> None:
    """Raise unless ``value`` is a JSON scalar (str, int, float, bool or None)."""
    if type(value) not in _SCALAR_TYPES:
        raise TypeError(
            f"{where}: values must be str, int, float, bool or None, got {value!r} of type "
            f"{type(value).__name__} (convert numpy scalars with .item())"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: values must be finite, got {value!r}")
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        raise ValueError(f"{where}: str values must be one line, got {value!r}")


def _json(value: object) -> str:
    """Canonical JSON: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _pair_key(settings: Mapping[str, object], seed: int) -> str:
    """The stable identifier of a (settings, seed) pair."""
    return _json({"settings": dict(settings), "seed": seed})


def _check_name(name: object, what: str) -> str:
    """``name`` as a column name (a non-empty one-line str, not a reserved column)."""
    if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
        raise ValueError(f"{what} must be a non-empty one-line str, got {name!r}")
    if name in RESERVED_COLUMNS:
        raise ValueError(f"{what} {name!r} is reserved (results columns {RESERVED_COLUMNS})")
    return name


def grid_points(axes: Mapping[str, Sequence]) -> list[dict]:
    """The cartesian product of ``axes``, one dict of settings per point.

    Order: as nested loops over the axes in their insertion order, the first axis outermost
    (slowest) and the last innermost (fastest), every axis in the order of its values; each
    dict lists the axes in insertion order too. (:class:`sklearn.model_selection.ParameterGrid`,
    which makes the product, orders by sorted axis name instead; that order is undone here.)
    ``grid_points({"t": (2, 8), "o": (8, 32)})`` is ``[{"t": 2, "o": 8}, {"t": 2, "o": 32},
    {"t": 8, "o": 8}, {"t": 8, "o": 32}]``. No axes give one point, ``{}``.

    Args:
        axes: axis name -> its values, a non-empty sequence (not a str) of distinct values
            that are str (one line), int, float (finite), bool or None.

    Raises:
        TypeError / ValueError naming the axis for a value of another type, a repeated value, an
        empty axis, a bad or reserved axis name.
    """
    if not isinstance(axes, Mapping):
        raise TypeError(f"axes must be a mapping of axis name -> values, got {type(axes)}")
    checked: dict[str, tuple] = {}
    for name, values in axes.items():
        _check_name(name, "axis name")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise TypeError(
                f"axis {name!r}: values must be a sequence such as a tuple, got {values!r}"
            )
        if not values:
            raise ValueError(f"axis {name!r} has no values")
        seen: set[str] = set()
        for value in values:
            _check_scalar(value, f"axis {name!r}")
            if _json(value) in seen:
                raise ValueError(f"axis {name!r}: value {value!r} appears more than once")
            seen.add(_json(value))
        checked[name] = tuple(values)
    names = list(checked)
    grid = ParameterGrid({name: range(len(values)) for name, values in checked.items()})
    combos = sorted(tuple(point[name] for name in names) for point in grid)
    return [
        {name: checked[name][i] for name, i in zip(names, combo, strict=True)} for combo in combos
    ]


def study_name(stem: str, fixed: Mapping[str, object]) -> str:
    """The study of a sweep with these fixed settings: ``<stem>-<tag>``.

    A study only knows the swept axes and the seed of each trial, so a rerun with another
    value of a setting held fixed over the grid (epochs, the negative strategy, the data) would
    otherwise find the old trials and run nothing. ``tag`` is the first 10 hex digits of the
    SHA-1 of ``fixed`` (with :data:`SWEEP_FORMAT`) as sorted JSON, so each combination of fixed
    settings gets its own study and the same settings always find theirs again.

    Args:
        stem: a readable prefix, e.g. ``"06_shared_space_quick_synthetic"``.
        fixed: every setting that is the same for all points and changes the results; scalar
            values (str, int, float, bool, None) or lists/tuples of them.
    """
    try:
        text = json.dumps({"format": SWEEP_FORMAT, **fixed}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"study_name: fixed settings must be JSON scalars or lists of them ({error})"
        ) from None
    return f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def sweep_seeds(seeds: Sequence[int] | None, grid: str) -> list[int]:
    """The seeds of a sweep: ``SWEEP_SEEDS[grid]`` (:mod:`cormult_lib.config`) for ``None``, else
    ``seeds`` checked (a non-empty list of distinct non-negative ints), e.g. a notebook's ``seeds``
    parameter."""
    if seeds is None:
        if grid not in SWEEP_SEEDS:
            raise ValueError(
                f"grid={grid!r} has no default seeds; known grids: {tuple(SWEEP_SEEDS)}"
            )
        return list(SWEEP_SEEDS[grid])
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be None or a non-empty list of ints, got {seeds!r}")
    if any(type(s) is not int or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct non-negative ints, got {list(seeds)}")
    return list(seeds)


def _check_points(points: Sequence[Mapping[str, object]]) -> list[dict]:
    """``points`` as dicts, all with the same axis names, distinct, with scalar values."""
    if isinstance(points, Mapping) or not isinstance(points, Sequence):
        raise TypeError(f"points must be a sequence of settings dicts, got {type(points)}")
    checked: list[dict] = []
    seen: set[str] = set()
    for position, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise TypeError(f"points[{position}] must be a mapping, got {point!r}")
        for name, value in point.items():
            _check_name(name, f"points[{position}]: setting name")
            _check_scalar(value, f"points[{position}][{name!r}]")
        if checked and set(point) != set(checked[0]):
            raise ValueError(
                f"points[{position}] has settings {sorted(point)}, points[0] has "
                f"{sorted(checked[0])}: every point needs the same settings names"
            )
        if _json(dict(point)) in seen:
            raise ValueError(f"points[{position}] = {dict(point)!r} appears more than once")
        seen.add(_json(dict(point)))
        checked.append(dict(point))
    return checked


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
        raise TypeError(f"seeds must be a sequence of ints, got {seeds!r}")
    for seed in seeds:
        if type(seed) is not int:
            raise TypeError(f"seeds must be ints, got {seed!r} of type {type(seed).__name__}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {tuple(seeds)}")
    return list(seeds)


def settings_column(values: list) -> pd.Series:
    """A settings column: a typed dtype when every value has the same type, else object
    (so ``None`` stays ``None`` and ``1`` stays an int next to ``None`` or ``"1"``)."""
    if len({type(value) for value in values}) == 1 and values[0] is not None:
        return pd.Series(values)
    return pd.Series(values, dtype=object)


def setting_labels(table: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Each row's values of ``columns`` as JSON text: equal exactly when the values are
    (``None`` is not NaN, ``True`` is not ``1``, ``1`` is not ``1.0``; pandas' grouping would
    merge them or drop ``None``). Group or deduplicate settings on these labels."""
    return pd.Series(
        [
            json.dumps(list(values), default=repr)
            for values in zip(*(table[column].tolist() for column in columns), strict=True)
        ],
        dtype=object,
    )


@dataclass(frozen=True)
class SweepStatus:
    """How far a study is: ``complete`` of ``total`` (point, seed) pairs finished, trials
    ``running`` and ``waiting`` (queued again) now, ``failed`` trials so far."""

    total: int
    complete: int
    running: int
    waiting: int
    failed: int

    @property
    def finished(self) -> bool:
        return self.complete >= self.total


def _search_space(points: list[dict], seeds: list[int]) -> dict[str, list]:
    """The axes of ``points`` (values in order of appearance) and ``"seed"``; ``points`` must
    be their full cartesian product, as :func:`grid_points` makes it."""
    if not points:
        raise ValueError("points is empty: a sweep needs at least one point")
    if not seeds:
        raise ValueError("seeds is empty: every point runs with at least one seed")
    if "seed" in points[0]:
        raise ValueError("'seed' is a reserved name: the seeds are their own grid dimension")
    space: dict[str, list] = {name: [] for name in points[0]}
    for point in points:
        for name, value in point.items():
            if all(_json(value) != _json(v) for v in space[name]):
                space[name].append(value)
    if math.prod(len(values) for values in space.values()) != len(points):
        raise ValueError(
            f"points must be the full product of their axes' values (grid_points makes it): "
            f"{len(points)} points, axes {space}"
        )
    return {**space, "seed": list(seeds)}


def _open_study(storage, study: str, space: Mapping[str, list], sampler: str, direction: str):
    """Create or load ``study``; a study made for another grid is refused."""
    if sampler == "grid":
        chosen = optuna.samplers.GridSampler(dict(space), seed=0)
    else:
        chosen = optuna.samplers.TPESampler(seed=0)
    loaded = optuna.create_study(
        storage=storage, study_name=study, sampler=chosen, direction=direction,
        load_if_exists=True,
    )
    grid = _json(space)
    recorded = loaded.user_attrs.get("grid")
    if recorded is None:
        loaded.set_user_attr("grid", grid)
    elif recorded != grid:
        raise ValueError(
            f"study {study!r} was made for the grid {recorded}, not {grid}: give another study "
            "name (study_name(stem, fixed) makes one per fixed settings)"
        )
    return loaded


#: Trial states that hold a pair: finished, being run, or queued to run.
_HOLDING = {TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING}


def _holders(trials) -> dict[str, set[TrialState]]:
    """key -> the states of that pair's trials (a trial knows its key once it has started)."""
    states: dict[str, set[TrialState]] = {}
    for trial in trials:
        key = trial.user_attrs.get("key")
        if key is not None:
            states.setdefault(key, set()).add(trial.state)
    return states


def _status(study, total: int) -> SweepStatus:
    trials = study.get_trials(deepcopy=False)
    complete = {t.user_attrs["key"] for t in trials if t.state == TrialState.COMPLETE}
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    return SweepStatus(
        total=total,
        complete=len(complete),
        running=count[TrialState.RUNNING],
        waiting=count[TrialState.WAITING],
        failed=count[TrialState.FAIL],
    )


def _requeue_lost(study, pairs: Mapping[str, tuple[dict, int]]) -> list[str]:
    """Queue again every pair that was tried but has no trial finished, running or queued (its
    ``run_point`` raised, its stale trial ran out of retries, or it was pruned as a duplicate
    of a trial that then died): the grid sampler counts it as visited and would never run it.
    Returns the keys of the pairs not tried at all."""
    holders = _holders(study.get_trials(deepcopy=False))
    untried = []
    for key, (point, seed) in pairs.items():
        if key not in holders:
            untried.append(key)
        elif not holders[key] & _HOLDING:
            study.enqueue_trial({**point, "seed": seed}, user_attrs={"key": key})
    return untried


def run_sweep(
    points: Sequence[Mapping[str, object]],
    seeds: Sequence[int],
    run_point: Callable[[dict, int], Mapping[str, float]],
    storage: str | os.PathLike | BaseStorage,
    *,
    study: str | None = None,
    n_trials: int | None = None,
    sampler: str = "grid",
    objective: str | None = None,
    progress: bool = True,
    heartbeat_s: int = HEARTBEAT_S,
) -> pd.DataFrame:
    """Run the unfinished (point, seed) trials of a study, as one worker of any number.

    Args:
        points: settings dicts, the full product of their axes (:func:`grid_points`); values
            str, int, float, bool or None.
        seeds: distinct ints; each is a value of the grid's ``"seed"`` dimension.
        run_point: ``run_point(settings, seed) -> {metric name: finite number}``, the same
            metric names (at least one) for every pair.
        storage: see the module docstring (path, database URL or Optuna storage).
        study: the study's name; default ``"sweep-<hash of the grid>"``. One study per sweep:
            a study made for another grid is refused.
        n_trials: with ``sampler="grid"``, the most trials this call runs (``None``: until the
            grid is finished, waiting for other workers' running trials); with ``"tpe"``, the
            number of finished trials the study should reach.
        sampler: ``"grid"`` or ``"tpe"`` (:data:`SAMPLERS`).
        objective: the metric the study minimises (TPE needs it; the grid records it as the
            trial value); default the first metric ``run_point`` returns (the first key of its
            mapping). Checked against the study's metric names before any trial runs when the
            study has finished a trial, else as soon as the first trial's metrics are known.
        progress: a :mod:`tqdm` bar of the study's finished pairs.
        heartbeat_s: seconds between heartbeats (:func:`open_storage`).

    Returns:
        :func:`load_sweep` of the study: every finished pair, this worker's and the others'.

    Raises:
        ValueError / TypeError for bad points, seeds, sampler or storage, for a study of another
        grid, for an ``objective`` that is not one of the metric names (naming them), and for
        ``run_point`` results that are not a mapping of finite numbers with the same names each
        time (naming the metric, the point and the seed). An error found in a trial's result
        fails that trial and propagates, as an exception of ``run_point`` (e.g.
        KeyboardInterrupt) does: finished trials stay, the failed one is queued again on the
        next call.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if n_trials is not None and (type(n_trials) is not int or n_trials < 1):
        raise ValueError(f"n_trials must be None or a positive int, got {n_trials!r}")
    if sampler == "tpe" and n_trials is None:
        raise ValueError("sampler='tpe' needs n_trials, the number of trials to reach")
    checked_points, checked_seeds = _check_points(points), _check_seeds(seeds)
    space = _search_space(checked_points, checked_seeds)
    if objective is not None:
        _check_name(objective, "objective")
        if objective in space:
            raise ValueError(
                f"objective={objective!r} is a setting of the points, not a metric of run_point"
            )
    study = study or f"sweep-{hashlib.sha1(_json(space).encode()).hexdigest()[:10]}"
    opened = _open_study(open_storage(storage, heartbeat_s), study, space, sampler, "minimize")
    pairs = {
        _pair_key(point, seed): (point, seed) for point in checked_points for seed in checked_seeds
    }
    if sampler == "tpe" and n_trials > len(pairs):
        raise ValueError(
            f"n_trials={n_trials} exceeds the grid's {len(pairs)} (point, seed) pairs: TPE would "
            "have to run a pair twice; use sampler='grid' to run them all"
        )
    total = len(pairs) if sampler == "grid" else n_trials
    metric_names: list[str] = json.loads(opened.user_attrs.get("metrics", "null") or "null") or []
    if metric_names:
        _check_objective(objective, metric_names, f"study {study!r} records")

    def trial_body(trial: optuna.Trial) -> float:
        point = {name: trial.suggest_categorical(name, space[name]) for name in space}
        seed = point.pop("seed")
        key = _pair_key(point, seed)
        trial.set_user_attr("key", key)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("torch_threads", torch.get_num_threads())
        others = [
            t for t in opened.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                  TrialState.RUNNING))
            if t.number != trial.number and t.user_attrs.get("key") == key
        ]
        if others:  # a race of two workers, or TPE proposing a finished pair: never run twice
            raise optuna.TrialPruned(f"{key} is already run by trial {others[0].number}")
        start = time.perf_counter()
        metrics = run_point(dict(point), seed)
        seconds = time.perf_counter() - start
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"run_point({point!r}, seed={seed}) must return a mapping of metrics, "
                f"got {type(metrics)}"
            )
        names = sorted(metrics)
        if not names:
            raise ValueError(f"run_point({point!r}, seed={seed}) returned no metrics")
        if not metric_names:
            for name in names:
                _check_name(name, "metric name")
            metric_names.extend(names)
            opened.set_user_attr("metrics", _json(names))
        if names != sorted(metric_names) or set(names) & set(point):
            raise ValueError(
                f"run_point({point!r}, seed={seed}) returned metrics {names}, expected "
                f"{sorted(metric_names)} (the study's first trial's); every pair must return "
                "the same metric names, none of them a setting"
            )
        _check_objective(objective, names, f"run_point({point!r}, seed={seed}) returned")
        try:
            values = {name: float(metrics[name]) for name in names}
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"run_point({point!r}, seed={seed}) returned a non-numeric metric: {error}"
            ) from error
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        if bad:
            raise ValueError(
                f"run_point({point!r}, seed={seed}) returned non-finite metrics {bad} (a "
                "diverged run?): a trial records finite values only, so that every finished "
                "seed counts in the summary"
            )
        trial.set_user_attr("metrics", values)
        trial.set_user_attr("seconds", seconds)
        return values[objective or next(iter(metrics))]

    ran = 0
    with tqdm(total=total, desc=f"sweep {study}", disable=not progress) as bar:
        while True:
            with stable_api():
                optuna.storages.fail_stale_trials(opened)  # killed workers' trials: requeued
            untried = _requeue_lost(opened, pairs) if sampler == "grid" else [None]
            status = _status(opened, total)
            bar.n = min(status.complete, total)
            bar.refresh()
            if status.finished or (sampler == "grid" and n_trials is not None and ran >= n_trials):
                break
            if sampler == "tpe" and ran >= TPE_ATTEMPTS * n_trials:
                break  # TPE keeps proposing finished pairs (each pruned): stop, incomplete
            if sampler == "grid" and not status.waiting and not untried:
                if not status.running:
                    break  # cannot happen unless trials vanish; load_sweep shows what is there
                time.sleep(POLL_S)  # other workers' trials: wait until they finish or go stale
                continue
            with stable_api():
                opened.optimize(trial_body, n_trials=1)
            ran += 1
    return load_sweep(storage, study)


def _check_objective(objective: str | None, names: Sequence[str], source: str) -> None:
    """Raise a ValueError naming ``objective`` unless it is ``None`` or one of ``names``, the
    metric names ``source`` (e.g. ``"study 's' records"``)."""
    if objective is not None and objective not in names:
        raise ValueError(
            f"objective={objective!r} is not a metric: {source} the metrics {sorted(names)}"
        )


def sweep_status(storage: str | os.PathLike | BaseStorage, study: str) -> SweepStatus:
    """How far ``study`` is (:class:`SweepStatus`), from its grid's size and its trials."""
    opened = _load_study(storage, study)
    space = json.loads(opened.user_attrs["grid"])
    return _status(opened, math.prod(len(values) for values in space.values()))


def count_finished(storage: str | os.PathLike | BaseStorage, study: str) -> int:
    """The number of finished pairs of ``study``; 0 when the storage or the study is new."""
    is_file = not isinstance(storage, BaseStorage) and "://" not in str(storage)
    if is_file and not Path(storage).expanduser().is_file():
        return 0  # do not create an empty database just to look into it
    try:
        return sweep_status(storage, study).complete
    except KeyError:
        return 0


def _load_study(storage, study: str):
    try:
        return optuna.load_study(study_name=study, storage=open_storage(storage))
    except KeyError as error:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))]
        raise KeyError(f"no study {study!r} in {storage}; it holds {names}") from error


def load_sweep(storage: str | os.PathLike | BaseStorage, study: str) -> pd.DataFrame:
    """The finished pairs of ``study``, one row per pair, sorted by ``key``.

    Columns: the settings (int, float, bool and str columns keep their type; a column of mixed
    types or with None is of object dtype with the exact values), ``seed``, the metrics,
    ``seconds`` (wall time of ``run_point``), ``key`` (JSON of the settings and the seed) and
    ``trial`` (the Optuna trial number). A pair finished more than once (two workers raced)
    keeps its first trial, with a warning giving the count.

    Raises:
        KeyError naming the studies the storage holds when ``study`` is not among them.
    """
    opened = _load_study(storage, study)
    space = json.loads(opened.user_attrs["grid"])
    settings_names = [name for name in space if name != "seed"]
    metric_names = json.loads(opened.user_attrs.get("metrics", "[]"))
    finished = sorted(opened.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: t.number)
    rows: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in finished:
        rows.setdefault(trial.user_attrs["key"], trial)
    if len(rows) < len(finished):
        warnings.warn(
            f"study {study!r}: {len(finished) - len(rows)} finished trials repeat a pair of an "
            "earlier one; kept the first of each",
            RuntimeWarning,
            stacklevel=2,
        )
    ordered = [rows[key] for key in sorted(rows)]
    columns: dict[str, pd.Series] = {
        name: settings_column([t.params[name] for t in ordered]) for name in settings_names
    }
    columns["seed"] = pd.Series([t.params["seed"] for t in ordered], dtype="int64")
    for name in metric_names:
        columns[name] = pd.Series([t.user_attrs["metrics"][name] for t in ordered], dtype="float64")
    columns["seconds"] = pd.Series([t.user_attrs["seconds"] for t in ordered], dtype="float64")
    columns["key"] = pd.Series([t.user_attrs["key"] for t in ordered], dtype=object)
    columns["trial"] = pd.Series([t.number for t in ordered], dtype="int64")
    return pd.DataFrame(columns)
