"""Sentence embeddings computed once and cached, keyed on the texts and on the encoder.

Encoding CMU-MOSEI's 22,788 transcripts with all-MiniLM-L6-v2 takes minutes on a CPU, and a
frozen encoder gives the same vectors every time, so chapter 09 stores them. A cache file is
used only when its key matches: a SHA-256 over the encoder's identity
(:func:`encoder_fingerprint`: its config and weight files), its ``max_length`` and every text
in order. Another ``label.csv``, another subset or other weights give another key, hence
another file; nothing is reused silently, and :func:`cached_sentence_embeddings` prints whether
it loaded or encoded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cormult_lib.features.cache import write_entry
from cormult_lib.features.text import MiniLMEncoder

#: Files of a saved transformers model that define its outputs.
_MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def encoder_fingerprint(path: str | Path) -> str:
    """SHA-256 (hex, 16 characters) of a saved model's config and weight files."""
    path = Path(path)
    digest = hashlib.sha256()
    found = [name for name in _MODEL_FILES if (path / name).is_file()]
    if "config.json" not in found or len(found) < 2:
        raise FileNotFoundError(
            f"{path}: expected config.json and model.safetensors (or pytorch_model.bin) of a "
            f"saved transformers model; found {found}"
        )
    for name in found:
        digest.update(name.encode())
        with (path / name).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def texts_key(texts: Sequence[str], encoder_id: str, max_length: int) -> str:
    """The cache key (hex, 16 characters) of encoding ``texts`` with one encoder."""
    digest = hashlib.sha256(f"{encoder_id}|{max_length}|{len(texts)}".encode())
    for text in texts:
        digest.update(b"\x00" + text.encode("utf-8"))
    return digest.hexdigest()[:16]


def cached_sentence_embeddings(
    texts: Sequence[str],
    encoder: MiniLMEncoder,
    cache_dir: str | Path,
    name: str,
) -> np.ndarray:
    """``encoder.sentence_embeddings(texts)`` as ``(n, dim)`` float32, from the cache if there.

    The file is ``cache_dir / f"{name}_{key}.npz"`` (array ``embeddings``) with the key of
    :func:`texts_key`, written atomically. Prints what it loaded or encoded and how long
    encoding took.
    """
    texts = list(texts)
    key = texts_key(texts, encoder_fingerprint(encoder.path), encoder.max_length)
    target = Path(cache_dir) / f"{name}_{key}.npz"
    if target.is_file():
        with np.load(target) as stored:
            vectors = stored["embeddings"]
        if vectors.shape == (len(texts), encoder.dim):
            print(f"{name}: loaded {len(texts):,} sentence embeddings from {target}")
            return vectors
        print(f"{name}: {target} holds shape {vectors.shape}, expected "
              f"{(len(texts), encoder.dim)}; encoding again")
    start = time.perf_counter()
    vectors = encoder.sentence_embeddings(texts).numpy().astype(np.float32)
    seconds = time.perf_counter() - start
    write_entry(target, {"embeddings": vectors})
    print(f"{name}: encoded {len(texts):,} texts in {seconds:.0f} s, saved to {target}")
    return vectors
