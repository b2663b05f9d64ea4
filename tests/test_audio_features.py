"""CorMulT's audio features (Eq. 1-3) against torch / torchaudio, and audio loading."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from cormult_lib.config import DataConfig
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import render_raw, write_raw_sample
from cormult_lib.features import audio
from cormult_lib.features.audio import (
    AudioLoadError,
    LogMel,
    floored_log,
    hz_to_mel,
    load_audio,
    mel_band_edges,
    mel_filterbank,
    mel_to_hz,
    stft,
)

SR = 16000
# (n_fft, hop_length, n_mels, f_min, f_max)
MEL_SETTINGS = [
    (400, 160, 64, 0.0, None),
    (512, 128, 40, 0.0, None),
    (1024, 256, 80, 0.0, None),
    (256, 64, 32, 100.0, 4000.0),
]


def make_signal(batch: int = 3, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """``(batch, time)`` float32: tones at different pitches over quiet noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * SR)) / SR
    pitch = torch.tensor([220.0, 1000.0, 3100.0, 555.0])[:batch, None]
    tones = 0.5 * torch.sin(2 * math.pi * pitch * t) + 0.2 * torch.sin(2 * math.pi * 3 * pitch * t)
    return (tones + 0.05 * torch.randn(batch, len(t), generator=gen)).float()


def reference_mel_power(waveform: torch.Tensor, n_fft, hop, n_mels, f_min, f_max) -> torch.Tensor:
    """torchaudio's Mel power, as ``(batch, frames, n_mels)``."""
    transform = torchaudio.transforms.MelSpectrogram(
        SR,
        n_fft=n_fft,
        hop_length=hop,
        n_mels=n_mels,
        f_min=f_min,
        f_max=f_max,
        power=2.0,
        norm=None,
        mel_scale="htk",
        center=True,
        pad_mode="reflect",
    )
    out = transform(waveform)
    return (out.unsqueeze(0) if out.ndim == 2 else out).transpose(1, 2)


def assert_power_close(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> None:
    """Relative agreement on every bin holding more than 1e-6 of the largest power."""
    assert ours.shape == ref.shape
    significant = ref > 1e-6 * ref.max()
    assert significant.float().mean() > 0.5
    rel = (ours - ref).abs()[significant] / ref[significant]
    assert rel.max().item() < rtol


# --------------------------------------------------------------------------------------------
# Eq. 1: STFT
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_fft", "hop", "win_length", "center", "window", "torch_window"),
    [
        (400, 160, None, True, "hann", torch.hann_window),
        (512, 128, 400, False, "hann", torch.hann_window),
        (256, 64, 200, True, "hamming", torch.hamming_window),
        (255, 100, None, False, "blackman", torch.blackman_window),
    ],
)
def test_stft_matches_torch_stft(n_fft, hop, win_length, center, window, torch_window) -> None:
    x = make_signal(batch=2, seconds=0.5)
    ours = stft(x, n_fft, hop, win_length=win_length, window=window, center=center)
    ref = torch.stft(
        x,
        n_fft,
        hop,
        win_length=win_length,
        window=torch_window(win_length or n_fft),
        center=center,
        pad_mode="reflect",
        return_complex=True,
    ).transpose(1, 2)
    assert ours.shape == ref.shape == (2, ref.shape[1], n_fft // 2 + 1)
    assert ours.is_complex()
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    # A 1-D signal is a batch of one.
    torch.testing.assert_close(stft(x[0], n_fft, hop, win_length, window, center), ours[:1])


def test_stft_is_eq1_up_to_the_frame_phase() -> None:
    """Eq. 1 summed literally equals the STFT times exp(-j 2 pi k n hop / N)."""
    n_fft, hop = 16, 4
    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = stft(x, n_fft, hop, center=False)[0]  # (frames, n_fft // 2 + 1)
    w = torch.hann_window(n_fft, dtype=torch.float64)
    m = torch.arange(len(x))
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    mf = m.double()
    for n in range(ours.shape[0]):
        start = n * hop
        inside = (m >= start) & (m < start + n_fft)
        w_shift = torch.zeros(len(x), dtype=torch.float64)
        w_shift[inside] = w[m[inside] - start]  # w(m - n) with the frame starting at n * hop
        basis = torch.exp(-2j * math.pi * k[:, None] * mf[None, :] / n_fft)
        eq1 = (x * w_shift * basis).sum(dim=-1)
        phase = torch.exp(-2j * math.pi * k * start / n_fft)
        torch.testing.assert_close(eq1, ours[n] * phase)


# --------------------------------------------------------------------------------------------
# Eq. 2: Mel filter bank
# --------------------------------------------------------------------------------------------


def test_mel_scale_values_and_inverse() -> None:
    assert hz_to_mel(700.0) == pytest.approx(2595 * math.log10(2))
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.1)  # the scale's anchor
    freqs = torch.tensor([0.0, 100.0, 1000.0, 8000.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(freqs)), freqs)
    assert mel_to_hz(hz_to_mel(440.0)) == pytest.approx(440.0)


@pytest.mark.parametrize(
    ("n_freqs", "n_mels", "sample_rate", "f_min", "f_max"),
    [
        (201, 64, 16000, 0.0, None),
        (257, 40, 16000, 0.0, None),
        (513, 80, 16000, 0.0, None),
        (129, 32, 16000, 100.0, 4000.0),
        (1025, 128, 44100, 20.0, 16000.0),
    ],
)
def test_mel_filterbank_matches_torchaudio(n_freqs, n_mels, sample_rate, f_min, f_max) -> None:
    ours = mel_filterbank(n_freqs, n_mels, sample_rate, f_min, f_max)
    ref = torchaudio.functional.melscale_fbanks(
        n_freqs, f_min, f_max or sample_rate / 2, n_mels, sample_rate, norm=None, mel_scale="htk"
    )
    assert ours.shape == (n_freqs, n_mels)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_mel_filters_are_triangles_peaking_at_their_centres() -> None:
    bank = mel_filterbank(513, 40, SR)
    centres = mel_band_edges(40, SR)[1:-1]
    bin_hz = SR / 1024
    peak_hz = bank.argmax(dim=0) * bin_hz
    assert (peak_hz - centres).abs().max() <= bin_hz
    assert bank.min() >= 0 and bank.max() <= 1


# --------------------------------------------------------------------------------------------
# Eq. 3: log-Mel spectrogram
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_fft", "hop", "n_mels", "f_min", "f_max"), MEL_SETTINGS)
def test_mel_power_matches_torchaudio(n_fft, hop, n_mels, f_min, f_max) -> None:
    x = make_signal(batch=3)
    ref = reference_mel_power(x, n_fft, hop, n_mels, f_min, f_max)
    kwargs = dict(n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_min=f_min, f_max=f_max)
    log_mel = floored_log(LogMel(SR, **kwargs).mel_power(x))
    assert log_mel.shape == (3, 1 + x.shape[1] // hop, n_mels)
    assert_power_close(log_mel.exp(), ref)
    assert_power_close(LogMel(SR, **kwargs).mel_power(x), ref)
    # Mono input: a batch of one, equal to the first row of the batched result.
    mono = floored_log(LogMel(SR, **kwargs).mel_power(x[0]))
    assert mono.shape == (1, *log_mel.shape[1:])
    assert_power_close(mono.exp(), reference_mel_power(x[0], n_fft, hop, n_mels, f_min, f_max))
    torch.testing.assert_close(mono, log_mel[:1])


def test_log_mel_module_equals_stft_and_filterbank_in_chunks(monkeypatch) -> None:
    x = make_signal(batch=4)
    module = LogMel(SR, n_fft=512, hop_length=128, n_mels=40, f_min=50.0, f_max=7600.0)
    power = stft(x, 512, 128).abs().square() @ mel_filterbank(257, 40, SR, 50.0, 7600.0)
    expected = floored_log(power)
    torch.testing.assert_close(floored_log(module.mel_power(x)), expected)
    torch.testing.assert_close(module(x), expected)
    monkeypatch.setattr(audio, "CPU_CHUNK_ELEMENTS", 512 * 200)  # one clip per chunk
    torch.testing.assert_close(module(x), expected)
    assert set(module.state_dict()) == {"window", "filterbank"}
    assert module.filterbank.shape == (257, 40)


def test_log_mel_module_ignores_autocast_and_follows_dtype() -> None:
    x = make_signal(batch=2)
    module = LogMel(SR)
    expected = module(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = module(x)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected)
    double = module.to(torch.float64)(x.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_module_on_cuda_matches_cpu() -> None:
    x = make_signal(batch=3)
    module = LogMel(SR)
    on_gpu = module.to("cuda")(x.to("cuda"))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), LogMel(SR)(x), rtol=1e-3, atol=1e-3)


def test_1khz_tone_peaks_in_the_band_centred_nearest_1khz() -> None:
    t = torch.arange(SR) / SR
    tone = 0.5 * torch.sin(2 * math.pi * 1000.0 * t)
    log_mel = floored_log(LogMel(SR, n_mels=64).mel_power(tone))
    loudest = log_mel[0].mean(dim=0).argmax().item()
    centres = mel_band_edges(64, SR)[1:-1]
    assert loudest == (centres - 1000.0).abs().argmin().item()


def test_silence_gives_log_floor_not_minus_inf() -> None:
    for floor in (1e-10, 1e-5):
        log_mel = floored_log(LogMel(SR).mel_power(torch.zeros(2, SR)), log_floor=floor)
        assert torch.isfinite(log_mel).all()
        assert (log_mel == torch.log(torch.tensor(floor))).all()
    assert (LogMel(SR)(torch.zeros(SR)) == torch.log(torch.tensor(1e-10))).all()


def test_floor_is_a_clamp_before_the_log() -> None:
    x = 1e-3 * make_signal(batch=2)
    power = LogMel(SR).mel_power(x)
    floor = power.median().item()
    expected = torch.log(torch.clamp(power, min=floor))
    torch.testing.assert_close(floored_log(power, log_floor=floor), expected)
    torch.testing.assert_close(LogMel(SR, log_floor=floor)(x), expected)
    assert (power < floor).float().mean() == pytest.approx(0.5, abs=0.01)  # both sides tested


# --------------------------------------------------------------------------------------------
# Parameter and input checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"n_fft": 0}, "n_fft"),
        ({"hop_length": 0}, "hop_length"),
        ({"hop_length": 1.5}, "hop_length"),
        ({"win_length": 401}, "win_length"),
        ({"n_mels": 0}, "n_mels"),
        ({"f_min": -10.0}, "f_min"),
        ({"f_max": 9000.0}, "f_max"),
        ({"f_min": 5000.0, "f_max": 4000.0}, "f_min"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, named) -> None:
    with pytest.raises(ValueError, match=named):
        LogMel(SR, **kwargs)


@pytest.mark.parametrize("log_floor", [0.0, -1e-10])
def test_bad_log_floor_is_named(log_floor) -> None:
    with pytest.raises(ValueError, match="log_floor"):
        floored_log(LogMel(SR).mel_power(torch.zeros(SR)), log_floor)
    with pytest.raises(ValueError, match="log_floor"):
        LogMel(SR, log_floor=log_floor)


def test_bad_filterbank_and_window_parameters() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        mel_filterbank(201, 64, 0)
    with pytest.raises(ValueError, match="n_freqs"):
        mel_filterbank(1, 64, SR)
    with pytest.raises(ValueError, match="window"):
        stft(torch.zeros(SR), 400, 160, window="kaiser")
    with pytest.raises(ValueError, match="pad_mode"):
        stft(torch.zeros(SR), 400, 160, pad_mode="circular")
    with pytest.warns(UserWarning, match="cover no STFT frequency"):
        mel_filterbank(65, 128, SR)


def test_short_waveforms_name_length_and_n_fft() -> None:
    with pytest.raises(ValueError, match=r"399 samples.*n_fft=400"):
        stft(torch.zeros(399), 400, 160, center=False)
    stft(torch.zeros(400), 400, 160, center=False)  # exactly one frame is enough
    with pytest.raises(ValueError, match=r"200 samples.*n_fft=400"):
        LogMel(SR).mel_power(torch.zeros(200))
    assert LogMel(SR).mel_power(torch.zeros(201)).shape == (1, 2, 64)
    with pytest.raises(ValueError, match=r"100 samples.*n_fft=400"):
        LogMel(SR)(torch.zeros(3, 100))


def test_bad_waveforms_are_refused() -> None:
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(2, SR)
        x[1, 123] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            LogMel(SR).mel_power(x)
    with pytest.raises(TypeError, match="floats"):
        LogMel(SR).mel_power(torch.zeros(SR, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        LogMel(SR).mel_power(torch.zeros(2, 1, SR))


# --------------------------------------------------------------------------------------------
# Loading audio
# --------------------------------------------------------------------------------------------


def test_real_cmu_wav_loads_as_16k_mono_and_matches_torchaudio(cmu_dir: Path) -> None:
    path = cmu_dir / "mosi_03bSnISJMiM_1.wav"
    waveform, rate = load_audio(path)
    assert rate == SR
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) / SR == pytest.approx(3.33, abs=0.01)
    stereo, file_rate = sf.read(path, dtype="float32", always_2d=True)
    assert file_rate == SR and stereo.shape[1] == 2
    np.testing.assert_allclose(waveform, stereo.mean(axis=1), atol=1e-7)
    both, _ = load_audio(path, mono=False)
    assert both.shape == (2, len(waveform))

    x = torch.from_numpy(waveform)
    assert_power_close(
        floored_log(LogMel(SR).mel_power(x)).exp(), reference_mel_power(x, 400, 160, 64, 0, None)
    )


def test_real_cmu_video_audio_track_is_decoded(cmu_dir: Path) -> None:
    waveform, rate = load_audio(cmu_dir / "mosi_Oz06ZWiO20M_6.mp4")
    assert rate == SR and waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) / SR == pytest.approx(7.5, abs=0.1)
    assert np.sqrt(np.mean(waveform**2)) > 0.01
    assert np.abs(waveform).max() <= 1.0
    both, _ = load_audio(cmu_dir / "mosi_Oz06ZWiO20M_6.mp4", sample_rate=8000, mono=False)
    assert both.shape[0] == 2 and both.shape[1] == pytest.approx(len(waveform) / 2, abs=2)
    with pytest.raises(AudioLoadError, match=r"7\.\d+ s.*min_seconds=10"):
        load_audio(cmu_dir / "mosi_Oz06ZWiO20M_6.mp4", min_seconds=10)


@pytest.fixture(scope="module")
def synthetic_clip(tmp_path_factory):
    corpus = SyntheticCorpus(DataConfig(n_samples=20), seed=0)
    sample = render_raw(corpus, 0)
    return sample, write_raw_sample(sample, tmp_path_factory.mktemp("raw"))


def test_synthetic_wav_loads_back(synthetic_clip) -> None:
    sample, paths = synthetic_clip
    waveform, rate = load_audio(paths["audio"], sample_rate=sample.sample_rate)
    assert rate == sample.sample_rate
    assert waveform.shape == sample.waveform.shape
    np.testing.assert_allclose(waveform, sample.waveform, atol=1.0 / 32768 + 1e-7)


def test_synthetic_video_without_audio_track_is_refused(synthetic_clip) -> None:
    _, paths = synthetic_clip
    with pytest.raises(AudioLoadError, match=r"no audio track") as info:
        load_audio(paths["video"])
    assert paths["video"].name in str(info.value)


def test_44k_stereo_wav_is_resampled_and_downmixed(tmp_path: Path) -> None:
    n = 44100 * 2 + 37
    t = np.arange(n) / 44100
    left = 0.6 * np.sin(2 * np.pi * 440.0 * t)
    right = 0.2 * np.sin(2 * np.pi * 440.0 * t)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    waveform, rate = load_audio(path)
    assert rate == SR
    assert len(waveform) == math.ceil(n * SR / 44100)
    spectrum = np.abs(np.fft.rfft(waveform))
    assert np.fft.rfftfreq(len(waveform), 1 / SR)[spectrum.argmax()] == pytest.approx(440, abs=1)
    middle = waveform[SR // 2 : -SR // 2]
    assert np.abs(middle).max() == pytest.approx(0.4, abs=0.01)  # mean of 0.6 and 0.2
    both, _ = load_audio(path, mono=False)
    assert both.shape == (2, len(waveform))


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioLoadError, match=r"missing\.wav does not exist"):
        load_audio(missing)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioLoadError, match=r"empty\.wav is empty"):
        load_audio(empty)
    no_samples = tmp_path / "no_samples.wav"
    sf.write(no_samples, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioLoadError, match=r"no_samples\.wav holds no audio samples"):
        load_audio(no_samples)
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioLoadError, match=r"noise\.wav could not be decoded"):
        load_audio(noise)
    with pytest.raises(AudioLoadError, match="not a file"):
        load_audio(tmp_path)


@pytest.mark.parametrize("rate", [SR, 22050])  # read as is, and resampled
def test_nonfinite_samples_are_refused_naming_the_file_and_count(tmp_path: Path, rate) -> None:
    wave = np.zeros(rate, dtype=np.float32)
    wave[[100, 200, 300]] = [np.nan, np.inf, -np.inf]
    wave[400] = 5.0  # finite but out of range: clipped, not refused
    path = tmp_path / "nan.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match=(
        rf"{re.escape(str(path))} holds 3 non-finite sample value\(s\) \(NaN or infinite\) of "
        f"{rate:,}"
    )):
        load_audio(path)
    wave[[100, 200, 300]] = 0.0
    sf.write(path, wave, rate, subtype="FLOAT")
    loaded, _ = load_audio(path)
    assert np.isfinite(loaded).all() and np.abs(loaded).max() == 1.0
