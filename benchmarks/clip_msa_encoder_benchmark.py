"""Seconds per clip of each CLIP-MSA encoder branch (median over synthetic clips).

Branches: ALBERT, CLIP text, wav2vec 2.0, CLAP audio, VGG-11 on face crops (Haar-cascade
detection included) and CLIP image, each timed alone on the same clips. Clips are rendered in
memory from the synthetic corpus (16 kHz audio of 5-9 s, ``--num-frames`` frames sampled
uniformly, 96 x 96 px unless ``--frame-size`` resizes them), so decoding is not counted.

Sizes:

* ``tiny``: :meth:`EncoderConfig.tiny` (the encoders of the tests);
* ``real-random``: the real architectures (ALBERT base v2, CLIP ViT-B/32, wav2vec 2.0 base,
  CLAP HTSAT, torchvision VGG-11) randomly initialised, since the pretrained weights cannot
  be downloaded here; the compute cost is that of the pretrained models.

With ``--train-step`` it also times one end-to-end training step of
:class:`~cormult_lib.models.clip_msa.ClipMSAEndToEnd` (batches of two prepared clips, SmoothL1,
Adam) with every encoder frozen and with every encoder fine-tuned: what a clip costs per epoch
when the encoders train.

    .venv/bin/python benchmarks/clip_msa_encoder_benchmark.py --size tiny real-random
    .venv/bin/python benchmarks/clip_msa_encoder_benchmark.py --size real-random --device cuda
    .venv/bin/python benchmarks/clip_msa_encoder_benchmark.py --size real-random --train-step
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from cormult_lib.config import ENCODERS, DataConfig, EncoderConfig
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import render_raw
from cormult_lib.device import describe_device, resolve_device
from cormult_lib.features.clip_encoders import ClipMSAEncoders
from cormult_lib.features.sources import default_model_configs
from cormult_lib.features.vision import uniform_frame_indices
from cormult_lib.models.clip_msa import ClipMSA, ClipMSAEndToEnd

BRANCHES: dict[str, Callable[[ClipMSAEncoders, dict], object]] = {
    "ALBERT": lambda enc, clip: enc.albert_features([clip["text"]]),
    "CLIP text": lambda enc, clip: enc.clip_text_features([clip["text"]]),
    "wav2vec2": lambda enc, clip: enc.wav2vec2_features([clip["waveform"]]),
    "CLAP audio": lambda enc, clip: enc.clap_features([clip["waveform"]]),
    "VGG-11 faces": lambda enc, clip: enc.vgg_face_features(clip["frames"]),
    "CLIP image": lambda enc, clip: enc.clip_image_features(clip["frames"]),
}


def synthetic_clips(n: int, num_frames: int, frame_size: int | None) -> list[dict]:
    corpus = SyntheticCorpus(DataConfig(n_samples=max(n, 10)), seed=0)
    clips = []
    for index in range(n):
        raw = render_raw(corpus, index)
        frames = raw.frames[uniform_frame_indices(len(raw.frames), num_frames)]
        if frame_size:
            frames = np.stack([cv2.resize(f, (frame_size, frame_size)) for f in frames])
        clips.append({"text": raw.transcript, "waveform": raw.waveform, "frames": frames})
    return clips


def build(size: str, num_frames: int, device: str, detector: str | None) -> ClipMSAEncoders:
    if size == "tiny":
        config = EncoderConfig.tiny(num_frames=num_frames, face_detector=detector)
        return ClipMSAEncoders(config, device)
    config = EncoderConfig.tiny(
        num_frames=num_frames, face_size=224, max_text_tokens=128, face_detector=detector
    )
    return ClipMSAEncoders.from_configs(default_model_configs(), config, device)


def time_branches(encoders: ClipMSAEncoders, clips: list[dict], device: torch.device) -> dict:
    """Median seconds per clip of every branch; the first clip is a warm-up, not counted."""
    medians = {}
    for name, run in BRANCHES.items():
        seconds = []
        for i, clip in enumerate(clips):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            run(encoders, clip)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i > 0 or len(clips) == 1:
                seconds.append(time.perf_counter() - started)
        medians[name] = statistics.median(seconds)
    return medians


def time_training_steps(
    encoders: ClipMSAEncoders, clips: list[dict], device: torch.device
) -> dict[str, float]:
    """Median seconds per clip of one training step on batches of two prepared clips, with
    every encoder frozen and with every encoder fine-tuned; every batch runs twice, so that
    even the default 5 clips (2 batches) give 3 timed steps after the warm-up."""
    prepared = [encoders.prepare(c["text"], c["waveform"], c["frames"]) for c in clips]
    prepared = [{k: v.to(device) for k, v in item.items()} for item in prepared]
    batches = [prepared[i : i + 2] for i in range(0, len(prepared) - 1, 2)]
    medians = {}
    for label, finetune in (("frozen", ()), ("all fine-tuned", ENCODERS)):
        model = ClipMSAEndToEnd(encoders, ClipMSA(encoders.branch_dims), finetune).to(device)
        optimizer = torch.optim.Adam(model.param_groups(1e-4))
        model.train()
        seconds = []
        for i, batch in enumerate(batches * 2):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            target = torch.zeros(len(batch), device=device)
            loss = torch.nn.functional.smooth_l1_loss(model(batch), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i > 0:  # the first step warms up
                seconds.append((time.perf_counter() - started) / len(batch))
        medians[f"step, {label}"] = statistics.median(seconds)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs="+", choices=["tiny", "real-random"], default=["tiny"])
    parser.add_argument("--clips", type=int, default=4, help="timed clips (+1 warm-up)")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--frame-size", type=int, default=None, help="resize frames (px)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--face-detector",
        choices=["cascade", "none"],
        default="cascade",
        help="'none': VGG sees whole frames (no Haar cascade, e.g. with OpenCV 5)",
    )
    parser.add_argument(
        "--train-step",
        action="store_true",
        help="also time an end-to-end training step, encoders frozen and all fine-tuned",
    )
    args = parser.parse_args()
    device = resolve_device(args.device, verbose=False)
    detector = None if args.face_detector == "none" else "cascade"
    clips = synthetic_clips(args.clips + 1, args.num_frames, args.frame_size)
    seconds_audio = statistics.median(len(c["waveform"]) / 16_000 for c in clips)
    results = {}
    for size in args.size:
        started = time.perf_counter()
        encoders = build(size, args.num_frames, args.device, detector)
        print(f"{size}: encoders built in {time.perf_counter() - started:.1f} s")
        results[size] = time_branches(encoders, clips, device)
        if args.train_step:
            results[size].update(time_training_steps(encoders, clips, device))
        del encoders
    side = clips[0]["frames"].shape[1]
    print(
        f"\nseconds per clip, median of {args.clips} synthetic clips (after one warm-up); "
        f"{describe_device(device)}; {args.num_frames} frames of {side} x {side} px, "
        f"median audio {seconds_audio:.1f} s, face detector {args.face_detector}, "
        f"torch {torch.__version__}"
    )
    header = f"{'branch':<22}" + "".join(f"{size:>13}" for size in results)
    print(header)
    print("-" * len(header))
    for name in BRANCHES:
        print(f"{name:<22}" + "".join(f"{results[s][name]:>13.4f}" for s in results))
    total = {s: sum(results[s][name] for name in BRANCHES) for s in results}
    print(f"{'total (encoding)':<22}" + "".join(f"{total[s]:>13.4f}" for s in results))
    for name in results[args.size[0]]:
        if name not in BRANCHES:
            print(f"{name:<22}" + "".join(f"{results[s][name]:>13.4f}" for s in results))


if __name__ == "__main__":
    main()
