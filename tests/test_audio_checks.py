"""The chapter-01 checks: agreement with torchaudio, speech measures, fair timing."""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torchaudio

from cormult_lib.config import DataConfig
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import render_raw
from cormult_lib.tutorial.audio_checks import compare_with_torchaudio, speech_measures
from cormult_lib.tutorial.timing import median_seconds, seconds_per_call


def test_compare_with_torchaudio_reports_tiny_differences() -> None:
    waveform = torch.randn(16_000, generator=torch.Generator().manual_seed(0)) * 0.1
    ours, theirs, numbers = compare_with_torchaudio(waveform, 16_000, 512, 128, 40)
    assert ours.shape == theirs.shape == (1 + 16_000 // 128, 40)
    assert numbers["mel_power_max_rel_diff"] < 1e-4
    assert numbers["log_mel_max_abs_diff"] < 1e-3
    assert 0.9 < numbers["significant_share"] <= 1.0
    # "theirs" is torchaudio's own log-Mel, computed here independently, and the reported
    # distance is the distance between the two returned tensors.
    power = torchaudio.transforms.MelSpectrogram(
        16_000, n_fft=512, hop_length=128, n_mels=40, norm=None, mel_scale="htk"
    )(waveform).T
    torch.testing.assert_close(theirs, torch.log(power.clamp(min=1e-10)))
    assert numbers["log_mel_max_abs_diff"] == (ours - theirs).abs().max().item() > 0


def test_speech_measures_follow_the_discrepancies() -> None:
    corpus = SyntheticCorpus(DataConfig(n_samples=80), seed=0)
    first = {}
    for spec in corpus.specs:
        first.setdefault((spec.discrepancy, spec.noisy_modality), spec.index)
    strong = speech_measures(render_raw(corpus, first[("none", "")]))
    shifted = speech_measures(render_raw(corpus, first[("alignment", "")]))
    noisy = speech_measures(render_raw(corpus, first[("clarity", "A")]))
    assert strong["log_mel"].shape[1] == 64
    assert len(strong["amplitude"]) == len(strong["envelope"]) == strong["log_mel"].shape[0]
    assert strong["r"] > 0.8 and shifted["r"] < strong["r"] - 0.3
    assert noisy["floor_db"] > strong["floor_db"] + 15


def test_median_seconds_takes_turns_and_reports_each() -> None:
    calls = []
    functions = {
        "fast": lambda x: calls.append("fast"),
        "slow": lambda x: (calls.append("slow"), time.sleep(0.01)),
    }
    medians = median_seconds(functions, torch.zeros(1), repeats=3)
    assert calls == ["fast", "slow"] * 4  # one warm-up each, then alternating repeats
    assert medians["slow"] >= 0.01 > medians["fast"]
    times = seconds_per_call(functions, torch.zeros(1), repeats=4)
    assert [len(v) for v in times.values()] == [4, 4]
    assert min(times["slow"]) >= 0.01 > statistics.median(times["fast"])
    with pytest.raises(ValueError, match="repeats"):
        median_seconds(functions, torch.zeros(1), repeats=0)
