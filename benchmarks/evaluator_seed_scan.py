"""Does the correlation evaluator learn for every training seed? A scan over seeds and dropouts.

Not a speed benchmark: a robustness measurement behind one departure. The quick and standard
profiles pre-train the evaluator without dropout (the authors: 0.1) because at their sizes the
authors' rate leaves some training seeds in the solution where the triplet loss falls and
``Cor`` does not separate real samples from negatives. For every seed ``s`` this script splits
the synthetic corpus with ``s``, pre-trains the profile's evaluator with seed ``s`` at each
dropout, and scores ``Cor`` on the test split with chapter 04's measure (ROC-AUC against
negatives of strategies A and B, the best pair) and chapter 05's (the mean over the pairs and
the strategies A, B and D).

    .venv/bin/python benchmarks/evaluator_seed_scan.py --profile quick --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/evaluator_seed_scan.py --strategy B --epochs 3 --batch-size 16

The second line is chapter 05's quick distance-sweep budget (cosine).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
import torch

from cormult_lib.config import get_config
from cormult_lib.correlation.evaluation import separation_auc
from cormult_lib.features.loading import load_splits
from cormult_lib.training.pretrain import pretrain_evaluator

#: Chapter 04's check: the best pair's ROC-AUC against A and against B negatives above this.
LEARNED_AUC = 0.7


def scan(
    profile: str,
    seeds: Sequence[int],
    dropouts: Sequence[float],
    strategy: str = "D",
    epochs: int | None = None,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """One row per (dropout, seed): ``best_epoch``, ``epochs_run``, ``first_loss`` and
    ``best_loss`` (validation), ``auc_A`` and ``auc_B`` (the best pair), ``auc_mean`` (pairs
    and strategies A, B, D) and ``learned`` (``auc_A`` and ``auc_B`` above :data:`LEARNED_AUC`).
    """
    config = get_config(profile)
    sizes = {"epochs": epochs, "batch_size": batch_size}
    base = replace(config.correlation, **{k: v for k, v in sizes.items() if v is not None})
    negative_options = {"noise_std": 0.1}
    rows = []
    for seed in seeds:
        splits = load_splits("synthetic", None, "TAV", config.data, seed)
        for dropout in dropouts:
            result = pretrain_evaluator(
                splits["train"], splits["valid"], replace(base, dropout=dropout),
                strategy=strategy, negative_options=negative_options,
                device=torch.device("cpu"), seed=seed, progress=False,
            )
            auc = separation_auc(
                result.model, splits["test"], result.distance, strategies=("A", "B", "D"),
                seed=seed, negative_options=negative_options,
            )
            best = auc.groupby("strategy")["auc"].max()
            rows.append({
                "dropout": dropout,
                "seed": seed,
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "first_loss": result.history["valid_loss"].iloc[0],
                "best_loss": result.history["valid_loss"].min(),
                "auc_A": best["A"],
                "auc_B": best["B"],
                "auc_mean": auc["auc"].mean(),
                "learned": bool(best["A"] > LEARNED_AUC and best["B"] > LEARNED_AUC),
            })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=["quick", "standard"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.1, 0.0])
    parser.add_argument("--strategy", default="D", choices=["A", "B", "C", "D"])
    parser.add_argument("--epochs", type=int, default=None, help="None: the profile's")
    parser.add_argument("--batch-size", type=int, default=None, help="None: the profile's")
    args = parser.parse_args()
    table = scan(args.profile, args.seeds, args.dropouts, args.strategy, args.epochs,
                 args.batch_size)
    print(table.round(3).to_string(index=False))
    for dropout, rows in table.groupby("dropout"):
        print(f"dropout {dropout}: learned (A and B ROC-AUC > {LEARNED_AUC}) for "
              f"{rows['learned'].sum()} of {len(rows)} seeds; mean ROC-AUC "
              f"{rows['auc_mean'].min():.2f}-{rows['auc_mean'].max():.2f}")


if __name__ == "__main__":
    main()
