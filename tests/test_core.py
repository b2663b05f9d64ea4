"""Seeding, devices, configuration presets and the shared dataset / collate path."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cormult_lib.config import PRESETS, get_config
from cormult_lib.data.dataset import (
    MultimodalSplit,
    collate_multimodal,
    label_to_class,
    make_loader,
    pad_sequences,
)
from cormult_lib.device import resolve_device
from cormult_lib.modalities import parse_modalities
from cormult_lib.models.mult import MulT
from cormult_lib.seeding import seed_everything


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()  # noqa: NPY002


def test_seed_everything_repeats_python_numpy_and_torch() -> None:
    seed_everything(7)
    first = _draw()
    seed_everything(7)
    assert _draw() == first
    seed_everything(8)
    assert _draw() != first
    generator = seed_everything(7)
    assert (
        torch.rand(2, generator=generator).tolist()
        == torch.rand(2, generator=torch.Generator().manual_seed(7)).tolist()
    )
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_training_without_torchs_nan_fill_is_bit_identical() -> None:
    """seed_everything switches deterministic kernels on but torch's NaN fill of new tensors
    off. A kernel that read memory it never wrote would carry the fill's NaN into the loss or
    the gradients; a MulT training step on padded inputs is the same with the fill and
    without it, to the bit."""
    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.utils.deterministic.fill_uninitialized_memory
    dims = {"T": 12, "A": 5, "V": 7}
    features = {m: torch.randn(4, 9, d) for m, d in dims.items()}
    masks = {m: torch.arange(9) < torch.tensor([[9], [6], [3], [1]]) for m in dims}
    labels = torch.randn(4)
    runs = []
    for fill in (True, False):
        torch.utils.deterministic.fill_uninitialized_memory = fill
        try:
            torch.manual_seed(1)
            model = MulT(dims, hidden_dim=16, num_heads=4, num_layers=2).train()
            loss = F.l1_loss(model(features, masks), labels)
            loss.backward()
            runs.append([loss.detach()] + [p.grad for p in model.parameters()])
        finally:
            torch.utils.deterministic.fill_uninitialized_memory = False
    assert all(torch.isfinite(t).all() for t in runs[0])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_resolve_device(capsys: pytest.CaptureFixture) -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert "Using device:" in capsys.readouterr().out
    assert resolve_device("cpu", verbose=False) == torch.device("cpu")
    with pytest.raises(ValueError, match="'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_presets_and_overrides() -> None:
    assert set(PRESETS) == {"quick", "standard", "paper"}
    paper = get_config("paper")
    # MulT's CMU-MOSEI settings and the CorMulT authors' evaluator (shared/reference/anchors.md).
    assert (paper.model.hidden_dim, paper.model.num_heads, paper.model.num_layers) == (40, 8, 4)
    assert (paper.train.batch_size, paper.train.lr, paper.train.grad_clip) == (16, 1e-3, 1.0)
    assert (paper.correlation.hidden_dim, paper.correlation.shared_time) == (128, 64)
    assert (paper.correlation.shared_dim, paper.correlation.margin) == (200, 0.2)
    quick = get_config("quick", train={"epochs": 2}, data={"n_samples": 100})
    assert quick.train.epochs == 2 and quick.data.n_samples == 100
    assert get_config("quick").train.epochs != 2, "overrides must not leak into the preset"
    with pytest.raises(ValueError, match="profile"):
        get_config("fast")
    with pytest.raises(ValueError, match="epochz"):
        get_config("quick", train={"epochz": 2})
    with pytest.raises(ValueError, match="section"):
        get_config("quick", optimiser={"lr": 1})


def test_the_standard_profile_can_answer_the_weak_sample_question() -> None:
    """At least 100 weak test samples per discrepancy type and 5 seeds (issue: powered runs)."""
    from cormult_lib.data.synthetic import DISCREPANCIES, SyntheticCorpus

    standard = get_config("standard")
    assert standard.train.n_seeds >= 5
    assert standard.model == get_config("quick").model, "the quick models, more data and seeds"
    meta = SyntheticCorpus(standard.data, seed=0).metadata()
    test = meta[meta["split"] == "test"]
    counts = test["discrepancy"].value_counts()
    assert all(counts[kind] >= 100 for kind in DISCREPANCIES), counts.to_dict()


def test_parse_modalities_and_label_classes() -> None:
    assert parse_modalities("vat") == ("T", "A", "V")
    assert parse_modalities(["A", "T"]) == ("T", "A")
    for bad in ("TX", "TT", ""):
        with pytest.raises(ValueError, match="modalities"):
            parse_modalities(bad)
    classes = label_to_class(np.array([-3.4, -2.5, -0.5, 0.0, 0.5, 1.5, 2.6, 9.0]))
    assert classes.tolist() == [0, 1, 3, 3, 3, 5, 6, 6]


def _split() -> MultimodalSplit:
    text, text_mask = pad_sequences([np.full((n, 2), n, np.float32) for n in (3, 1, 2)], 5)
    ids, ids_mask = pad_sequences([np.arange(1, n + 1) for n in (2, 4, 1)], 5)
    return MultimodalSplit(
        features={"T": text, "A": ids},
        masks={"T": text_mask, "A": ids_mask},
        labels=np.array([-1.0, 0.0, 2.5], np.float32),
        ids=["a", "b", "c"],
    )


def test_collate_pads_trims_and_keeps_types() -> None:
    split = _split()
    assert split.masks["T"].sum(1).tolist() == [3, 1, 2]
    batch = collate_multimodal([make_loader(split, 3, shuffle=False).dataset[i] for i in (1, 2)])
    # Samples b and c use at most 2 text steps and 4 id steps: the rest is trimmed.
    assert (
        batch["features"]["T"].shape == (2, 2, 2) and batch["features"]["T"].dtype == torch.float32
    )
    assert batch["features"]["A"].dtype == torch.int64 and batch["features"]["A"].shape == (2, 4)
    assert batch["masks"]["T"].tolist() == [[True, False], [True, True]]
    assert batch["features"]["A"].tolist() == [[1, 2, 3, 4], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [0.0, 2.5] and batch["classes"].tolist() == [3, 5]
    assert batch["ids"] == ["b", "c"] and batch["index"].tolist() == [1, 2]


def test_split_select_and_validation() -> None:
    split = _split()
    assert split.select([2, 0]).ids == ["c", "a"]
    assert split.select(np.array([False, True, False])).ids == ["b"]
    assert len(split.select([])) == 0
    assert split.with_modalities("T").modalities == ("T",)
    with pytest.raises(ValueError, match=r"\['V'\]"):
        split.with_modalities("TV")
    with pytest.raises(ValueError, match="labels must be 1-D"):
        MultimodalSplit(split.features, split.masks, np.zeros((3, 1)), split.ids)
    with pytest.raises(ValueError, match="2 ids for 3 labels"):
        MultimodalSplit(split.features, split.masks, split.labels, ["a", "b"])
    float_mask = {m: k.astype(np.float32) for m, k in split.masks.items()}
    with pytest.raises(ValueError, match="bool mask"):
        MultimodalSplit(split.features, float_mask, split.labels, split.ids)


def test_select_refuses_a_boolean_mask_of_another_length() -> None:
    split = _split()  # 3 samples
    for mask in ([False, True], [True, False, True, True]):
        with pytest.raises(ValueError, match=rf"select\(index\).*shape \({len(mask)},\) for 3"):
            split.select(np.array(mask))
    assert split.select(np.array([True, False, True])).ids == ["a", "c"]


def test_keep_freed_memory_serves_large_tensors_from_the_heap_on_glibc():
    """glibc maps a 64 MiB block of its own by default (and unmaps it on free); after
    keep_freed_memory it comes from the heap, where a later allocation can reuse it. Observed
    with mallinfo2's bytes in mapped blocks (``hblkhd``)."""
    import ctypes
    import platform

    from cormult_lib.device import keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is a glibc function")
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("mallinfo2 needs glibc 2.33")

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                         "uordblks", "fordblks", "keepcost")
        ]  # fmt: skip

    libc.mallinfo2.restype = MallInfo2
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # safe to call again
    mapped = libc.mallinfo2().hblkhd
    block = torch.empty(16 << 20)  # 64 MiB, above glibc's default largest mmap threshold
    assert libc.mallinfo2().hblkhd - mapped < block.nbytes
