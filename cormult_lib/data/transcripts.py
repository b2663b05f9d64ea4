"""Real transcripts and labels from a ``label.csv`` in MMSA's layout, split by its ``mode``.

CMU-MOSEI's ``label.csv`` (``video_id, clip_id, text, label, mode``) holds every segment's
transcript, its sentiment in [-3, 3] and the official train / valid / test split. That is
enough for a real text-only result (chapter 09). A :class:`TranscriptSplit` is one split of
it; :func:`load_transcripts` reads all three and can draw a seeded subset of each (the quick
profile), saying how many segments it kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cormult_lib.data.cmu import SPLITS, label_csv_splits, read_label_csv


@dataclass(eq=False)
class TranscriptSplit:
    """The transcripts of one split.

    Attributes:
        ids: ``video_id$_$clip_id`` per segment, ``(n,)`` list.
        texts: the transcripts, ``(n,)`` list of str.
        labels: sentiment ``(n,)`` float32 in [-3, 3].
        name: the split's name, shown in messages.
    """

    ids: list[str]
    texts: list[str]
    labels: np.ndarray
    name: str

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if not (len(self.ids) == len(self.texts) == len(self.labels)):
            raise ValueError(
                f"{self.name}: {len(self.ids)} ids, {len(self.texts)} texts and "
                f"{len(self.labels)} labels; they must be as many"
            )

    def __len__(self) -> int:
        return len(self.ids)


def load_transcripts(
    label_csv: str | Path,
    limits: Mapping[str, int | None] | None = None,
    seed: int = 0,
) -> dict[str, TranscriptSplit]:
    """The ``train`` / ``valid`` / ``test`` transcripts of ``label_csv``.

    Args:
        label_csv: a file in MMSA's ``label.csv`` layout (read by
            :func:`~cormult_lib.data.cmu.read_label_csv`, which checks columns and labels).
        limits: split (``"train"``, ``"valid"``, ``"test"``) -> at most this many segments,
            drawn at random with ``seed`` (file order kept); a missing split or ``None`` keeps
            all. A line is printed for each split of which a subset is taken (kept of total).
        seed: seeds the subsets, each split from a stream of its own: a split's subset
            depends on its own limit only, so runs with other training budgets are scored on
            the same test segments.

    Raises:
        FileNotFoundError: ``label_csv`` is not a file (the message says where to get one).
        ValueError: a split of the file is empty, ``limits`` names another split, or a limit
            is below 2.
    """
    unknown = sorted(map(str, set(limits or {}) - set(SPLITS)))
    if unknown:
        raise ValueError(f"limits has unknown split(s) {unknown}; expected keys out of {SPLITS}")
    path = Path(label_csv)
    tables = label_csv_splits(read_label_csv(path))
    splits = {}
    for index, name in enumerate(SPLITS):
        table = tables[name]
        if table.empty:
            raise ValueError(f"{path}: split {name!r} (column 'mode') has no rows")
        limit = (limits or {}).get(name)
        if limit is not None:
            if limit < 2:
                raise ValueError(f"limits[{name!r}] must be at least 2, got {limit}")
            if limit < len(table):
                rng = np.random.default_rng([seed, index])
                keep = np.sort(rng.choice(len(table), size=limit, replace=False))
                print(f"{name}: {limit:,} of {len(table):,} segments (random subset, seed {seed})")
                table = table.iloc[keep]
        splits[name] = TranscriptSplit(
            ids=table["id"].tolist(),
            texts=table["text"].tolist(),
            labels=table["label"].to_numpy(),
            name=name,
        )
    return splits
