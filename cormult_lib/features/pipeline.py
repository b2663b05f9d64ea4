"""From a folder of clips to an on-disk feature cache, and back to training splits.

Input: a segment table in the ``label.csv`` layout (``video_id, clip_id, text, label, mode``)
and a folder of clips, either CMU-MOSEI's ``Raw/<video_id>/<clip_id>.mp4`` layout or flat
``<video_id>_<clip_id>.mp4`` / ``<video_id>$_$<clip_id>.mp4`` files (any common video or audio
extension). Per clip the pipeline extracts the three streams of CorMulT section 3.2.1:

* ``audio``  log-Mel spectrogram F_A, ``(frames, n_mels)``, from the clip's audio track;
* ``text``   token ids F_T, ``(tokens,)``, the transcript encoded with the dataset vocabulary V
  (built once from the training transcripts and saved with the cache);
* ``vision`` ResNet features F_V, ``(f, i)``, of ``num_frames`` uniformly sampled (face-cropped)
  frames.

The cache is a :class:`~cormult_lib.features.cache.FeatureCache`: one ``.npz`` per clip
under ``<cache>/clips/``, written atomically and resumed on a rerun, settings in
``manifest.json`` (a rerun with other settings is refused instead of mixing features), failures
listed with their reason in ``report.csv``. The vocabulary V is saved beside them.
:func:`load_feature_cache` turns the cache into the usual ``MultimodalSplit`` dict
(``dataset="raw"`` in the notebooks).

Command line (also the console script ``cormult-extract``)::

    python -m cormult_lib.features.pipeline CLIPS_DIR LABEL_CSV CACHE_DIR --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cormult_lib.config import FeatureConfig
from cormult_lib.data.cmu import read_label_csv
from cormult_lib.data.dataset import MultimodalSplit, pad_sequences
from cormult_lib.features.cache import (
    ExtractionReport,
    FeatureCache,
    PendingClip,
    read_json,
    write_json,
)
from cormult_lib.modalities import parse_modalities
from cormult_lib.parameters import check_int
from cormult_lib.processes import die_with_parent
from cormult_lib.progress import tqdm

CACHE_FORMAT = "cormult_lib.feature_cache"
CACHE_VERSION = 1
VOCABULARY = "vocabulary.json"
#: What the vocabulary was built from: the training transcripts' hash and count, the tokenizer.
VOCABULARY_SOURCE = "vocabulary_source.json"


def feature_cache(cache_dir: str | Path) -> FeatureCache:
    """The CorMulT feature cache in ``cache_dir``."""
    return FeatureCache(
        cache_dir, CACHE_FORMAT, CACHE_VERSION, "",
        "`cormult-extract CLIPS_DIR LABEL_CSV CACHE_DIR`",
    )


class ClipFeatureExtractor:
    """Holds the three extractors (built once per worker) and turns one clip into arrays."""

    def __init__(self, config: FeatureConfig, vocabulary_path: Path, device: str = "cpu"):
        from cormult_lib.features.audio import LogMel
        from cormult_lib.features.text import Vocabulary, load_bert_tokenizer, tokenize_with
        from cormult_lib.features.vision import FaceCropper

        self.config = config
        self.device = torch.device(device)
        self.log_mel = LogMel(
            config.sample_rate, config.n_fft, config.hop_length, n_mels=config.n_mels
        ).to(self.device)
        tokenizer = load_bert_tokenizer(config.tokenizer)
        self.tokenize = tokenize_with(tokenizer)
        self.vocabulary = Vocabulary.load(vocabulary_path)
        self.cropper = FaceCropper() if config.face_crop else None
        self.encoder = build_frame_encoder(config, quiet=True).to(self.device).eval()

    def __call__(self, clip: Path, transcript: str) -> dict[str, np.ndarray]:
        from cormult_lib.features.audio import load_audio
        from cormult_lib.features.vision import (
            extract_frame_features,
            frames_to_tensor,
            read_frames,
        )

        cfg = self.config
        waveform, _ = load_audio(clip, cfg.sample_rate)
        with torch.inference_mode():
            audio = self.log_mel(torch.from_numpy(waveform))[0].cpu().numpy()
        ids, mask = self.vocabulary.encode([transcript], cfg.text_seq_len, tokenize=self.tokenize)
        text = ids[0][mask[0]].numpy()
        frames, _ = read_frames(clip, cfg.num_frames)
        detected = np.zeros(len(frames), dtype=bool)  # no face found where none is looked for
        if self.cropper is not None:
            frames, detected = self.cropper.crop(frames, size=cfg.image_size)
        pixels = frames_to_tensor(frames, size=cfg.image_size)[None]
        vision = extract_frame_features(self.encoder, pixels, device=self.device, progress=False)
        vision = vision[0].numpy()
        return {
            "audio": audio.astype(np.float32),
            "text": text.astype(np.int64),
            "vision": vision.astype(np.float32),
            "face_detected": detected,
        }


def build_frame_encoder(config: FeatureConfig, quiet: bool = False) -> torch.nn.Module:
    """The ResNet frame encoder of ``config``; ``quiet`` hides the random-weights warning
    (workers repeat what the parent process already said)."""
    from cormult_lib.features.vision import FrameEncoder

    with warnings.catch_warnings(), torch.random.fork_rng():
        if quiet:
            warnings.simplefilter("ignore")
        torch.manual_seed(config.seed)
        return FrameEncoder(
            weights=config.weights, out_dim=config.feature_dim, backbone=config.backbone
        )


_WORKER: ClipFeatureExtractor | None = None


def _load_worker_files(config: FeatureConfig) -> None:
    """Load here what only a worker would otherwise load first (the tokenizer, the face
    detector), so that a missing one fails with its own message, not as a pool's bare
    ``BrokenProcessPool`` (the frame encoder is built here already)."""
    from cormult_lib.features.text import load_bert_tokenizer
    from cormult_lib.features.vision import FaceCropper

    load_bert_tokenizer(config.tokenizer)
    if config.face_crop:
        FaceCropper()


def _init_worker(config: FeatureConfig, vocabulary_path: Path, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = ClipFeatureExtractor(config, vocabulary_path)


def _init_pool_worker(
    parent_pid: int, config: FeatureConfig, vocabulary_path: Path, threads: int
) -> None:
    """A pool worker: dies with the extractor (even after ``kill -9``), then loads its models."""
    die_with_parent(parent_pid)
    _init_worker(config, vocabulary_path, threads)


def _extract_one(job: PendingClip) -> dict:
    """Extract one clip in a worker and write its cache entry; never raises for a bad clip."""
    started = time.perf_counter()
    try:
        job.write(_WORKER(job.clip, job.text))
        status, reason = "done", ""
    except Exception as error:  # a bad clip is reported, not fatal
        status, reason = "failed", f"{type(error).__name__}: {error}"
    return {
        "id": job.id,
        "status": status,
        "reason": reason,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _vocabulary_source(labels: pd.DataFrame, config: FeatureConfig) -> dict:
    """What the vocabulary is built from: a hash and the count of the training transcripts."""
    train_text = labels.loc[labels["mode"] == "train", "text"].tolist()
    digest = hashlib.sha1("\n".join(train_text).encode()).hexdigest()[:16]
    return {"train_transcripts": len(train_text), "sha1": digest,
            "tokenizer": config.tokenizer, "min_token_freq": config.min_token_freq}


def prepare_cache(cache_dir: Path, table: pd.DataFrame, config: FeatureConfig) -> Path:
    """Create the cache folder, its manifest and vocabulary; check a rerun.

    The vocabulary V is built from the *training* transcripts of ``table`` (the whole table,
    also when only its first rows are extracted) with min frequency ``config.min_token_freq``,
    so valid/test words it has never seen become ``<unk>``. Its source
    (``vocabulary_source.json``: the count and a hash of those transcripts) is checked on every
    rerun: a cache whose vocabulary came from other training transcripts (another table) is
    refused while it holds features, and rebuilt, with a printed line, while it holds none. A
    manifest of other settings is likewise replaced when no clip was extracted under it (a
    first run that failed), and refused otherwise.
    """
    from cormult_lib.features.text import Vocabulary, load_bert_tokenizer, tokenize_with

    cache = feature_cache(cache_dir)
    cache.settle_manifest(config.to_json())
    holds_entries = cache.holds_entries()
    vocabulary_path = cache_dir / VOCABULARY
    source_path = cache_dir / VOCABULARY_SOURCE
    source = _vocabulary_source(table, config)
    if vocabulary_path.exists():
        built_from = read_json(source_path, "the vocabulary's source") if (
            source_path.exists()) else None
        if built_from != source:
            if holds_entries:
                raise ValueError(
                    f"{vocabulary_path} was built from other training transcripts ({built_from}, "
                    f"now {source}); the cached token ids depend on it: use a new cache folder "
                    "for this table or delete this one"
                )
            print(f"{vocabulary_path}: built from other transcripts and no clip extracted yet; "
                  "building it again from this table's training transcripts")
            vocabulary_path.unlink()
    if not vocabulary_path.exists():
        tokenize = tokenize_with(load_bert_tokenizer(config.tokenizer))
        train_text = table.loc[table["mode"] == "train", "text"]
        vocabulary = Vocabulary.build(train_text, tokenize, min_freq=config.min_token_freq)
        vocabulary.save(vocabulary_path)
        write_json(source_path, source)
    return vocabulary_path


def extract_features(
    clips_dir: str | Path,
    label_csv: str | Path,
    cache_dir: str | Path,
    config: FeatureConfig | None = None,
    workers: int = 1,
    limit: int | None = None,
) -> ExtractionReport:
    """Extract every clip of ``label_csv`` found under ``clips_dir`` into ``cache_dir``.

    Args:
        workers: processes in the pool (each loads its own extractors and gets
            ``cpu_count // workers`` torch threads); ``0`` runs in this process.
        limit: only the first ``limit`` rows of the table (for demos); ``labels.csv`` of the
            cache is still the whole table, so loading counts the clips not extracted yet.

    ``weights="auto"`` is settled first to what it loads (``"imagenet"`` or ``None``) and
    recorded so in the manifest: random and ImageNet features never share a cache.

    Returns:
        The report of this run; it is also written to ``cache_dir/report.csv`` (merged with
        earlier runs) and its summary printed.
    """
    config = config or FeatureConfig()
    clips_dir, cache_dir = Path(clips_dir), Path(cache_dir)
    if not clips_dir.is_dir():
        raise FileNotFoundError(f"clips folder {clips_dir} does not exist")
    table = read_label_csv(label_csv)
    # "auto" settled to what is loaded, so that the manifest tells random from ImageNet
    # features and a cache never mixes them (refused as changed settings).
    from cormult_lib.features.vision import resolved_weights

    weights = resolved_weights(config.weights, config.backbone)
    config = replace(config, weights=None if weights is None else str(weights))
    feature_cache(cache_dir).check_settings(config.to_json())  # before loading the encoder
    build_frame_encoder(config)  # fails fast on missing weights, warns about random ones
    vocabulary_path = prepare_cache(cache_dir, table, config)

    report = ExtractionReport()
    jobs = feature_cache(cache_dir).pending(table, clips_dir, report, limit)

    started = time.perf_counter()
    progress = tqdm(total=len(jobs), desc="extracting clips", unit="clip")
    if workers == 0:
        _init_worker(config, vocabulary_path, torch.get_num_threads())
        for job in jobs:
            report.rows.append(_extract_one(job))
            progress.update()
    elif jobs:
        _load_worker_files(config)
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers,
            context,
            initializer=_init_pool_worker,
            initargs=(os.getpid(), config, vocabulary_path, threads),
        ) as pool:
            for future in as_completed([pool.submit(_extract_one, job) for job in jobs]):
                report.rows.append(future.result())
                progress.update()
    progress.close()
    report.seconds = time.perf_counter() - started
    feature_cache(cache_dir).record(report)
    return report


def load_feature_cache(
    cache_dir: str | Path, modalities: str = "TAV", audio_pool: int = 1
) -> dict[str, MultimodalSplit]:
    """The cached features as ``{"train", "valid", "test"} -> MultimodalSplit``.

    Text is token ids ``(n, text_seq_len)``; audio ``(n, frames, n_mels)`` (average-pooled over
    ``audio_pool`` frames, an int >= 1, to shorten long clips); vision
    ``(n, num_frames, feature_dim)``. ``meta["faces_detected"]`` is each clip's share of frames
    with a detected face (NaN when extracted with ``face_crop=False``: no face was looked for).
    Clips of the label table without a cache entry of their transcript are left out and counted
    in ``info["missing"]``; a split without any cached clip is left out of the dict (both are
    warned).
    """
    audio_pool = check_int("audio_pool", audio_pool, minimum=1)
    cache = feature_cache(cache_dir)
    config = FeatureConfig(**cache.read_manifest()["settings"])
    wanted = parse_modalities(modalities)
    streams = {"T": ("text", config.text_seq_len), "A": ("audio", None), "V": ("vision", None)}
    splits = {}
    for name, cached in cache.read_splits().items():
        entries = cached.entries
        features, masks = {}, {}
        for m in wanted:
            key, length = streams[m]
            sequences = [e[key] for e in entries]
            if m == "A" and audio_pool > 1:
                sequences = [_pool_frames(s, audio_pool) for s in sequences]
            features[m], masks[m] = pad_sequences(sequences, length)
        splits[name] = cached.to_split(
            features, masks, f"raw[{name}]", {"extraction": config.to_json()},
            face_detection=config.face_crop,
        )
    return splits


def _pool_frames(x: np.ndarray, k: int) -> np.ndarray:
    """Average consecutive groups of ``k`` frames: ``(t, d)`` -> ``(ceil(t / k), d)``."""
    pad = (-len(x)) % k
    padded = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
    return padded.reshape(-1, k, x.shape[1]).mean(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips_dir", type=Path)
    parser.add_argument("label_csv", type=Path)
    parser.add_argument("cache_dir", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None)
    defaults = FeatureConfig()
    for name, value in defaults.to_json().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            kind = int if name == "feature_dim" else (type(value) if value is not None else str)
            parser.add_argument(flag, type=kind, default=value)
    args = vars(parser.parse_args(argv))
    if args["weights"] in ("none", "None", ""):
        args["weights"] = None
    clips_dir, label_csv, cache_dir = (
        args.pop("clips_dir"),
        args.pop("label_csv"),
        args.pop("cache_dir"),
    )
    workers, limit = args.pop("workers"), args.pop("limit")
    report = extract_features(
        clips_dir, label_csv, cache_dir, FeatureConfig(**args), workers, limit
    )
    return 1 if report.counts()["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
