"""Bad files, interrupted writes and mismatched resumes: each refused or repaired, and named.

Every test here failed before the fix it pins (the note of issue 17 lists them as a table):
bare ``EOFError`` / ``AttributeError`` / ``JSONDecodeError`` / ``BadZipFile`` without a path,
silent resumes on other data, a vocabulary fixed by a ``--limit`` run, 0600 files.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cormult_lib.config import DataConfig, FeatureConfig
from cormult_lib.data.dataset import MultimodalSplit, make_loader
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import export_raw_corpus
from cormult_lib.features.pipeline import extract_features, load_feature_cache
from cormult_lib.features.text import Vocabulary
from cormult_lib.files import CorruptFileError, read_torch_state, write_atomically
from cormult_lib.training.loop import fit
from cormult_lib.training.pretrain import load_evaluator
from cormult_lib.tutorial.notebook import writable_directory

FAST = FeatureConfig(backbone="resnet18", weights=None, image_size=64, num_frames=2, feature_dim=16)


# ----------------------------------------------------------------------------- files


def test_written_files_follow_the_umask_and_leftovers_of_a_killed_write_go(tmp_path: Path):
    target = tmp_path / "state[1].pt"  # glob characters in the name are taken literally
    leftover = tmp_path / ".state[1].pt.k3j2ab_9.tmp"  # what a SIGKILL mid-write leaves
    others = tmp_path / ".state[1].pt.bak.k3j2ab_9.tmp"  # another file's write in flight
    leftover.write_bytes(b"")
    others.write_bytes(b"")
    old = os.umask(0o022)
    try:
        write_atomically(target, lambda stream: torch.save({"a": 1}, stream))
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644, "not mkstemp's 0600"
    assert not leftover.exists() and others.exists()
    others.unlink()
    assert [p.name for p in tmp_path.iterdir()] == ["state[1].pt"]

    def broken(stream):
        stream.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, broken)
    assert read_torch_state(target, "a test file") == {"a": 1}, "the old content stays"
    assert [p.name for p in tmp_path.iterdir()] == ["state[1].pt"]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"is empty \(0 bytes\)"),
        ("truncated", r"cannot be read as .*truncated"),
        (b"plain text, no torch file", r"cannot be read as"),
        ("tensor", r"holds a Tensor, not"),
        ("bit flip", r"fails its CRC-32 check"),
    ],
)
def test_bad_checkpoint_and_evaluator_files_name_the_file(tmp_path, content, pattern):
    path = tmp_path / "file.pt"
    if content == "truncated":
        torch.save({"weights": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:700])
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "bit flip":  # torch.load alone returns wrong weights without a word
        torch.save({"weights": torch.arange(1000.0)}, path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(content)
    with pytest.raises(CorruptFileError, match=pattern) as error:
        load_evaluator(path)
    assert str(path) in str(error.value)
    train, valid = _loaders()
    with pytest.raises(CorruptFileError, match=pattern):
        fit(_model(), train, valid, _mse, epochs=1, lr=1e-2, checkpoint_path=path,
            progress=False)


# ----------------------------------------------------------------------------- resume


def _loaders(n: int = 32, batch_size: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 16, 3, generator=g)
    y = x.sum(1)
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch_size)
    return train, DataLoader(TensorDataset(x[n:], y[n:]), batch_size=8)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def _mse(model: nn.Module, batch: list, generator: torch.Generator):
    x, y = batch
    return ((model(x).squeeze(-1) - y) ** 2).mean(), {}


def _split(ids: list[str], name: str) -> MultimodalSplit:
    rng = np.random.default_rng(len(ids))
    n = len(ids)
    features = {"A": rng.normal(size=(n, 4, 3)).astype(np.float32)}
    labels = rng.uniform(-3, 3, n).astype(np.float32)
    return MultimodalSplit(features, {"A": np.ones((n, 4), bool)}, labels, ids, name=name)


def _batch_mse(model: nn.Module, batch: dict, generator: torch.Generator):
    prediction = model(batch["features"]["A"].mean(1)).squeeze(-1)
    return ((prediction - batch["labels"]) ** 2).mean(), {}


def test_resume_refuses_other_samples_of_the_same_size(tmp_path):
    """Splits with ids are fingerprinted by them: as many samples, other clips is other data."""
    checkpoint = tmp_path / "run.pt"
    valid = make_loader(_split([f"v{i}" for i in range(8)], "valid"), 8, shuffle=False)
    ours = make_loader(_split([f"c{i}" for i in range(16)], "train"), 8, shuffle=False)
    fit(_model(), ours, valid, _batch_mse, epochs=1, lr=1e-2, checkpoint_path=checkpoint,
        progress=False)
    theirs = make_loader(_split([f"d{i}" for i in range(16)], "train"), 8, shuffle=False)
    with pytest.raises(ValueError, match=r"other training settings \(train_data.*ids_sha1"):
        fit(_model(), theirs, valid, _batch_mse, epochs=2, lr=1e-2, checkpoint_path=checkpoint,
            progress=False)
    resumed = fit(_model(), ours, valid, _batch_mse, epochs=2, lr=1e-2,
                  checkpoint_path=checkpoint, progress=False)
    assert resumed.history["epoch"].tolist() == [1, 2]


def test_resume_refuses_a_checkpoint_of_other_data_or_another_batch_size(tmp_path):
    checkpoint = tmp_path / "run.pt"
    train, valid = _loaders()
    fit(_model(), train, valid, _mse, epochs=1, lr=1e-2, checkpoint_path=checkpoint,
        progress=False)
    for other, name in ((_loaders(n=40), "train_data"), (_loaders(batch_size=4), "batch_size")):
        with pytest.raises(ValueError, match=rf"other training settings \(.*{name}"):
            fit(_model(), *other, _mse, epochs=2, lr=1e-2, checkpoint_path=checkpoint,
                progress=False)
    resumed = fit(_model(), train, valid, _mse, epochs=2, lr=1e-2, checkpoint_path=checkpoint,
                  progress=False)
    assert resumed.history["epoch"].tolist() == [1, 2], "the same data resumes"


# ----------------------------------------------------------------------------- folders


def test_output_folders_that_are_files_or_cannot_be_made_name_the_parameter(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match=r"output_dir='.*results.txt' is a file, not a folder"):
        writable_directory("output_dir", a_file)
    with pytest.raises(ValueError, match=r"figures_dir='.*results.txt/figs': the folder cannot"):
        writable_directory("figures_dir", a_file / "figs")
    assert writable_directory("output_dir", tmp_path / "new" / "out").is_dir()


def test_an_unwritable_output_folder_names_the_parameter(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):  # what a read-only folder does (root ignores chmod)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(ValueError, match=r"figures_dir='.*': the folder is not writable "
                       r"\(Permission denied\)"):
        writable_directory("figures_dir", tmp_path)


# ----------------------------------------------------------------------------- feature cache


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("clips")
    corpus = SyntheticCorpus(DataConfig(n_samples=40), seed=0)
    return root, export_raw_corpus(corpus, root, indices=range(6))


def test_a_limited_run_does_not_fix_the_vocabulary(clips, tmp_path):
    root, table = clips
    with pytest.warns(UserWarning):
        extract_features(root, table, tmp_path / "limited", FAST, workers=0, limit=2)
        extract_features(root, table, tmp_path / "full", FAST, workers=0)
    limited = Vocabulary.load(tmp_path / "limited" / "vocabulary.json")
    full = Vocabulary.load(tmp_path / "full" / "vocabulary.json")
    assert len(limited) == len(full), "the vocabulary comes from the whole table's training rows"


def test_another_table_into_a_cache_with_features_is_refused(clips, tmp_path):
    root, table = clips
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        extract_features(root, table, cache, FAST, workers=0, limit=2)
    other = tmp_path / "other.csv"  # the same clips, other transcripts
    other.write_text(table.read_text().replace(" the ", " a "))
    assert other.read_text() != table.read_text()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="vocabulary.json was built "
                                                   "from other training transcripts"):
        extract_features(root, other, cache, FAST, workers=0)


def test_a_failed_first_run_does_not_block_the_corrected_rerun(clips, tmp_path, capsys):
    root, table = clips
    cache = tmp_path / "cache"
    bad = FeatureConfig(**{**FAST.to_json(), "tokenizer": str(tmp_path / "no-such-vocab.txt")})
    with pytest.warns(UserWarning), pytest.raises(Exception, match="no-such-vocab"):
        extract_features(root, table, cache, bad, workers=0)
    with pytest.warns(UserWarning):
        report = extract_features(root, table, cache, FAST, workers=0, limit=2)
    assert report.counts()["done"] == 2
    assert "no clip was extracted under its manifest" in capsys.readouterr().out


def test_damaged_cache_files_are_named_and_a_damaged_entry_is_extracted_again(
    clips, tmp_path, capsys
):
    root, table = clips
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        extract_features(root, table, cache, FAST, workers=0)
    entry = sorted((cache / "clips").rglob("*.npz"))[0]
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=re.escape(f"unreadable: {entry} (")):
        splits = load_feature_cache(cache)
    assert sum(len(s) for s in splits.values()) == 5
    with pytest.warns(UserWarning):
        report = extract_features(root, table, cache, FAST, workers=0)
    assert report.counts() == {"done": 1, "cached": 5, "failed": 0}
    assert "an unreadable cache entry" in capsys.readouterr().out
    assert sum(len(s) for s in load_feature_cache(cache).values()) == 6
    manifest = cache / "manifest.json"
    manifest.write_text(manifest.read_text()[:20])  # truncated
    with pytest.raises(ValueError, match=rf"{manifest} is not valid JSON"):
        load_feature_cache(cache)
    assert np.isfinite(splits["train"].features["A"]).all()


# ----------------------------------------------------------------------------- processes

PARENT = """
import multiprocessing, os, sys, time
from cormult_lib.processes import die_with_parent

def work(parent):
    die_with_parent(parent)
    time.sleep(120)

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=work, args=(os.getpid(),))
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc to watch processes")
def test_workers_die_with_their_parent_after_a_sigkill(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(2)  # the worker has called die_with_parent
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the worker outlived its killed parent"


def _children(pid: int) -> list[int]:
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc to watch processes")
def test_kill_9_of_cormult_extract_takes_its_pool_workers_with_it(tmp_path):
    corpus = SyntheticCorpus(DataConfig(n_samples=40), seed=0)
    table = export_raw_corpus(corpus, tmp_path / "clips", indices=range(40))
    command = [sys.executable, "-m", "cormult_lib.features.pipeline", str(tmp_path / "clips"),
               str(table), str(tmp_path / "cache"), "--workers", "2", "--backbone", "resnet18",
               "--weights", "none", "--image-size", "64", "--num-frames", "2"]  # fmt: skip
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and parent.poll() is None:
        workers = _children(parent.pid)
        if len(workers) >= 2 and any((tmp_path / "cache" / "clips").rglob("*.npz")):
            break  # the pool is extracting
        time.sleep(0.1)
    assert parent.poll() is None and len(workers) >= 2, "the pool never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, workers)), "pool workers outlived the killed extractor"
