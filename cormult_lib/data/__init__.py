"""Data: the synthetic corpus, real CMU loaders and the shared dataset/collate path."""

from cormult_lib.data.dataset import (
    MODALITIES,
    MultimodalDataset,
    MultimodalSplit,
    collate_multimodal,
    make_loader,
    parse_modalities,
)

__all__ = [
    "MODALITIES",
    "MultimodalDataset",
    "MultimodalSplit",
    "collate_multimodal",
    "make_loader",
    "parse_modalities",
]
