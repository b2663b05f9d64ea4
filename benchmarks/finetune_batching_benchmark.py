"""Seconds per fine-tuning epoch of chapter 09's sentence regressor: batches grouped by length
against uniformly shuffled batches.

:meth:`~cormult_lib.models.sentence.SentenceRegressor.prepare` records each transcript's
token count, and :func:`~cormult_lib.data.raw_clips.raw_clip_loader` then draws shuffled
batches with transformers' ``LengthGroupedSampler``, so a batch pads to a length close to its
members'. This script times one epoch of
:func:`~cormult_lib.training.supervised.train_model` (all-MiniLM-L6-v2, L1, Adam) on real
CMU-MOSEI training transcripts both ways, the two taking turns in one process (median of
``--repeats``), and prints the padding each way.

    .venv/bin/python benchmarks/finetune_batching_benchmark.py --segments 640 --repeats 3
    .venv/bin/python benchmarks/finetune_batching_benchmark.py --segments 4000 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from cormult_lib.config import TrainConfig
from cormult_lib.data.raw_clips import RawClipSplit, raw_clip_loader
from cormult_lib.data.transcripts import load_transcripts
from cormult_lib.device import describe_device, resolve_device
from cormult_lib.features.text import default_tokenizer_path
from cormult_lib.models.sentence import SentenceRegressor
from cormult_lib.training.supervised import train_model

DEFAULT_LABEL_CSV = Path(__file__).resolve().parents[1].parent / "shared/data/cmu/mosei_label.csv"


def padded_share(split: RawClipSplit, batch_size: int) -> float:
    """Share of the padded token slots of one shuffled epoch that are padding."""
    loader = raw_clip_loader(split, batch_size, True, generator=torch.Generator().manual_seed(0))
    padded = real = 0
    for batch in loader:
        sizes = [len(item["input_ids"]) for item in batch["inputs"]]
        padded += max(sizes) * len(sizes)
        real += sum(sizes)
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-csv", type=Path, default=DEFAULT_LABEL_CSV)
    parser.add_argument("--segments", type=int, default=640, help="training transcripts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device, verbose=False)
    splits = load_transcripts(args.label_csv, {"train": args.segments, "valid": 32}, seed=0)
    torch.manual_seed(0)
    model = SentenceRegressor.from_pretrained(default_tokenizer_path())
    grouped = model.prepare(splits["train"])
    ways = {"grouped by length": grouped, "uniform shuffle": replace(grouped, lengths=None)}
    valid = model.prepare(splits["valid"])
    config = TrainConfig(epochs=1, batch_size=args.batch_size, patience=None)
    print(f"{len(grouped)} transcripts, batch {args.batch_size}, {describe_device(device)}")
    for name, split in ways.items():
        print(f"  {name}: {padded_share(split, args.batch_size):.0%} of token slots are padding")
    times: dict[str, list[float]] = {name: [] for name in ways}
    for repeat in range(args.repeats):
        for name, split in ways.items():
            start = time.perf_counter()
            train_model(model, split, valid, config, seed=repeat, device=device, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"  {name}: {seconds:.1f} s per epoch, {len(grouped) / seconds:.1f} transcripts/s "
              f"(runs: {', '.join(f'{t:.1f}' for t in times[name])})")
    ratio = medians["uniform shuffle"] / medians["grouped by length"]
    print(f"grouped batches are {ratio:.2f}x as fast (median of {args.repeats})")


if __name__ == "__main__":
    main()
