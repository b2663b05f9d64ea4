"""Prepared raw clips: what CLIP-MSA trains on when its encoders are fine-tuned.

Frozen encoders give the same output every epoch, so chapter 08 caches their outputs once and
trains on small vectors (:class:`~cormult_lib.data.dataset.MultimodalSplit`). A fine-tuned
encoder changes every step, so it must see its *inputs* every step: token ids, waveforms,
face crops, frames. A :class:`RawClipSplit` holds those, already preprocessed (one dict of CPU
tensors per clip, made by :meth:`~cormult_lib.features.clip_msa.ClipMSAEncoders.prepare`),
so an epoch decodes nothing.

Batches are ``{"labels": (batch,), "inputs": [clip dict, ...]}``: clips differ in their
number of tokens, samples and audio windows, so they stay a list and the encoders pad what
they batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cormult_lib.data.dataset import batch_loader

__all__ = ["RawClipSplit", "collate_raw_clips", "raw_clip_loader"]


@dataclass(eq=False)
class RawClipSplit(Dataset):
    """Preprocessed encoder inputs of ``n`` clips and their labels.

    Attributes:
        items: one dict of CPU tensors per clip (the keys of ``ClipMSAEncoders.prepare``).
        labels: sentiment ``(n,)`` float32.
        ids: clip ids ``video_id$_$clip_id``, in the order of ``items``.
        name: shown in messages.
    """

    items: list[dict[str, torch.Tensor]]
    labels: np.ndarray
    ids: list[str]
    name: str = "raw_clips"

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.labels.shape != (len(self.items),) or len(self.ids) != len(self.items):
            raise ValueError(
                f"{self.name}: {len(self.items)} items need labels of shape ({len(self.items)},) "
                f"and as many ids; got labels {self.labels.shape} and {len(self.ids)} ids"
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

    ``labels`` comes first: :func:`~cormult_lib.training.loop.batch_size_of` reads the batch
    size from the first tensor."""
    return {
        "labels": torch.stack([s["labels"] for s in samples]),
        "inputs": [s["inputs"] for s in samples],
    }


def raw_clip_loader(
    split: RawClipSplit,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A :func:`~cormult_lib.data.dataset.batch_loader` over prepared clips."""
    return batch_loader(
        split, collate_raw_clips, batch_size, shuffle, generator, device, num_workers, drop_last
    )
