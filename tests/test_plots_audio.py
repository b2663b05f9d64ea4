"""The figures of chapter 01 (spectrograms): what each draws, checked on small known inputs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cormult_lib.features.audio import hz_to_mel, mel_band_edges, mel_filterbank  # noqa: E402
from cormult_lib.tutorial.spectrogram_plots import (
    plot_log_mel_pair,
    plot_mel_filterbank,
    plot_spectrogram_rows,
    plot_stft_frame,
    plot_waveform_and_spectrogram,
)

SR = 16000
WORDS = pd.DataFrame(
    {"word": ["a", "b", "c"], "start": [0.1, 0.4, 0.7], "end": [0.3, 0.6, 0.9], "emphasis": 0.5}
)


@pytest.fixture(autouse=True)
def no_files_and_closed_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each test in an empty folder, check it wrote nothing, and close its figures."""
    monkeypatch.chdir(tmp_path)
    yield
    plt.close("all")
    assert not any(tmp_path.iterdir()), "plotting must not write files"


def images(fig: plt.Figure) -> list:
    return [image for ax in fig.axes for image in ax.images]


def span_count(ax: plt.Axes) -> int:
    """Word spans are drawn with ``axvspan``: one rectangle patch each."""
    return len(ax.patches)


def test_stft_frame_draws_frame_window_and_both_spectra() -> None:
    n_fft = 64
    t = np.arange(n_fft) / SR
    frame = np.sin(2 * math.pi * 1000 * t)
    window = np.hanning(n_fft)
    fig = plot_stft_frame(frame, window, SR, start_s=0.5)
    left, right = fig.axes
    assert len(fig.axes) == 2 and not images(fig)
    assert len(left.lines) == 3 and len(right.lines) == 2
    np.testing.assert_allclose(left.lines[0].get_xdata(), 1000 * (0.5 + t))
    np.testing.assert_allclose(left.lines[1].get_ydata(), frame * window)
    expected = 20 * np.log10(np.abs(np.fft.rfft(frame * window)) + 1e-10)
    np.testing.assert_allclose(right.lines[1].get_ydata(), expected)
    np.testing.assert_allclose(right.lines[1].get_xdata(), np.fft.rfftfreq(n_fft, 1 / SR))


def test_stft_frame_refuses_mismatched_window() -> None:
    with pytest.raises(ValueError, match="frame and window"):
        plot_stft_frame(np.zeros(64), np.ones(32), SR)


def test_waveform_and_spectrogram_share_time_and_mark_words() -> None:
    hop = 160
    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, SR)
    spec_db = np.random.default_rng(1).uniform(-100, 20, (1 + SR // hop, 201))
    fig = plot_waveform_and_spectrogram(waveform, SR, spec_db, hop, words=WORDS, title="clip")
    top, bottom, colorbar = fig.axes
    assert len(fig.axes) == 3 and len(images(fig)) == 1
    image = bottom.images[0]
    np.testing.assert_array_equal(image.get_array(), spec_db.T)
    assert image.get_clim() == pytest.approx((spec_db.max() - 80, spec_db.max()))
    assert span_count(top) == len(WORDS) and span_count(bottom) == len(WORDS)
    assert top.get_shared_x_axes().joined(top, bottom)
    assert bottom.get_xlim() == pytest.approx((0, 1.0))
    assert top.get_title(loc="left") == "clip"


def test_waveform_and_spectrogram_without_words() -> None:
    fig = plot_waveform_and_spectrogram(np.zeros(800), SR, np.zeros((6, 9)), 160)
    assert len(fig.axes) == 3 and all(span_count(ax) == 0 for ax in fig.axes[:2])


def test_mel_filterbank_draws_every_filter_and_the_mel_scale() -> None:
    n_mels = 20
    bank = mel_filterbank(201, n_mels, SR).numpy()
    fig = plot_mel_filterbank(bank, SR, highlight_every=5)
    left, right = fig.axes
    assert len(fig.axes) == 2 and not images(fig)
    assert len(left.lines) == n_mels
    highlighted = [text.get_text() for text in left.get_legend().get_texts()]
    assert highlighted == ["m=0", "m=5", "m=10", "m=15"]
    np.testing.assert_allclose(left.lines[7].get_ydata(), bank[:, 7])
    edges = mel_band_edges(n_mels, SR).numpy()
    np.testing.assert_allclose(right.lines[1].get_xdata(), edges)
    np.testing.assert_allclose(
        right.lines[1].get_ydata(), [hz_to_mel(float(f)) for f in edges], rtol=1e-6
    )


def test_log_mel_pair_shows_both_and_their_difference() -> None:
    rng = np.random.default_rng(2)
    ours = rng.normal(size=(50, 16))
    reference = ours + rng.normal(scale=1e-3, size=ours.shape)
    fig = plot_log_mel_pair(ours, reference, frame_rate=100.0)
    assert len(fig.axes) == 5  # three panels and two colour bars
    first, second, diff = images(fig)
    np.testing.assert_array_equal(first.get_array(), ours.T)
    np.testing.assert_array_equal(second.get_array(), reference.T)
    np.testing.assert_allclose(diff.get_array(), np.abs(ours - reference).T)
    assert first.get_clim() == second.get_clim()
    assert f"{np.abs(ours - reference).max():.1e}" in fig.axes[2].get_title()
    assert first.get_extent()[1] == pytest.approx(49.5 / 100.0)


def test_log_mel_pair_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        plot_log_mel_pair(np.zeros((10, 4)), np.zeros((11, 4)), 100.0)


def test_spectrogram_rows_share_one_colour_scale() -> None:
    log_mels = [np.full((30, 8), -5.0), np.linspace(-20, 3, 40 * 8).reshape(40, 8)]
    fig = plot_spectrogram_rows(log_mels, ["quiet", "ramp"], frame_rate=100.0)
    assert len(fig.axes) == 3  # two rows and one colour bar
    shown = images(fig)
    assert len(shown) == 2
    assert all(image.get_clim() == (-20.0, 3.0) for image in shown)
    np.testing.assert_array_equal(shown[1].get_array(), log_mels[1].T)
    assert [ax.get_title(loc="left") for ax in fig.axes[:2]] == ["quiet", "ramp"]
    assert "orange" not in fig.axes[1].get_xlabel()


def test_spectrogram_rows_with_words_and_traces() -> None:
    log_mels = [np.zeros((100, 8)), np.ones((80, 8))]
    curve = np.linspace(2.0, 6.0, 100)
    traces = [{"amplitude": curve, "envelope": curve**2}, {"amplitude": np.zeros(80)}]
    fig = plot_spectrogram_rows(
        log_mels, ["a", "b"], frame_rate=100.0, words=[WORDS, None], traces=traces
    )
    assert len(fig.axes) == 5  # 2 rows x 2 columns and one colour bar
    assert len(images(fig)) == 2
    grid = fig.axes[:4]
    assert span_count(grid[0]) == len(WORDS) and span_count(grid[2]) == 0
    lines = grid[1].lines
    assert len(lines) == 2 and len(grid[3].lines) == 1
    np.testing.assert_allclose(lines[0].get_ydata(), (curve - 2) / 4)
    assert lines[1].get_ydata().min() == 0 and lines[1].get_ydata().max() == 1
    np.testing.assert_array_equal(grid[3].lines[0].get_ydata(), np.zeros(80))
    np.testing.assert_allclose(lines[0].get_xdata(), np.arange(100) / 100.0)


def test_spectrogram_rows_refuse_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="titles"):
        plot_spectrogram_rows([np.zeros((5, 4))], ["a", "b"], 100.0)
    with pytest.raises(ValueError, match="traces"):
        plot_spectrogram_rows([np.zeros((5, 4))], ["a"], 100.0, traces=[{}, {}])
    with pytest.raises(ValueError, match=r"shape \(frames, bins\)"):
        plot_spectrogram_rows([np.zeros(5)], ["a"], 100.0)
