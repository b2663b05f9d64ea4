"""Figures the chapters share. Every function returns the matplotlib ``Figure`` it drew."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cormult_lib.data.synthetic_raw import RawSample


def plot_label_distribution(labels: np.ndarray, title: str = "Sentiment labels") -> plt.Figure:
    """Histogram of the regression labels next to the counts of the 7 classes."""
    labels = np.asarray(labels, dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.hist(labels, bins=np.arange(-3.25, 3.5, 1 / 3), color="tab:blue", edgecolor="white")
    left.axvline(0, color="black", lw=1)
    left.set(xlabel="sentiment in [-3, 3]", ylabel="samples", title=title)
    classes = np.round(np.clip(labels, -3, 3)).astype(int)
    counts = pd.Series(classes).value_counts().reindex(range(-3, 4), fill_value=0)
    right.bar(counts.index, counts.to_numpy(), color="tab:orange")
    right.set(xlabel="7-class label (rounded sentiment)", ylabel="samples", title="Acc-7 classes")
    fig.tight_layout()
    return fig


def plot_raw_samples(samples: Sequence[RawSample], n_frames: int = 4) -> plt.Figure:
    """One row per sample: ``n_frames`` video frames, then the waveform with the word spans.

    The title of each row gives the label, the discrepancy and the transcript.
    """
    fig = plt.figure(figsize=(15, 2.3 * len(samples)))
    grid = fig.add_gridspec(len(samples), n_frames + 4, wspace=0.08, hspace=0.65)
    for row, sample in enumerate(samples):
        spec = sample.spec
        picks = np.linspace(0, len(sample.frames) - 1, n_frames).round().astype(int)
        for col, frame_index in enumerate(picks):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(sample.frames[frame_index])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"t={frame_index / sample.fps:.1f}s", fontsize=8)
        ax = fig.add_subplot(grid[row, n_frames:])
        t = np.arange(len(sample.waveform)) / sample.sample_rate
        ax.plot(t, sample.waveform, lw=0.4, color="tab:blue")
        for _, word in sample.words.iterrows():
            ax.axvspan(word["start"], word["end"], color="tab:orange", alpha=0.15)
        ax.set_xlim(0, t[-1])
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
        ax.set_xlabel("seconds (orange: where the transcript says a word is spoken)", fontsize=8)
        kind = spec.discrepancy + (f" ({spec.noisy_modality})" if spec.noisy_modality else "")
        text = spec.transcript if len(spec.transcript) < 90 else spec.transcript[:87] + "..."
        ax.set_title(
            f"{spec.id}  label {spec.sentiment:+.2f}  [{kind}]  \u201c{text}\u201d",
            fontsize=9,
            loc="left",
        )
    return fig


def plot_agreement(scores: pd.DataFrame, column: str = "agreement") -> plt.Figure:
    """Box plot of a per-sample score by discrepancy type (``scores`` needs ``discrepancy``)."""
    order = ["none", *sorted(set(scores["discrepancy"]) - {"none"})]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.boxplot(data=scores, x="discrepancy", y=column, order=order, ax=ax, color="tab:blue")
    ax.axhline(0, color="black", lw=0.8, ls="--")
    ax.set(xlabel="discrepancy (none = strongly correlated)", ylabel=column)
    ax.set_title("Cross-modal agreement per sample", loc="left")
    fig.tight_layout()
    return fig
