"""Chapter 01's figures: waveforms, STFT frames, Mel filter banks and log-Mel spectrograms
(CorMulT section 3.2.1, Eq. 1-3). Every function returns the matplotlib ``Figure`` it drew."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _draw_word_spans(ax: plt.Axes, words: pd.DataFrame | None, band: bool = False) -> None:
    """Shade the transcript's word spans (``start``/``end`` in seconds) on a time axis.

    ``band=True`` draws them as an orange strip along the top edge, for images that a full-height
    shading would hide.
    """
    if words is None:
        return
    for start, end in zip(words["start"], words["end"], strict=True):
        if band:
            ax.axvspan(start, end, ymin=0.94, ymax=1.0, color="tab:orange", alpha=0.95, lw=0)
        else:
            ax.axvspan(start, end, color="tab:orange", alpha=0.15, lw=0)


def _check_2d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (frames, bins), got {array.shape}")
    return array


def plot_stft_frame(
    frame: np.ndarray,
    window: np.ndarray,
    sample_rate: int,
    start_s: float = 0.0,
    window_name: str = "Hann",
) -> plt.Figure:
    """One frame of Eq. 1. Left: the frame ``x(m)``, the window ``w`` (scaled to the frame's
    peak) and their product over time; right: the frame's magnitude spectrum in dB, cut out
    with a rectangular window and with ``w``.

    ``frame`` and ``window`` are ``(n_fft,)``; ``start_s`` is where the frame starts, in seconds.
    """
    frame = np.asarray(frame, dtype=float)
    window = np.asarray(window, dtype=float)
    if frame.ndim != 1 or frame.shape != window.shape:
        raise ValueError(
            f"frame and window must both have shape (n_fft,), got {frame.shape} and {window.shape}"
        )
    n_fft = len(frame)
    t_ms = 1000 * (start_s + np.arange(n_fft) / sample_rate)
    peak = float(np.abs(frame).max()) or 1.0
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.4), layout="constrained")
    left.plot(t_ms, frame, color="tab:blue", lw=0.8, label="frame x(m)")
    left.plot(t_ms, frame * window, color="black", lw=0.8, label="windowed x(m) w(m - n)")
    left.plot(t_ms, peak * window, color="tab:orange", lw=1.5, label=f"{window_name} window w")
    left.set(
        xlabel="time (ms)",
        title=f"one frame: N = {n_fft} samples = {1000 * n_fft / sample_rate:g} ms",
    )
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    for signal, label, color in (
        (frame, "rectangular (no window)", "tab:blue"),
        (frame * window, f"{window_name} window", "black"),
    ):
        level_db = 20 * np.log10(np.abs(np.fft.rfft(signal)) + 1e-10)
        right.plot(freqs, level_db, color=color, lw=0.8, label=label)
    right.set(
        xlabel="frequency (Hz)",
        ylabel="|X(n, k)| (dB)",
        title=f"its spectrum: {n_fft // 2 + 1} bins, {sample_rate / n_fft:g} Hz apart",
    )
    right.legend(fontsize=8)
    return fig


def plot_waveform_and_spectrogram(
    waveform: np.ndarray,
    sample_rate: int,
    spectrogram_db: np.ndarray,
    hop_length: int,
    words: pd.DataFrame | None = None,
    title: str = "",
    dynamic_range_db: float = 80.0,
) -> plt.Figure:
    """The waveform above its spectrogram, sharing the time axis, with the word spans shaded.

    ``spectrogram_db`` is ``(frames, n_freqs)`` in dB with frame ``n`` centred on sample
    ``n * hop_length`` (``center=True``); its colours cover ``dynamic_range_db`` below the peak.
    """
    spec = _check_2d("spectrogram_db", spectrogram_db)
    waveform = np.asarray(waveform, dtype=float)
    frames, n_freqs = spec.shape
    frame_s = hop_length / sample_rate
    half_bin = sample_rate / (2 * (n_freqs - 1)) / 2
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(12, 5), sharex=True, height_ratios=(1, 2), layout="constrained"
    )
    top.plot(np.arange(len(waveform)) / sample_rate, waveform, lw=0.4, color="tab:blue")
    _draw_word_spans(top, words)
    top.set_ylabel("x(m)")
    top.set_title(title, loc="left", fontsize=10)
    vmax = float(spec.max())
    image = bottom.imshow(
        spec.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=vmax - dynamic_range_db,
        vmax=vmax,
        extent=(-frame_s / 2, (frames - 0.5) * frame_s, -half_bin, sample_rate / 2 + half_bin),
    )
    _draw_word_spans(bottom, words, band=True)
    bottom.set(xlabel="time (s); orange: the transcript's word spans", ylabel="frequency (Hz)")
    bottom.set_xlim(0, len(waveform) / sample_rate)
    fig.colorbar(image, ax=[top, bottom], label="|X(n, k)|² (dB)", shrink=0.6, location="right")
    return fig


def plot_mel_filterbank(
    filterbank: np.ndarray,
    sample_rate: int,
    highlight_every: int = 8,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> plt.Figure:
    """Eq. 2: the triangular filters ``H_m(k)`` over frequency, and the Mel scale they follow.

    ``filterbank`` is ``(n_freqs, n_mels)`` (as :func:`~cormult_lib.features.audio.mel_filterbank`
    returns it); every ``highlight_every``-th filter is coloured, the rest drawn in grey. The
    right panel plots ``mel = 2595 log10(1 + f / 700)`` with the band edges ``f_m`` of
    ``n_mels`` bands between ``f_min`` and ``f_max``, evenly spaced in Mel.
    """
    # Imported here: the audio features pull in torchaudio, which other figures do not need.
    from cormult_lib.features.audio import hz_to_mel, mel_band_edges

    bank = _check_2d("filterbank", filterbank)
    n_freqs, n_mels = bank.shape
    freqs = np.linspace(0, sample_rate / 2, n_freqs)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 3.6), width_ratios=(2, 1), layout="constrained"
    )
    colors = plt.get_cmap("viridis")
    for m in range(n_mels):
        if m % highlight_every == 0:
            left.plot(
                freqs, bank[:, m], color=colors(m / max(1, n_mels - 1)), lw=1.6, label=f"m={m}"
            )
        else:
            left.plot(freqs, bank[:, m], color="0.75", lw=0.7)
    left.set(
        xlabel="frequency f_k (Hz)",
        ylabel="H_m(k)",
        title=f"{n_mels} triangular Mel filters over {n_freqs} STFT bins",
    )
    left.legend(fontsize=7, ncol=2, title="highlighted", title_fontsize=7)
    edges = mel_band_edges(n_mels, sample_rate, f_min, f_max).numpy()
    grid = np.linspace(0, sample_rate / 2, 400)
    right.plot(grid, [hz_to_mel(float(f)) for f in grid], color="black", lw=1.2)
    right.plot(edges, [hz_to_mel(float(f)) for f in edges], "o", ms=2.5, color="tab:orange")
    right.set(
        xlabel="frequency (Hz)",
        ylabel="mel",
        title="mel = 2595 log10(1 + f / 700)\norange: band edges, evenly spaced in mel",
    )
    return fig


def plot_log_mel_pair(
    ours: np.ndarray,
    reference: np.ndarray,
    frame_rate: float,
    titles: tuple[str, str] = ("hand-written (Eq. 1-3)", "torchaudio"),
) -> plt.Figure:
    """Two log-Mel spectrograms ``(frames, n_mels)`` side by side and their absolute difference.

    ``frame_rate`` is frames per second (``sample_rate / hop_length``). The two spectrograms share
    one colour scale; the difference has its own.
    """
    ours = _check_2d("ours", ours)
    reference = _check_2d("reference", reference)
    if ours.shape != reference.shape:
        raise ValueError(f"ours {ours.shape} and reference {reference.shape} differ in shape")
    frames, n_mels = ours.shape
    extent = (-0.5 / frame_rate, (frames - 0.5) / frame_rate, -0.5, n_mels - 0.5)
    vmin = min(ours.min(), reference.min())
    vmax = max(ours.max(), reference.max())
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.4), layout="constrained")
    for ax, values, title in zip(axes[:2], (ours, reference), titles, strict=True):
        image = ax.imshow(
            values.T, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
            extent=extent,
        )  # fmt: skip
        ax.set(xlabel="time (s)", ylabel="Mel band m", title=title)
    fig.colorbar(image, ax=axes[:2], label="log Mel power", shrink=0.9)
    diff = np.abs(ours - reference)
    image = axes[2].imshow(diff.T, origin="lower", aspect="auto", cmap="viridis", extent=extent)
    axes[2].set(
        xlabel="time (s)", ylabel="Mel band m", title=f"|difference| (max {diff.max():.1e})"
    )
    fig.colorbar(image, ax=axes[2], shrink=0.9)
    return fig


def plot_spectrogram_rows(
    log_mels: Sequence[np.ndarray],
    titles: Sequence[str],
    frame_rate: float,
    words: Sequence[pd.DataFrame | None] | None = None,
    traces: Sequence[dict[str, np.ndarray]] | None = None,
) -> plt.Figure:
    """One row per clip: its log-Mel spectrogram ``(frames, n_mels)``, and optionally curves.

    All spectrograms share one colour scale, so levels (a noise floor) compare across rows.
    ``words`` (one word table or ``None`` per row) marks the transcript's word spans as an
    orange strip along the top of each spectrogram. ``traces`` (one ``{label: (frames,)}`` per
    row) adds a right-hand column where each curve is scaled to [0, 1] and drawn over time.
    ``frame_rate`` is frames per second; frame ``n`` sits at ``n / frame_rate`` seconds.
    """
    arrays = [_check_2d(f"log_mels[{i}]", values) for i, values in enumerate(log_mels)]
    if len(titles) != len(arrays):
        raise ValueError(f"got {len(titles)} titles for {len(arrays)} spectrograms")
    for name, per_row in (("words", words), ("traces", traces)):
        if per_row is not None and len(per_row) != len(arrays):
            raise ValueError(f"got {len(per_row)} {name} entries for {len(arrays)} spectrograms")
    n_cols = 1 if traces is None else 2
    fig, axes = plt.subplots(
        len(arrays),
        n_cols,
        figsize=(13 if traces is not None else 10, 1.9 * len(arrays) + 0.4),
        squeeze=False,
        width_ratios=(3, 2) if traces is not None else None,
        layout="constrained",
    )
    vmin = min(values.min() for values in arrays)
    vmax = max(values.max() for values in arrays)
    duration = max(len(values) for values in arrays) / frame_rate
    for row, values in enumerate(arrays):
        frames, n_mels = values.shape
        ax = axes[row, 0]
        image = ax.imshow(
            values.T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=vmin,
            vmax=vmax,
            extent=(-0.5 / frame_rate, (frames - 0.5) / frame_rate, -0.5, n_mels - 0.5),
        )
        _draw_word_spans(ax, None if words is None else words[row], band=True)
        ax.set_xlim(0, duration)
        ax.set_ylabel("Mel band")
        ax.set_title(titles[row], loc="left", fontsize=9)
        if traces is not None:
            right = axes[row, 1]
            for label, curve in traces[row].items():
                curve = np.asarray(curve, dtype=float)
                span = curve.max() - curve.min()
                scaled = (curve - curve.min()) / span if span > 0 else np.zeros_like(curve)
                right.plot(np.arange(len(curve)) / frame_rate, scaled, lw=0.9, label=label)
            right.set_xlim(0, duration)
            right.set_yticks([0, 1])
            if row == 0:
                right.legend(fontsize=7, loc="upper right")
    has_words = words is not None and any(table is not None for table in words)
    axes[-1, 0].set_xlabel(
        "time (s)" + ("; orange: the transcript's word spans" if has_words else "")
    )
    if traces is None:
        fig.colorbar(image, ax=axes[:, 0], label="log Mel power", shrink=0.8, pad=0.01)
    else:
        axes[-1, 1].set_xlabel("time (s); each curve scaled to [0, 1]")
        fig.colorbar(
            image, ax=axes[:, 0], label="log Mel power", location="bottom", shrink=0.5, aspect=40
        )
    return fig
