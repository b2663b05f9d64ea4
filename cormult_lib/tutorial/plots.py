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
            # Frame i shows the face at (i + 0.5) / fps (``render_frames``), mid-frame.
            ax.set_xlabel(f"t={(frame_index + 0.5) / sample.fps:.2f}s", fontsize=8)
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


def _group_labels(values: pd.Series, groups: pd.Series, order: Sequence[str]) -> list[str]:
    """``"voice\n(n=12)"`` per group of ``order``: its samples with a defined value, and how
    many it leaves out (NaN, which a box plot drops without a word)."""
    labels = []
    for name in order:
        chosen = values[groups == name]
        undefined = int(chosen.isna().sum())
        labels.append(f"{name}\n(n={chosen.notna().sum()}"
                      + (f", {undefined} undefined)" if undefined else ")"))
    return labels


def plot_agreement(scores: pd.DataFrame, column: str = "agreement") -> plt.Figure:
    """Box plot of a per-sample score by discrepancy type (``scores`` needs ``discrepancy``);
    each group's label gives its n and the samples whose score is undefined (left out)."""
    order = ["none", *sorted(set(scores["discrepancy"]) - {"none"})]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.boxplot(data=scores, x="discrepancy", y=column, order=order, ax=ax, color="tab:blue")
    ax.set_xticks(range(len(order)), _group_labels(scores[column], scores["discrepancy"], order))
    ax.axhline(0, color="black", lw=0.8, ls="--")
    ax.set(xlabel="discrepancy (none = strongly correlated)", ylabel=column)
    ax.set_title("Cross-modal agreement per sample", loc="left")
    fig.tight_layout()
    return fig


def plot_token_lengths(lengths: Sequence[int], seq_len: int) -> plt.Figure:
    """Histogram of tokens per transcript with the cut-off ``seq_len`` of F_T marked."""
    lengths = np.asarray(lengths)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(lengths, bins=np.arange(0, max(lengths.max(), seq_len) + 5, 2), color="tab:blue")
    ax.axvline(seq_len, color="tab:red", lw=1.5)
    share = float((lengths > seq_len).mean())
    ax.text(
        seq_len + 1,
        ax.get_ylim()[1] * 0.85,
        f"s = {seq_len}: {share:.1%} truncated",
        color="tab:red",
    )
    ax.set(xlabel="WordPiece tokens per transcript", ylabel="transcripts")
    fig.tight_layout()
    return fig


def plot_similarity(matrix: np.ndarray, labels: Sequence[str]) -> plt.Figure:
    """Heat map of a square similarity matrix (e.g. cosine of sentence embeddings)."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".2f",
        cmap="vlag",
        center=0,
        ax=ax,
        xticklabels=[str(i) for i in range(len(labels))],
        yticklabels=labels,
    )
    ax.set_title("Cosine similarity of sentence embeddings", loc="left")
    fig.tight_layout()
    return fig


def plot_face_crops(
    frames: np.ndarray, boxes: np.ndarray, detected: np.ndarray, crops: np.ndarray
) -> plt.Figure:
    """Top row: sampled frames with the face box (green: detected, orange: borrowed from a
    neighbouring frame). Bottom row: the crops that the frame encoder sees."""
    n = len(frames)
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.8), squeeze=False)
    for i in range(n):
        x, y, w, h = boxes[i]
        axes[0, i].imshow(frames[i])
        colour = "tab:green" if detected[i] else "tab:orange"
        axes[0, i].add_patch(plt.Rectangle((x, y), w, h, fill=False, color=colour, lw=1.5))
        axes[1, i].imshow(crops[i])
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, i].set_title(f"frame {i}", fontsize=8)
    axes[0, 0].set_ylabel("sampled")
    axes[1, 0].set_ylabel("face crop")
    fig.tight_layout()
    return fig


def plot_negative_example(
    features: dict,
    masks: dict,
    negative,
    index: int,
    vocabulary,
    frame_shape: tuple[int, int, int],
    steps_per_second: dict[str, float],
    n_frames: int = 4,
) -> plt.Figure:
    """One sample before (top) and after (bottom) a negative-sampling strategy.

    ``features`` / ``masks`` hold the raw-form batch: ``"V"`` frames flattened to
    ``(batch, f, H*W*3)`` in [0, 1], ``"A"`` log-Mel ``(batch, frames, n_mels)``, ``"T"`` word
    ids ``(batch, words)``; ``negative`` is the :class:`NegativeBatch` made from it.
    """
    fig = plt.figure(figsize=(15, 4.6))
    grid = fig.add_gridspec(2, n_frames + 5, hspace=0.55, wspace=0.1)
    rows = (("before", features, masks), ("after", negative.features, negative.masks))
    for row, (name, feats, msk) in enumerate(rows):
        valid = msk["V"][index]
        frames = feats["V"][index][valid].reshape(-1, *frame_shape).clamp(0, 1).numpy()
        picks = np.linspace(0, len(frames) - 1, n_frames).round().astype(int)
        for col, k in enumerate(picks):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(frames[k])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{k / steps_per_second['V']:.1f} s", fontsize=8)
        ax = fig.add_subplot(grid[row, n_frames:])
        spectrogram = feats["A"][index][msk["A"][index]].numpy()
        seconds = len(spectrogram) / steps_per_second["A"]
        ax.imshow(spectrogram.T, origin="lower", aspect="auto", extent=(0, seconds, 0, 1))
        ax.set_yticks([])
        ax.set_xlabel("seconds", fontsize=8)
        words = vocabulary.decode(feats["T"][index][msk["T"][index]].tolist())
        text = " ".join(words)
        text = text if len(text) < 95 else text[:92] + "..."
        ax.set_title(f"{name}: \u201c{text}\u201d", fontsize=9, loc="left")
    strategy, changed = negative.strategy[index], negative.modality[index]
    fig.suptitle(f"strategy {strategy}: changed {changed or 'nothing'}", x=0.1, ha="left")
    return fig


def plot_strategy_shares(shares: pd.Series, broken: pd.DataFrame) -> plt.Figure:
    """Left: how often strategy D picked A, B and C. Right: share of each modality pair broken
    by the negatives of each strategy (rows: strategies, columns: pairs)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.bar(shares.index, shares.to_numpy(), color="tab:blue")
    left.set(ylabel="share of negatives", title="Strategy D picks")
    sns.heatmap(broken, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", ax=right)
    right.set(xlabel="modality pair", ylabel="strategy", title="pairs broken")
    fig.tight_layout()
    return fig


def plot_history(
    history: pd.DataFrame, parts: Sequence[str] = (), title: str = "Triplet loss (Eq. 8)"
) -> plt.Figure:
    """Training curves: ``train_loss`` / ``valid_loss`` per epoch, and per-part validation
    curves (e.g. ``valid_LOSS_T``) when ``parts`` names them."""
    fig, axes = plt.subplots(1, 2 if parts else 1, figsize=(11 if parts else 6, 3.2), squeeze=False)
    left = axes[0, 0]
    left.plot(history["epoch"], history["train_loss"], "o-", label="train")
    left.plot(history["epoch"], history["valid_loss"], "o-", label="valid")
    left.set(xlabel="epoch", ylabel="loss", title=title)
    left.legend()
    if parts:
        right = axes[0, 1]
        for column in parts:
            right.plot(history["epoch"], history[column], "o-", label=column)
        right.set(xlabel="epoch", title="validation loss per anchor modality")
        right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_coefficients(
    positives: pd.DataFrame, negatives: pd.DataFrame, by_kind: pd.DataFrame
) -> plt.Figure:
    """Left: histograms of ``Cor`` for real samples and negatives, one panel per pair (columns
    ``cor_XY``). Right: ``Cor`` by discrepancy type (``by_kind`` has ``discrepancy`` and the
    ``cor_XY`` columns), when given."""
    pairs = [c for c in positives.columns if c.startswith("cor_")]
    extra = 0 if by_kind is None else 1
    fig, axes = plt.subplots(1, len(pairs) + extra, figsize=(4 * (len(pairs) + extra), 3.2))
    axes = np.atleast_1d(axes)
    for ax, column in zip(axes, pairs, strict=False):
        bins = np.linspace(
            min(positives[column].min(), negatives[column].min()),
            max(positives[column].max(), negatives[column].max()),
            30,
        )
        ax.hist(positives[column], bins=bins, alpha=0.6, label="real", color="tab:blue")
        ax.hist(negatives[column], bins=bins, alpha=0.6, label="negatives", color="tab:red")
        ax.set(xlabel=column, ylabel="samples")
        ax.legend(fontsize=8)
    if by_kind is not None:
        long = by_kind.melt(
            id_vars="discrepancy", value_vars=pairs, var_name="pair", value_name="Cor"
        )
        order = ["none", *sorted(set(long["discrepancy"]) - {"none"})]
        sns.boxplot(data=long, x="discrepancy", y="Cor", hue="pair", order=order, ax=axes[-1])
        # n per group (samples, not sample-pair rows); undefined Cor is left out and counted.
        every_pair = by_kind[pairs].sum(axis=1, skipna=False)  # NaN where any pair is
        axes[-1].set_xticks(range(len(order)),
                            _group_labels(every_pair, by_kind["discrepancy"], order))  # fmt: skip
        axes[-1].tick_params(axis="x", rotation=30)
        axes[-1].set_title("Cor by discrepancy (test split)", loc="left")
    fig.tight_layout()
    return fig


def plot_seed_bars(
    runs: pd.DataFrame,
    metrics: Sequence[str] = ("acc2_non0", "f1_non0", "acc7", "mae", "corr"),
    by: str = "model",
    subset: str = "all",
) -> plt.Figure:
    """One panel per metric: the mean over seeds per ``by`` value, error bars one standard
    deviation (seaborn's ``errorbar="sd"``), every bar from 0. ``runs`` is long format, one row
    per seed, as :func:`~cormult_lib.training.supervised.run_seeds` returns (plus a ``by``
    column; its ``n``, the test samples, goes into the title when present). The spread of each
    model is not the interval of a difference between two: those are
    :func:`plot_comparisons`' and the chapters print them."""
    data = runs[runs["subset"] == subset]
    if data.empty:
        raise ValueError(
            f"runs has no row of subset {subset!r}; its subsets: {sorted(set(runs['subset']))}"
        )
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sns.barplot(data=data, x=by, y=metric, hue=by, errorbar="sd", ax=ax, legend=False)
        sns.stripplot(data=data, x=by, y=metric, color="black", size=3, ax=ax)
        ax.set(xlabel="", title=metric)
        ax.tick_params(axis="x", rotation=35)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    n_seeds = data["seed"].nunique()
    spread = f"mean and sd over {n_seeds} seeds" if n_seeds > 1 else "one seed: no spread"
    samples = f", n={int(data['n'].iloc[0])}" if "n" in data and data["n"].nunique() == 1 else ""
    fig.suptitle(f"test split ({subset}{samples}); {spread} (not an interval of a difference)")
    fig.tight_layout()
    return fig


def _draw_interval(ax, at: float, low: float, high: float, colour: str, horizontal: bool):
    """An interval from ``low`` to ``high`` with end marks, at ``at`` on the other axis: drawn
    from bound to bound, since a percentile interval need not hold its point estimate."""
    if horizontal:
        ax.hlines(at, low, high, color=colour)
        ax.plot([low, high], [at, at], "|", color=colour, markersize=8)
    else:
        ax.vlines(at, low, high, color=colour)
        ax.plot([at, at], [low, high], "_", color=colour, markersize=8)


def plot_comparisons(comparisons: Sequence, title: str = "") -> plt.Figure:
    """A forest plot of :class:`~cormult_lib.stats.Comparison` s: one row per comparison, the
    difference ``a - b`` with its 95% interval, labelled with the subset, the models, ``n`` and
    the seeds; a dashed line at 0 (no difference). Verdicts colour the points (grey: no
    measurable difference). One panel per metric, so that each axis has one unit and one
    direction of "better"."""
    rows = list(comparisons)
    if not rows:
        raise ValueError("comparisons is empty: nothing to plot")
    colours = {"a better": "tab:blue", "b better": "tab:red", "no measurable difference": "grey"}
    # One panel per metric and direction of "better" (read from each comparison).
    metrics = list(dict.fromkeys((c.metric, c.lower_better) for c in rows))
    groups = [[c for c in rows if (c.metric, c.lower_better) == key] for key in metrics]
    heights = [0.42 * len(group) + 0.9 for group in groups]
    fig, axes = plt.subplots(
        len(groups), 1, figsize=(7.5, sum(heights) + 0.5), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (metric, lower), group in zip(axes[:, 0], metrics, groups, strict=True):
        # Without an interval (one seed, too few samples) a point is hollow, not a bar of zero
        # width, and its label says so.
        bounded = [np.isfinite([c.ci_low, c.ci_high]).all() for c in group]
        for y, c in enumerate(group):
            colour = colours[c.verdict]
            if bounded[y]:
                _draw_interval(ax, y, c.ci_low, c.ci_high, colour, horizontal=True)
            ax.plot(c.difference, y, "o", color=colour,
                    markerfacecolor=colour if bounded[y] else "none")  # fmt: skip
        ax.set_yticks(
            range(len(group)),
            [
                f"{c.a} - {c.b}, {c.subset} (n={c.sizes}, {c.n_seeds} seed{'s' * (c.n_seeds != 1)})"
                + ("" if bounded[y] else ", no interval")
                + ("" if np.isfinite(c.difference) else ", undefined")
                for y, c in enumerate(group)
            ],
            fontsize=8,
        )
        ax.set_ylim(len(group) - 0.5, -0.5)
        ax.axvline(0, color="black", linestyle="--", linewidth=0.8)
        better = "negative" if lower else "positive"
        ax.set_xlabel(f"difference in {metric} ({better}: a better), 95% interval", fontsize=9)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=colour, label=name)
        for name, colour in colours.items()
    ]
    axes[0, 0].set_title(title or "paired comparisons")
    # The legend sits below the panels, where it can hide no interval.
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))
    return fig


def plot_metric_intervals(
    entries: dict[str, dict], metrics: Sequence[str], title: str = ""
) -> plt.Figure:
    """One panel per metric: each model's value with its 95% interval.

    ``entries``: model name -> ``{metric: {"value", "ci_low", "ci_high"}, "n_test": n}``, as
    :func:`~cormult_lib.tutorial.text_baseline.result_entry` returns.
    """
    if not entries:
        raise ValueError("entries is empty: nothing to plot")
    names = list(entries)
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.3 * len(metrics) + 1, 2.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for x, name in enumerate(names):
            cell = entries[name][metric]
            _draw_interval(ax, x, cell["ci_low"], cell["ci_high"], f"C{x}", horizontal=False)
            ax.plot(x, cell["value"], "o", color=f"C{x}")
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(metric, fontsize=9)
    sizes = sorted({entries[name]["n_test"] for name in names})
    fig.suptitle(
        f"{title} (n={', '.join(map(str, sizes))} test samples, 95% bootstrap intervals)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
