"""Helpers of chapter 07: evaluation subsets, MulT from a config, seed plots, timed training."""

from __future__ import annotations

from dataclasses import replace

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from cormult_lib.config import DataConfig, get_config
from cormult_lib.data.synthetic import DISCREPANCIES, correlation_subsets, make_synthetic_splits
from cormult_lib.models.mult import build_mult
from cormult_lib.tutorial.plots import plot_agreement, plot_coefficients, plot_seed_bars
from cormult_lib.tutorial.timing import median_ratio, median_seconds

matplotlib.use("Agg")


def test_correlation_subsets_partition_the_split():
    test = make_synthetic_splits(DataConfig(n_samples=300), seed=0)["test"]
    subsets = correlation_subsets(test)
    assert list(subsets) == ["strong", "weak", *[f"weak:{k}" for k in DISCREPANCIES]]
    assert (subsets["strong"] ^ subsets["weak"]).all(), "strong and weak cover every sample once"
    kinds = np.stack([subsets[f"weak:{k}"] for k in DISCREPANCIES])
    np.testing.assert_array_equal(kinds.sum(0), subsets["weak"])
    expected = (test.meta["discrepancy"] == "voice") & (test.meta["correlation"] == "weak")
    np.testing.assert_array_equal(subsets["weak:voice"], expected.to_numpy())
    with pytest.raises(ValueError, match="correlation_subsets needs split.meta"):
        correlation_subsets(replace(test, meta=None))


def test_build_mult_follows_the_config():
    dims = {"T": 300, "A": 74, "V": 35}
    config = replace(get_config("quick").model, hidden_dim=8, num_heads=2, pooling="mean")
    model = build_mult(dims, config, "TV", head="classification")
    assert model.modalities == ("T", "V") and model.head == "classification"
    features = {m: torch.randn(2, 6, d) for m, d in dims.items()}
    masks = {m: torch.ones(2, 6, dtype=torch.bool) for m in dims}
    assert model.eval()(features, masks).shape == (2, 7)
    hidden = {p.shape[-1] for name, p in model.named_parameters() if name.endswith("norm.weight")}
    assert hidden <= {8, 16}, hidden  # d, or 2d in the memory transformers


def _runs() -> pd.DataFrame:
    rows = []
    for model, offset in (("A", 0.0), ("B", 0.2)):
        for seed in (0, 1, 2):
            for subset in ("all", "weak"):
                value = 0.5 + offset + 0.1 * seed
                rows.append(
                    {"model": model, "seed": seed, "subset": subset, "mae": value, "corr": value}
                )
    return pd.DataFrame(rows)


def test_seed_bars_show_the_mean_with_sd_error_bars():
    runs = _runs()
    fig = plot_seed_bars(runs, metrics=("mae", "corr"))
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == pytest.approx([0.6, 0.8]), "bars are means over the three seeds"
    spans = sorted(abs(line.get_ydata()[1] - line.get_ydata()[0]) for line in ax.lines)
    assert spans == pytest.approx([0.2, 0.2]), "error bars span mean - sd .. mean + sd"
    assert "over 3 seeds" in fig._suptitle.get_text()
    assert all(ax.get_ylim()[0] <= 0 for ax in fig.axes), "bars start at 0"
    with_n = plot_seed_bars(runs.assign(n=90), metrics=("corr",))
    assert "(all, n=90)" in with_n._suptitle.get_text()
    one_seed = plot_seed_bars(runs[runs["seed"] == 0], metrics=("mae",))
    assert "one seed: no spread" in one_seed._suptitle.get_text()
    with pytest.raises(ValueError, match=r"no row of subset 'voice'; its subsets: \['all', "):
        plot_seed_bars(runs, ("mae",), subset="voice")  # an empty figure, "one seed", before


def test_median_seconds_can_time_training_steps():
    weight = torch.ones(3, requires_grad=True)

    def step(x: torch.Tensor) -> None:
        (weight * x).sum().backward()

    median_seconds({"step": step}, torch.ones(3), repeats=2, autograd=True)
    assert torch.equal(weight.grad, torch.full((3,), 3.0)), "warm-up and two timed steps"
    # Without autograd=True the timed steps run under no_grad: backward has no graph.
    with pytest.raises(RuntimeError, match="does not require grad"):
        median_seconds({"step": step}, torch.ones(3), repeats=1)


def test_median_ratio_pairs_the_rounds_and_decides_targets_by_its_interval():
    rng = np.random.default_rng(0)
    fast = rng.uniform(0.01, 0.1, 20)  # a machine whose speed varies tenfold between rounds
    exact = median_ratio(2 * fast, fast)
    # Paired: every resample's ratio of medians is exactly 2; unpaired it would spread widely.
    assert (exact.ratio, exact.low, exact.high, exact.n) == pytest.approx((2, 2, 2, 20))
    assert exact.text() == "2.00 [2.00, 2.00] (n=20 rounds)"
    assert exact.against(2.5, at_most=True) == "met"
    assert exact.against(2.5, at_most=False) == "missed"
    slow = fast * rng.normal(1.2, 0.05, 20)
    noisy = median_ratio(slow, fast)
    assert noisy.ratio == pytest.approx(np.median(slow) / np.median(fast))
    assert noisy.low < 1.2 < noisy.high
    assert noisy.against(1.2, at_most=True).startswith("undecided")
    few = median_ratio(fast[:9] * 3, fast[:9])
    assert few.ratio == pytest.approx(3) and np.isnan(few.low)
    assert few.text() == "3.00 (no interval, n=9 rounds)"
    assert few.against(2, at_most=False) == "undecided (no interval)"
    with pytest.raises(ValueError, match="equally long"):
        median_ratio(fast, fast[:5])


def test_box_plots_by_discrepancy_name_each_groups_n_and_what_they_leave_out():
    scores = pd.DataFrame({
        "discrepancy": ["none", "none", "none", "voice", "voice"],
        "agreement": [0.1, np.nan, -0.2, -1.0, -2.0],
        "cor_TA": [0.5, np.nan, 0.4, 0.1, 0.2],
        "cor_TV": [0.5, 0.3, 0.4, 0.1, np.nan],
    })  # fmt: skip
    fig = plot_agreement(scores)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["none\n(n=2, 1 undefined)", "voice\n(n=2)"]
    real = scores[["cor_TA", "cor_TV"]].fillna(0.0)
    fig = plot_coefficients(real, real - 0.5, scores.drop(columns="agreement"))
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert labels == ["none\n(n=2, 1 undefined)", "voice\n(n=1, 1 undefined)"]
