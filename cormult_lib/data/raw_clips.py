"""Prepared raw clips: what CLIP-MSA trains on when its encoders are fine-tuned.

Frozen encoders give the same output every epoch, so chapter 08 caches their outputs once and
trains on small vectors (:class:`~cormult_lib.data.dataset.MultimodalSplit`). A fine-tuned
encoder changes every step, so it must see its *inputs* every step: token ids, waveforms,
face crops, frames. A :class:`RawClipSplit` holds those, already preprocessed (one dict of CPU
tensors per clip, made by :meth:`~cormult_lib.features.clip_encoders.ClipMSAEncoders.prepare`),
so an epoch decodes nothing.

Batches are ``{"labels": (batch,), "inputs": [clip dict, ...]}``: clips differ in their
number of tokens, samples and audio windows, so they stay a list and the encoders pad what
they batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler

from cormult_lib.data.dataset import LoaderOptions, batch_loader

__all__ = ["RawClipSplit", "collate_raw_clips", "raw_clip_loader"]


@dataclass(eq=False)
class RawClipSplit(Dataset):
    """Preprocessed encoder inputs of ``n`` clips and their labels.

    Attributes:
        items: one dict of CPU tensors per clip (the keys of ``ClipMSAEncoders.prepare``).
        labels: sentiment ``(n,)`` float32.
        ids: clip ids ``video_id$_$clip_id``, in the order of ``items``.
        name: shown in messages.
        lengths: optional ``(n,)`` sizes of the items (e.g. tokens). When given, shuffled
            batches group items of similar length (:func:`raw_clip_loader`), so that a batch
            pads less.
    """

    items: list[dict[str, torch.Tensor]]
    labels: np.ndarray
    ids: list[str]
    name: str = "raw_clips"
    lengths: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.labels.shape != (len(self.items),) or len(self.ids) != len(self.items):
            raise ValueError(
                f"{self.name}: {len(self.items)} items need labels of shape ({len(self.items)},) "
                f"and as many ids; got labels {self.labels.shape} and {len(self.ids)} ids"
            )
        if self.lengths is not None:
            self.lengths = np.asarray(self.lengths, dtype=np.int64)
            if self.lengths.shape != (len(self.items),):
                raise ValueError(
                    f"{self.name}: lengths must have shape ({len(self.items)},), got "
                    f"{self.lengths.shape}"
                )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return {"labels": torch.tensor(self.labels[index]), "inputs": self.items[index]}

    def nbytes(self) -> int:
        """Memory held by the prepared tensors, in bytes."""
        return sum(t.numel() * t.element_size() for item in self.items for t in item.values())


def collate_raw_clips(samples: list[dict]) -> dict:
    """``[{"labels", "inputs"}, ...]`` -> ``{"labels": (batch,), "inputs": [dict, ...]}``.

    ``labels`` comes first: :func:`~cormult_lib.training.epoch.batch_size_of` reads the batch
    size from the first tensor."""
    return {
        "labels": torch.stack([s["labels"] for s in samples]),
        "inputs": [s["inputs"] for s in samples],
    }


def raw_clip_loader(
    split: RawClipSplit, batch_size: int, shuffle: bool, **options: Unpack[LoaderOptions]
) -> DataLoader:
    """A :func:`~cormult_lib.data.dataset.batch_loader` over prepared clips.

    Shuffled batches of a split with ``lengths`` come from transformers'
    ``LengthGroupedSampler``: a random permutation cut into groups of 50 batches, each group
    sorted by length, so a batch holds items of similar length and the order stays random.
    Unshuffled batches keep the split's order (predictions line up with ``ids``)."""
    if shuffle and split.lengths is not None:
        options = {
            **options,
            "sampler": LengthGroupedSampler(
                batch_size, lengths=split.lengths.tolist(), generator=options.get("generator")
            ),
        }
    return batch_loader(split, collate_raw_clips, batch_size, shuffle, **options)
