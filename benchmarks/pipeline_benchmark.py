"""Clips per second of the whole raw-clip pipeline (audio + text + frames) on the CPU.

Writes ``--clips`` synthetic clips in CMU-MOSEI's raw layout to a temporary folder, then
extracts them into a fresh cache once per ``--workers`` setting and reports clips per second
(the cache's own timing, which includes loading the extractors in this process or, with
workers, starting the worker processes and loading theirs: with few clips that start-up weighs
on the rate, more for more workers, so compare settings with enough clips).

    .venv/bin/python benchmarks/pipeline_benchmark.py --clips 24 --workers 0 1 2
    .venv/bin/python benchmarks/pipeline_benchmark.py --backbone resnet18 --image-size 112
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from cormult_lib.config import DataConfig, FeatureConfig
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import export_raw_corpus
from cormult_lib.features.pipeline import extract_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-frames", type=int, default=16)
    args = parser.parse_args()
    config = FeatureConfig(
        backbone=args.backbone,
        weights=None,  # timing only: random weights cost the same as ImageNet ones
        image_size=args.image_size,
        num_frames=args.num_frames,
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        corpus = SyntheticCorpus(DataConfig(n_samples=max(args.clips, 10)), seed=0)
        table = export_raw_corpus(corpus, root / "clips", indices=range(args.clips))
        results = []
        for workers in args.workers:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = extract_features(
                    root / "clips", table, root / f"cache{workers}", config, workers=workers
                )
            results.append((workers, report.counts()["done"] / report.seconds))
    print(
        f"\n{args.clips} synthetic clips, {args.backbone} at {args.image_size}px, "
        f"{args.num_frames} frames per clip, face crops, log-Mel, vocabulary ids"
    )
    for workers, rate in results:
        print(f"workers={workers}: {rate:.2f} clips/s")


if __name__ == "__main__":
    main()
