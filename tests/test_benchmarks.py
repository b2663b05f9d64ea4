"""The training benchmark still builds and steps every model it times, the v1 references too;
the pre-training epoch benchmark runs and compares packed with padded epochs; the evaluator seed
scan still runs, and the quick evaluator learns for the seeds it names.

Of the training benchmark only that the steps run and compute: the speed figures are the
benchmark's to print, on an idle machine (``benchmarks/training_benchmark.py``), never a timed
test.
"""

import re
import sys
from pathlib import Path

import pytest
import torch

from cormult_lib.config import get_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import evaluator_seed_scan  # noqa: E402
import pretrain_epoch_benchmark  # noqa: E402
import training_benchmark  # noqa: E402


@pytest.mark.parametrize("setting", ["quick", "official"])
def test_every_timed_step_runs_and_computes(setting: str) -> None:
    steps = training_benchmark.build_models(
        setting, torch.device("cpu"), reference=True, compile_models=False
    )
    expected = {"MulT", "MulT v1"} | (
        set() if setting == "official" else {"CorMulT", "evaluator", "evaluator v1", "CLIP-MSA"}
    )
    assert set(steps) == expected
    for name, (step, batch) in steps.items():
        # One step under the FLOP counter: it raises if a model no longer takes the
        # benchmark's inputs; build_models above raises if one no longer takes its options.
        flops = training_benchmark.flops_per_sample(step, batch, torch.device("cpu"))
        assert flops > 1e5, (name, flops)


def test_the_epoch_benchmark_compares_packed_and_padded_epochs(monkeypatch, capsys) -> None:
    argv = ["pretrain_epoch_benchmark", "--samples", "30", "--epochs", "1", "--compare-padded"]
    monkeypatch.setattr(sys, "argv", [*argv, "--device", "cpu"])
    pretrain_epoch_benchmark.main()
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("30 training samples") for line in lines), lines
    pattern = r"one-epoch runs, alternating, 1 of each: median [\d.]+ s packed, [\d.]+ s padded"
    assert re.fullmatch(pattern + r" \([\d.]+x\)", lines[-1]), lines[-1]


def test_the_seed_scan_reports_every_dropout_and_seed() -> None:
    table = evaluator_seed_scan.scan("quick", seeds=[0], dropouts=[0.1, 0.0], epochs=1)
    assert list(zip(table["dropout"], table["seed"], strict=True)) == [(0.1, 0), (0.0, 0)]
    assert (table["epochs_run"] == 1).all()
    # Each row trained with its own dropout: the two runs of seed 0 end in other weights.
    assert table["first_loss"].nunique() == 2, table
    learned = (table["auc_A"] > evaluator_seed_scan.LEARNED_AUC) & (
        table["auc_B"] > evaluator_seed_scan.LEARNED_AUC
    )
    assert (table["learned"] == learned).all()


def test_the_quick_evaluator_learns_for_seeds_the_authors_dropout_left_untrained() -> None:
    # Seeds 1 and 2 are two that ended untrained (ROC-AUC about 0.55) with dropout 0.1: the
    # quick profile's rate must let them learn, or chapter 04's check tests the seed.
    dropout = get_config("quick").correlation.dropout
    table = evaluator_seed_scan.scan("quick", seeds=[1, 2], dropouts=[dropout])
    assert table["learned"].all(), table


def test_the_breakdown_makes_attention_and_random_numbers_free_only_inside_the_step() -> None:
    """Free attention drops the attention products from the counted FLOPs (and only while the
    step runs); with free random numbers a step no longer advances torch's generator."""
    steps = training_benchmark.build_models(
        "official", torch.device("cpu"), reference=False, compile_models=False
    )
    step, batch = steps["MulT"]
    cpu = torch.device("cpu")
    full = training_benchmark.flops_per_sample(step, batch, cpu)
    free = training_benchmark.flops_per_sample(
        training_benchmark.with_free_part(step, "attention"), batch, cpu
    )
    assert free < full  # the attention products are gone
    assert training_benchmark.flops_per_sample(step, batch, cpu) == full  # and back after
    free_draws = training_benchmark.with_free_part(step, "random numbers")
    for run, draws in ((free_draws, False), (step, True)):
        run(torch.empty(0))  # the pool's first draw
        state = torch.get_rng_state()
        run(torch.empty(0))
        assert torch.equal(torch.get_rng_state(), state) is not draws
