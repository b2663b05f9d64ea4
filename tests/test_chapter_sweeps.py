"""The chapters' sweeps as library functions, and ``cormult-sweep`` starting workers for them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from cormult_lib.training.sweep import load_sweep, sweep_status
from cormult_lib.tutorial import sweep_cli
from cormult_lib.tutorial.chapter_sweeps import SweepSetup, distance_sweep, shared_space_sweep
from cormult_lib.tutorial.sweep_cli import main

ONE_SEED = SweepSetup(seeds=[0])
TINY = {"shared_time": [2], "shared_dim": [4, 8], "epochs": 1}


def test_the_study_name_follows_what_changes_results_and_not_the_threads() -> None:
    base = shared_space_sweep(ONE_SEED, **TINY)
    assert base.size == 2 and base.points == [{"shared_time": 2, "shared_dim": 4},
                                              {"shared_time": 2, "shared_dim": 8}]
    assert base.study.startswith("06_shared_space_quick_synthetic-")
    # Pinned: a refactoring must keep finding the studies it ran (the name changes only with
    # the grid and what changes the results: settings, configuration, data, SWEEP_FORMAT).
    assert base.study == "06_shared_space_quick_synthetic-d455590398"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert shared_space_sweep(ONE_SEED, **TINY).study == base.study
    finally:
        torch.set_num_threads(threads)
    assert shared_space_sweep(ONE_SEED, **{**TINY, "epochs": 2}).study != base.study
    assert shared_space_sweep(SweepSetup(seeds=[0], strategy="D"), **TINY).study != base.study
    assert shared_space_sweep(SweepSetup(seeds=[0], sampler="tpe"), **TINY).study != base.study
    # Another grid is another study (a study belongs to one grid): other seeds, other axes.
    assert shared_space_sweep(SweepSetup(seeds=[0, 1]), **TINY).study != base.study
    assert shared_space_sweep(ONE_SEED, **{**TINY, "shared_dim": [4]}).study != base.study
    distances = distance_sweep(ONE_SEED, distances=["cosine"])
    assert distances.study == "05_distances_quick_synthetic-af8192e136"


def test_the_study_name_follows_the_configuration_and_the_datas_content(monkeypatch) -> None:
    """Trials of another configuration or of other data are never reported as this run's."""
    from dataclasses import replace

    from cormult_lib.tutorial import chapter_sweeps

    base = shared_space_sweep(ONE_SEED, **TINY)
    real = chapter_sweeps.get_config

    def other_dropout(profile):
        config = real(profile)
        return replace(config, correlation=replace(config.correlation, dropout=0.5))

    monkeypatch.setattr(chapter_sweeps, "get_config", other_dropout)
    assert shared_space_sweep(ONE_SEED, **TINY).study != base.study
    monkeypatch.setattr(chapter_sweeps, "get_config", real)
    assert shared_space_sweep(ONE_SEED, **TINY).study == base.study
    load = chapter_sweeps.load_splits

    def changed_generator(*args):  # the same ids, sizes and settings; other feature values
        splits = load(*args)
        train = splits["train"]
        features = {**train.features, "A": train.features["A"] * 1.01}
        return {**splits, "train": replace(train, features=features)}

    monkeypatch.setattr(chapter_sweeps, "load_splits", changed_generator)
    assert shared_space_sweep(ONE_SEED, **TINY).study != base.study


def test_bad_options_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="strategy='Z'"):
        shared_space_sweep(SweepSetup(seeds=[0], strategy="Z"), **TINY)
    with pytest.raises(ValueError, match="shared_dim=\\[0\\]"):
        shared_space_sweep(ONE_SEED, **{**TINY, "shared_dim": [0]})
    with pytest.raises(ValueError, match="modalities='T'"):
        shared_space_sweep(SweepSetup(seeds=[0], modalities="T"), **TINY)
    with pytest.raises(ValueError, match="train_fraction=0"):
        shared_space_sweep(ONE_SEED, **TINY, train_fraction=0)
    with pytest.raises(ValueError, match="subset of"):
        distance_sweep(distances=["hamming"])
    with pytest.raises(ValueError, match="grid='huge'"):
        distance_sweep(SweepSetup(grid="huge"))
    # A budget of 0 is refused, not replaced by the profile's default.
    with pytest.raises(ValueError, match="pretrain_epochs=0"):
        distance_sweep(ONE_SEED, distances=["cosine"], pretrain_epochs=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        shared_space_sweep(ONE_SEED, **TINY, batch_size=0)


def test_cormult_sweep_workers_finish_the_chapters_study_and_export_it(tmp_path: Path) -> None:
    storage, export = tmp_path / "sweeps.db", tmp_path / "table.csv"
    options = ["--set", "shared_time=[2]", "--set", "shared_dim=[4, 8]", "--set", "seeds=[0]",
               "--set", "epochs=1", "--device", "cpu"]  # fmt: skip
    code = main(["--sweep", "shared_space", "--storage", str(storage), "--workers", "2",
                 "--export", str(export), *options])  # fmt: skip
    assert code == 0
    study = shared_space_sweep(ONE_SEED, **TINY).study  # the chapter's study, found by its settings
    assert sweep_status(storage, study).finished
    table = load_sweep(storage, study)
    assert sorted(table["shared_dim"]) == [4, 8] and table["valid_loss"].notna().all()
    exported = pd.read_csv(export)
    assert exported["key"].tolist() == table["key"].tolist()
    assert len(set(load_sweep(storage, study)["key"])) == 2
    with pytest.raises(SystemExit, match="unexpected keyword argument 'colour'"):
        main(["--sweep", "shared_space", "--storage", str(storage), "--set", "colour=1"])
    with pytest.raises(SystemExit, match="expected name=value"):
        main(["--sweep", "distances", "--storage", str(storage), "--set", "epochs"])


def test_cormult_sweep_reports_a_tpe_run_against_n_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """It said "1 of 2 trials finished (incomplete)": the grid's size, not the trials TPE was
    asked for."""
    options = ["--sweep", "shared_space", "--storage", str(tmp_path / "sweeps.db"),
               "--set", "shared_time=[2]", "--set", "shared_dim=[4, 8]", "--set", "seeds=[0]",
               "--set", "epochs=1", "--device", "cpu", "--threads", "1",
               "--sampler", "tpe"]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert main([*options, "--n-trials", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # the worker sets its own
    out = capsys.readouterr().out
    assert "1 of 1 trials finished (complete; tpe samples --n-trials of the grid's 2 pairs)" in out
    for bad, message in (
        ([], "the tpe sampler needs --n-trials"),
        (["--n-trials", "0"], "--n-trials must be at least 1, got 0"),
    ):
        with pytest.raises(SystemExit):
            main([*options, *bad])
        assert message in capsys.readouterr().err


class _InlineWorkers:
    """Stands in for ``multiprocessing``'s spawn context: the workers of ``succeeding`` run
    in this process (no parent to die with); the others fail at once with exit code 1."""

    def __init__(self, succeeding: set[int]) -> None:
        self.succeeding = succeeding

    def Process(self, target, args):  # noqa: N802 - the name of the context's method
        succeeding = self.succeeding

        class Worker:
            exitcode: int | None = None

            def start(self) -> None:
                options, index, _ = args
                if index in succeeding:
                    target(options, index)
                self.exitcode = 0 if index in succeeding else 1

            def join(self) -> None:
                pass

        return Worker()


@pytest.mark.parametrize(
    ("succeeding", "expected"),
    [({0, 1}, 0), ({0}, 1), (set(), 1)],
    ids=["all-finish", "one-fails-after-the-grid-is-done", "all-fail-before-the-study-exists"],
)
def test_cormult_sweep_exits_1_when_a_worker_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, succeeding: set[int], expected: int
) -> None:
    workers = _InlineWorkers(succeeding)
    monkeypatch.setattr(sweep_cli.multiprocessing, "get_context", lambda _: workers)
    threads = torch.get_num_threads()
    try:
        code = main(["--sweep", "shared_space", "--storage", str(tmp_path / "sweeps.db"),
                     "--workers", "2", "--n-trials", "2", "--set", "shared_time=[2]",
                     "--set", "shared_dim=[4, 8]", "--set", "seeds=[0]", "--set", "epochs=1",
                     "--device", "cpu"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)  # a worker sets its own
    assert code == expected
