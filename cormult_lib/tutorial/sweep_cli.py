"""``cormult-sweep``: start workers for the chapters' sweeps from the command line.

One machine, four workers on the default SQLite file::

    cormult-sweep --sweep shared_space --profile standard --workers 4

Several machines: the same command on each, all pointed at one database server::

    cormult-sweep --sweep distances --profile paper --storage postgresql+psycopg://me@db/sweeps \\
        --device cuda --workers 1

Every worker pulls the next unfinished (point, seed) of the study until the grid is done, so
workers can be added or stopped at any time; a killed worker's trial is run again by another
one after the heartbeat's grace period. ``--export table.csv`` writes the finished table.
Chapter options that have no flag of their own go through ``--set name=value`` (a Python
literal: ``--set epochs=6``, ``--set 'shared_time=[16, 64]'``, ``--set strategy="'D'"``); the
study is the one the chapter with the same parameters uses, so the notebook then finds the
trials (its run trains only what is missing). The study is named by the settings, the
profile's configuration and a hash of the data's content (not its path), so machines that share
one must load the same data with the same configuration.
"""

from __future__ import annotations

import argparse
import ast
import multiprocessing
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

from cormult_lib.processes import die_with_parent
from cormult_lib.training.sweep import SAMPLERS, load_sweep, run_sweep, sweep_status
from cormult_lib.tutorial.chapter_sweeps import SWEEPS, ChapterSweep, SweepSetup

DEFAULT_STORAGE = Path("outputs") / "sweeps.db"


def _parse_settings(items: list[str]) -> dict[str, object]:
    """``["epochs=6", "strategy='D'"]`` -> ``{"epochs": 6, "strategy": "D"}``."""
    settings: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"--set {item!r}: expected name=value, e.g. --set epochs=6")
        try:
            settings[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            settings[name] = text  # a bare word such as D is meant as a string
    return settings


def _build(args: argparse.Namespace) -> ChapterSweep:
    """The sweep of ``args``: the flags and the ``--set`` names of :class:`SweepSetup`'s fields
    make the setup, the other ``--set`` names go to the sweep function."""
    settings = _parse_settings(args.set)
    shared = {f.name for f in fields(SweepSetup)}
    setup = {
        "profile": args.profile,
        "dataset": args.dataset,
        "data_path": args.data_path,
        "sampler": args.sampler,
        "device": args.device,
        **{name: value for name, value in settings.items() if name in shared},
    }
    own = {name: value for name, value in settings.items() if name not in shared}
    try:
        return SWEEPS[args.sweep](SweepSetup(**setup), **own)
    except TypeError as error:  # an unknown --set name
        raise SystemExit(f"--sweep {args.sweep}: {error}") from error


def _worker(args: argparse.Namespace, index: int, parent_pid: int | None = None) -> None:
    """One worker: build the sweep (loads the data) and run trials until done. A worker
    process (``parent_pid`` given) dies with the command, even after ``kill -9``."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sweep = _build(args)
    run_sweep(
        sweep.points, sweep.seeds, sweep.run_point, args.storage, study=sweep.study,
        n_trials=args.n_trials, sampler=sweep.sampler, objective=sweep.objective,
        progress=index == 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cormult-sweep", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sweep", required=True, choices=sorted(SWEEPS))
    parser.add_argument("--profile", default="quick", help="quick, standard or paper")
    parser.add_argument("--dataset", default="synthetic", help="synthetic, mmsa, mult or raw")
    parser.add_argument("--data-path", default=None, help="the dataset's file or folder")
    parser.add_argument("--storage", default=str(DEFAULT_STORAGE),
                        help="an SQLite file (default %(default)s) or a database URL")
    parser.add_argument("--workers", type=int, default=1, help="processes on this machine")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker (default: cores / workers)")
    parser.add_argument("--sampler", default="grid", choices=SAMPLERS)
    parser.add_argument("--n-trials", type=int, default=None,
                        help="grid: trials per worker at most; tpe: trials to reach (required)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="another option of the chapter's sweep (repeatable)")
    parser.add_argument("--export", type=Path, default=None, help="write the table as CSV")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.n_trials is not None and args.n_trials < 1:
        parser.error(f"--n-trials must be at least 1, got {args.n_trials}")
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.workers)
    sweep = _build(args)  # fail on bad options before any worker starts
    if sweep.sampler == "tpe" and args.n_trials is None:
        parser.error("the tpe sampler needs --n-trials, the number of trials to reach")
    print(f"study {sweep.study}: {len(sweep.points)} points x {len(sweep.seeds)} seeds "
          f"in {args.storage}; {args.workers} worker(s) x {args.threads} thread(s)")
    started = time.perf_counter()
    failed: list[int] = []
    if args.workers == 1:
        _worker(args, 0)
    else:
        context = multiprocessing.get_context("spawn")  # no forked torch state
        processes = [
            context.Process(target=_worker, args=(args, i, os.getpid()))
            for i in range(args.workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p.exitcode for p in processes if p.exitcode != 0]
        if failed:
            print(f"{len(failed)} worker(s) failed (exit codes {failed})", file=sys.stderr)
    try:
        status = sweep_status(args.storage, sweep.study)
    except KeyError:  # every worker failed before it could create the study
        print(f"no trial finished: study {sweep.study} is not in {args.storage}", file=sys.stderr)
        return 1
    wanted, note = status.total, ""
    if sweep.sampler == "tpe":  # TPE runs n_trials of the grid's pairs, not all of them
        wanted, note = args.n_trials, f"; tpe samples --n-trials of the grid's {status.total} pairs"
    reached = status.complete >= wanted
    print(f"{status.complete} of {wanted} trials finished "
          f"({'complete' if reached else 'incomplete'}{note}) in "
          f"{time.perf_counter() - started:.1f} s")
    if args.export:
        args.export.parent.mkdir(parents=True, exist_ok=True)
        load_sweep(args.storage, sweep.study).to_csv(args.export, index=False)
        print(f"wrote {args.export}")
    # A limited run (--n-trials) may end incomplete; a failed worker is an error either way.
    return 0 if (reached or args.n_trials) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
