"""The training benchmark still builds and steps every model it times, the v1 references too.

Only that the steps run and compute: the figures themselves are the benchmark's to print, on
an idle machine (``benchmarks/training_benchmark.py``), never a timed test.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
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
