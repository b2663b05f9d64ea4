"""Training throughput of MulT and CorMulT at CMU-MOSEI shapes, and the cost of correlation.

One training step (forward, L1 loss, backward, Adam) on a batch of synthetic MulT-format
inputs: 50 aligned steps, text 300 (GloVe), audio 74 (COVAREP), vision 35 (Facet). The models
use the ``paper`` preset (MulT: hidden 40, 8 heads, 4 layers; evaluator: hidden 128, 3 layers,
(t, o) = (64, 200), frozen). Prints samples per second and the CorMulT / MulT time ratio.

    .venv/bin/python benchmarks/fusion_benchmark.py --batch-size 16 --repeats 20
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from cormult_lib.config import get_config
from cormult_lib.correlation.distances import Distance
from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator
from cormult_lib.device import resolve_device
from cormult_lib.models.cormult import CorMulT
from cormult_lib.models.mult import build_mult
from cormult_lib.seeding import seed_everything
from cormult_lib.timing import median_seconds

DIMS = {"T": 300, "A": 74, "V": 35}
STEPS = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16, help="MulT's CMU-MOSEI batch: 16")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per model")
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto"')
    args = parser.parse_args()

    seed_everything(0)
    device = resolve_device(args.device)
    config = get_config("paper")
    c = config.correlation
    batch = {
        "features": {
            m: torch.randn(args.batch_size, STEPS, d, device=device) for m, d in DIMS.items()
        },
        "masks": {
            m: torch.ones(args.batch_size, STEPS, dtype=torch.bool, device=device) for m in DIMS
        },
    }
    labels = torch.empty(args.batch_size, device=device).uniform_(-3, 3)
    evaluator = ModalityCorrelationEvaluator(
        DIMS,
        hidden_dim=c.hidden_dim,
        num_layers=c.num_layers,
        num_heads=c.num_heads,
        ff_dim=c.ff_dim,
        dropout=c.dropout,
        shared_time=c.shared_time,
        shared_dim=c.shared_dim,
    )
    models = {
        "MulT": build_mult(DIMS, config.model),
        "CorMulT": CorMulT(build_mult(DIMS, config.model), evaluator, Distance("cosine")),
    }
    steps = {}
    for name, model in models.items():
        model.to(device).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=1e-3)

        def step(target: torch.Tensor, model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.l1_loss(model(batch["features"], batch["masks"]), target).backward()
            optimizer.step()

        steps[name] = step
        print(f"{name:8s} {sum(p.numel() for p in trainable):,} trainable parameters")
    # The two models take turns within every repeat, so a busy machine slows both alike.
    seconds = median_seconds(steps, labels, repeats=args.repeats, autograd=True)
    for name, value in seconds.items():
        print(
            f"{name:8s} {args.batch_size / value:8.1f} samples/s ({value * 1000:.1f} ms per step)"
        )
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}: "
        f"CorMulT / MulT time per step = {seconds['CorMulT'] / seconds['MulT']:.2f}"
    )


if __name__ == "__main__":
    main()
