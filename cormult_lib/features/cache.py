"""The on-disk per-clip feature cache that both extraction pipelines write and read.

A cache is a folder::

    manifest.json          {"format": ..., "version": ..., "settings": {...}, ...}
    labels.csv             the segment table the cache was made for (``label.csv`` layout)
    report.csv             one row per clip: done / cached / failed, and why
    clips/<video_id>/<clip_id>.npz

CorMulT's pipeline (:mod:`cormult_lib.features.pipeline`) stores log-Mel frames, token ids and
ResNet features per clip; CLIP-MSA's (:mod:`cormult_lib.features.clip_msa_cache`) stores the
outputs of its six encoders. Both go through :class:`FeatureCache`, so both behave the same:

* an entry, ``labels.csv`` and ``report.csv`` are written atomically
  (:func:`cormult_lib.files.write_atomically`), so a killed run
  leaves no half-written file and a rerun resumes: readable entries are skipped, an unreadable
  one (truncated, damaged, foreign) is extracted again;
* the manifest records the settings: a rerun with other settings is refused while the cache
  holds entries (naming each changed field), and the manifest replaced while it holds none;
* each entry records a digest of the transcript it was made from (``text_sha1``): a rerun
  extracts a clip again when the table's transcript changed (a corrected release), instead of
  keeping features of the old one; ``labels.csv`` is always the whole table, also when a run
  extracts only its first rows (``limit``), so loading counts the clips not extracted yet;
* a clip that is missing or fails is listed in ``report.csv`` with its reason and counted in
  the printed summary; loading leaves out, and warns with the count of, clips without a
  readable entry of the table's transcript. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cormult_lib import files
from cormult_lib.data.cmu import DataFormatError, read_label_csv
from cormult_lib.data.dataset import SPLITS, MultimodalSplit

CLIP_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".wav", ".flac", ".mp3")
MANIFEST = "manifest.json"
LABELS = "labels.csv"
REPORT = "report.csv"
#: The entry's digest of its transcript (a 0-d string array).
TEXT_DIGEST = "text_sha1"
#: What reading a damaged or foreign entry can raise.
_READ_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError)


@dataclass
class ExtractionReport:
    """What a run did: per clip its status (``done``, ``cached``, ``failed``) and why."""

    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, clip_id: str, status: str, reason: str = "", seconds: float = 0.0) -> None:
        self.rows.append({"id": clip_id, "status": status, "reason": reason, "seconds": seconds})

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["id", "status", "reason", "seconds"])

    def counts(self) -> dict[str, int]:
        counts = self.table["status"].value_counts()
        return {s: int(counts.get(s, 0)) for s in ("done", "cached", "failed")}

    def summary(self) -> str:
        c = self.counts()
        rate = c["done"] / self.seconds if self.seconds > 0 else float("nan")
        lines = [
            f"{c['done']} clips extracted, {c['cached']} already cached, {c['failed']} failed "
            f"in {self.seconds:.1f} s ({rate:.2f} clips/s)"
        ]
        failed = self.table[self.table["status"] == "failed"]
        lines += [f"  failed {row.id}: {row.reason}" for row in failed.itertuples()]
        return "\n".join(lines)


@dataclass
class PendingClip:
    """A clip of the table to extract: its entry is missing, unreadable or made from another
    transcript, and its file was found."""

    id: str
    clip: Path
    text: str
    target: Path

    def write(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Write the clip's entry: ``arrays`` and the digest of its transcript."""
        write_entry(self.target, {**arrays, TEXT_DIGEST: np.array(text_digest(self.text))})


def text_digest(text: str) -> str:
    """The digest an entry keeps of its transcript: the first 16 hex digits of its SHA-1."""
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def entry_status(path: Path, text: str) -> str:
    """What the cache entry at ``path`` holds for a clip of transcript ``text``.

    ``"missing"``: no file; ``"unreadable"``: not a complete ``.npz`` whose members all pass
    their CRC check (truncated, damaged or foreign); ``"stale"``: made from another transcript;
    ``"current"``: made from ``text``, or written before entries kept a transcript digest (it
    cannot be checked).
    """
    if not path.exists():
        return "missing"
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                return "unreadable"
        with np.load(path) as data:
            digest = _stored_digest(data)
    except _READ_ERRORS:
        return "unreadable"
    return "current" if digest in (None, text_digest(text)) else "stale"


def _stored_digest(data: np.lib.npyio.NpzFile) -> str | None:
    """The transcript digest of an open entry; ``None`` for an entry written before entries
    kept one."""
    return str(data[TEXT_DIGEST]) if TEXT_DIGEST in data.files else None


@dataclass
class CachedSplit:
    """The readable entries of one split: ``entries[i]`` belongs to ``meta.iloc[i]``."""

    entries: list[dict[str, np.ndarray]]
    meta: pd.DataFrame
    missing: int

    def to_split(
        self,
        features: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        name: str,
        info: Mapping[str, Any],
        face_detection: bool,
    ) -> MultimodalSplit:
        """The split of these clips with ``features`` / ``masks`` built from the entries:
        labels and ids from ``meta``, which gains ``faces_detected`` (each clip's share of
        frames with a detected face; NaN when the extraction ran no face detector,
        ``face_detection=False``); ``info`` gains ``missing``."""
        meta = self.meta.copy()
        meta["faces_detected"] = (
            [float(e["face_detected"].mean()) for e in self.entries] if face_detection else np.nan
        )
        return MultimodalSplit(
            features=features,
            masks=masks,
            labels=meta["label"].to_numpy(np.float32),
            ids=meta["id"].tolist(),
            meta=meta,
            name=name,
            info={**info, "missing": self.missing},
        )


def find_clip(clips_dir: Path, video_id: str, clip_id: str) -> Path | None:
    """The file of one clip in ``clips_dir`` (CMU's ``Raw`` layout or flat names), or None."""
    stems = [
        Path("Raw") / video_id / clip_id,
        Path(video_id) / clip_id,
        Path(f"{video_id}_{clip_id}"),
        Path(f"{video_id}$_${clip_id}"),
    ]
    for stem in stems:
        for ext in CLIP_EXTENSIONS:
            candidate = clips_dir / stem.with_name(stem.name + ext)
            if candidate.is_file():
                return candidate
    return None


def missing_clip_reason(clips_dir: Path, video_id: str, clip_id: str) -> str:
    return f"no clip file for {video_id}/{clip_id} under {clips_dir}"


def read_json(path: Path, what: str) -> Any:
    """``json.loads`` of ``path``; a damaged file raises :class:`DataFormatError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataFormatError(
            f"{path} is not valid JSON ({error}): {what} is damaged (an interrupted write?); "
            "delete the cache folder and extract again"
        ) from error


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, written atomically."""
    text = json.dumps(data, indent=2).encode()
    files.write_atomically(path, lambda stream: stream.write(text))


def write_entry(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` of ``arrays`` to ``path``, never half-written."""
    files.write_atomically(path, lambda stream: np.savez(stream, **arrays))


def changed_fields(previous: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """``"name: old -> new, ..."`` for every field that differs (missing fields read None)."""
    names = sorted(set(previous) | set(current))
    return ", ".join(
        f"{k}: {previous.get(k)!r} -> {current.get(k)!r}"
        for k in names
        if previous.get(k) != current.get(k)
    )


class FeatureCache:
    """One cache folder of ``format`` (see the module docstring for the layout).

    Args:
        root: the folder.
        format: the manifest's ``format`` string; a manifest of another format is refused.
        version: the manifest's ``version``.
        title: how messages name this kind of cache (``"CLIP-MSA "`` or ``""``).
        create_hint: how to create such a cache, for the error on a folder without manifest.
    """

    def __init__(
        self, root: str | Path, format: str, version: int, title: str, create_hint: str
    ) -> None:
        self.root = Path(root)
        self.format = format
        self.version = version
        self.title = title
        self.create_hint = create_hint

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def entry_path(self, video_id: str, clip_id: str) -> Path:
        return self.root / "clips" / video_id / f"{clip_id}.npz"

    def holds_entries(self) -> bool:
        clips = self.root / "clips"
        return clips.is_dir() and any(clips.rglob("*.npz"))

    # ------------------------------------------------------------------------- manifest

    def read_manifest(self) -> dict[str, Any]:
        """The manifest; refuses a folder without one and a manifest of another format."""
        if not self.manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a {self.title}feature cache (no {MANIFEST}): create it "
                f"with {self.create_hint}"
            )
        manifest = read_json(self.manifest_path, f"the {self.title}cache manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != self.format:
            raise DataFormatError(
                f"{self.manifest_path} is not a {self.title}cache manifest (expected format "
                f"{self.format!r}; a cache written by another pipeline or an older version of "
                "this one): use a new cache folder or delete this one"
            )
        return manifest

    def check_settings(self, settings: Mapping[str, Any]) -> str:
        """What differs between ``settings`` and the manifest's (``""``: nothing, or no
        manifest yet); refuses other settings while the cache holds entries."""
        if not self.manifest_path.exists():
            return ""
        previous = self.read_manifest()
        changed = changed_fields(previous.get("settings", {}), settings)
        if previous.get("version") != self.version:
            changed = ", ".join(filter(None, [changed, f"version: {previous.get('version')!r} "
                                                        f"-> {self.version!r}"]))
        if changed and self.holds_entries():
            raise ValueError(
                f"{self.root} holds {self.title}features extracted with other settings "
                f"(changed: {changed}); use a new cache folder or delete this one"
            )
        return changed

    def settle_manifest(self, settings: Mapping[str, Any], **extra: Any) -> None:
        """Create the folder and its manifest (``settings`` plus ``extra`` fields), or check
        that an existing manifest holds the same ``settings``.

        Other settings are refused while the cache holds entries (naming every changed field,
        :meth:`check_settings`) and replaced, with a printed line, while it holds none (a
        first run that failed).
        """
        exists = self.manifest_path.exists()
        changed = self.check_settings(settings)
        if exists and not changed:
            return
        if exists:
            print(f"{self.root}: no clip was extracted under its manifest (changed: {changed}); "
                  "replacing it")
        manifest = {"format": self.format, "version": self.version,
                    "settings": dict(settings), **extra}
        write_json(self.manifest_path, manifest)

    # ------------------------------------------------------------------------- extraction

    def pending(
        self,
        table: pd.DataFrame,
        clips_dir: Path,
        report: ExtractionReport,
        limit: int | None = None,
    ) -> list[PendingClip]:
        """The clips of ``table`` (its first ``limit`` rows) still to extract, after writing
        the whole ``table`` as the cache's ``labels.csv``.

        Clips with a readable entry of the same transcript are reported ``cached``, clips
        without a file ``failed``; an unreadable entry, or one made from another transcript,
        is extracted again (printed).
        """
        _write_csv(self.root / LABELS, table)
        todo = []
        for row in table.head(limit).itertuples():
            target = self.entry_path(row.video_id, row.clip_id)
            status = entry_status(target, row.text)
            if status == "current":
                report.add(row.id, "cached")
                continue
            if status == "stale":
                target.unlink()  # never loaded with the table's new transcript
                print(f"{target}: made from another transcript than the table's; deleted, "
                      "extracting the clip again")
            clip = find_clip(clips_dir, row.video_id, row.clip_id)
            if clip is None:
                report.add(row.id, "failed", missing_clip_reason(clips_dir, row.video_id,
                                                                 row.clip_id))
                continue
            if status == "unreadable":
                print(f"{target}: an unreadable cache entry (truncated or damaged); extracting "
                      "the clip again")
            todo.append(PendingClip(row.id, clip, row.text, target))
        return todo

    def record(self, report: ExtractionReport) -> None:
        """Merge ``report`` into ``report.csv`` (this run's row replaces a clip's earlier one)
        and print its summary."""
        table = report.table
        path = self.root / REPORT
        if path.exists():
            earlier = pd.read_csv(path, dtype={"reason": str}, keep_default_na=False)
            table = pd.concat([earlier[~earlier["id"].isin(table["id"])], table])
        _write_csv(path, table)
        print(report.summary())

    # ------------------------------------------------------------------------- loading

    def read_splits(self, keys: tuple[str, ...] | None = None) -> dict[str, CachedSplit]:
        """The readable entries per split of ``labels.csv`` (its ``mode`` column).

        Args:
            keys: the arrays to read from each entry (all when None).

        A clip without a readable entry, or whose entry was made from another transcript than
        the table's (a corrected release), is left out, counted in ``missing`` and warned about
        (with up to five such files named); a split without any entry is left out (warned).
        """
        labels = read_label_csv(self.root / LABELS)
        out = {}
        for name in SPLITS:
            rows = labels[labels["mode"] == name]
            entries, kept, unreadable, stale, missing = [], [], [], [], 0
            for row in rows.itertuples():
                path = self.entry_path(row.video_id, row.clip_id)
                if not path.exists():
                    missing += 1
                    continue
                try:
                    entry, digest = _read_entry(path, keys)
                except _READ_ERRORS as error:
                    unreadable.append(f"{path} ({type(error).__name__})")
                    missing += 1
                    continue
                if digest not in (None, text_digest(row.text)):
                    stale.append(str(path))
                    missing += 1
                    continue
                entries.append(entry)
                kept.append(row.Index)
            if missing:
                detail = f"; unreadable: {', '.join(unreadable[:5])}" if unreadable else ""
                if stale:
                    detail += (f"; {len(stale)} made from another transcript than the table's: "
                               f"{', '.join(stale[:5])}")
                warnings.warn(
                    f"{self.root} [{name}]: {missing} of {len(rows)} clip(s) of the label table "
                    f"have no cached features{detail}; extracting again redoes them, and {REPORT} "
                    "names the clips that failed and why",
                    UserWarning,
                    stacklevel=3,
                )
            if not entries:
                if len(rows):
                    warnings.warn(f"{self.root} [{name}]: no cached clip, the split is left out",
                                  UserWarning, stacklevel=3)
                continue
            out[name] = CachedSplit(entries, labels.loc[kept].reset_index(drop=True), missing)
        if not out:
            raise ValueError(f"{self.root} holds no cached clip of its label table")
        return out


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    """Write ``table`` to ``path`` atomically: a killed run leaves the previous file, never a
    shorter table that would load without error."""
    files.write_atomically(path, lambda stream: table.to_csv(stream, index=False))


def _read_entry(
    path: Path, keys: tuple[str, ...] | None
) -> tuple[dict[str, np.ndarray], str | None]:
    """The arrays ``keys`` (all when None) of the entry at ``path``, and its transcript digest
    (``None`` for an entry written before entries kept one)."""
    with np.load(path) as data:
        return {k: data[k] for k in (keys or data.files)}, _stored_digest(data)

