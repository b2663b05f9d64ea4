"""Files that are never half-written, and reading them back with errors that name the file.

:func:`write_atomically` is the one way the library writes checkpoints, evaluators and cache
entries: the content goes to a hidden temporary file beside the target
(``.<name>.<random>.tmp``), is flushed to disk and renamed over the target, so a reader sees
the old file or the new one, never a torn one. The file gets the permissions of any file the
user creates (``0o666`` minus the umask), not the ``0o600`` of :func:`tempfile.mkstemp`. A
process killed mid-write (``SIGKILL``: no clean-up runs) leaves its temporary file behind;
the next write of the same target removes such leftovers (one writer per target is assumed).

:func:`read_torch_state` loads a ``torch.save`` d dict with ``weights_only=True`` and turns the
errors of an empty, truncated or foreign file into a :class:`CorruptFileError` naming it. It
first checks the CRC-32 of every member of the file's zip archive: ``torch.load`` itself reads a
file with a flipped bit without a word and returns wrong weights.
"""

from __future__ import annotations

import glob
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["CorruptFileError", "read_torch_state", "write_atomically"]


class CorruptFileError(ValueError):
    """A file exists but cannot be what it should be; the message names it and what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(stream)`` on a temporary file and rename it to ``path``; return ``path``.

    Parent folders are created. If ``write`` raises, ``path`` keeps its previous content and
    the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A killed earlier write of this file leaves mkstemp's name: 8 characters of [a-z0-9_].
    leftovers = glob.escape(f".{path.name}.") + "[a-z0-9_]" * 8 + ".tmp"
    for leftover in path.parent.glob(leftovers):
        leftover.unlink(missing_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(name, 0o666 & ~_umask())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return path


#: What ``torch.load`` raises for an empty, truncated, foreign or damaged file.
_LOAD_ERRORS = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
                ValueError, KeyError, AttributeError)


def read_torch_state(path: str | Path, what: str, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)``, which must give a dict.

    Args:
        what: what the file should hold, for messages (``"a checkpoint written by fit()"``).

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptFileError: the file is empty, cannot be read (truncated, damaged, not a torch
            file) or holds something other than a dict; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {what})")
    advice = "delete it and write it again"
    if path.stat().st_size == 0:
        raise CorruptFileError(f"{path} is empty (0 bytes), not {what}: {advice}")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # the first member whose CRC-32 does not match
    except (zipfile.BadZipFile, OSError) as error:
        raise CorruptFileError(
            f"{path} cannot be read as {what} (not a complete zip archive: {error}); it may be "
            f"truncated or not a torch file: {advice}"
        ) from error
    if damaged is not None:
        raise CorruptFileError(
            f"{path} is damaged: its part {damaged!r} fails its CRC-32 check (a flipped bit or a "
            f"bad disk), so it is not {what} any more: {advice}"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except _LOAD_ERRORS as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CorruptFileError(
            f"{path} cannot be read as {what} ({type(error).__name__}: {first}); it may be "
            f"truncated or damaged: {advice}"
        ) from error
    if not isinstance(state, dict):
        raise CorruptFileError(
            f"{path} holds a {type(state).__name__}, not {what}: {advice}"
        )
    return state
