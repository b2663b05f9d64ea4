"""The per-clip feature cache: which entries count as cached, and what loading leaves out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cormult_lib.features.cache import (
    TEXT_DIGEST,
    ExtractionReport,
    FeatureCache,
    entry_status,
    text_digest,
    write_entry,
)


def _table(texts: list[str]) -> pd.DataFrame:
    n = len(texts)
    table = pd.DataFrame({
        "video_id": ["v"] * n,
        "clip_id": [str(i) for i in range(n)],
        "text": texts,
        "label": [1.0] * n,
        "mode": ["train"] * n,
    })
    table["id"] = table["video_id"] + "$_$" + table["clip_id"]
    return table


def _cache(root: Path, table: pd.DataFrame) -> tuple[FeatureCache, Path]:
    """A cache with an entry per row of ``table`` (made from its text) and a clip file each."""
    cache = FeatureCache(root / "cache", "test-format", 1, "", "the test")
    clips = root / "clips"
    clips.mkdir()
    for row in table.itertuples():
        write_entry(cache.entry_path(row.video_id, row.clip_id), {
            "audio": np.full(1000, int(row.clip_id), dtype=np.float32),
            "face_detected": np.array([True, False]),
            TEXT_DIGEST: np.array(text_digest(row.text)),
        })
        (clips / f"{row.video_id}_{row.clip_id}.wav").write_bytes(b"clip")
    table.to_csv(root / "cache" / "labels.csv", index=False)
    return cache, clips


def _flip_a_byte_of_the_audio(path: Path) -> None:
    """Damage one stored value: the zip directory stays intact, the member's CRC fails."""
    data = bytearray(path.read_bytes())
    data[2000] ^= 0xFF  # inside the 4000 bytes of "audio"
    path.write_bytes(bytes(data))


def test_entry_status_tells_current_stale_unreadable_and_missing(tmp_path):
    cache, _ = _cache(tmp_path, _table(["hello", "world"]))
    first, second = cache.entry_path("v", "0"), cache.entry_path("v", "1")
    assert entry_status(first, "hello") == "current"
    assert entry_status(first, "hello, corrected") == "stale"
    assert entry_status(cache.entry_path("v", "9"), "hello") == "missing"
    _flip_a_byte_of_the_audio(second)
    assert entry_status(second, "world") == "unreadable"
    write_entry(first, {"audio": np.zeros(3)})  # written before entries kept a digest
    assert entry_status(first, "anything") == "current"


def test_an_entry_with_a_damaged_member_is_extracted_again(tmp_path, capsys):
    table = _table(["hello", "world"])
    cache, clips = _cache(tmp_path, table)
    damaged = cache.entry_path("v", "1")
    _flip_a_byte_of_the_audio(damaged)
    report = ExtractionReport()
    jobs = cache.pending(table, clips, report)
    assert [job.id for job in jobs] == ["v$_$1"] and jobs[0].target == damaged
    assert report.rows == [{"id": "v$_$0", "status": "cached", "reason": "", "seconds": 0.0}]
    assert f"{damaged}: an unreadable cache entry" in capsys.readouterr().out
    # A damaged digest (its CRC fails) does not crash pending either.
    write_entry(damaged, {"audio": np.zeros(3), TEXT_DIGEST: np.array(text_digest("world"))})
    data = bytearray(damaged.read_bytes())
    at = data.find(text_digest("world")[:4].encode("utf-32-le"))
    data[at] ^= 1
    damaged.write_bytes(bytes(data))
    assert [job.id for job in cache.pending(table, clips, ExtractionReport())] == ["v$_$1"]


def test_loading_leaves_out_and_counts_entries_of_another_transcript(tmp_path):
    cache, clips = _cache(tmp_path, _table(["old one", "old two", "same three"]))
    corrected = _table(["new one", "new two", "same three"])
    # A limited rerun redoes the first clip only; the second keeps its old features.
    jobs = cache.pending(corrected, clips, ExtractionReport(), limit=1)
    assert [job.id for job in jobs] == ["v$_$0"]
    jobs[0].write({"audio": np.full(1000, 7, dtype=np.float32),
                   "face_detected": np.array([True, True])})
    stale = cache.entry_path("v", "1")
    with pytest.warns(UserWarning, match=(
        rf"\[train\]: 1 of 3 clip\(s\) .* no cached features; 1 made from another transcript "
        rf"than the table's: {stale}; extracting again redoes them"
    )):
        split = cache.read_splits()["train"]
    assert split.missing == 1
    assert split.meta["id"].tolist() == ["v$_$0", "v$_$2"]
    assert split.meta["text"].tolist() == ["new one", "same three"]
    assert [float(e["audio"][0]) for e in split.entries] == [7.0, 2.0]
    # Without a limit, extracting again redoes the stale clip.
    assert [job.id for job in cache.pending(corrected, clips, ExtractionReport())] == ["v$_$1"]


def test_faces_detected_is_nan_when_no_face_was_looked_for(tmp_path):
    cache, _ = _cache(tmp_path, _table(["hello", "world"]))
    cached = cache.read_splits()["train"]
    features = {"A": np.zeros((2, 1, 1), dtype=np.float32)}
    masks = {"A": np.ones((2, 1), dtype=bool)}
    searched = cached.to_split(features, masks, "train", {}, face_detection=True)
    assert searched.meta["faces_detected"].tolist() == [0.5, 0.5]
    off = cached.to_split(features, masks, "train", {}, face_detection=False)
    assert off.meta["faces_detected"].isna().all()


def test_a_table_write_killed_midway_leaves_the_previous_labels(tmp_path, monkeypatch):
    table = _table(["hello", "world"])
    cache, clips = _cache(tmp_path, table)
    before = (cache.root / "labels.csv").read_text()
    real_to_csv = pd.DataFrame.to_csv

    def killed(frame, stream, **kwargs):
        stream.write(b"video_id,clip_id\n")  # the start of the table, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.pending(_table(["hello", "world", "again"]), clips, ExtractionReport())
    assert (cache.root / "labels.csv").read_text() == before
    monkeypatch.setattr(pd.DataFrame, "to_csv", real_to_csv)
    assert [job.id for job in cache.pending(table, clips, ExtractionReport())] == []
