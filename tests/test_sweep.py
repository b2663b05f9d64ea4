"""The Optuna sweep engine: a grid run once per (point, seed), resumed after an interruption
or a SIGKILL, shared by worker processes on SQLite and on a PostgreSQL server, TPE on request."""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from cormult_lib.config import DISTANCE_GRIDS, SHARED_SPACE_GRIDS, SWEEP_SEEDS
from cormult_lib.training.sweep import (
    grid_points,
    load_sweep,
    run_sweep,
    study_name,
    sweep_seeds,
    sweep_status,
)
from cormult_lib.training.sweep_storage import open_storage
from cormult_lib.training.sweep_summary import summarize_sweep

AXES = {"shared_time": (2, 8, 32), "distance": ("cosine", "euclidean")}
SEED_LIST = (0, 1)
WORKER = Path(__file__).with_name("sweep_worker.py")


def fake_metrics(settings: dict, seed: int) -> dict[str, float]:
    """Deterministic metrics from the settings and the seed."""
    score = settings["shared_time"] / 64 + 0.1 * (settings["distance"] == "cosine")
    return {"auc": score + 0.01 * seed, "loss": 1.0 / (1 + settings["shared_time"] + seed)}


class CountingRun:
    """``fake_metrics`` that records its calls and can raise on the n-th one."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[tuple[dict, int]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, settings: dict, seed: int) -> dict[str, float]:
        self.calls.append((dict(settings), seed))
        if len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt
        return fake_metrics(settings, seed)


def expected_table() -> pd.DataFrame:
    rows = [
        {**point, "seed": seed, **fake_metrics(point, seed)}
        for point in grid_points(AXES)
        for seed in SEED_LIST
    ]
    return pd.DataFrame(rows)


def same_rows(table: pd.DataFrame, expected: pd.DataFrame) -> bool:
    columns = list(expected.columns)
    left = table[columns].sort_values(["shared_time", "distance", "seed"]).reset_index(drop=True)
    right = expected.sort_values(["shared_time", "distance", "seed"]).reset_index(drop=True)
    return left.equals(right)


def test_grid_points_order_and_validation() -> None:
    points = grid_points({"t": (8, 2), "o": (32, 8)})
    assert points == [{"t": 8, "o": 32}, {"t": 8, "o": 8}, {"t": 2, "o": 32}, {"t": 2, "o": 8}]
    assert [list(point) for point in points] == [["t", "o"]] * 4
    assert grid_points({}) == [{}]
    assert len(grid_points(SHARED_SPACE_GRIDS["paper"])) == 7 * 20
    assert SHARED_SPACE_GRIDS["paper"]["shared_dim"][-1] == 1000
    assert DISTANCE_GRIDS["paper"] == DISTANCE_GRIDS["quick"]
    assert SWEEP_SEEDS["paper"] == (0, 1, 2, 3, 4)
    with pytest.raises(TypeError, match="axis 'o'.*list"):
        grid_points({"t": (2,), "o": ([1, 2],)})
    with pytest.raises(TypeError, match="axis 'o'.*int64"):
        grid_points({"o": (np.int64(3),)})
    with pytest.raises(ValueError, match="axis 'o'.*finite"):
        grid_points({"o": (math.nan,)})
    with pytest.raises(ValueError, match="axis 'o' has no values"):
        grid_points({"o": ()})
    with pytest.raises(ValueError, match="axis 'o'.*more than once"):
        grid_points({"o": (1, 1)})
    with pytest.raises(TypeError, match="axis 'o'.*sequence"):
        grid_points({"o": "abc"})
    with pytest.raises(ValueError, match="'seed' is reserved"):
        grid_points({"seed": (1,)})


def test_one_worker_runs_the_grid_once_and_a_rerun_runs_nothing(tmp_path: Path) -> None:
    points, storage = grid_points(AXES), tmp_path / "sweeps.db"
    run = CountingRun()
    table = run_sweep(points, SEED_LIST, run, storage, study="s", progress=False)
    assert len(run.calls) == 6 * 2 and len({repr(c) for c in run.calls}) == 12
    assert same_rows(table, expected_table())
    assert table["key"].is_unique and (table["seconds"] >= 0).all()
    again = CountingRun()
    assert run_sweep(points, SEED_LIST, again, storage, study="s", progress=False).equals(table)
    assert not again.calls, "a finished pair never runs again"
    status = sweep_status(storage, "s")
    assert (status.total, status.complete, status.running, status.failed) == (12, 12, 0, 0)
    assert status.finished
    # The trials are Optuna's own: any Optuna tool reads them.
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{storage}")
    assert len(study.trials) == 12 and study.trials[0].params.keys() == {*AXES, "seed"}


def test_an_interrupted_sweep_reruns_only_the_rest(tmp_path: Path) -> None:
    points, storage = grid_points(AXES), tmp_path / "sweeps.db"
    killed = CountingRun(fail_on_call=5)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(points, SEED_LIST, killed, storage, study="s", progress=False)
    assert sweep_status(storage, "s").complete == 4
    resumed = CountingRun()
    table = run_sweep(points, SEED_LIST, resumed, storage, study="s", progress=False)
    assert len(resumed.calls) == 12 - 4, "the four finished pairs are not run again"
    assert killed.calls[-1] in resumed.calls, "the interrupted pair is run again"
    assert same_rows(table, expected_table())


def test_n_trials_bounds_one_worker_and_the_status_says_how_far(tmp_path: Path) -> None:
    points, storage = grid_points(AXES), tmp_path / "sweeps.db"
    part = run_sweep(points, SEED_LIST, fake_metrics, storage, study="s", n_trials=5,
                     progress=False)
    assert len(part) == 5 and not sweep_status(storage, "s").finished
    assert sweep_status(storage, "s").complete == 5
    full = run_sweep(points, SEED_LIST, fake_metrics, storage, study="s", progress=False)
    assert same_rows(full, expected_table())


def test_a_study_belongs_to_one_grid_and_study_name_follows_the_fixed_settings(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "sweeps.db"
    run_sweep(grid_points(AXES), SEED_LIST, fake_metrics, storage, study="s", progress=False)
    with pytest.raises(ValueError, match="study 's' was made for the grid"):
        run_sweep(grid_points({**AXES, "shared_time": (2, 8)}), SEED_LIST, fake_metrics,
                  storage, study="s", progress=False)
    with pytest.raises(KeyError, match=r"no study 'other'.*\['s'\]"):
        load_sweep(storage, "other")
    base = {"epochs": 3, "strategy": "B", "train_fraction": 0.5, "modalities": "TAV"}
    name = study_name("06_sweep", base)
    assert name.startswith("06_sweep-") and study_name("06_sweep", dict(reversed(base.items())))
    assert study_name("06_sweep", dict(reversed(base.items()))) == name
    for key, value in [("epochs", 4), ("strategy", "D"), ("train_fraction", 1.0)]:
        assert study_name("06_sweep", {**base, key: value}) != name
    with pytest.raises(TypeError, match="fixed settings"):
        study_name("06_sweep", {"device": object()})


def test_settings_types_round_trip(tmp_path: Path) -> None:
    axes = {
        "i": (1, 2),
        "f": (0.5, 1.0),
        "s": ("1", "a b,c"),
        "b": (True,),
        "mixed": (None, 3, "3"),
        "none": (None,),
    }
    path = tmp_path / "types.db"

    def run_point(settings: dict, seed: int) -> dict[str, float]:
        return {"m": settings["i"] + settings["f"] + seed}

    table = run_sweep(grid_points(axes), (7,), run_point, path, study="t", progress=False)
    for loaded in (table, load_sweep(path, "t")):
        assert loaded["i"].dtype == "int64" and loaded["f"].dtype == "float64"
        assert loaded["b"].dtype == bool and loaded["seed"].dtype == "int64"
        assert all(type(value) is str for value in loaded["s"])
        assert loaded["none"].tolist() == [None] * len(loaded)
        assert {(type(v), v) for v in loaded["mixed"]} == {
            (type(None), None),
            (int, 3),
            (str, "3"),
        }
    records = table[["i", "f", "s", "b", "mixed", "none"]].to_dict("records")
    assert sorted(map(repr, records)) == sorted(map(repr, grid_points(axes)))
    assert table["m"].tolist() == [r["i"] + r["f"] + 7 for r in records]


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    points, storage = grid_points(AXES), tmp_path / "sweeps.db"
    with pytest.raises(TypeError, match=r"points\[1\]\['distance'\]"):
        run_sweep([{"distance": "a"}, {"distance": ("a",)}], SEED_LIST, fake_metrics, storage)
    with pytest.raises(TypeError, match="seeds"):
        run_sweep(points, (0.5,), fake_metrics, storage)
    with pytest.raises(ValueError, match="full product"):
        run_sweep(points[:-1], SEED_LIST, fake_metrics, storage)
    with pytest.raises(ValueError, match="sampler must be one of"):
        run_sweep(points, SEED_LIST, fake_metrics, storage, sampler="random")
    with pytest.raises(ValueError, match="needs n_trials"):
        run_sweep(points, SEED_LIST, fake_metrics, storage, sampler="tpe")
    with pytest.raises(ValueError, match="n_trials=13 exceeds the grid's 12"):
        run_sweep(points, SEED_LIST, fake_metrics, storage, sampler="tpe", n_trials=13)
    with pytest.raises(ValueError, match="is a folder"):
        run_sweep(points, SEED_LIST, fake_metrics, tmp_path)
    with pytest.raises(ValueError, match="cannot open the sweep storage 'nosuchdb://x'"):
        open_storage("nosuchdb://x")
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_bytes(b"\xff\xfe plain text, not SQLite")
    with pytest.raises(ValueError, match="notes.txt"):
        run_sweep(points, SEED_LIST, fake_metrics, not_a_database, progress=False)

    def uneven(settings: dict, seed: int) -> dict[str, float]:
        metrics = fake_metrics(settings, seed)
        return metrics if settings["shared_time"] == 2 else {"auc": metrics["auc"]}

    with pytest.raises(ValueError, match=r"returned metrics \[.*\], expected \["):
        run_sweep(points, SEED_LIST, uneven, storage, study="u", progress=False)
    kept = load_sweep(storage, "u")  # the pairs before the bad one are kept
    assert 1 <= len(kept) < 12 and kept["key"].is_unique


def test_tpe_reaches_n_trials_without_running_a_pair_twice(tmp_path: Path) -> None:
    run = CountingRun()
    table = run_sweep(grid_points(AXES), SEED_LIST, run, tmp_path / "tpe.db", study="t",
                      sampler="tpe", n_trials=8, objective="loss", progress=False)
    assert len(table) == 8 and table["key"].is_unique
    assert len(run.calls) == 8 and len({repr(c) for c in run.calls}) == 8
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'tpe.db'}")
    best = min(t.value for t in study.trials if t.value is not None)
    assert best == pytest.approx(table["loss"].min()), "the study minimises the objective"


def test_summarize_sweep_by_hand() -> None:
    table = pd.DataFrame(
        {
            "t": pd.Series([None, None, None, 4, 4], dtype=object),
            "seed": [0, 1, 2, 0, 1],
            "auc": [0.5, 0.7, 0.9, 0.6, 0.6],
        }
    )
    summary = summarize_sweep(table, by=["t"], metrics=["auc"])
    assert summary["t"].tolist() == [None, 4]
    assert summary["n_seeds"].tolist() == [3, 2]
    assert summary["auc_mean"].tolist() == pytest.approx([0.7, 0.6])
    assert summary["auc_std"].tolist() == pytest.approx([0.2, 0.0])  # sqrt(0.08 / 2), ddof=1
    single = summarize_sweep(table.iloc[3:4], by=["t"], metrics=["auc"])
    assert math.isnan(single["auc_std"].iloc[0])
    with pytest.raises(ValueError, match=r"metrics: columns \['f1'\]"):
        summarize_sweep(table, by=["t"], metrics=["f1"])


def test_summarize_sweep_refuses_non_finite_values_and_repeated_seeds() -> None:
    """A NaN left out of the mean while n_seeds counted it gave auc_mean 0.60 "over 3 seeds"
    from one seed; a seed recorded twice counted twice."""
    table = pd.DataFrame(
        {"t": [2, 2, 2, 8, 8, 8], "seed": [0, 1, 2] * 2, "auc": [0.6, 0.5, 0.4, 0.7, 0.72, 0.71]}
    )
    assert summarize_sweep(table, by=["t"], metrics=["auc"])["n_seeds"].tolist() == [3, 3]
    for bad in (math.nan, math.inf):
        broken = table.assign(auc=[0.6, bad, bad, 0.7, 0.72, 0.71])
        with pytest.raises(ValueError, match=r"'auc' has 2 missing \(NaN\) or infinite "
                           r"value\(s\), e\.g\. \[\{'t': 2, 'seed': 1, 'auc': (nan|inf)\}"):
            summarize_sweep(broken, by=["t"], metrics=["auc"])
    twice = pd.concat([table, table.iloc[[4]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"1 row\(s\) repeat the \(t, seed\).*'t': 8, 'seed': 1"):
        summarize_sweep(twice, by=["t"], metrics=["auc"])
    # None is not NaN and True is not 1, here as in the grouping
    exact = pd.DataFrame(
        {
            "t": pd.Series([None, None, True, 1], dtype=object),
            "seed": [0, 0, 0, 0],
            "auc": [0.5, 0.6, 0.7, 0.8],
        }
    )
    with pytest.raises(ValueError, match=r"repeat the \(t, seed\).*'t': None, 'seed': 0"):
        summarize_sweep(exact, by=["t"], metrics=["auc"])
    summary = summarize_sweep(exact.iloc[1:], by=["t"], metrics=["auc"])
    assert summary["t"].tolist() == [None, True, 1] and summary["n_seeds"].tolist() == [1] * 3
    with pytest.raises(ValueError, match="table: no 'seed' column"):
        summarize_sweep(table.drop(columns="seed"), by=["t"], metrics=["auc"])


def test_the_default_objective_is_the_first_metric_run_point_returns(tmp_path: Path) -> None:
    def run_point(settings: dict, seed: int) -> dict[str, float]:
        return {"roc_auc": 0.9, "loss": 0.1}  # not in sorted order

    points = grid_points({"t": (2, 8)})
    run_sweep(points, (0,), run_point, tmp_path / "s.db", study="d", progress=False)
    run_sweep(points, (0,), run_point, tmp_path / "s.db", study="l", objective="loss",
              progress=False)
    for study, value in (("d", 0.9), ("l", 0.1)):
        trials = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path / 's.db'}")
        assert [t.value for t in trials.trials] == [value, value]


def test_a_misspelt_objective_is_refused_naming_the_metrics(tmp_path: Path) -> None:
    calls: list[tuple[dict, int]] = []

    def run_point(settings: dict, seed: int) -> dict[str, float]:
        calls.append((settings, seed))
        return {"roc_auc": 0.9, "loss": 0.1}

    points, storage = grid_points({"t": (2, 8)}), tmp_path / "s.db"
    for objective, message in (
        ("t", "objective='t' is a setting of the points"),
        ("seed", "objective 'seed' is reserved"),
        ("", "objective must be a non-empty one-line str"),
    ):
        with pytest.raises(ValueError, match=message):
            run_sweep(points, (0,), run_point, storage, study="s", objective=objective)
    assert not calls, "refused before any trial"
    # a new study knows its metric names after its first trial: that trial fails
    wrong = r"objective='los' is not a metric: {} the metrics \['loss', 'roc_auc'\]$"
    first = wrong.format(r"run_point\(\{'t': \d\}, seed=0\) returned")
    with pytest.raises(ValueError, match=first):
        run_sweep(points, (0,), run_point, storage, study="s", objective="los", progress=False)
    assert len(calls) == 1 and load_sweep(storage, "s").empty
    with pytest.raises(ValueError, match=wrong.format("study 's' records")):
        run_sweep(points, (0,), run_point, storage, study="s", objective="los", progress=False)
    assert len(calls) == 1, "a study that knows its metrics refuses before any trial"
    table = run_sweep(points, (0,), run_point, storage, study="s", objective="loss",
                      progress=False)
    assert table["t"].tolist() == [2, 8] and table["loss"].tolist() == [0.1, 0.1]


def test_a_non_finite_metric_fails_its_trial_naming_it(tmp_path: Path) -> None:
    """The old code recorded NaN and inf silently (and looped forever on a NaN objective,
    which Optuna fails and the grid queued again)."""

    def diverging(settings: dict, seed: int) -> dict[str, float]:
        loss = math.nan if (settings["t"], seed) == (8, 1) else settings["t"] / 10 + seed
        return {"auc": 0.5, "loss": loss}

    points, storage = grid_points({"t": (2, 8)}), tmp_path / "s.db"
    message = r"run_point\(\{'t': 8\}, seed=1\) returned non-finite metrics \{'loss': nan\}"
    with pytest.raises(ValueError, match=message):
        run_sweep(points, (0, 1), diverging, storage, study="s", progress=False)
    kept = load_sweep(storage, "s")  # the trials finished before it stay, all of them finite
    assert ((kept["t"] == 8) & (kept["seed"] == 1)).sum() == 0
    assert kept["loss"].tolist() == [r.t / 10 + r.seed for r in kept.itertuples()]
    calls: list[tuple[dict, int]] = []

    def finite(settings: dict, seed: int) -> dict[str, float]:
        calls.append((settings, seed))
        return {"auc": 0.5, "loss": 1.0}

    table = run_sweep(points, (0, 1), finite, storage, study="s", progress=False)
    assert len(table) == 4 and len(calls) == 4 - len(kept)
    assert ({"t": 8}, 1) in calls, "the failed pair runs again"
    with pytest.raises(ValueError, match=r"seed=0\) returned non-finite metrics \{'auc': inf\}"):
        run_sweep(points, (0,), lambda s, k: {"auc": math.inf}, storage, study="inf",
                  progress=False)


def test_sweep_seeds_default_and_checked() -> None:
    assert sweep_seeds(None, "quick") == list(SWEEP_SEEDS["quick"])
    assert sweep_seeds(None, "paper") == [0, 1, 2, 3, 4]
    assert sweep_seeds([3, 7], "quick") == [3, 7]
    for bad in ([], [1, 1], [-1], [1.5], "01"):
        with pytest.raises(ValueError, match="seeds"):
            sweep_seeds(bad, "quick")
    with pytest.raises(ValueError, match="grid"):
        sweep_seeds(None, "huge")


# ----------------------------------------------------------------------------- workers


def _start_worker(storage: str, study: str, log: Path, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "SWEEP_TEST_SECONDS": str(seconds), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(WORKER), storage, study, str(log)], env=env)


def _log_lines(log: Path) -> list[tuple[str, int, str]]:
    if not log.exists():
        return []
    return [
        (kind, int(pid), key)
        for kind, pid, key in (line.split(" ", 2) for line in log.read_text().splitlines())
    ]


def _two_workers_one_killed(storage: str, tmp_path: Path) -> None:
    """Two workers share a study; one is SIGKILLed in the middle of its second trial."""
    study, log = f"w-{uuid.uuid4().hex[:8]}", tmp_path / f"{uuid.uuid4().hex[:8]}.log"
    first = _start_worker(storage, study, log, seconds=0.6)
    second = _start_worker(storage, study, log, seconds=0.6)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill the first worker once it is inside trial 2
        starts = [key for kind, pid, key in _log_lines(log) if kind == "start" and pid == first.pid]
        if len(starts) == 2:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the first worker never started a second trial")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_key = starts[-1]
    assert second.wait(timeout=180) == 0
    lines = _log_lines(log)
    ended = [key for kind, _, key in lines if kind == "end"]
    assert killed_key not in [k for kind, pid, k in lines if kind == "end" and pid == first.pid]
    assert len(ended) == len(set(ended)) == 12, "every pair ran to the end exactly once"
    assert killed_key in ended, "the killed trial was run again by the other worker"
    table = load_sweep(storage, study)
    assert len(table) == 12 and table["key"].is_unique
    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 12, "exactly one finished trial per (point, seed)"
    assert any(t.state == optuna.trial.TrialState.FAIL for t in trials), "the stale trial failed"


def test_two_sqlite_workers_finish_the_grid_once_despite_a_sigkill(tmp_path: Path) -> None:
    _two_workers_one_killed(str(tmp_path / "shared.db"), tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """``$CORMULT_TEST_POSTGRES_URL`` (.ci/run starts a server), else a throwaway cluster of
    the PostgreSQL binaries found here, else the test is skipped with the reason."""
    url = os.environ.get("CORMULT_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
    found = shutil.which("pg_ctl") or next(
        iter(sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")))), None
    )
    bin_dir = Path(found).resolve().parent if found else None
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) and no "
                    "CORMULT_TEST_POSTGRES_URL: install Debian's postgresql package to run this")
    # Not under pytest's tmp_path: the server's user must be able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="cormult-pg-"))
    data, port = folder / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    if subprocess.run(run, capture_output=True).returncode != 0:
        pytest.skip("initdb failed: cannot create a throwaway PostgreSQL cluster here")
    options = f"-p {port} -k {folder} -h 127.0.0.1"
    start = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "start",
             "-l", str(folder / "server.log")]
    if subprocess.run(start, capture_output=True).returncode != 0:
        pytest.skip(f"pg_ctl could not start a server: {(folder / 'server.log').read_text()}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_postgresql_workers_finish_the_grid_once_despite_a_sigkill(
    postgres_url: str, tmp_path: Path
) -> None:
    _two_workers_one_killed(postgres_url, tmp_path)


def test_opening_retries_while_another_worker_creates_the_tables(monkeypatch) -> None:
    """The errors of two processes creating one schema are retried, others are not."""
    import sqlalchemy.exc

    from cormult_lib.training import sweep_storage

    duplicate = sqlalchemy.exc.ProgrammingError(
        "CREATE TABLE studies", {}, Exception('relation "studies" already exists')
    )
    unique = sqlalchemy.exc.IntegrityError(
        "CREATE TABLE studies", {}, Exception("duplicate key value violates pg_type_typname")
    )
    failures: list[Exception] = [duplicate, unique]
    calls: list[str] = []

    def flaky_storage(url: str, **kwargs) -> str:
        calls.append(url)
        if failures:
            raise failures.pop(0)
        return "opened"

    monkeypatch.setattr(sweep_storage, "RDBStorage", flaky_storage)
    monkeypatch.setattr(sweep_storage.time, "sleep", lambda seconds: None)
    assert open_storage("postgresql://host/db") == "opened" and len(calls) == 3
    failures[:] = [duplicate] * sweep_storage.SCHEMA_ATTEMPTS
    with pytest.raises(ValueError, match="cannot open the sweep storage.*already exists"):
        open_storage("postgresql://host/db")
    calls.clear()
    failures[:] = [sqlalchemy.exc.DatabaseError("SELECT", {}, Exception("not a database"))]
    with pytest.raises(ValueError, match="not a database"):
        open_storage("postgresql://host/db")
    assert len(calls) == 1, "an error that is no race is reported at once"


def test_workers_opening_a_new_postgresql_database_at_once_all_succeed(postgres_url: str) -> None:
    """Six processes create the tables of one empty database at the same instant (the race
    that once crashed a worker of the SIGKILL test with 'relation "studies" already exists')."""
    import sqlalchemy

    name = f"race_{uuid.uuid4().hex[:8]}"
    server = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    server.dispose()
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    start = time.time() + 8  # after every process has imported Optuna
    code = (
        "import sys, time\n"
        "from cormult_lib.training.sweep_storage import open_storage\n"
        f"while time.time() < {start}: time.sleep(0.001)\n"
        "open_storage(sys.argv[1])\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [worker.communicate(timeout=120)[1] for worker in workers]
    failed = [text for worker, text in zip(workers, errors, strict=True) if worker.returncode]
    assert not failed, failed[0]
