"""Training throughput of every trained model, its counted FLOPs and its efficiency.

For each setting (``quick``: the tutorial's CPU defaults; ``paper``: the CorMulT paper's sizes;
``official``: the official MulT code's CMU-MOSEI run) one training step (forward, loss,
backward, clipping, Adam as :func:`~cormult_lib.training.loop.fit` runs it, with its mixed
precision: float16 autocast and a gradient scaler on CUDA, none on the CPU) is timed for

* ``MulT`` and ``CorMulT`` (MulT weighted by a frozen evaluator) on CMU-MOSEI's aligned
  shapes: 50 steps of text 300 (GloVe), audio 74 (COVAREP), vision 35 (Facet), L1 loss;
* ``evaluator``: one pre-training step of the Modality Correlation Evaluator (negatives of
  strategy D, the real and the negative batch embedded, the triplet loss of Eq. 8; BERT-sized
  text 768);
* ``CLIP-MSA``: the fusion model on cached encoder outputs (branch sizes of the real encoders),
  SmoothL1 loss.

Printed per model: samples per second, FLOPs per sample counted by
``torch.utils.flop_counter.FlopCounterMode`` over one step, and the efficiency: achieved
FLOP/s over the same process's ``1024 x 1024`` float32 matmul throughput, timed in the same
rounds as the models (a busy machine slows both alike). Every ratio (MulT's efficiency, CorMulT
/ MulT, the speed-ups) comes with a 95% interval from a paired bootstrap over the rounds, and
issue 13's targets with a verdict decided by that interval. ``--reference`` also times the
implementation the faster models replaced (``tests/reference``, plain Adam) side by side and
prints the speed-up; ``--fill-uninitialized-memory`` times every step again with torch's NaN
fill of new tensors on (:func:`~cormult_lib.seeding.seed_everything` switches it off);
``--data`` measures the share of a training epoch on the synthetic corpus spent loading and
collating batches, and times its epochs with packing (:mod:`cormult_lib.nn.packing`) against
the padded layout, for MulT of quick and of paper sizes. ``--breakdown`` times MulT's step twice
more with a part of it made free, to show what bounds its efficiency: attention's
``time x time`` work (scores, softmax, dropout on the weights and the two products; a stand-in
keeps the shapes and the gradient paths), and the random numbers of every dropout mask (read
from a pool drawn once; CPU only). The two overlap (attention's masks are a large part of the
random numbers). The efficiency a step would reach without that part is its ceiling for any
faster implementation of the rest.

    .venv/bin/python benchmarks/training_benchmark.py --reference --data
    .venv/bin/python benchmarks/training_benchmark.py --settings quick official --breakdown
    .venv/bin/python benchmarks/training_benchmark.py --device cuda --compile
"""

from __future__ import annotations

import argparse
import inspect
import math
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cormult_lib.config import CorrelationConfig, get_config
from cormult_lib.correlation.distances import Distance
from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator, evaluator_arguments
from cormult_lib.correlation.losses import correlation_triplet_loss
from cormult_lib.correlation.negatives import changed_pairs, make_negatives
from cormult_lib.data.dataset import make_loader
from cormult_lib.data.synthetic import make_synthetic_splits
from cormult_lib.device import keep_freed_memory, resolve_device
from cormult_lib.models.clip_msa import ClipMSA
from cormult_lib.models.cormult import CorMulT
from cormult_lib.models.mult import MulT, build_mult, mult_arguments
from cormult_lib.models.official_mult import OFFICIAL_OPTIONS
from cormult_lib.nn import functional, stacked
from cormult_lib.seeding import seed_everything
from cormult_lib.training.loop import make_optimizer, maybe_compile
from cormult_lib.training.precision import MixedPrecision
from cormult_lib.training.pretrain import embed_together
from cormult_lib.tutorial.timing import median_ratio, packed_and_padded, seconds_per_call

DIMS = {"T": 300, "A": 74, "V": 35}
STEPS = 50
MATMUL = 1024
#: The official MulT code's CMU-MOSEI run (its main.py defaults): d 30 (hard-coded), 5 heads,
#: 5 layers, kernel 1, batch 24, causal mask, no padding mask, attention dropout 0.1 (0 for
#: audio and vision), ReLU / residual dropout 0.1, embedding dropout 0.2, output dropout 0,
#: fairseq positions: mult_from_official's options.
OFFICIAL = {
    "hidden_dim": 30,
    "num_heads": 5,
    "num_layers": 5,
    "kernel_sizes": (1, 1, 1),
    **OFFICIAL_OPTIONS,
}
#: CLIP-MSA branch sizes (specific, CLIP) of the real encoders: ALBERT + CLIP text,
#: wav2vec 2.0 + CLAP audio, VGG-11 fc7 + CLIP image over 8 frames.
CLIP_MSA_BRANCHES = {"T": (768, 512), "A": (768, 512), "V": (4096, 512)}
CLIP_MSA_FRAMES = 8


def random_batch(batch: int, dims: dict[str, int], device: torch.device, frames: int = STEPS):
    """Features ``(batch, frames, d)`` with all steps real, and their masks."""
    features = {m: torch.randn(batch, frames, d, device=device) for m, d in dims.items()}
    masks = {m: torch.ones(batch, frames, dtype=torch.bool, device=device) for m in dims}
    return features, masks


def training_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    optimizer: torch.optim.Optimizer,
) -> Callable[[torch.Tensor], None]:
    """One step as :func:`fit` takes it: the loss under its default mixed precision for the
    model's device, then zero the gradients, backward, clip, Adam (:class:`MixedPrecision`)."""
    precision = MixedPrecision(next(model.parameters()).device)

    def step(_: torch.Tensor) -> None:
        with precision.autocast():
            loss = loss_fn(model)
        precision.step(loss, optimizer, model, 1.0)

    return step


def with_nan_fill(step: Callable) -> Callable:
    """``step`` with ``torch.utils.deterministic.fill_uninitialized_memory`` on (torch's default
    under ``use_deterministic_algorithms``, which :func:`seed_everything` switches off)."""

    def filled(x: torch.Tensor) -> None:
        torch.utils.deterministic.fill_uninitialized_memory = True
        try:
            step(x)
        finally:
            torch.utils.deterministic.fill_uninitialized_memory = False

    return filled


def stand_in_attention(q, k, v, bias=None, dropout_p=0.0, training=False) -> torch.Tensor:
    """:func:`~cormult_lib.nn.functional.attention`'s shapes and gradient paths at the cost of
    a mean over time: ``(batch, heads, time_q, d_h)`` from queries, keys and values, without
    the ``time_q x time_k`` work."""
    return q + k.mean(dim=2, keepdim=True) + v.mean(dim=2, keepdim=True)


#: The project's draw, kept before :func:`with_free_part` replaces it for the pool to use.
_UNIFORM_INT16 = functional._uniform_int16


class RandomPool:
    """Stands in for the random draws of dropout masks
    (:func:`~cormult_lib.nn.functional._uniform_int16`): int16 values read from one pool of
    random words, drawn again only when a request is larger than the pool."""

    def __init__(self) -> None:
        self.values = torch.empty(0, dtype=torch.int16)

    def __call__(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        n = math.prod(shape)
        if n > self.values.numel() or self.values.device != device:
            self.values = _UNIFORM_INT16((n,), device)
        return self.values[:n].view(shape)


def with_free_part(step: Callable, part: str) -> Callable:
    """``step`` with ``part`` made free: ``"attention"`` (:func:`stand_in_attention`) or
    ``"random numbers"`` (:class:`RandomPool`)."""
    target, name, value = {
        "attention": (stacked, "attention", stand_in_attention),
        "random numbers": (functional, "_uniform_int16", RandomPool()),
    }[part]

    def run(x: torch.Tensor) -> None:
        with mock.patch.object(target, name, value):
            step(x)

    return run


def accepted_arguments(cls: type, arguments: dict) -> dict:
    """The ``arguments`` that ``cls`` takes. The v1 reference MulT predates ``causal_rule`` and
    ``positional``: it runs the official settings with its own causal mask and sinusoid
    layout, which cost the same."""
    accepted = inspect.signature(cls).parameters
    return {name: value for name, value in arguments.items() if name in accepted}


def build_models(setting: str, device: torch.device, reference: bool, compile_models: bool):
    """``name -> (step, batch size)`` for one setting."""
    config = get_config("paper" if setting == "paper" else "quick")
    batch = 24 if setting == "official" else config.train.batch_size  # the official code's: 24
    mult_args = OFFICIAL if setting == "official" else mult_arguments(config.model)
    evaluator_config = config.correlation
    steps: dict[str, tuple[Callable, int]] = {}
    implementations = {"": (MulT, ModalityCorrelationEvaluator)}
    if reference:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from reference.evaluator_v1 import ModalityCorrelationEvaluator as EvaluatorV1
        from reference.mult_v1 import MulT as MulTv1

        implementations[" v1"] = (MulTv1, EvaluatorV1)
    features, masks = random_batch(batch, DIMS, device)
    labels = torch.empty(batch, device=device).uniform_(-3, 3)
    for suffix, (mult_class, evaluator_class) in implementations.items():

        def optimizer_for(model: nn.Module, suffix: str = suffix) -> torch.optim.Optimizer:
            trainable = [p for p in model.parameters() if p.requires_grad]
            if suffix:  # the reference runs as it did: Adam's default (for-each) update
                return torch.optim.Adam(trainable, lr=1e-3)
            return make_optimizer(trainable, lr=1e-3)

        def prepare(model: nn.Module, suffix: str = suffix) -> nn.Module:
            model = model.to(device).train()
            return maybe_compile(model, compile_models) if not suffix else model

        def regression(model: nn.Module) -> torch.Tensor:
            return F.l1_loss(model(features, masks).float(), labels)

        seed_everything(0)
        args = accepted_arguments(mult_class, mult_args) if suffix else mult_args
        mult = prepare(mult_class(DIMS, **args))
        steps[f"MulT{suffix}"] = (training_step(mult, regression, optimizer_for(mult)), batch)
        if setting == "official":
            continue
        # No "CorMulT v1": CorMulT passes the fused model options (target_weights) that the v1
        # MulT never took; its step is MulT's plus the frozen evaluator's forward.
        if not suffix:
            seed_everything(0)
            frozen = evaluator_class(DIMS, **evaluator_arguments(evaluator_config))
            fused = mult_class(DIMS, **mult_args)
            cormult = prepare(CorMulT(fused, frozen, Distance("cosine")))
            steps["CorMulT"] = (training_step(cormult, regression, optimizer_for(cormult)), batch)
        steps[f"evaluator{suffix}"] = evaluator_step(
            evaluator_class, evaluator_config, device, optimizer_for, prepare
        )
    if setting != "official":
        steps["CLIP-MSA"] = clip_msa_step(
            config.train.batch_size, 32 if setting == "quick" else 128, device, compile_models
        )
    return steps


def evaluator_step(evaluator_class, config: CorrelationConfig, device, optimizer_for, prepare):
    """One pre-training step of the evaluator (strategy D, BERT-sized text)."""
    dims = {"T": 768, "A": 74, "V": 35}
    seed_everything(0)
    model = prepare(evaluator_class(dims, **evaluator_arguments(config)))
    features, masks = random_batch(config.batch_size, dims, device)
    stream = torch.Generator(device=device).manual_seed(0)

    def loss(model: nn.Module) -> torch.Tensor:
        negatives = make_negatives(features, masks, "D", stream)
        if evaluator_class is ModalityCorrelationEvaluator:  # as pretrain_evaluator does
            positive, negative = embed_together(model, features, masks, negatives)
        else:  # the v1 pre-training: two passes
            positive = model(features, masks)
            negative = model(negatives.features, negatives.masks)
        value, _ = correlation_triplet_loss(
            positive,
            negative,
            "cosine",
            config.margin,
            pair_mask=changed_pairs(negatives, "TAV"),
        )
        return value

    return training_step(model, loss, optimizer_for(model)), config.batch_size


def clip_msa_step(batch: int, dim: int, device: torch.device, compile_model: bool = False):
    """One training step of CLIP-MSA's fusion model on cached encoder outputs
    (``torch.compile``d with ``compile_model``, as ``--compile`` does to every model)."""
    seed_everything(0)
    model = ClipMSA(CLIP_MSA_BRANCHES, hidden_dim=dim, num_heads=4).to(device).train()
    model = maybe_compile(model, compile_model)
    dims = {m: sum(sizes) for m, sizes in CLIP_MSA_BRANCHES.items()}
    features, masks = random_batch(batch, {m: dims[m] for m in "TA"}, device, frames=1)
    frames, frame_masks = random_batch(batch, {"V": dims["V"]}, device, CLIP_MSA_FRAMES)
    features, masks = features | frames, masks | frame_masks
    labels = torch.empty(batch, device=device).uniform_(-3, 3)

    def loss(model: nn.Module) -> torch.Tensor:
        return F.smooth_l1_loss(model(features, masks), labels)

    return training_step(model, loss, make_optimizer(model.parameters(), lr=1e-3)), batch


def flops_per_sample(step: Callable, batch: int, device: torch.device) -> float:
    with FlopCounterMode(display=False) as counter:
        step(torch.empty(0, device=device))
    return counter.get_total_flops() / batch


def matmul_step(device: torch.device) -> tuple[Callable, float]:
    """Four ``1024 x 1024`` float32 products and their FLOP count."""
    a = torch.randn(MATMUL, MATMUL, device=device)
    b = torch.randn(MATMUL, MATMUL, device=device)

    def step(_: torch.Tensor) -> None:
        for _ in range(4):
            torch.mm(a, b)

    return step, 4 * 2 * MATMUL**3


def epoch_seconds(
    model: nn.Module, optimizer: torch.optim.Optimizer, loader, device: torch.device
) -> tuple[float, float]:
    """Train ``model`` for one epoch of ``loader`` (L1 loss): ``(seconds, of which loading and
    collating)``."""
    loading = 0.0
    precision = MixedPrecision(device)  # fit's default: float16 on CUDA, none on the CPU
    began = time.perf_counter()
    batches = iter(loader)
    while True:
        fetched = time.perf_counter()
        batch = next(batches, None)
        loading += time.perf_counter() - fetched
        if batch is None:
            break
        features = {m: x.to(device) for m, x in batch["features"].items()}
        masks = {m: x.to(device) for m, x in batch["masks"].items()}
        with precision.autocast():
            loss = F.l1_loss(model(features, masks), batch["labels"].to(device))
        precision.step(loss, optimizer, model, None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began, loading


def data_share(device: torch.device, epochs: int = 3) -> None:
    """Seconds per training epoch of MulT (quick and paper sizes) on the quick synthetic corpus:
    the loader's share, and packed epochs against epochs on the padded layout, alternating."""
    config = get_config("quick")
    train = make_synthetic_splits(config.data, seed=0)["train"]
    loader = make_loader(train, config.train.batch_size, shuffle=True, device=device)
    print(f"data path: {len(train)} training samples, batch {config.train.batch_size}")
    for sizes in ("quick", "paper"):
        seed_everything(0)
        model = build_mult(train.dims(), get_config(sizes).model).to(device).train()
        optimizer = make_optimizer(model.parameters(), lr=1e-3)
        runs = packed_and_padded(partial(epoch_seconds, model, optimizer, loader, device), epochs)
        packed, padded = (statistics.median(spent for spent, _ in r) for r in runs.values())
        loading = sum(loaded for _, loaded in runs["packed"])
        total = sum(spent for spent, _ in runs["packed"])
        print(
            f"  {sizes}-sized MulT: {packed:.2f} s per epoch, of which loading and collating "
            f"{loading / epochs:.3f} s ({100 * loading / total:.1f}%); on the padded layout "
            f"{padded:.2f} s ({padded / packed:.2f}x the packed epoch's time)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["quick", "paper", "official"],
        choices=["quick", "paper", "official"],
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds of steps")
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto"')
    parser.add_argument("--reference", action="store_true", help="also time tests/reference")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument(
        "--data", action="store_true", help="the data path's share; packed vs padded epochs"
    )
    parser.add_argument(
        "--fill-uninitialized-memory",
        action="store_true",
        help="also time every step with torch's NaN fill of new tensors on (see seed_everything)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time MulT's step with attention's time x time work, then with the random "
        "numbers of dropout, made free",
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's allocator as it is (as the v1 code ran), see keep_freed_memory",
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    if device.type == "cpu" and not args.default_allocator:
        keep_freed_memory()  # as fit() does on the CPU
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    for setting in args.settings:
        steps = build_models(setting, device, args.reference, args.compile)
        if args.fill_uninitialized_memory:
            steps |= {
                f"{name} fill": (with_nan_fill(step), batch)
                for name, (step, batch) in steps.items()
            }
        # Random numbers are the project's only on the CPU without compiling (F.dropout else).
        eager = device.type == "cpu" and not args.compile
        free_parts = ("attention", "random numbers")[: 2 if eager else 1] if args.breakdown else ()
        steps |= {
            f"MulT free {part}": (with_free_part(steps["MulT"][0], part), steps["MulT"][1])
            for part in free_parts
        }
        # The counter sees other kernels (SDPA, nn.MultiheadAttention's fast path) in the v1
        # models for the same function: a v1 model is credited with its replacement's count,
        # and so are the steps with the NaN fill or a free part (whose efficiency is then the
        # ceiling the rest of the step allows).
        flops = {
            name: flops_per_sample(step, batch, device)
            for name, (step, batch) in steps.items()
            if name in ("MulT", "CorMulT", "evaluator", "CLIP-MSA")
        }
        flops |= {name: flops[name.split()[0]] for name in steps if name not in flops}
        matmul, matmul_flops = matmul_step(device)
        timed = {name: step for name, (step, _) in steps.items()} | {"matmul": matmul}
        times = seconds_per_call(timed, torch.empty(0, device=device), args.repeats, autograd=True)
        seconds = {name: statistics.median(values) for name, values in times.items()}
        peak = matmul_flops / seconds["matmul"]
        print(f"\n[{setting}] matmul {peak / 1e9:.0f} GFLOP/s")
        print(f"{'model':24s} {'samples/s':>10s} {'ms/step':>8s} {'MFLOP/sample':>13s} {'eff':>6s}")
        for name, (_, batch) in steps.items():
            rate = batch / seconds[name]
            efficiency = flops[name] * rate / peak
            print(
                f"{name:24s} {rate:10.1f} {seconds[name] * 1e3:8.1f} {flops[name] / 1e6:13.1f} "
                f"{100 * efficiency:5.1f}%"
            )
        # Ratios of median times with a 95% interval over the paired rounds; the efficiency is
        # MulT's FLOP count over the matmul's times the ratio of their times.
        efficiency = median_ratio(times["matmul"], times["MulT"])
        scale = 100 * flops["MulT"] * steps["MulT"][1] / matmul_flops
        low, high = efficiency.low * scale, efficiency.high * scale
        print(f"MulT efficiency: {efficiency.ratio * scale:.1f}% [{low:.1f}%, {high:.1f}%] "
              f"(n={efficiency.n} rounds)")
        verdicts = {}
        if setting == "quick":
            verdicts["MulT efficiency >= 25%"] = efficiency.against(25 / scale, at_most=False)
        if "CorMulT" in seconds:
            ratio = median_ratio(times["CorMulT"], times["MulT"])
            print(f"CorMulT / MulT time per step: {ratio.text()}")
            verdicts["CorMulT / MulT <= 1.2"] = ratio.against(1.2, at_most=True)
        for name in [n for n in steps if f"{n} v1" in steps]:
            speedup = median_ratio(times[f"{name} v1"], times[name])
            print(f"{name}: {speedup.text()} times the speed of the v1 implementation")
            if setting == "official" and name == "MulT":
                verdicts["MulT >= 2.5x v1"] = speedup.against(2.5, at_most=False)
        for target, verdict in verdicts.items():
            print(f"target (issue 13) {target}: {verdict}")
        for part in free_parts:
            share = 1 - seconds[f"MulT free {part}"] / seconds["MulT"]
            print(f"MulT: {part}: {100 * share:.0f}% of the step")
        if len(free_parts) == 2:
            print("(the shares overlap: free attention draws no masks for its weights either)")
        for name in [n for n in steps if f"{n} fill" in steps]:
            speedup = seconds[f"{name} fill"] / seconds[name]
            print(f"{name}: {speedup:.2f}x the speed with the NaN fill of new tensors")
    if args.data:
        data_share(device)


if __name__ == "__main__":
    main()
