"""CLIP-MSA's encoder outputs cached per clip, and the raw clips for fine-tuning the encoders.

The cache is a :class:`~cormult_lib.features.cache.FeatureCache` (``<cache>/clips/<video_id>/
<clip_id>.npz``, ``manifest.json``, ``labels.csv``, ``report.csv``) holding per clip ``T``
``(1, dT)``, ``A`` ``(1, dA)``, ``V`` ``(num_frames, dV)`` and ``face_detected``
``(num_frames,)``.

Fine-tuning (:class:`~cormult_lib.models.clip_msa.ClipMSAEndToEnd`) cannot use the cache: a
trained encoder must see its inputs every step. :func:`prepare_raw_clips` preprocesses every
clip once (:meth:`ClipMSAEncoders.prepare`: token ids, waveforms, face crops, frames) into a
:class:`~cormult_lib.data.raw_clips.RawClipSplit`, and :meth:`ClipMSAEncoders.encode_inputs`
runs the encoders on a batch of them with gradients where an encoder trains. The cached and the
end-to-end paths share every encoder call, so frozen, they give the same features.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from cormult_lib.config import EncoderConfig
from cormult_lib.data.cmu import DataFormatError, read_label_csv
from cormult_lib.data.dataset import MultimodalSplit
from cormult_lib.data.raw_clips import RawClipSplit
from cormult_lib.features.cache import (
    ExtractionReport,
    FeatureCache,
    find_clip,
    missing_clip_reason,
)
from cormult_lib.features.clip_encoders import ClipMSAEncoders
from cormult_lib.modalities import MODALITIES
from cormult_lib.progress import tqdm

CACHE_FORMAT = "cormult_lib.clip_msa_cache"
CACHE_VERSION = 1


def clip_msa_cache(cache_dir: str | Path) -> FeatureCache:
    """The CLIP-MSA feature cache in ``cache_dir``."""
    return FeatureCache(
        cache_dir, CACHE_FORMAT, CACHE_VERSION, "CLIP-MSA ",
        "extract_clip_msa_features(clips_dir, label_csv, cache_dir, config)",
    )


def extract_clip_msa_features(
    clips_dir: str | Path,
    label_csv: str | Path,
    cache_dir: str | Path,
    config: EncoderConfig | None = None,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    progress: bool = True,
) -> ExtractionReport:
    """Encode every clip of ``label_csv`` found under ``clips_dir`` into ``cache_dir``.

    One ``.npz`` per clip at :meth:`~cormult_lib.features.cache.FeatureCache.entry_path`,
    written atomically, with ``T`` ``(1, dT)``, ``A`` ``(1, dA)``, ``V`` ``(num_frames, dV)`` and
    ``face_detected`` ``(num_frames,)``. ``manifest.json`` records ``config.to_json()`` and
    the branch dims: a rerun with other settings is refused (naming the changed fields), a
    rerun with the same settings skips cached clips. Clips that are missing or fail to
    decode are listed with the reason in ``report.csv`` and counted, never dropped silently.

    Args:
        limit: only the first ``limit`` rows of the label table.
        progress: show a tqdm progress bar.

    Returns:
        The run's :class:`ExtractionReport` (statuses ``done``, ``cached``, ``failed``); its
        summary is printed.

    Raises:
        EncoderUnavailableError: a pretrained source cannot be loaded (before any clip).
        ValueError: the cache holds features of other settings.
    """
    config = config or EncoderConfig()
    clips_dir, cache_dir = Path(clips_dir), Path(cache_dir)
    if not clips_dir.is_dir():
        raise FileNotFoundError(f"clips folder {clips_dir} does not exist")
    table = read_label_csv(label_csv)
    cache = clip_msa_cache(cache_dir)
    cache.check_settings(config.to_json())  # before loading any encoder
    encoders = ClipMSAEncoders(config, device)  # fails fast on a missing source
    cache.settle_manifest(
        config.to_json(),
        branch_dims={m: list(d) for m, d in encoders.branch_dims.items()},
        random_init=list(encoders.random_init),
    )
    report = ExtractionReport()
    jobs = cache.pending(table, clips_dir, report, limit)
    started = time.perf_counter()
    for job in tqdm(jobs, desc="CLIP-MSA features", unit="clip", disable=not progress):
        clip_started = time.perf_counter()
        try:
            job.write(encoders.encode_clip(job.clip, job.text))
            status, reason = "done", ""
        except Exception as error:  # a bad clip is reported, not fatal
            status, reason = "failed", f"{type(error).__name__}: {error}"
        report.add(job.id, status, reason, round(time.perf_counter() - clip_started, 3))
    report.seconds = time.perf_counter() - started
    cache.record(report)
    return report


def _resample_frames(v: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(f, d)`` -> ``(num_frames, d)`` and its mask: fewer frames are picked uniformly over
    the clip (:func:`uniform_frame_indices`); more are zero-padded at the end (mask False)."""
    from cormult_lib.features.vision import uniform_frame_indices

    if num_frames <= len(v):
        return v[uniform_frame_indices(len(v), num_frames)], np.ones(num_frames, dtype=bool)
    padded = np.zeros((num_frames, v.shape[1]), dtype=v.dtype)
    padded[: len(v)] = v
    return padded, np.arange(num_frames) < len(v)


def load_clip_msa_cache(
    cache_dir: str | Path, num_frames: int | None = None
) -> dict[str, MultimodalSplit]:
    """The cached encoder outputs as ``{"train", "valid", "test"} -> MultimodalSplit``.

    Features: ``"T"`` ``(n, 1, dT)``, ``"A"`` ``(n, 1, dA)``, ``"V"`` ``(n, num_frames, dV)``
    float32, with bool masks ``(n, 1)`` / ``(n, num_frames)``. ``num_frames=None`` keeps the
    extracted count; fewer frames are picked uniformly over the clip, more are padded
    (mask False). Splits come from the label table's ``mode`` column.

    ``info`` holds ``branch_dims`` (``{"T": [d_albert, d_clip_text], "A": [d_wav2vec2,
    d_clap], "V": [d_vgg, d_clip_image]}``), ``face_detected_share`` (share of the split's
    frames with a detected face; NaN with ``face_detector=None``: none was looked for),
    ``missing`` (clips of the label table without a readable cache entry of their
    transcript; warned), ``extraction`` (the encoder config) and ``random_init`` (encoders
    that were randomly initialised). ``meta`` gains a ``faces_detected`` column per clip.
    A split without any cached clip is left out (warned).
    """
    cache = clip_msa_cache(cache_dir)
    manifest = cache.read_manifest()
    config = EncoderConfig.from_json(manifest["settings"])
    branch_dims = {m: [int(x) for x in manifest["branch_dims"][m]] for m in MODALITIES}
    frames = config.num_frames if num_frames is None else int(num_frames)
    if frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    splits = {}
    for name, cached in cache.read_splits(("T", "A", "V", "face_detected")).items():
        entries = cached.entries
        for clip_id, entry in zip(cached.meta["id"], entries, strict=True):
            for m in MODALITIES:
                if entry[m].ndim != 2 or entry[m].shape[1] != sum(branch_dims[m]):
                    raise DataFormatError(
                        f"{cache_dir}: the cached {m} of clip {clip_id} has shape "
                        f"{entry[m].shape}, expected (*, {sum(branch_dims[m])}) from the "
                        "manifest's branch_dims"
                    )
        n = len(entries)
        features = {
            "T": np.stack([e["T"][:1] for e in entries]).astype(np.float32),
            "A": np.stack([e["A"][:1] for e in entries]).astype(np.float32),
        }
        masks = {"T": np.ones((n, 1), dtype=bool), "A": np.ones((n, 1), dtype=bool)}
        resampled = [_resample_frames(e["V"], frames) for e in entries]
        features["V"] = np.stack([v for v, _ in resampled]).astype(np.float32)
        masks["V"] = np.stack([mask for _, mask in resampled])
        detected = np.concatenate([e["face_detected"].astype(bool) for e in entries])
        face_detection = config.face_detector is not None
        splits[name] = cached.to_split(
            features,
            masks,
            f"clip_msa[{name}]",
            {
                "branch_dims": branch_dims,
                "face_detected_share": float(detected.mean()) if face_detection else np.nan,
                "extraction": config.to_json(),
                "random_init": list(manifest.get("random_init", [])),
            },
            face_detection=face_detection,
        )
    return splits


def cache_digest(clips_dir: str | Path, config: EncoderConfig) -> str:
    """Eight hex digits naming the clips folder (resolved) and every encoder setting: a cache
    folder named with it is never reused for other clips or settings. (Within one folder,
    entries are keyed by clip id and transcript only, so a second dataset with the same ids
    and transcripts would otherwise read the first one's features.)"""
    key = json.dumps({"clips": str(Path(clips_dir).resolve()), "encoders": config.to_json()},
                     sort_keys=True)  # fmt: skip
    return hashlib.sha1(key.encode()).hexdigest()[:8]


#: The encoder settings that text features depend on (and nothing else does).
TEXT_SETTINGS = ("albert", "clip", "clip_text", "max_text_tokens")


def with_text_features(
    splits: Mapping[str, MultimodalSplit], encoders: ClipMSAEncoders
) -> dict[str, MultimodalSplit]:
    """The same clips with their text features ``T`` ``(n, 1, d_albert + d_clip_text)``
    recomputed from the transcripts (``meta["text"]``) by ``encoders``; ``A`` and ``V`` kept.

    Text features depend on the transcript alone, so this gives what
    :func:`extract_clip_msa_features` with ``encoders.config`` would cache for ``T`` (a test
    checks it) without decoding a clip again: two text branches compared on the same cached
    audio and frames. ``info["branch_dims"]["T"]`` and ``info["extraction"]``
    (:data:`TEXT_SETTINGS`) follow. Encoders of another ``seed`` than the cache's are refused:
    random (tiny) text encoders would not be the ones the audio and frames came with.
    """
    out = {}
    for name, split in splits.items():
        if split.meta is None or "text" not in split.meta:
            raise ValueError(f"{split.name}: meta has no 'text' column of transcripts")
        texts = split.meta["text"].fillna("").astype(str).tolist()
        text = encoders.encode_text(texts)
        t = np.concatenate([text["albert"], text["clip"]], axis=1)[:, None]  # (n, 1, dT)
        branch_dims = dict(split.info["branch_dims"], T=list(encoders.branch_dims["T"]))
        cached_seed = split.info["extraction"].get("seed")
        if cached_seed is not None and cached_seed != encoders.config.seed:
            raise ValueError(
                f"{split.name}: encoders.config.seed={encoders.config.seed}, but the cached audio "
                f"and frames come from seed {cached_seed}: the text would come from other "
                "random encoders than A and V; build the encoders with the cache's seed"
            )
        sources = {k: getattr(encoders.config, k) for k in TEXT_SETTINGS}
        info = dict(
            split.info, branch_dims=branch_dims, extraction={**split.info["extraction"], **sources}
        )
        out[name] = MultimodalSplit(
            dict(split.features, T=t), split.masks, split.labels, split.ids, split.meta,
            split.name, info,
        )
    return out


def prepare_raw_clips(
    clips_dir: str | Path,
    label_csv: str | Path,
    encoders: ClipMSAEncoders,
    limit: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, RawClipSplit], ExtractionReport]:
    """Decode and preprocess every clip of ``label_csv`` for end-to-end training.

    Each clip becomes :meth:`ClipMSAEncoders.prepare`'s dict of CPU tensors, held in memory so
    that an epoch decodes nothing. That costs memory: with the default pretrained settings
    (8 frames, 224-pixel faces and CLIP frames, ~6 s of audio) about 10 MB per clip, so
    fine-tune on a subset (``limit``) or on a large machine. Clips that are missing or fail to
    decode are counted in the report with their reason, never dropped silently.

    Args:
        encoders: the encoders that will be fine-tuned (their tokenizers and processors
            preprocess).
        limit: only the first ``limit`` rows of the label table.
        progress: show a tqdm progress bar.

    Returns:
        ``{"train", "valid", "test"} -> RawClipSplit`` (splits from the table's ``mode``
        column; a split without any prepared clip is left out, warned) and the
        :class:`ExtractionReport` (statuses ``done``, ``failed``); its summary is printed.
    """
    clips_dir = Path(clips_dir)
    if not clips_dir.is_dir():
        raise FileNotFoundError(f"clips folder {clips_dir} does not exist")
    labels = read_label_csv(label_csv)
    if limit is not None:
        labels = labels.head(limit)
    report = ExtractionReport()
    prepared: dict[str, list] = {"train": [], "valid": [], "test": []}
    started = time.perf_counter()
    rows = tqdm(
        labels.itertuples(),
        total=len(labels),
        desc="prepare clips",
        unit="clip",
        disable=not progress,
    )
    for row in rows:
        clip_started = time.perf_counter()
        clip = find_clip(clips_dir, row.video_id, row.clip_id)
        if clip is None:
            reason = missing_clip_reason(clips_dir, row.video_id, row.clip_id)
            status = "failed"
        else:
            try:
                waveform, frames = encoders.read_clip(clip)
                item = encoders.prepare(row.text, waveform, frames)
                prepared[row.mode].append((item, row.label, row.id))
                status, reason = "done", ""
            except Exception as error:  # a bad clip is reported, not fatal
                status, reason = "failed", f"{type(error).__name__}: {error}"
        report.add(row.id, status, reason, round(time.perf_counter() - clip_started, 3))
    report.seconds = time.perf_counter() - started
    splits = {}
    for name, entries in prepared.items():
        if not entries:
            if (labels["mode"] == name).any():
                warnings.warn(
                    f"{label_csv} [{name}]: no clip could be prepared, the split is left out",
                    UserWarning,
                    stacklevel=2,
                )
            continue
        items, split_labels, ids = zip(*entries, strict=True)
        splits[name] = RawClipSplit(list(items), np.array(split_labels), list(ids), f"raw[{name}]")
    megabytes = sum(s.nbytes() for s in splits.values()) / 2**20
    print(f"{report.summary()}\nprepared inputs held in memory: {megabytes:.1f} MB")
    return splits, report
