"""The rule that chooses a point of a complete sweep (chapter 06): not measurably worse, not
measurably slower, then the lowest loss; timing noise alone must not change the choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cormult_lib.stats import verdict
from cormult_lib.training.sweep_choice import choose_point

KEYS = ["shared_time", "shared_dim"]


def trials(points: dict[tuple[int, int], tuple[float, float]], seeds=5, time_sd=0.03, seed=0):
    """A trial table: for each point ``(loss, seconds)`` means, per seed with small noise."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "shared_time": t,
            "shared_dim": o,
            "seed": s,
            "valid_loss": loss + rng.normal(0, 1e-4),
            "epoch_s": seconds + rng.normal(0, time_sd),
        }
        for (t, o), (loss, seconds) in points.items()
        for s in range(seeds)
    ]
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame, tolerance: float = 0.02):
    return choose_point(table, KEYS, loss="valid_loss", seconds="epoch_s", tolerance=tolerance)


def chosen(table: pd.DataFrame, tolerance: float = 0.02) -> tuple[int, int]:
    row = choose(table, tolerance).choice
    return int(row.shared_time), int(row.shared_dim)


def test_timing_noise_does_not_decide():
    """Equal times up to noise: the lowest loss wins whichever point the noise made faster
    (taking the fastest point, the rule this replaced, flips between these runs)."""
    points = {(8, 8): (0.300, 0.5), (32, 8): (0.1921, 0.5), (32, 32): (0.1904, 0.5)}
    choices, fastest = set(), set()
    for run in range(6):
        result = choose(trials(points, seed=run))
        choices.add((int(result.choice.shared_time), int(result.choice.shared_dim)))
        fastest.add((int(result.fastest.shared_time), int(result.fastest.shared_dim)))
        assert result.points.set_index(KEYS).loc[(8, 8), "worse"]
    assert choices == {(32, 32)}
    assert len(fastest) == 2, "the noise should make either point the faster one in some run"


def test_a_measurably_slower_point_gives_way_to_an_equally_good_faster_one():
    """The best loss is slow; a point not measurably worse by 2% and twice as fast wins."""
    table = trials({(32, 128): (0.1900, 1.0), (32, 8): (0.1905, 0.5), (2, 8): (0.36, 0.4)})
    result = choose(table)
    assert (int(result.best.shared_dim), int(result.fastest.shared_dim)) == (128, 8)
    points = result.points.set_index(KEYS)
    assert points.loc[(32, 128), "slower"] and points.loc[(2, 8), "worse"]
    assert chosen(table) == (32, 8)
    # with no tolerance the 0.0005 loss gap is measurable: only the best point is left
    assert chosen(table, tolerance=0.0) == (32, 128)


def test_one_seed_reads_point_estimates():
    table = trials({(8, 8): (0.20, 0.50), (32, 8): (0.19, 0.60)}, seeds=1, time_sd=0.0)
    result = choose(table, tolerance=0.1)  # 0.20 is within 10% of 0.19; 0.60 is 20% slower
    assert np.isnan(result.comparisons[0].ci_low)
    assert result.points["slower"].tolist() == [False, True]
    assert chosen(table, tolerance=0.1) == (8, 8)
    assert chosen(table, tolerance=0.3) == (32, 8)  # now neither is slower: the lower loss
    assert "one seed" in result.sentences()[0]
    lines = result.interval_lines()
    assert all("(no interval) (1 seed); point estimate" in line for line in lines), lines
    assert not any("nan" in line for line in lines)


def test_sentences_and_comparisons_come_from_the_numbers():
    table = trials({(32, 128): (0.1900, 1.0), (32, 8): (0.1905, 0.5), (2, 8): (0.36, 0.4)})
    result = choose(table)
    lines = result.sentences()
    choice = result.choice
    assert lines[2] == (
        f"chosen (32, 8), the lowest loss of those: {choice['loss']:.4f}, "
        f"{choice['seconds']:.3f} s"
    )
    assert "1 point(s) not measurably slower" in lines[1]
    assert f"margin {0.02 * result.best['loss']:.4f}" in lines[0]
    assert f"margin {0.02 * result.fastest['seconds']:.3f} s" in lines[1]
    assert [c.subset for c in result.comparisons] == ["validation loss"] * 2 + ["epoch time"]
    assert result.comparisons[-1].verdict == "b better"  # (32, 128) - (32, 8) time
    # the rule's own call on each interval, with the margins in the metrics' units
    assert result.margins == {
        "valid_loss": pytest.approx(0.02 * result.best["loss"]),
        "epoch_s": pytest.approx(0.02 * result.fastest["seconds"]),
    }
    calls = [line.rsplit(": ", 1)[1] for line in result.interval_lines()]
    assert calls == ["worse", "kept", "slower"]  # (2, 8) loss, (32, 8) loss, (32, 128) time
    # chapter 10 re-reads stored verdicts from metric names: both must count lower as better
    assert all(verdict(c.ci_low, c.ci_high, c.metric) == c.verdict for c in result.comparisons)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(index=3), r"\(32, 8\).*lack some of the seeds"),
        (lambda t: pd.concat([t, t.iloc[:1]]), "appear twice"),
        (lambda t: t.drop(columns="epoch_s"), "epoch_s"),
        (lambda t: t.assign(valid_loss=t["valid_loss"].where(t["seed"] > 0)), "valid_loss: non"),
        (lambda t: t.iloc[:0], "no trials"),
    ],
)
def test_bad_tables_are_refused(change, message):
    table = trials({(8, 8): (0.2, 0.5), (32, 8): (0.19, 0.5)}, seeds=3)
    with pytest.raises(ValueError, match=message):
        choose(change(table))


def test_negative_tolerance_and_no_keys_are_refused():
    with pytest.raises(ValueError, match="tolerance"):
        choose(trials({(8, 8): (0.2, 0.5)}), tolerance=-0.1)
    with pytest.raises(ValueError, match="keys"):
        choose_point(trials({(8, 8): (0.2, 0.5)}), [], loss="valid_loss", seconds="epoch_s",
                     tolerance=0.02)


def test_a_none_setting_is_a_point_of_its_own_named_none():
    """Pandas' grouping dropped a None key, so a repeated (None, seed) pair slipped past the
    check into "Index contains duplicate entries", and the point was named (nan); it merged
    True with 1 into one point that appeared twice."""
    table = pd.DataFrame(
        {
            "lr": pd.Series([None, None, 0.1, 0.1, 0.01, 0.01], dtype=object),
            "seed": [0, 1] * 3,
            "loss": [0.40, 0.42, 0.60, 0.61, 0.70, 0.74],
            "s": [1.0] * 6,
        }
    )
    result = choose_point(table, ["lr"], loss="loss", seconds="s", tolerance=0.0)
    assert result.points["lr"].tolist() == [None, 0.01, 0.1]  # a missing value first
    assert result.points["loss"].tolist() == pytest.approx([0.41, 0.72, 0.605])
    assert result.choice["lr"] is None and result.points["chosen"].tolist() == [True, False, False]
    assert result.sentences()[2].startswith("chosen (None), the lowest loss of those: 0.4100")
    assert [(c.a, c.b) for c in result.comparisons] == [("(0.01)", "(None)"), ("(0.1)", "(None)")]
    twice = pd.concat([table, table.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"1 \(point, seed\) pair\(s\) appear twice or more: "
                       r"\['\(None\) seed 0'\]"):  # fmt: skip
        choose_point(twice, ["lr"], loss="loss", seconds="s", tolerance=0.0)
    flags = table.iloc[:4].assign(lr=pd.Series([True, True, 1, 1], dtype=object))
    result = choose_point(flags, ["lr"], loss="loss", seconds="s", tolerance=0.0)
    assert [type(v) for v in result.points["lr"]] == [bool, int]
    assert result.choice["lr"] is True and result.sentences()[2].startswith("chosen (True)")
