"""Seconds per pre-training epoch of the correlation evaluator at the paper's scale.

The CorMulT paper (Table 5) reports 41 s per epoch for about 2,300 CMU-MOSEI samples on its
GPU. This script pre-trains the ``paper`` evaluator (hidden 128, 3 layers, (t, o) = (64, 200),
batch 24, strategy D) on synthetic samples with CMU-MOSEI's MMSA shapes (50 steps; BERT text
768, COVAREP audio 74, Facet vision 35) and prints the wall time of each epoch.

    .venv/bin/python benchmarks/pretrain_epoch_benchmark.py --samples 2300 --epochs 2

``--count-flops`` also counts the FLOPs of one epoch (``FlopCounterMode``, training and
validation) and prints the seconds an epoch would take at this process's ``1024 x 1024``
float32 matmul throughput: the floor for the operations this implementation runs (packing
skips the padded steps' per-step work, so the count is below that of the padded computation).
``--compare-padded`` then times, side by side in this process, one-epoch runs with the per-step
layers on the real steps only (packed, the default) and on the padded layout
(:func:`~cormult_lib.nn.packing.padded_layout`), alternating, ``--epochs`` of each.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from cormult_lib.config import DataConfig, get_config
from cormult_lib.data.synthetic import make_synthetic_splits
from cormult_lib.device import resolve_device
from cormult_lib.training.pretrain import pretrain_evaluator
from cormult_lib.tutorial.timing import packed_and_padded, seconds_per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2300, help="training samples per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto", help='"auto", "cpu", "cuda"')
    parser.add_argument("--strategy", default="D", choices=["A", "B", "C", "D"])
    parser.add_argument("--shared-time", type=int, default=64, help="t of the shared space")
    parser.add_argument("--shared-dim", type=int, default=200, help="o of the shared space")
    parser.add_argument("--count-flops", action="store_true", help="the compute floor of an epoch")
    parser.add_argument(
        "--compare-padded", action="store_true", help="also time epochs without packing"
    )
    args = parser.parse_args()

    train_fraction = DataConfig().split_fractions[0]
    data = DataConfig(n_samples=round(args.samples / train_fraction), text_dim=768)
    splits = make_synthetic_splits(data, seed=0)
    config = replace(
        get_config("paper").correlation,
        epochs=args.epochs,
        shared_time=args.shared_time,
        shared_dim=args.shared_dim,
    )
    device = resolve_device(args.device)
    print(
        f"{len(splits['train'])} training samples, dims {splits['train'].dims()}, "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )
    result = pretrain_evaluator(
        splits["train"], splits["valid"], config, strategy=args.strategy, device=device
    )
    print(result.history[["epoch", "train_loss", "valid_loss", "seconds"]].to_string(index=False))
    print(f"median seconds per epoch: {result.history['seconds'].median():.1f}")

    def one_epoch() -> float:
        """Pre-train a fresh evaluator for one epoch; its seconds."""
        run = pretrain_evaluator(
            splits["train"],
            splits["valid"],
            replace(config, epochs=1),
            strategy=args.strategy,
            device=device,
            progress=False,
        )
        return float(run.history["seconds"].iloc[0])

    if args.count_flops:
        with FlopCounterMode(display=False) as counter:
            one_epoch()
        a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
        # seconds_per_call synchronises a CUDA device around the call, so it times the kernels.
        ten = seconds_per_call({"mm": lambda x: [torch.mm(x, b) for _ in range(10)]}, a)["mm"]
        peak = 2 * 1024**3 / (min(ten) / 10)
        flops = counter.get_total_flops()
        print(
            f"one epoch: {flops / 1e12:.2f} TFLOP; at the matmul throughput of "
            f"{peak / 1e9:.0f} GFLOP/s that is {flops / peak:.1f} s"
        )
    if args.compare_padded:
        seconds = packed_and_padded(one_epoch, args.epochs)
        packed, padded = (statistics.median(times) for times in seconds.values())
        print(
            f"one-epoch runs, alternating, {args.epochs} of each: median {packed:.1f} s packed, "
            f"{padded:.1f} s padded ({padded / packed:.2f}x)"
        )


if __name__ == "__main__":
    main()
