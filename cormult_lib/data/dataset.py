"""The one in-memory form every chapter trains on, and its padding-aware collate.

Whatever the source (the synthetic corpus, MMSA or MulT pickles, features cached from raw
clips), a split ends up as a :class:`MultimodalSplit`: per modality an array of shape
``(n_samples, time, ...)`` plus a boolean mask ``(n_samples, time)`` that is ``True`` on real
steps and ``False`` on padding. Masks, not lengths, because MulT's pickles pad at the *start*
of a sequence while MMSA's pad at the end.

Modalities are named by one letter: ``"T"`` text, ``"A"`` audio, ``"V"`` vision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypedDict, Unpack

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cormult_lib.modalities import MODALITIES, parse_modalities

#: The three splits of every data set, in this order.
SPLITS = ("train", "valid", "test")


def label_to_class(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sentiment in [-3, 3] to the 7 classes 0..6 (clip, round half to even, shift by 3)."""
    values = np.asarray(labels, dtype=np.float64)
    return (np.round(np.clip(values, -3.0, 3.0)) + 3).astype(np.int64)


def masks_from_lengths(lengths: np.ndarray, time: int) -> np.ndarray:
    """``(n,)`` lengths to a ``(n, time)`` mask that is ``True`` on the first ``length`` steps."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or (lengths < 0).any() or (lengths > time).any():
        raise ValueError(f"lengths must be a 1-D array with values in [0, {time}]")
    return np.arange(time)[None, :] < lengths[:, None]


def pad_sequences(
    sequences: Sequence[np.ndarray], max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pad variable-length ``(time_i, ...)`` arrays at the end.

    Returns ``(padded, mask)`` with ``padded`` of shape ``(n, max_len, ...)`` and ``mask`` of
    shape ``(n, max_len)``. Sequences longer than ``max_len`` are truncated.
    """
    if not sequences:
        raise ValueError("pad_sequences needs at least one sequence")
    longest = max(len(s) for s in sequences)
    max_len = longest if max_len is None else max_len
    trailing = sequences[0].shape[1:]
    padded = np.zeros((len(sequences), max_len, *trailing), dtype=sequences[0].dtype)
    mask = np.zeros((len(sequences), max_len), dtype=bool)
    for i, seq in enumerate(sequences):
        if seq.shape[1:] != trailing:
            raise ValueError(
                f"sequence {i} has trailing shape {seq.shape[1:]}, expected {trailing}"
            )
        n = min(len(seq), max_len)
        padded[i, :n] = seq[:n]
        mask[i, :n] = True
    return padded, mask


@dataclass
class MultimodalSplit:
    """One split (train, valid or test) of a multimodal sentiment dataset.

    Attributes:
        features: modality letter -> array ``(n, time, dim)`` (float features) or ``(n, time)``
            (integer token ids).
        masks: modality letter -> bool array ``(n, time)``, ``True`` on real steps.
        labels: ``(n,)`` float32 sentiment in [-3, 3].
        ids: ``n`` sample identifiers (``video$_$clip`` for CMU data).
        meta: optional per-sample table (``n`` rows), e.g. the synthetic corpus's discrepancy.
        name: the split's name, used in error messages.
        info: provenance and data-quality notes (source file, non-finite values replaced, ...).
    """

    features: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    labels: np.ndarray
    ids: list[str]
    meta: pd.DataFrame | None = None
    name: str = "split"
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if np.ndim(self.labels) != 1:
            raise ValueError(
                f"{self.name}: labels must be 1-D (n,), got shape {np.shape(self.labels)}"
            )
        if set(self.features) != set(self.masks):
            raise ValueError(f"{self.name}: features and masks name different modalities")
        for m, x in self.features.items():
            if m not in MODALITIES:
                raise ValueError(f"{self.name}: unknown modality {m!r}, expected one of 'TAV'")
            mask = self.masks[m]
            if x.ndim not in (2, 3) or mask.dtype != bool:
                raise ValueError(
                    f"{self.name}: modality {m} needs features (n, time, dim) or token ids "
                    f"(n, time) and a bool mask; got {x.ndim}-D features, mask dtype {mask.dtype}"
                )
            if len(x) != n or mask.shape != x.shape[:2]:
                raise ValueError(
                    f"{self.name}: modality {m} has features {x.shape} and mask {mask.shape} "
                    f"for {n} labels; expected ({n}, time, ...) and ({n}, time)"
                )
        if len(self.ids) != n:
            raise ValueError(f"{self.name}: {len(self.ids)} ids for {n} labels")
        if self.meta is not None and len(self.meta) != n:
            raise ValueError(f"{self.name}: meta has {len(self.meta)} rows for {n} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.features)

    def dims(self) -> dict[str, int]:
        """Feature size per modality (1 for token ids)."""
        return {m: (x.shape[2] if x.ndim == 3 else 1) for m, x in self.features.items()}

    def select(self, index: np.ndarray | Sequence[int] | Sequence[bool]) -> MultimodalSplit:
        """A new split holding the chosen samples (integer positions or a boolean mask of
        one value per sample)."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"{self.name}: select(index) got a boolean mask of shape {idx.shape} for "
                    f"{len(self)} samples; expected shape ({len(self)},)"
                )
            idx = np.flatnonzero(idx)
        else:
            idx = idx.astype(np.int64)
        return MultimodalSplit(
            features={m: x[idx] for m, x in self.features.items()},
            masks={m: k[idx] for m, k in self.masks.items()},
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx],
            meta=None if self.meta is None else self.meta.iloc[idx].reset_index(drop=True),
            name=self.name,
            info=dict(self.info),
        )

    def with_modalities(self, modalities: str | Sequence[str]) -> MultimodalSplit:
        """Keep only the requested modalities; asking for a missing one is an error."""
        wanted = parse_modalities(modalities)
        missing = [m for m in wanted if m not in self.features]
        if missing:
            raise ValueError(
                f"{self.name}: modalities {missing} were requested but the data holds only "
                f"{''.join(self.modalities)}"
            )
        return MultimodalSplit(
            features={m: self.features[m] for m in wanted},
            masks={m: self.masks[m] for m in wanted},
            labels=self.labels,
            ids=self.ids,
            meta=self.meta,
            name=self.name,
            info=dict(self.info),
        )

    def summary(self) -> pd.DataFrame:
        """One row per modality: shape, mean valid length, dtype."""
        rows = [
            {
                "modality": m,
                "shape": tuple(self.features[m].shape),
                "dtype": str(self.features[m].dtype),
                "mean_length": float(self.masks[m].sum(1).mean()) if len(self) else 0.0,
            }
            for m in self.modalities
        ]
        return pd.DataFrame(rows).set_index("modality")


class MultimodalDataset(Dataset):
    """A ``torch`` dataset over a :class:`MultimodalSplit`; items are dicts of numpy arrays."""

    def __init__(self, split: MultimodalSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        s = self.split
        return {
            "features": {m: s.features[m][i] for m in s.modalities},
            "masks": {m: s.masks[m][i] for m in s.modalities},
            "label": s.labels[i],
            "id": s.ids[i],
            "index": i,
        }


def collate_multimodal(items: list[dict], trim: bool = True) -> dict:
    """Stack dataset items into a batch and (``trim``) cut steps that are padding in every
    sample.

    Trimming changes nothing for a model that masks padded steps; one that attends to every
    step (MulT built as the official code, ``use_padding_mask=False``) needs ``trim=False``,
    or a sample's output would depend on the batch it lands in.

    Returns:
        A dict with ``features`` (modality -> tensor ``(batch, time, dim)``, float32, or
        ``(batch, time)``, int64 token ids), ``masks`` (modality -> bool tensor
        ``(batch, time)``, ``True`` on real steps), ``labels`` (float32 ``(batch,)``),
        ``classes`` (int64 ``(batch,)`` in 0..6), ``ids`` (list of ``batch`` strings) and
        ``index`` (int64 ``(batch,)``, positions in the split).
    """
    if not items:
        raise ValueError("collate_multimodal got an empty batch")
    features, masks = {}, {}
    for m in items[0]["features"]:
        mask = np.stack([it["masks"][m] for it in items])
        x = np.stack([it["features"][m] for it in items])
        if trim:
            used = np.flatnonzero(mask.any(0))
            # Keep the span between the first and last step that any sample uses, so that both
            # end-padded (MMSA) and start-padded (MulT) batches shrink to what they need.
            span = slice(used[0], used[-1] + 1) if used.size else slice(0, 1)
            x, mask = x[:, span], mask[:, span]
        tensor = torch.from_numpy(np.ascontiguousarray(x))
        features[m] = tensor.long() if np.issubdtype(x.dtype, np.integer) else tensor.float()
        masks[m] = torch.from_numpy(np.ascontiguousarray(mask))
    labels = np.asarray([it["label"] for it in items], dtype=np.float32)
    return {
        "features": features,
        "masks": masks,
        "labels": torch.from_numpy(labels),
        "classes": torch.from_numpy(label_to_class(labels)),
        "ids": [it["id"] for it in items],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


class LoaderOptions(TypedDict, total=False):
    """The options every loader of the repository takes (:func:`batch_loader`'s).

    ``generator`` draws the shuffle; ``device`` pins memory when it is a CUDA device;
    ``num_workers`` are ``DataLoader`` worker processes; ``drop_last`` drops an incomplete last
    batch (with ``shuffle``, a different random remainder every epoch); ``sampler`` (with
    ``shuffle``) replaces the uniform shuffle with its own order of indices, drawn from
    ``generator``, or (without) gives the order to read.
    """

    generator: torch.Generator | None
    device: torch.device | str
    num_workers: int
    drop_last: bool
    sampler: Iterable[int] | None


def batch_loader(
    dataset: Dataset,
    collate_fn: Callable[[list], dict],
    batch_size: int,
    shuffle: bool,
    **options: Unpack[LoaderOptions],
) -> torch.utils.data.DataLoader:
    """The repository's one ``DataLoader`` factory: batches of ``dataset`` through
    ``collate_fn``, memory pinned when training on CUDA (see :class:`LoaderOptions`)."""
    sampler = options.get("sampler")
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=options.get("generator"),
        collate_fn=collate_fn,
        num_workers=options.get("num_workers", 0),
        pin_memory=torch.device(options.get("device", "cpu")).type == "cuda",
        drop_last=options.get("drop_last", False),
    )


def make_loader(
    split: MultimodalSplit,
    batch_size: int,
    shuffle: bool,
    trim: bool = True,
    **options: Unpack[LoaderOptions],
) -> torch.utils.data.DataLoader:
    """A :func:`batch_loader` over ``split`` with the padding-aware collate
    (:func:`collate_multimodal`; ``trim=False`` for a model that attends to padded steps)."""
    collate = collate_multimodal if trim else partial(collate_multimodal, trim=False)
    return batch_loader(MultimodalDataset(split), collate, batch_size, shuffle, **options)
