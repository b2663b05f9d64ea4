"""A non-finite loss on one rank, run under torchrun with two gloo ranks by
``tests/test_distributed.py``: every rank must stop with ``FloatingPointError``, none may be
left waiting in a collective.

Rank 1's loss turns NaN on its second batch, once in training (the ranks have 4 batches each)
and once in validation (rank 0 has one batch, rank 1 two: the shards differ in length).
Writes ``<out>/rank<r>.json``: per case, the message the rank stopped with (``null``: none),
and under ``"draws"`` the first number of the rank's training and validation loss streams.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cormult_lib.training.distributed import cleanup, init_distributed
from cormult_lib.training.loop import fit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    info = init_distributed("gloo")
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(info.rank))
    y = x.sum(1)
    train = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=4)
    valid = DataLoader(TensorDataset(x[16 : 20 + 4 * info.rank], y[16 : 20 + 4 * info.rank]), 4)
    outcomes = {}
    for case in ("training", "validation"):
        batches = {"seen": 0}

        def loss_fn(model, batch, generator, case=case, batches=batches):
            inputs, target = batch
            loss = ((model(inputs).squeeze(-1) - target) ** 2).mean()
            if info.rank == 1 and model.training == (case == "training"):
                batches["seen"] += 1
                if batches["seen"] == 2:
                    loss = loss * float("nan")
            return loss, {}

        torch.manual_seed(0)
        try:
            fit(nn.Linear(4, 1), train, valid, loss_fn, epochs=2, lr=1e-2, progress=False)
            outcomes[case] = None
        except FloatingPointError as error:
            outcomes[case] = str(error)
    draws = {}

    def drawing(model, batch, generator):
        stream = "training" if model.training else "validation"
        draws.setdefault(stream, int(torch.randint(2**31, (1,), generator=generator)))
        inputs, target = batch
        return ((model(inputs).squeeze(-1) - target) ** 2).mean(), {}

    fit(nn.Linear(4, 1), train, valid, drawing, epochs=1, lr=1e-2, progress=False)
    outcomes["draws"] = draws
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{info.rank}.json").write_text(json.dumps(outcomes))
    cleanup()


if __name__ == "__main__":
    main()
