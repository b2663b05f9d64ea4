"""Audio features of CorMulT (section 3.2.1): STFT, Mel filter bank and log-Mel spectrogram.

The three equations of the paper, written out with torch operations:

* Eq. 1, the short-time Fourier transform
  ``X(n, k) = sum_m x(m) w(m - n) exp(-j 2 pi k m / N)``: :func:`stft` cuts the waveform
  into overlapping frames, multiplies each by the window ``w`` and takes an FFT of ``N = n_fft``
  points per frame.
* Eq. 2, the triangular Mel filters ``H_m(k)``: :func:`mel_filterbank`, with the centre
  frequencies ``f_m`` evenly spaced on the HTK Mel scale ``mel = 2595 log10(1 + f / 700)``.
* Eq. 3, the log-Mel spectrogram ``X_mel(n, m) = log(sum_k |X(n, k)|^2 H_m(k))``, in its two
  steps: :meth:`LogMel.mel_power` (the Mel power inside the log) and :func:`floored_log` (the
  log, with a floor for silence); the module :class:`LogMel` holds the settings of both and
  its forward pass does both. The result is the
  audio representation ``F_A`` of shape ``(batch, frames, n_mels)``, the paper's ``b x t x m``.

:func:`load_audio` turns an audio file or the audio track of a video into the float32
waveform these functions take.
"""

from __future__ import annotations

import io
import math
import subprocess
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional
from torch import nn

WINDOWS: dict[str, Callable[..., torch.Tensor]] = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
}
PAD_MODES = ("reflect", "constant", "replicate")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm")
CPU_CHUNK_ELEMENTS = 1 << 21  # frame samples per CPU chunk of the log-Mel (8 MiB in float32)


# --------------------------------------------------------------------------------------------
# Eq. 1: short-time Fourier transform
# --------------------------------------------------------------------------------------------


def make_window(
    n_fft: int,
    win_length: int | None = None,
    window: str = "hann",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The analysis window ``w`` of Eq. 1, ``(n_fft,)``.

    A periodic window of ``win_length`` points (``n_fft`` when ``None``), zero-padded on both
    sides to ``n_fft`` points and centred, as ``torch.stft`` does with a shorter window.
    """
    win_length = _check_stft_params(n_fft, 1, win_length)
    if window not in WINDOWS:
        raise ValueError(f"window={window!r} is not known: expected one of {tuple(WINDOWS)}")
    core = WINDOWS[window](win_length, periodic=True, dtype=dtype)
    left = (n_fft - win_length) // 2
    return F.pad(core, (left, n_fft - win_length - left))


def stft(
    waveform: torch.Tensor | np.ndarray,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: str = "hann",
    center: bool = True,
    pad_mode: str = "reflect",
) -> torch.Tensor:
    """Short-time Fourier transform (Eq. 1): complex ``(batch, frames, n_fft // 2 + 1)``.

    Frame ``n`` starts at sample ``n * hop_length``; its ``n_fft`` samples are multiplied by the
    window (:func:`make_window`) and transformed with a real FFT, which keeps the
    ``n_fft // 2 + 1`` non-negative frequencies ``f_k = k * sample_rate / n_fft`` (the others
    are their complex conjugates). The phase is measured from the start of each frame, so it
    differs from Eq. 1's ``exp(-j 2 pi k m / N)`` by ``exp(-j 2 pi k n hop / N)``; the power
    ``|X(n, k)|^2`` used by Eq. 3 is the same. The result equals
    ``torch.stft(..., return_complex=True).transpose(-1, -2)``.

    Args:
        waveform: ``(time,)`` or ``(batch, time)`` float signal; a 1-D signal is a batch of one.
        n_fft: FFT size ``N`` (and frame length) in samples.
        hop_length: samples between the starts of consecutive frames.
        win_length: length of the window before zero-padding to ``n_fft``; ``None`` means
            ``n_fft``.
        window: ``"hann"``, ``"hamming"`` or ``"blackman"`` (periodic).
        center: pad ``n_fft // 2`` samples on both sides so frame ``n`` is centred on sample
            ``n * hop_length``; then ``frames = 1 + (time + 2 * (n_fft // 2) - n_fft) //
            hop_length`` (``1 + time // hop_length`` for an even ``n_fft``), otherwise
            ``1 + (time - n_fft) // hop_length``.
        pad_mode: how to pad when ``center``: ``"reflect"``, ``"constant"`` or ``"replicate"``.
    """
    signal = _as_batch(waveform)
    win = make_window(n_fft, win_length, window, dtype=signal.dtype).to(signal.device)
    _check_hop_and_length(signal.shape[-1], n_fft, hop_length, center, pad_mode)
    return _windowed_rfft(signal, win, hop_length, center, pad_mode)


def _windowed_rfft(
    signal: torch.Tensor, window: torch.Tensor, hop_length: int, center: bool, pad_mode: str
) -> torch.Tensor:
    """Eq. 1 on checked input: ``(batch, time)`` and ``(n_fft,)`` -> ``(batch, frames, freqs)``."""
    n_fft = window.shape[0]
    if center:
        pad = n_fft // 2
        signal = F.pad(signal.unsqueeze(1), (pad, pad), mode=pad_mode).squeeze(1)
    frames = signal.unfold(-1, n_fft, hop_length)  # (batch, frames, n_fft), a view
    return torch.fft.rfft(frames * window, dim=-1)


# --------------------------------------------------------------------------------------------
# Eq. 2: Mel filter bank
# --------------------------------------------------------------------------------------------


def hz_to_mel(freq: float | torch.Tensor) -> float | torch.Tensor:
    """HTK Mel scale: ``mel = 2595 log10(1 + f / 700)``."""
    if isinstance(freq, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_to_hz(mel: float | torch.Tensor) -> float | torch.Tensor:
    """Inverse of :func:`hz_to_mel`: ``f = 700 (10^(mel / 2595) - 1)``."""
    if isinstance(mel, torch.Tensor):
        return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_band_edges(
    n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """``(n_mels + 2,)`` float32 frequencies in Hz: ``f_0 = f_min``, the centres ``f_1`` to
    ``f_{n_mels}`` of the Mel bands, ``f_{n_mels + 1} = f_max`` (evenly spaced in Mel)."""
    f_max = _check_mel_params(n_mels, sample_rate, f_min, f_max)
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    return mel_to_hz(mels)


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> torch.Tensor:
    """The triangular Mel filters ``H_m(k)`` of Eq. 2 as a float32 ``(n_freqs, n_mels)`` matrix.

    Column ``m`` rises linearly from 0 at ``f_{m-1}`` to 1 at the band centre ``f_m`` and falls
    back to 0 at ``f_{m+1}`` (HTK Mel scale, no area normalisation), evaluated at the STFT
    frequencies ``f_k``, ``n_freqs`` points evenly spaced from 0 to ``sample_rate / 2``. The
    paper writes it as ``M x K``; this is its transpose, so ``power @ H`` is Eq. 3's sum. Equals
    ``torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate,
    norm=None, mel_scale="htk")`` exactly for an even ``sample_rate`` (both work in float32
    with the same operations); for an odd one torchaudio's frequencies end at
    ``sample_rate // 2``, half a hertz below these.
    """
    if not isinstance(n_freqs, int) or n_freqs < 2:
        raise ValueError(f"n_freqs must be an integer >= 2, got {n_freqs!r}")
    edges = mel_band_edges(n_mels, sample_rate, f_min, f_max)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs).unsqueeze(1)
    rising = (freqs - lower) / (centre - lower)  # f_{m-1} <= f_k < f_m
    falling = (upper - freqs) / (upper - centre)  # f_m <= f_k < f_{m+1}
    bank = torch.minimum(rising, falling).clamp(min=0.0)  # 0 outside the triangle
    empty = torch.nonzero(bank.amax(dim=0) == 0).flatten().tolist()
    if empty:
        warnings.warn(
            f"Mel filters {empty} cover no STFT frequency: n_mels={n_mels} is too many for "
            f"n_freqs={n_freqs} between f_min={f_min} and f_max={float(edges[-1])}; these bands "
            "will always hold log_floor",
            stacklevel=2,
        )
    return bank


# --------------------------------------------------------------------------------------------
# Eq. 3: (log-)Mel spectrogram
# --------------------------------------------------------------------------------------------


def floored_log(power: torch.Tensor, log_floor: float = 1e-10) -> torch.Tensor:
    """Eq. 3's log with a floor, ``log(max(power, log_floor))`` (natural log), same shape.

    ``floored_log(LogMel(sample_rate).mel_power(waveform))`` is the log-Mel spectrogram
    ``F_A``. The floor is applied before the log, so silence gives ``log(log_floor)``, never
    ``-inf`` or NaN.

    Args:
        power: Mel powers (any shape), e.g. of :meth:`LogMel.mel_power`.
        log_floor: smallest power before the log (> 0).
    """
    return _floored_log_(power.clone(), _check_log_floor(log_floor))


def _floored_log_(power: torch.Tensor, log_floor: float) -> torch.Tensor:
    """:func:`floored_log` in place, on a tensor the caller owns and a checked floor."""
    return power.clamp_(min=log_floor).log_()


def _mel_power(
    signal: torch.Tensor,
    window: torch.Tensor,
    bank: torch.Tensor,
    hop_length: int,
    center: bool,
    pad_mode: str,
) -> torch.Tensor:
    """``|X|^2 @ H`` on checked input: ``(batch, time)`` -> ``(batch, frames, n_mels)``.

    On the CPU the clips go through in groups of about ``CPU_CHUNK_ELEMENTS`` frame samples, so
    the windowed frames, their spectrum and power stay in cache instead of being written to
    memory for the whole batch at once (about 2.5x faster for 32 ten-second clips on an idle
    2-core machine; on a CPU shared with other busy processes the extra synchronisation points
    of the chunks can cost more than they save). A GPU takes the whole batch at once.
    """
    n_fft = window.shape[0]
    padded = signal.shape[-1] + (2 * (n_fft // 2) if center else 0)
    n_frames = 1 + (padded - n_fft) // hop_length
    rows = signal.shape[0]
    if signal.device.type == "cpu":
        rows = max(1, CPU_CHUNK_ELEMENTS // (n_frames * n_fft))
    parts = []
    for start in range(0, signal.shape[0], rows):
        spec = _windowed_rfft(signal[start : start + rows], window, hop_length, center, pad_mode)
        power = spec.real.square().addcmul_(spec.imag, spec.imag)  # |X|^2 = re^2 + im^2
        parts.append(torch.matmul(power, bank))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


class LogMel(nn.Module):
    """Eq. 3 as a module: :func:`floored_log` of :meth:`mel_power`, ``(batch, time)`` ->
    ``(batch, frames, n_mels)``.

    The window and the filter bank are computed once and kept as buffers, so ``.to("cuda")``
    moves them with the module and repeated calls only run the STFT, one matmul and the log.
    The computation runs in the buffers' dtype (float32 unless the module is cast) with autocast
    switched off: Mel powers of a loud clip exceed the float16 range. The defaults (25 ms
    windows every 10 ms at 16 kHz, 64 bands) give 100 frames per second.

    Args:
        sample_rate: of the waveforms, in Hz.
        n_fft: FFT size and frame length in samples.
        hop_length: samples between frame starts.
        win_length: window length before zero-padding to ``n_fft`` (``None``: ``n_fft``).
        n_mels: number of Mel bands ``m``.
        f_min, f_max: frequency range of the filter bank in Hz (``f_max=None``: Nyquist).
        log_floor: smallest power before the log (> 0), see :func:`floored_log`.
        center: centre frame ``n`` on sample ``n * hop_length`` (see :func:`stft`).
        window: one of :data:`WINDOWS`.
        pad_mode: how a centred STFT pads the ends, one of :data:`PAD_MODES`.
    """

    window: torch.Tensor
    filterbank: torch.Tensor

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 400,
        hop_length: int = 160,
        win_length: int | None = None,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_floor: float = 1e-10,
        center: bool = True,
        window: str = "hann",
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        _check_stft_params(n_fft, hop_length, win_length)
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode={pad_mode!r} is not known: expected one of {PAD_MODES}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.log_floor = _check_log_floor(log_floor)
        self.center = center
        self.pad_mode = pad_mode
        self.register_buffer("window", make_window(n_fft, win_length, window))
        bank = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max)
        self.register_buffer("filterbank", bank)

    def mel_power(self, waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The Mel power inside Eq. 3's log, ``sum_k |X(n, k)|^2 H_m(k)``: ``(time,)`` or
        ``(batch, time)`` -> ``(batch, frames, n_mels)`` (buffers' device and dtype).

        ``X`` is the windowed STFT of :func:`stft` and ``H`` the filters of
        :func:`mel_filterbank`; a 1-D signal is a batch of one.
        """
        signal = _as_batch(waveform).to(device=self.window.device, dtype=self.window.dtype)
        _check_hop_and_length(
            signal.shape[-1], self.n_fft, self.hop_length, self.center, self.pad_mode
        )
        with torch.autocast(device_type=signal.device.type, enabled=False):
            return _mel_power(
                signal, self.window, self.filterbank, self.hop_length, self.center, self.pad_mode
            )

    def forward(self, waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The log-Mel spectrogram ``F_A``: ``(time,)`` or ``(batch, time)`` -> ``(batch,
        frames, n_mels)`` (buffers' device)."""
        return _floored_log_(self.mel_power(waveform), self.log_floor)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, log_floor={self.log_floor}, center={self.center}"
        )


# --------------------------------------------------------------------------------------------
# Parameter and input checks
# --------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_stft_params(n_fft: int, hop_length: int, win_length: int | None) -> int:
    """Check the framing parameters; return the effective ``win_length``."""
    _check_positive_int("n_fft", n_fft)
    _check_positive_int("hop_length", hop_length)
    if win_length is None:
        return n_fft
    _check_positive_int("win_length", win_length)
    if win_length > n_fft:
        raise ValueError(f"win_length={win_length} must be <= n_fft={n_fft}")
    return win_length


def _check_mel_params(n_mels: int, sample_rate: int, f_min: float, f_max: float | None) -> float:
    """Check the filter-bank parameters; return the effective ``f_max``."""
    _check_positive_int("n_mels", n_mels)
    _check_positive_int("sample_rate", sample_rate)
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {nyquist:g} Hz, got f_min={f_min}, "
            f"f_max={f_max}"
        )
    return f_max


def _check_log_floor(log_floor: float) -> float:
    if not (isinstance(log_floor, int | float) and math.isfinite(log_floor) and log_floor > 0):
        raise ValueError(f"log_floor must be a finite number > 0, got {log_floor!r}")
    return float(log_floor)


def _check_hop_and_length(
    length: int, n_fft: int, hop_length: int, center: bool, pad_mode: str
) -> None:
    """The waveform must hold one frame (``center=False``) or allow the padding."""
    _check_stft_params(n_fft, hop_length, None)
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode={pad_mode!r} is not known: expected one of {PAD_MODES}")
    if length == 0:
        raise ValueError("waveform has 0 samples")
    if not center and length < n_fft:
        raise ValueError(
            f"waveform has {length} samples, fewer than one frame of n_fft={n_fft} (center=False)"
        )
    if center and pad_mode == "reflect" and length <= n_fft // 2:
        raise ValueError(
            f"waveform has {length} samples; reflect padding with n_fft={n_fft} needs at least "
            f"n_fft // 2 + 1 = {n_fft // 2 + 1}"
        )


def _as_batch(waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``(time,)`` or ``(batch, time)`` finite float -> ``(batch, time)`` tensor."""
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(waveform)
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform must be a torch.Tensor or numpy array, got {type(waveform)}")
    if not waveform.is_floating_point():
        raise TypeError(f"waveform must hold floats, got dtype {waveform.dtype}")
    if waveform.ndim not in (1, 2):
        raise ValueError(
            f"waveform must have shape (time,) or (batch, time), got {tuple(waveform.shape)}"
        )
    # One cheap pass: a sum is finite unless a value is NaN/inf (or the values are ~1e38).
    if not torch.isfinite(waveform.sum()) and not torch.isfinite(waveform).all():
        raise ValueError("waveform holds NaN or infinite values")
    return waveform.unsqueeze(0) if waveform.ndim == 1 else waveform


# --------------------------------------------------------------------------------------------
# Loading audio files and audio tracks
# --------------------------------------------------------------------------------------------


class AudioLoadError(ValueError):
    """An audio file or video's audio track could not be turned into a waveform."""


def load_audio(
    path: str | Path,
    sample_rate: int = 16000,
    mono: bool = True,
    min_seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """Read an audio file or the audio track of a video as float32 in [-1, 1].

    wav/flac/ogg/mp3 are read with soundfile and resampled with
    ``torchaudio.functional.resample`` when their rate differs from ``sample_rate``. Video
    containers (.mp4, .mkv, .avi, .mov, .webm), and any file soundfile cannot read, go through
    the ffmpeg binary of ``imageio_ffmpeg``, which decodes the first audio track at
    ``sample_rate``. Samples outside [-1, 1] (float files, resampling overshoot) are clipped.

    Args:
        path: the file.
        sample_rate: rate of the returned waveform, in Hz.
        mono: average the channels into one.
        min_seconds: refuse clips shorter than this.

    Returns:
        ``(waveform, sample_rate)`` with ``waveform`` of shape ``(time,)`` when ``mono``,
        otherwise ``(channels, time)``.

    Raises:
        AudioLoadError: naming the file, when it is missing or empty, has no audio track or no
            samples, holds NaN or infinite samples, cannot be decoded, or is shorter than
            ``min_seconds``.
    """
    _check_positive_int("sample_rate", sample_rate)
    path = Path(path).expanduser()
    if not path.exists():
        raise AudioLoadError(f"audio file {path} does not exist")
    if not path.is_file():
        raise AudioLoadError(f"audio path {path} is not a file")
    if path.stat().st_size == 0:
        raise AudioLoadError(f"audio file {path} is empty (0 bytes)")

    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        channels, file_rate = _decode_with_ffmpeg(path, sample_rate)
    else:
        try:
            data, file_rate = sf.read(path, dtype="float32", always_2d=True)
            channels = data.T
        except sf.LibsndfileError as err:
            try:
                channels, file_rate = _decode_with_ffmpeg(path, sample_rate)
            except AudioLoadError as ffmpeg_err:
                raise AudioLoadError(
                    f"audio file {path} could not be decoded: soundfile said {err}; {ffmpeg_err}"
                ) from err

    if channels.shape[-1] == 0:
        raise AudioLoadError(f"audio file {path} holds no audio samples")
    nonfinite = int(channels.size - np.isfinite(channels).sum())
    if nonfinite:
        raise AudioLoadError(
            f"audio file {path} holds {nonfinite:,} non-finite sample value(s) (NaN or "
            f"infinite) of {channels.size:,}; expected finite samples"
        )
    if file_rate != sample_rate:
        resampled = torchaudio.functional.resample(
            torch.from_numpy(np.ascontiguousarray(channels)), file_rate, sample_rate
        )
        channels = resampled.numpy()
    waveform = channels.mean(axis=0) if mono else channels
    waveform = np.clip(waveform, -1.0, 1.0).astype(np.float32, copy=False)
    duration = waveform.shape[-1] / sample_rate
    if min_seconds is not None and duration < min_seconds:
        raise AudioLoadError(
            f"audio file {path} lasts {duration:.3f} s, shorter than min_seconds={min_seconds}"
        )
    return waveform, sample_rate


def _decode_with_ffmpeg(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    """First audio track of ``path`` at ``sample_rate``: ``((channels, time) float32, rate)``.

    ffmpeg writes a float WAV to a pipe; its header tells soundfile the channel count.
    """
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-vn",
        "-ar",
        str(sample_rate),
        "-c:a",
        "pcm_f32le",
        "-f",
        "wav",
        "-",
    ]
    result = subprocess.run(command, capture_output=True, check=False)
    message = result.stderr.decode(errors="replace").strip()
    if "matches no streams" in message or "does not contain any stream" in message:
        raise AudioLoadError(f"{path} has no audio track")
    if result.returncode != 0 or not result.stdout:
        last = message.splitlines()[-1] if message else f"exit status {result.returncode}"
        raise AudioLoadError(f"ffmpeg could not decode the audio of {path}: {last}")
    try:
        data, rate = sf.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise AudioLoadError(f"ffmpeg's decoding of {path} could not be read: {err}") from err
    if data.shape[0] == 0:
        raise AudioLoadError(f"{path} has no audio track (ffmpeg decoded zero samples)")
    return data.T, rate


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """``waveform`` ``(samples,)`` from ``source_rate`` to ``target_rate`` Hz
    (``torchaudio.functional.resample``)."""
    if source_rate == target_rate:
        return waveform
    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    return torchaudio.functional.resample(tensor, source_rate, target_rate).numpy()


def check_waveforms(waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``waveforms`` as float32 arrays; refuses one that is not 1-D, empty or non-finite."""
    out = []
    for i, wave in enumerate(waveforms):
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"waveforms[{i}] must be a non-empty 1-D array, got {wave.shape}")
        if not np.isfinite(wave).all():
            raise ValueError(f"waveforms[{i}] holds non-finite samples")
        out.append(wave)
    return out
