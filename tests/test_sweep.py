"""Sweep runner: sharding, resuming after a kill, grid changes, torn lines, types, summaries."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cormult_lib.training.sweep import (
    DISTANCE_GRIDS,
    SEEDS,
    SHARED_SPACE_GRIDS,
    grid_points,
    load_sweep,
    results_file,
    run_sweep,
    shard_path,
    summarize_sweep,
    sweep_seeds,
)

AXES = {"shared_time": (2, 8, 32), "distance": ("cosine", "euclidean")}
SEED_LIST = (0, 1)


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


def by_key(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` sorted by key, without the timing column (which differs between runs)."""
    return table.drop(columns="wall_s").sort_values("key").reset_index(drop=True)


def test_grid_points_order_and_validation() -> None:
    points = grid_points({"t": (8, 2), "o": (32, 8)})
    assert points == [{"t": 8, "o": 32}, {"t": 8, "o": 8}, {"t": 2, "o": 32}, {"t": 2, "o": 8}]
    assert [list(point) for point in points] == [["t", "o"]] * 4
    assert grid_points({}) == [{}]
    assert len(grid_points(SHARED_SPACE_GRIDS["paper"])) == 7 * 20
    assert SHARED_SPACE_GRIDS["paper"]["shared_dim"][-1] == 1000
    assert DISTANCE_GRIDS["paper"] == DISTANCE_GRIDS["quick"]
    assert SEEDS["paper"] == (0, 1, 2, 3, 4)
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


def test_shards_merge_to_the_single_run(tmp_path: Path) -> None:
    points = grid_points(AXES)
    single = run_sweep(points, SEED_LIST, fake_metrics, tmp_path / "one.csv", progress=False)
    assert len(single) == len(points) * len(SEED_LIST)
    runs = [CountingRun(), CountingRun()]
    for index, run in enumerate(runs):
        part = run_sweep(points, SEED_LIST, run, tmp_path / "sweep.csv", shard=(index, 2))
        assert len(part) == len(run.calls) == 6
    pairs = [(point, seed) for point in points for seed in SEED_LIST]
    assert runs[1].calls == pairs[1::2]
    assert not (tmp_path / "sweep.csv").exists()
    assert shard_path(tmp_path / "sweep.csv", (1, 2)) == tmp_path / "sweep.shard-1-of-2.csv"
    assert (tmp_path / "sweep.shard-0-of-2.csv").exists()
    merged = load_sweep(tmp_path / "sweep.csv")
    assert merged["key"].is_unique and merged["key"].is_monotonic_increasing
    pd.testing.assert_frame_equal(by_key(merged), by_key(single))


def test_resume_after_kill_runs_only_the_rest(tmp_path: Path) -> None:
    points, path = grid_points(AXES), tmp_path / "sweep.csv"
    killed = CountingRun(fail_on_call=4)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(points, SEED_LIST, killed, path, progress=False)
    assert len(pd.read_csv(path)) == 3
    resumed = CountingRun()
    table = run_sweep(points, SEED_LIST, resumed, path, progress=False)
    assert len(resumed.calls) == len(points) * len(SEED_LIST) - 3
    assert resumed.calls[0] == killed.calls[3]  # the killed pair runs again
    reference = run_sweep(points, SEED_LIST, fake_metrics, tmp_path / "ref.csv", progress=False)
    pd.testing.assert_frame_equal(by_key(table), by_key(reference))
    again = CountingRun()
    run_sweep(points, SEED_LIST, again, path, progress=False)
    assert again.calls == []


def test_a_changed_grid_runs_only_new_pairs(tmp_path: Path) -> None:
    path = tmp_path / "sweep.csv"
    run_sweep(grid_points(AXES), SEED_LIST, fake_metrics, path, progress=False)
    run = CountingRun()
    wider = {"shared_time": (2, 8, 32, 128), "distance": ("cosine", "euclidean")}
    table = run_sweep(grid_points(wider), SEED_LIST, run, path, progress=False)
    assert {settings["shared_time"] for settings, _ in run.calls} == {128}
    assert len(run.calls) == 2 * len(SEED_LIST)
    assert len(table) == 8 * len(SEED_LIST)
    narrower = CountingRun()
    kept = run_sweep(
        grid_points({"shared_time": (2,), "distance": ("cosine",)}), (0,), narrower, path
    )
    assert narrower.calls == [] and len(kept) == len(table)


def test_a_torn_last_line_is_dropped_with_a_warning_and_rerun(tmp_path: Path) -> None:
    points, path = grid_points(AXES), tmp_path / "sweep.csv"
    reference = run_sweep(points, SEED_LIST, fake_metrics, path, progress=False)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:25])  # killed while writing the last row
    with pytest.warns(RuntimeWarning, match=r"sweep\.csv: dropped 1 incomplete last line"):
        assert len(load_sweep(path)) == len(reference) - 1
    run = CountingRun()
    with pytest.warns(RuntimeWarning, match="dropped 1 incomplete"):
        table = run_sweep(points, SEED_LIST, run, path, progress=False)
    assert run.calls == [(points[-1], SEED_LIST[-1])]
    pd.testing.assert_frame_equal(by_key(table), by_key(reference))
    assert path.read_text().count("\n") == len(reference) + 1


def test_settings_types_round_trip(tmp_path: Path) -> None:
    axes = {
        "i": (1, 2),
        "f": (0.5, 1.0),
        "s": ("1", "a b,c"),
        "b": (True,),
        "mixed": (None, 3, "3"),
        "none": (None,),
    }
    path = tmp_path / "types.csv"

    def run_point(settings: dict, seed: int) -> dict[str, float]:
        return {"m": settings["i"] + settings["f"] + seed}

    table = run_sweep(grid_points(axes), (7,), run_point, path, progress=False)
    for loaded in (table, load_sweep(path), run_sweep([], (), run_point, path, progress=False)):
        assert loaded["i"].dtype == "int64" and loaded["f"].dtype == "float64"
        assert loaded["b"].dtype == bool and loaded["seed"].dtype == "int64"
        assert all(type(value) is str for value in loaded["s"])
        assert loaded["none"].tolist() == [None] * len(loaded)
        assert {(type(v), v) for v in loaded["mixed"]} == {
            (type(None), None),
            (int, 3),
            (str, "3"),
        }
    assert table[["i", "f", "s", "b", "mixed", "none"]].to_dict("records") == grid_points(axes)
    assert table["m"].tolist() == [p["i"] + p["f"] + 7 for p in grid_points(axes)]


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    points, path = grid_points(AXES), tmp_path / "sweep.csv"
    with pytest.raises(ValueError, match="shard"):
        run_sweep(points, SEED_LIST, fake_metrics, path, shard=(2, 2))
    with pytest.raises(TypeError, match="shard"):
        run_sweep(points, SEED_LIST, fake_metrics, path, shard=(0,))
    with pytest.raises(TypeError, match=r"points\[1\]\['distance'\]"):
        run_sweep([{"distance": "a"}, {"distance": ("a",)}], SEED_LIST, fake_metrics, path)
    with pytest.raises(TypeError, match="seeds"):
        run_sweep(points, (0.5,), fake_metrics, path)

    def uneven(settings: dict, seed: int) -> dict[str, float]:
        metrics = fake_metrics(settings, seed)
        return metrics if settings["shared_time"] == 2 else {"auc": metrics["auc"]}

    with pytest.raises(ValueError, match=r"'shared_time': 8.*seed=0.*metrics \['auc'\]"):
        run_sweep(points, SEED_LIST, uneven, path, progress=False)
    assert len(load_sweep(path)) == 4  # the pairs before the bad one are kept
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"other\.csv.*missing \['seed', 'wall_s', 'key'\]"):
        run_sweep(points, SEED_LIST, fake_metrics, other)
    with pytest.raises(ValueError, match="settings columns"):
        run_sweep(grid_points({"t": (1,)}), SEED_LIST, fake_metrics, path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_sweep(tmp_path / "missing.csv")


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


def test_results_file_changes_with_the_fixed_settings(tmp_path: Path) -> None:
    base = {"epochs": 3, "strategy": "B", "train_fraction": 0.5, "modalities": "TAV"}
    path = results_file(tmp_path, "06_sweep", base)
    assert path.parent == tmp_path and path.name.startswith("06_sweep-") and path.suffix == ".csv"
    # Same settings in another order: the same file, so a rerun finds its rows.
    assert results_file(tmp_path, "06_sweep", dict(reversed(base.items()))) == path
    # Any changed fixed setting: another file, so no stale row is skipped as "finished".
    for key, value in [("epochs", 4), ("strategy", "D"), ("train_fraction", 1.0)]:
        assert results_file(tmp_path, "06_sweep", {**base, key: value}) != path
    assert results_file(tmp_path, "06_sweep", {**base, "data_path": None}) != path
    with pytest.raises(TypeError, match="fixed settings"):
        results_file(tmp_path, "06_sweep", {"device": object()})


def test_sweep_seeds_default_and_checked() -> None:
    assert sweep_seeds(None, "quick") == list(SEEDS["quick"])
    assert sweep_seeds(None, "paper") == [0, 1, 2, 3, 4]
    assert sweep_seeds([3, 7], "quick") == [3, 7]
    for bad in ([], [1, 1], [-1], [1.5], "01"):
        with pytest.raises(ValueError, match="seeds"):
            sweep_seeds(bad, "quick")
    with pytest.raises(ValueError, match="grid"):
        sweep_seeds(None, "huge")
