"""Checks of the hand-written log-Mel: against torchaudio, and against the transcript.

Chapter 01 uses both: :func:`compare_with_torchaudio` shows that Eq. 1-3 written by hand give
torchaudio's numbers; :func:`speech_measures` reads a synthetic clip's spectrogram the way one
would look for the CorMulT paper's discrepancies (is the energy where the words are? how high
is the noise floor?).
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

from cormult_lib.data.synthetic_raw import RawSample, speech_envelope
from cormult_lib.features.audio import LogMel, floored_log


def compare_with_torchaudio(
    waveform: torch.Tensor,
    sample_rate: int,
    n_fft: int = 400,
    hop_length: int = 160,
    n_mels: int = 64,
    log_floor: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Our log-Mel and torchaudio's for one ``(time,)`` waveform, and how far apart they are.

    Returns ``(ours, theirs, numbers)``: both log-Mels ``(frames, n_mels)`` and
    ``mel_power_max_rel_diff`` (largest relative difference of the Mel powers on bins above
    1e-6 of the largest power), ``significant_share`` (the share of such bins) and
    ``log_mel_max_abs_diff``.
    """
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        power=2.0,
        norm=None,
        mel_scale="htk",
        center=True,
        pad_mode="reflect",
    )
    ours_power = LogMel(sample_rate, n_fft, hop_length, n_mels=n_mels).mel_power(waveform)[0]
    theirs_power = reference(waveform).T  # (frames, n_mels)
    significant = theirs_power > 1e-6 * theirs_power.max()
    relative = (ours_power - theirs_power).abs()[significant] / theirs_power[significant]
    ours, theirs = floored_log(ours_power, log_floor), floored_log(theirs_power, log_floor)
    numbers = {
        "mel_power_max_rel_diff": relative.max().item(),
        "significant_share": significant.float().mean().item(),
        "log_mel_max_abs_diff": (ours - theirs).abs().max().item(),
    }
    return ours, theirs, numbers


def speech_measures(
    sample: RawSample,
    n_fft: int = 400,
    hop_length: int = 160,
    n_mels: int = 64,
    log_floor: float = 1e-10,
) -> dict[str, np.ndarray | float]:
    """One synthetic clip's log-Mel and how its energy relates to the transcript.

    Returns ``log_mel`` ``(frames, n_mels)``, the per-frame ``amplitude`` (square root of the
    summed Mel power) and the transcript's word ``envelope`` at the frame times, ``r`` (their
    Pearson correlation: high when the sound is where the words are), ``floor_db`` (10th
    percentile of frame energy in dB: the noise floor) and ``range_db`` (90th minus 10th
    percentile).
    """
    rate = sample.sample_rate
    mel = LogMel(rate, n_fft, hop_length, n_mels=n_mels).mel_power(sample.waveform)[0]
    energy = mel.sum(dim=1).double().numpy()
    times = np.arange(len(energy)) * hop_length / rate
    envelope = speech_envelope(sample.spec, times)
    energy_db = 10 * np.log10(np.maximum(energy, log_floor))
    return {
        "log_mel": floored_log(mel, log_floor).numpy(),
        "amplitude": np.sqrt(energy),
        "envelope": envelope,
        "r": float(np.corrcoef(np.sqrt(energy), envelope)[0, 1]),
        "floor_db": float(np.percentile(energy_db, 10)),
        "range_db": float(np.percentile(energy_db, 90) - np.percentile(energy_db, 10)),
    }
