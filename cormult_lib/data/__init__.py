"""Data: the synthetic corpus, real CMU loaders and the shared dataset/collate path."""

from cormult_lib.data.cmu import (
    DataFormatError,
    label_csv_splits,
    load_mmsa,
    load_mult,
    nonfinite_report,
    read_label_csv,
)
from cormult_lib.data.dataset import (
    MultimodalDataset,
    MultimodalSplit,
    collate_multimodal,
    make_loader,
)

__all__ = [
    "DataFormatError",
    "MultimodalDataset",
    "MultimodalSplit",
    "collate_multimodal",
    "label_csv_splits",
    "load_mmsa",
    "load_mult",
    "make_loader",
    "nonfinite_report",
    "read_label_csv",
]
