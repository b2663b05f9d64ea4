r"""Data-parallel training of a small sentiment regressor with :func:`fit`, for ``torchrun``.

Two processes on the CPU (gloo), or one per GPU (NCCL, the default when CUDA is available;
``--device cpu`` keeps gloo on a GPU machine)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 \
        -m cormult_lib.tutorial.ddp_demo --out runs/ddp --epochs 5

Started without the launcher (``python -m cormult_lib.tutorial.ddp_demo --out DIR``) the same
code trains in one process; with the same ``--batch-size`` (the *global* batch, split evenly
over the ranks) and a training split whose size it divides, both see the same batches and end
with nearly the same weights.

The model is deliberately tiny, so the demo runs in seconds and depends on nothing but the
data: the masked mean of every modality's features over time, concatenated, into a two-layer
MLP. It trains with the L1 loss on the synthetic corpus.

The MLP uses GELU, not ReLU, so that a 1-process and a 2-process run can be compared weight by
weight. They differ by float summation order only, but Adam divides each gradient by its own
running magnitude, so rounding noise in a gradient that is nearly zero, or at ReLU's kink where
one sample's unit can be on in one run and off in the other, becomes a step of up to ``lr``.
Measured on the test's setting (4 epochs): with ReLU one hidden unit's bias ended 5e-4 apart,
with GELU every weight agrees to 5e-8.

Writes to ``--out``:

* ``rank<r>.pt`` (every rank): ``state_dict`` (the best epoch's weights), ``history`` (a dict
  of lists) and ``best_epoch``;
* ``metrics.json`` (rank 0): :func:`~cormult_lib.metrics.regression_metrics` of the
  validation split, ``best_epoch`` and ``world_size``;
* ``valid_predictions.pt`` (rank 0): ``pred`` and ``truth``, float32 ``(n_valid,)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from cormult_lib.config import DataConfig
from cormult_lib.data.dataset import MultimodalSplit, make_loader
from cormult_lib.data.synthetic import make_synthetic_splits
from cormult_lib.metrics import regression_metrics
from cormult_lib.nn.pooling import masked_mean
from cormult_lib.training.distributed import (
    DistInfo,
    cleanup,
    init_distributed,
    make_distributed_loader,
)
from cormult_lib.training.loop import fit


class MeanPoolRegressor(nn.Module):
    """Masked mean over time per modality, concatenated, then ``Linear-GELU-Linear`` to a score.

    Args:
        dims: feature size per modality letter, e.g. ``{"T": 300, "A": 74, "V": 35}``.
        hidden: width of the hidden layer.
    """

    def __init__(self, dims: Mapping[str, int], hidden: int = 32):
        super().__init__()
        self.modalities = tuple(dims)
        self.mlp = nn.Sequential(
            nn.Linear(sum(dims.values()), hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    def forward(
        self, features: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Features ``(batch, time, dim)`` and masks ``(batch, time)`` per modality to scores
        ``(batch,)``."""
        pooled = [masked_mean(features[m], masks[m]) for m in self.modalities]
        return self.mlp(torch.cat(pooled, dim=-1)).squeeze(-1)


def l1_loss(
    model: nn.Module, batch: dict, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`fit`'s loss: L1 on the labels, with the MSE as an extra to log (no randomness)."""
    pred = model(batch["features"], batch["masks"])
    return F.l1_loss(pred, batch["labels"]), {"mse": F.mse_loss(pred, batch["labels"]).item()}


@torch.no_grad()
def predict(
    model: nn.Module, split: MultimodalSplit, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and labels of every sample of ``split``, in order: two float32 ``(n,)``, CPU."""
    model.eval()
    preds, truths = [], []
    for batch in make_loader(split, batch_size, shuffle=False, device=device):
        features = {m: x.to(device) for m, x in batch["features"].items()}
        masks = {m: k.to(device) for m, k in batch["masks"].items()}
        preds.append(model(features, masks).float().cpu())
        truths.append(batch["labels"])
    return torch.cat(preds), torch.cat(truths)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--n-samples", type=int, default=160, help="synthetic corpus size")
    parser.add_argument("--seq-len", type=int, default=12, help="synthetic sequence length")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (all ranks)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="data, weights and shuffling")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the training order")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint (and resume) here")
    parser.add_argument(
        "--backend",
        choices=("nccl", "gloo"),
        help="default: gloo with --device cpu, else by hardware",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu"), default="auto", help="cpu: never use a GPU"
    )
    parser.add_argument("--progress", action="store_true", help="progress bars on rank 0")
    return parser.parse_args(argv)


def train(args: argparse.Namespace, info: DistInfo) -> None:
    """Train on this rank's shard and write this rank's results (see the module docstring)."""
    device = torch.device("cpu") if args.device == "cpu" else info.device
    if args.batch_size % info.world_size:
        raise ValueError(
            f"--batch-size {args.batch_size} must be divisible by the {info.world_size} ranks"
        )
    per_rank = args.batch_size // info.world_size
    splits = make_synthetic_splits(
        DataConfig(n_samples=args.n_samples, seq_len=args.seq_len), seed=args.seed
    )
    train_loader = make_distributed_loader(
        splits["train"], per_rank, shuffle=not args.no_shuffle, seed=args.seed, device=device
    )
    valid_loader = make_distributed_loader(
        splits["valid"], per_rank, shuffle=False, device=device, even=False
    )
    torch.manual_seed(args.seed)  # the same initial weights everywhere (DDP also broadcasts)
    model = MeanPoolRegressor(splits["train"].dims(), args.hidden)
    result = fit(
        model,
        train_loader,
        valid_loader,
        l1_loss,
        epochs=args.epochs,
        lr=args.lr,
        checkpoint_path=args.checkpoint,
        device=device,
        seed=args.seed,
        progress=args.progress,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
            "history": result.history.to_dict("list"),
            "best_epoch": result.best_epoch,
        },
        args.out / f"rank{info.rank}.pt",
    )
    if info.rank == 0:
        pred, truth = predict(result.model, splits["valid"], args.batch_size, device)
        torch.save({"pred": pred, "truth": truth}, args.out / "valid_predictions.pt")
        metrics = {
            **regression_metrics(pred, truth),
            "best_epoch": result.best_epoch,
            "world_size": info.world_size,
        }
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps(metrics))


def backend_for(args: argparse.Namespace) -> str | None:
    """The process group's backend: ``--backend``, gloo for ``--device cpu`` (NCCL reduces
    CUDA tensors only), else ``None`` (NCCL when CUDA is available, gloo otherwise)."""
    if args.device != "cpu":
        return args.backend
    if args.backend == "nccl":
        raise ValueError("--backend nccl reduces CUDA tensors only; --device cpu needs gloo")
    return "gloo"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv``, join the process group (if launched by torchrun), train, leave it."""
    args = parse_args(argv)
    info = init_distributed(backend_for(args))
    train(args, info)
    # Not in a ``finally``: after a failure the barrier would wait for a rank that is gone;
    # torchrun stops the other ranks instead.
    cleanup()


if __name__ == "__main__":
    main()
    # Everything is written and the process group destroyed; leave without finalising the
    # interpreter, where background C++ threads can still abort the process (see
    # cormult_lib.training.distributed). Errors never get here: they exit non-zero above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
