"""Time the hand-written log-Mel (Eq. 1-3) against torchaudio's MelSpectrogram.

Both sides compute ``log(max(|STFT|^2 @ H, floor))`` on the same batch of random clips; the
torchaudio side is ``torchaudio.transforms.MelSpectrogram`` followed by the same clamp and log.
Each is run once to warm up, then ``--repeats`` times; the median wall time is reported.

    .venv/bin/python benchmarks/logmel_benchmark.py --batch 32 --seconds 10 --repeats 5
"""

from __future__ import annotations

import argparse

import torch
import torchaudio

from cormult_lib.features.audio import LogMel
from cormult_lib.tutorial.timing import median_seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--n-fft", type=int, default=400)
    parser.add_argument("--hop-length", type=int, default=160)
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    floor = 1e-10
    waveform = torch.rand(
        args.batch,
        round(args.seconds * args.sample_rate),
        generator=torch.Generator().manual_seed(0),
    )
    waveform = (2 * waveform - 1).to(device)
    ours = LogMel(args.sample_rate, args.n_fft, args.hop_length, n_mels=args.n_mels).to(device)
    reference = torchaudio.transforms.MelSpectrogram(
        args.sample_rate,
        n_fft=args.n_fft,
        hop_length=args.hop_length,
        n_mels=args.n_mels,
        power=2.0,
        norm=None,
        mel_scale="htk",
        center=True,
        pad_mode="reflect",
    ).to(device)

    def torchaudio_logmel(x: torch.Tensor) -> torch.Tensor:
        return reference(x).clamp_(min=floor).log_()

    with torch.inference_mode():
        diff = (ours(waveform) - torchaudio_logmel(waveform).transpose(1, 2)).abs().max().item()
        medians = median_seconds(
            {"ours": ours, "torchaudio": torchaudio_logmel}, waveform, args.repeats
        )
    t_ours, t_ref = medians["ours"], medians["torchaudio"]

    print(
        f"batch={args.batch} x {args.seconds:g} s at {args.sample_rate} Hz, n_fft={args.n_fft}, "
        f"hop={args.hop_length}, n_mels={args.n_mels}, device={device}, "
        f"threads={torch.get_num_threads()}, repeats={args.repeats} (median)"
    )
    print(f"hand-written LogMel:          {t_ours * 1e3:8.1f} ms")
    print(f"torchaudio MelSpectrogram+log: {t_ref * 1e3:8.1f} ms")
    print(f"ratio (hand-written / torchaudio): {t_ours / t_ref:.3f}")
    print(f"max |difference| of the log-Mel values: {diff:.2e}")


if __name__ == "__main__":
    main()
