"""Where a sweep's trials live: an Optuna storage that several workers can share.

A path gives an SQLite file (one machine, several processes), a URL a database server
(PostgreSQL, MySQL: several machines). Running trials send a heartbeat; a trial whose worker
died (``kill -9``, a lost machine) stops beating and is queued again once it has been silent
for three heartbeats (30 s by default), at most ``MAX_RETRY`` times
(:mod:`cormult_lib.training.sweep` runs the trials).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

#: Seconds between heartbeats of a running trial; a trial silent for three of them is stale.
HEARTBEAT_S = 10
MAX_RETRY = 3
#: Attempts to open a new database whose tables another worker is creating at that moment.
SCHEMA_ATTEMPTS = 5


@contextmanager
def stable_api() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for the heartbeat and the retry of stale trials
    (marked experimental since Optuna 2.8); tests/test_sweep.py pins their behaviour."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def open_storage(storage: str | os.PathLike | BaseStorage, heartbeat_s: int = HEARTBEAT_S):
    """An Optuna storage for ``storage``: a path -> an SQLite file (parent folders created),
    a URL with ``://`` -> that database, an Optuna storage -> itself. SQL storages send a
    heartbeat every ``heartbeat_s`` seconds from running trials and queue a trial again when its
    heartbeat stops for ``3 * heartbeat_s`` seconds (up to ``MAX_RETRY`` times)."""
    if isinstance(storage, BaseStorage):
        return storage
    if not isinstance(storage, str | os.PathLike) or not str(storage):
        raise TypeError(
            f"storage must be a path, a database URL or an Optuna storage, got {storage!r}"
        )
    text = str(storage)
    lock = None
    if "://" in text:
        url, engine_kwargs = text, {}
    else:
        path = Path(text).expanduser().resolve()
        if path.is_dir():
            raise ValueError(f"storage {path} is a folder; give the path of an SQLite file")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several processes write one file: wait for a lock instead of failing at once.
        url, engine_kwargs = f"sqlite:///{path}", {"connect_args": {"timeout": 60}}
        lock = path.with_name(f".{path.name}.lock")
    callback = RetryHeartbeatStaleTrialCallback
    error: Exception | None = None
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            # Creating the tables of a new database is not safe for two processes at once
            # ("table studies already exists"): one file lock for SQLite, retries for servers.
            with stable_api(), _file_lock(lock):
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_s,
                    grace_period=3 * heartbeat_s,
                    heartbeat_stale_trial_callback=callback(max_retry=MAX_RETRY),
                )
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.ProgrammingError,
        ) as race:
            # Another worker created the tables meanwhile: PostgreSQL says DuplicateTable (a
            # ProgrammingError) or a unique violation (IntegrityError), SQLite and MySQL an
            # OperationalError, or the file was held. A retry creates only the missing tables.
            error = race
            time.sleep(0.2 * (attempt + 1))
        except Exception as failure:  # a wrong URL, a missing driver, a file that is no database
            raise ValueError(f"cannot open the sweep storage {text!r}: {failure}") from failure
    raise ValueError(f"cannot open the sweep storage {text!r}: {error}") from error


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) while the block runs; no-op for None
    or where ``fcntl`` does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
