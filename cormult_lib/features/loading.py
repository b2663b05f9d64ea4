"""One entry point that every chapter uses to get its train/valid/test splits."""

from __future__ import annotations

from pathlib import Path

from cormult_lib.config import DataConfig
from cormult_lib.data.cmu import load_mmsa, load_mult
from cormult_lib.data.dataset import SPLITS, MultimodalSplit
from cormult_lib.data.synthetic import make_synthetic_splits
from cormult_lib.modalities import parse_modalities

DATASETS = ("synthetic", "mmsa", "mult", "raw")


def load_splits(
    dataset: str,
    data_path: str | Path | None = None,
    modalities: str = "TAV",
    config: DataConfig | None = None,
    seed: int = 0,
) -> dict[str, MultimodalSplit]:
    """``{"train", "valid", "test"} -> MultimodalSplit`` for the chosen data set.

    Args:
        dataset: ``"synthetic"`` (generated from ``config`` and ``seed``), ``"mmsa"``
            (an MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl``), ``"mult"`` (MulT's
            ``mosei_senti_data.pkl``) or ``"raw"`` (a feature cache written by
            :mod:`cormult_lib.features.pipeline` from a folder of clips).
        data_path: the pickle or the cache folder; ignored for ``"synthetic"``.
        modalities: the subset of ``"TAV"`` to keep.
    """
    wanted = "".join(parse_modalities(modalities))
    if dataset == "synthetic":
        splits = make_synthetic_splits(config, seed)
        splits = {name: split.with_modalities(wanted) for name, split in splits.items()}
        _check_no_split_is_empty(splits, "the synthetic corpus")
        return splits
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not known: expected one of {DATASETS}")
    if data_path is None:
        raise ValueError(f"dataset={dataset!r} needs data_path, the path of its data")
    path = Path(data_path).expanduser()
    if dataset == "raw" and path.is_file():
        raise ValueError(
            f"data_path={str(data_path)!r} is a file; dataset 'raw' reads a feature cache folder "
            "(written by cormult-extract, holding manifest.json)"
        )
    if dataset != "raw" and path.is_dir():
        example = "aligned_50.pkl" if dataset == "mmsa" else "mosei_senti_data.pkl"
        raise ValueError(
            f"data_path={str(data_path)!r} is a folder; dataset {dataset!r} reads one pickle "
            f"file, e.g. {path / example}"
        )
    if dataset == "raw":
        from cormult_lib.features.pipeline import load_feature_cache

        splits = load_feature_cache(path, modalities=wanted)
    else:
        loader = load_mmsa if dataset == "mmsa" else load_mult
        splits = loader(path, modalities=wanted)
    _check_no_split_is_empty(splits, str(path))
    return splits


def _check_no_split_is_empty(splits: dict[str, MultimodalSplit], source: str) -> None:
    """Training needs all three splits: refuse here, not an epoch later inside numpy or torch."""
    empty = [name for name in SPLITS if not len(splits.get(name, ()))]
    if empty:
        raise ValueError(
            f"{source}: the split(s) {empty} hold no samples; training needs train, valid and "
            "test (for a feature cache: extract clips of every split)"
        )
