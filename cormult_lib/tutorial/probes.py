"""Linear probes that check what a dataset carries, and per-sample cross-modal agreement.

Two questions a student should ask of any multimodal corpus before training on it:

1. *Does each modality carry the label?* A ridge probe on the time-averaged features of one
   modality predicts the sentiment (:func:`fit_sentiment_probes`).
2. *Do the modalities of one sample agree?* :class:`AgreementProbe` measures two things per
   sample and modality pair: whether the two probes read the same sentiment
   (``gap``: absolute difference of the two predictions), and whether the two streams move
   together in time (``sync``: correlation over time of their first canonical variates, fitted
   with CCA on within-sample centred steps). The score ``agreement`` standardises both against
   strongly correlated training samples: about 0 for a typical strong sample, negative when
   the modalities disagree.

Everything is fitted with scikit-learn on *strongly correlated training* samples only, so the
score measures departure from what clean data looks like.
"""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.cross_decomposition import CCA
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cormult_lib.data.dataset import MultimodalSplit


def time_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over time: ``(n, time, dim)`` and ``(n, time)`` -> ``(n, dim)``."""
    weights = mask[..., None].astype(x.dtype)
    return (x * weights).sum(1) / np.maximum(weights.sum(1), 1)


def fit_sentiment_probes(split: MultimodalSplit) -> dict[str, Pipeline]:
    """One ridge regression per modality from time-mean features to the sentiment label."""
    probes = {}
    for m in split.modalities:
        if split.features[m].ndim != 3:
            raise ValueError(
                f"{split.name}: modality {m} holds token ids {split.features[m].shape}; "
                "linear probes need float features (n, time, dim)"
            )
        probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
        probes[m] = probe.fit(time_mean(split.features[m], split.masks[m]), split.labels)
    return probes


def predict_sentiment(probes: dict[str, Pipeline], split: MultimodalSplit) -> pd.DataFrame:
    """Each probe's sentiment prediction per sample: columns = modalities, ``n`` rows."""
    return pd.DataFrame(
        {m: p.predict(time_mean(split.features[m], split.masks[m])) for m, p in probes.items()}
    )


class AgreementProbe:
    """Per-sample cross-modal agreement, fitted on strongly correlated samples.

    Args:
        components: PCA size per modality before CCA (keeps CCA fast on 768-d text).
    """

    def __init__(self, components: int = 16):
        self.components = components

    def fit(self, split: MultimodalSplit) -> AgreementProbe:
        """Fit probes on ``split`` (pass strongly correlated training samples)."""
        if len(split.modalities) < 2:
            raise ValueError("agreement needs at least two modalities")
        self.pairs = list(combinations(split.modalities, 2))
        _check_aligned(split, self.pairs)
        self.sentiment = fit_sentiment_probes(split)
        steps = {m: _centred_steps(split, m) for m in split.modalities}
        self.reducers = {
            m: make_pipeline(
                StandardScaler(), PCA(min(self.components, x.shape[1]), random_state=0)
            )
            for m, x in steps.items()
        }
        reduced = {m: self.reducers[m].fit_transform(x) for m, x in steps.items()}
        self.cca = {
            (a, b): CCA(n_components=1, max_iter=1000).fit(reduced[a], reduced[b])
            for a, b in self.pairs
        }
        raw = self._raw_scores(split)
        self.reference = {c: (raw[c].mean(), raw[c].std() + 1e-8) for c in raw}
        return self

    def _raw_scores(self, split: MultimodalSplit) -> pd.DataFrame:
        preds = predict_sentiment(self.sentiment, split)
        table = {}
        for a, b in self.pairs:
            table[f"gap_{a}{b}"] = (preds[a] - preds[b]).abs().to_numpy()
            table[f"sync_{a}{b}"] = self._sync(split, a, b)
        out = pd.DataFrame(table)
        out["gap"] = out[[f"gap_{a}{b}" for a, b in self.pairs]].mean(axis=1)
        syncs = out[[f"sync_{a}{b}" for a, b in self.pairs]]
        out["sync"] = syncs.mean(axis=1)  # over the pairs whose synchrony is defined
        partial, undefined = int(syncs.isna().any(axis=1).sum()), int(out["sync"].isna().sum())
        if partial:
            warnings.warn(
                f"{split.name}: {partial} of {len(out)} samples have no synchrony for some pair "
                "(fewer than 3 shared valid steps, or a constant canonical variate): their sync "
                f"averages the other pairs; {undefined} have none, so their agreement is NaN and "
                "means leave them out",
                UserWarning,
                stacklevel=3,
            )
        return out

    def _sync(self, split: MultimodalSplit, a: str, b: str) -> np.ndarray:
        """Per-sample Pearson correlation over shared valid steps of the canonical variates."""
        ua, ub = self.cca[(a, b)].transform(
            self.reducers[a].transform(_centred_steps(split, a, all_steps=True)),
            self.reducers[b].transform(_centred_steps(split, b, all_steps=True)),
        )
        n, time = split.masks[a].shape
        ua, ub = ua[:, 0].reshape(n, time), ub[:, 0].reshape(n, time)
        valid = split.masks[a] & split.masks[b]
        sync = np.full(n, np.nan)
        for i in range(n):
            x, y = ua[i, valid[i]], ub[i, valid[i]]
            if len(x) > 2 and x.std() > 0 and y.std() > 0:
                sync[i] = np.corrcoef(x, y)[0, 1]
        return sync

    def score(self, split: MultimodalSplit) -> pd.DataFrame:
        """Per sample: ``gap_XY``, ``sync_XY`` per pair, their means ``gap`` and ``sync``, and
        ``agreement = z(sync) - z(gap)`` standardised on the fitted strong samples. ``sync``
        averages the pairs whose synchrony is defined; a sample with none gets NaN ``sync`` and
        ``agreement`` (both counted in a warning). Masks may differ between modalities here
        (a negative's text from another clip): synchrony reads the steps valid in both."""
        out = self._raw_scores(split)
        z = {c: (out[c] - mu) / sd for c, (mu, sd) in self.reference.items()}
        out["agreement"] = z["sync"] - z["gap"]
        out.insert(0, "id", split.ids)
        return out


def _check_aligned(split: MultimodalSplit, pairs: list[tuple[str, str]]) -> None:
    """Fitting the CCA pairs the valid steps of two modalities one to one: their masks must be
    equal (word-aligned data); unaligned streams would be paired by position, not by time."""
    for a, b in pairs:
        ma, mb = split.masks[a], split.masks[b]
        if ma.shape != mb.shape or not np.array_equal(ma, mb):
            raise ValueError(
                f"{split.name}: AgreementProbe pairs the time steps of {a} and {b}, which must be "
                f"aligned (equal masks); got masks {ma.shape} and {mb.shape}"
                + ("" if ma.shape != mb.shape else f" differing in {int((ma != mb).sum())} steps")
            )


def _centred_steps(split: MultimodalSplit, m: str, all_steps: bool = False) -> np.ndarray:
    """Per-step features with each sample's time mean removed, flattened to ``(rows, dim)``.

    Only valid steps unless ``all_steps`` (then padding rows are zeros, kept for reshaping).
    """
    x, mask = split.features[m], split.masks[m]
    centred = (x - time_mean(x, mask)[:, None, :]) * mask[..., None]
    flat = centred.reshape(-1, x.shape[-1])
    return flat if all_steps else flat[mask.reshape(-1)]
