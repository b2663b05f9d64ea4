"""Data-parallel training through ``fit``: 2 gloo processes under torchrun vs one process.

Every run is :mod:`cormult_lib.tutorial.ddp_demo` in a subprocess (every rank needs a process
of its own), on the CPU with one thread per process, with the global batch
16: 8 samples per rank with 2 ranks. The training split (112 samples) is a multiple of 16, and
``make_distributed_loader`` shards the same seeded permutation in both cases, so the ranks'
``k``-th batches together are exactly the single process's ``k``-th batch and DDP's averaged
gradient is the full batch's gradient. The two runs then differ only in float summation order
(two means of 8 averaged vs one mean of 16), a few units in the last place per step, which
stay far below ``TOLERANCE`` over the 28 Adam steps. Measured: weights differ by at most 4.5e-8,
validation predictions by 1.2e-7, the validation MAE and correlation by 4e-9, the logged losses
by 1e-7. (The demo's MLP uses GELU for this: with ReLU one hidden unit's bias ended 5e-4
apart, rounding noise magnified by Adam's normalised step; see the demo's docstring.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from cormult_lib.config import DataConfig
from cormult_lib.data.synthetic import make_synthetic_splits
from cormult_lib.training import distributed
from cormult_lib.training.distributed import (
    all_reduce_means,
    cleanup,
    init_distributed,
    is_main_process,
    make_distributed_loader,
)
from cormult_lib.training.loop import VALID_SEED_OFFSET, fit
from cormult_lib.tutorial.ddp_demo import MeanPoolRegressor, l1_loss

ROOT = Path(__file__).resolve().parents[1]
DEMO = "cormult_lib.tutorial.ddp_demo"
EPOCHS = 4
COMMON = ["--n-samples", "160", "--seq-len", "12", "--batch-size", "16", "--device", "cpu"]
# Absolute tolerance for weights, validation predictions and metrics, single vs 2 ranks; see
# the module docstring for why they may differ at all and for the measured differences.
TOLERANCE = 1e-5
TIMEOUT_S = 120
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

needs_gloo = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="this torch has no torch.distributed or no gloo backend; 2-process CPU runs need both",
)


def launch(out: Path, *options: str, ranks: int | None = 2, script: Path | None = None) -> None:
    """Run the demo into ``out``: under torchrun with ``ranks`` gloo processes, or plain; or,
    under torchrun, ``script`` with ``--out`` alone."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    if script is not None:
        command = [*launcher, f"--nproc_per_node={ranks}", str(script), "--out", str(out)]
    elif ranks is None:
        command = [sys.executable, "-m", DEMO, "--out", str(out), *COMMON, *options]
    else:
        command = [*launcher, f"--nproc_per_node={ranks}", "-m", DEMO, "--backend", "gloo"]
        command += ["--out", str(out), *COMMON, *options]
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"  # what torchrun gives each rank; the same for the single run
    # A session of its own, so a hung run can be killed together with its worker processes.
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(command)} ran past {TIMEOUT_S} s:\n{output[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Output folders: ``single``; ``two`` (with a checkpoint); ``resumed`` (2 epochs, then
    relaunched for all ``EPOCHS`` on the same checkpoint)."""
    base = tmp_path_factory.mktemp("ddp")
    folders = {name: base / name for name in ("single", "two", "resumed")}
    epochs = ["--epochs", str(EPOCHS)]
    launch(folders["single"], *epochs, ranks=None)
    launch(folders["two"], *epochs, "--checkpoint", str(base / "two_ck" / "ck.pt"))
    resumed_ck = ["--checkpoint", str(base / "resumed_ck" / "ck.pt")]
    launch(folders["resumed"], "--epochs", "2", *resumed_ck)
    launch(folders["resumed"], *epochs, *resumed_ck)
    return {**folders, "checkpoints": base / "two_ck"}


def load_rank(folder: Path, rank: int) -> dict:
    return torch.load(folder / f"rank{rank}.pt", weights_only=True)


def max_weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def without_seconds(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "seconds"}


@needs_gloo
def test_both_ranks_end_with_identical_weights_and_history(runs):
    rank0, rank1 = load_rank(runs["two"], 0), load_rank(runs["two"], 1)
    for key, value in rank0["state_dict"].items():
        assert torch.equal(value, rank1["state_dict"][key]), key
    # Rank 0's row is broadcast, so even the timings agree.
    assert rank0["history"] == rank1["history"]
    assert rank0["best_epoch"] == rank1["best_epoch"]
    assert rank0["history"]["epoch"] == list(range(1, EPOCHS + 1))
    assert {"train_mse", "valid_mse"} <= set(rank0["history"])


@needs_gloo
def test_two_ranks_match_one_process_with_the_same_global_batch(runs):
    single, two = load_rank(runs["single"], 0), load_rank(runs["two"], 0)
    assert max_weight_difference(single["state_dict"], two["state_dict"]) < TOLERANCE
    assert single["best_epoch"] == two["best_epoch"]
    for key in ("train_loss", "valid_loss", "train_mse", "valid_mse", "lr"):
        np.testing.assert_allclose(two["history"][key], single["history"][key], atol=TOLERANCE)
    metrics = {
        name: json.loads((runs[name] / "metrics.json").read_text()) for name in ("single", "two")
    }
    assert metrics["single"]["world_size"] == 1 and metrics["two"]["world_size"] == 2
    for key in ("mae", "corr"):
        assert metrics["two"][key] == pytest.approx(metrics["single"][key], abs=TOLERANCE)
    pred = {
        name: torch.load(runs[name] / "valid_predictions.pt", weights_only=True)
        for name in ("single", "two")
    }
    torch.testing.assert_close(pred["two"]["pred"], pred["single"]["pred"], atol=TOLERANCE, rtol=0)
    assert torch.equal(pred["two"]["truth"], pred["single"]["truth"])


@needs_gloo
def test_only_rank_0_writes_the_checkpoint_with_every_ranks_random_streams(runs):
    assert [p.name for p in runs["checkpoints"].iterdir()] == ["ck.pt"]  # no temporary file
    state = torch.load(runs["checkpoints"] / "ck.pt", weights_only=True)
    assert state["epoch"] == EPOCHS and state["settings"]["world_size"] == 2
    assert len(state["rng_per_rank"]) == 2
    final = load_rank(runs["two"], 0)["state_dict"]
    assert all(torch.equal(state["best_state"][k], final[k]) for k in final)


@needs_gloo
def test_a_resumed_two_rank_run_ends_where_an_uninterrupted_one_does(runs):
    straight, resumed = load_rank(runs["two"], 0), load_rank(runs["resumed"], 0)
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert without_seconds(straight["history"]) == without_seconds(resumed["history"])


@pytest.fixture(scope="module")
def worker_outcomes(tmp_path_factory) -> list[dict]:
    """Each rank's report of ``tests/ddp_nonfinite_worker.py`` (2 gloo ranks)."""
    out = tmp_path_factory.mktemp("nonfinite")
    launch(out, script=ROOT / "tests" / "ddp_nonfinite_worker.py")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@needs_gloo
def test_a_non_finite_loss_on_one_rank_stops_every_rank(worker_outcomes):
    """Before, the rank with the NaN raised alone and the other waited in the next collective
    until torchrun's timeout; ``launch`` fails a run that takes over ``TIMEOUT_S``."""
    outcomes = worker_outcomes
    for case in ("training", "validation"):
        assert outcomes[1][case].startswith(f"epoch 1: the {case} loss is nan on a batch")
        assert outcomes[0][case].startswith(
            f"epoch 1: the {case} loss is not finite on another rank's batch"
        )



def _first_draw(seed: int) -> int:
    return int(torch.randint(2**31, (1,), generator=torch.Generator().manual_seed(seed)))


@needs_gloo
def test_each_rank_draws_its_own_loss_streams(worker_outcomes):
    """Negatives drawn for rank 1's shard must not repeat rank 0's; rank 0 keeps ``seed``."""
    draws = [outcome["draws"] for outcome in worker_outcomes]
    assert draws[0]["training"] == _first_draw(0)
    assert draws[0]["validation"] == _first_draw(VALID_SEED_OFFSET)
    assert draws[0]["training"] != draws[1]["training"]
    assert draws[0]["validation"] != draws[1]["validation"]


def test_init_distributed_without_torchrun_is_a_single_process(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.local_rank) == (0, 1, 0)
    assert info.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not (dist.is_available() and dist.is_initialized())
    assert is_main_process()
    cleanup()  # nothing to tear down
    assert all_reduce_means({"loss": 6.0}, 3, torch.device("cpu")) == ({"loss": 2.0}, 3)

    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="WORLD_SIZE"):
        init_distributed()


def test_rank_shards_together_make_the_single_process_batches(monkeypatch):
    """The sharding the 2-rank comparison relies on, checked without processes."""
    split = make_synthetic_splits(DataConfig(n_samples=60, seq_len=8), seed=3)["train"]
    assert len(split) == 42

    def batches(rank: int, world_size: int, batch_size: int, **options) -> list[list[int]]:
        monkeypatch.setattr(distributed, "rank_and_world_size", lambda: (rank, world_size))
        loader = make_distributed_loader(split, batch_size, **options)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(3)
        return [batch["index"].tolist() for batch in loader]

    single = batches(0, 1, 6, shuffle=True, seed=5)
    shards = [batches(rank, 2, 3, shuffle=True, seed=5) for rank in (0, 1)]
    assert sorted(sum(single, [])) == list(range(42))
    assert [sorted(a + b) for a, b in zip(*shards, strict=True)] == [sorted(b) for b in single]
    assert single != batches(0, 1, 6, shuffle=True, seed=6)  # the seed matters

    # Validation shards: every sample exactly once, even when the ranks get unequal shares.
    valid = [batches(rank, 4, 5, shuffle=False, even=False) for rank in range(4)]
    assert sorted(i for shard in valid for batch in shard for i in batch) == list(range(42))
    with pytest.raises(ValueError, match="even=False"):
        batches(0, 2, 5, shuffle=True, even=False)


def test_fit_reshuffles_a_distributed_sampler_every_epoch_and_needs_a_group_to_be_told_so():
    split = make_synthetic_splits(DataConfig(n_samples=30, seq_len=8), seed=2)["train"]
    seen: list[int] = []

    def recording(model, batch, generator):
        if model.training:
            seen.extend(batch["index"].tolist())
        return l1_loss(model, batch, generator)

    train = make_distributed_loader(split, 7, shuffle=True, seed=4)  # 21 samples, 3 batches
    valid = make_distributed_loader(split, 7, shuffle=False, even=False)
    options = dict(epochs=2, lr=1e-3, progress=False)
    model = MeanPoolRegressor(split.dims(), hidden=4)
    fit(model, train, valid, recording, **options)
    # DistributedSampler permutes with seed + epoch; fit numbers epochs from 1.
    orders = [
        torch.randperm(len(split), generator=torch.Generator().manual_seed(4 + epoch)).tolist()
        for epoch in (1, 2)
    ]
    assert seen == orders[0] + orders[1] and orders[0] != orders[1]

    with pytest.raises(RuntimeError, match="init_distributed"):
        fit(model, train, valid, l1_loss, distributed=True, **options)


@pytest.mark.parametrize(("device", "backend", "expected"), [
    ("cpu", None, "gloo"),
    ("cpu", "gloo", "gloo"),
    ("auto", None, None),
    ("auto", "nccl", "nccl"),
])
def test_the_demo_on_the_cpu_joins_a_gloo_group_even_where_cuda_exists(
    monkeypatch, tmp_path, device, backend, expected
):
    """``--device cpu`` keeps its tensors on the CPU, which NCCL cannot reduce: the demo asks
    for gloo whatever the hardware (``None`` lets init_distributed pick by hardware)."""
    from cormult_lib.tutorial import ddp_demo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    asked = []
    monkeypatch.setattr(ddp_demo, "init_distributed", lambda b: asked.append(b) or "info")
    monkeypatch.setattr(ddp_demo, "train", lambda args, info: None)
    monkeypatch.setattr(ddp_demo, "cleanup", lambda: None)
    argv = ["--out", str(tmp_path), "--device", device]
    ddp_demo.main(argv + ([] if backend is None else ["--backend", backend]))
    assert asked == [expected]


def test_the_demo_refuses_nccl_on_the_cpu(tmp_path):
    from cormult_lib.tutorial import ddp_demo

    with pytest.raises(ValueError, match="--device cpu needs gloo"):
        ddp_demo.main(["--out", str(tmp_path), "--device", "cpu", "--backend", "nccl"])
