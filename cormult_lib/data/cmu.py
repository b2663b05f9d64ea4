"""Loaders for the real CMU-MOSI / CMU-MOSEI material: MMSA and MulT pickles, ``label.csv``.

Both pickle formats become a ``{"train", "valid", "test"} -> MultimodalSplit`` dict, so every
chapter trains on the same in-memory form as on the synthetic corpus.

* :func:`load_mmsa` reads MMSA's ``{aligned,unaligned}_50.pkl``: BERT text features
  ``(n, L, 768)`` or token ids ``(n, L)``, audio ``(n, La, da)``, vision ``(n, Lv, dv)``,
  padded at the *end*; masks come from ``text_bert``'s attention mask and ``*_lengths``.
* :func:`load_mult` reads MulT's ``mosei_senti_data.pkl``: text ``(n, 50, 300)``, audio
  ``(n, 50, 74)``, vision ``(n, 50, 35)``, padded at the *start* with all-zero steps and
  without lengths, so a step counts as real when it is not all-zero in that modality.
* :func:`read_label_csv` reads the segment table ``label.csv``
  (``video_id, clip_id, text, label, mode``).

Non-finite feature values (CMU-MOSEI's COVAREP audio holds NaN, +inf and -inf) are replaced
with 0.0 and counted per split and modality, in ``split.info["nonfinite"]`` and by
:func:`nonfinite_report`; a line is printed for every count that is not zero. Likewise MMSA's
padding steps (past ``*_lengths``) that are not zero are set to zero and counted
(``split.info["padding_zeroed"]``, a printed line), and ``*_lengths`` longer than the time axis
are clipped to it (``split.info["lengths_clipped"]``, a printed line). What cannot be repaired
is refused with the file, the split and a count: labels outside [-3, 3], lengths that are not
whole numbers, an empty split, a clip listed twice in a ``label.csv``.

Pickles can run arbitrary code while they load: load only files from a source you trust.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cormult_lib.data.dataset import SPLITS, MultimodalSplit, masks_from_lengths
from cormult_lib.modalities import MODALITY_NAMES, parse_modalities

LABEL_CSV_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
TEXT_FEATURES = ("bert", "ids")

_MMSA_HINT = (
    "MMSA pickles are produced by the MMSA framework (github.com/thuiar/MMSA); pass "
    "data_path=/path/to/MOSEI/Processed/aligned_50.pkl (or unaligned_50.pkl)"
)
_MULT_HINT = (
    "MulT pickles are the processed data of the MulT code (github.com/yaohungt/"
    "Multimodal-Transformer); pass data_path=/path/to/data/mosei_senti_data.pkl"
)
LABEL_CSV_HINT = (
    "label.csv is MMSA's segment table (video_id,clip_id,text,label,mode); it comes with "
    "MMSA's processed data (github.com/thuiar/MMSA: MOSEI/label.csv, MOSI/label.csv). Pass "
    "its path, e.g. label_csv=/path/to/MOSEI/label.csv"
)
# What a broken or foreign file can make pickle.load raise.
_UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    ImportError,
    IndexError,
    TypeError,
    ValueError,
)


class DataFormatError(ValueError):
    """A data file does not have the layout its loader expects; the message names the file
    and the field."""


def load_mmsa(
    path: str | Path, modalities: str = "TAV", text_features: str = "bert"
) -> dict[str, MultimodalSplit]:
    """Load an MMSA pickle (``aligned_50.pkl`` / ``unaligned_50.pkl``) into three splits.

    The file is a dict ``{"train", "valid", "test"}`` of dicts with ``text`` ``(n, L, 768)``
    BERT features, ``text_bert`` ``(n, 3, L)`` (token ids, attention mask, segment ids),
    ``audio`` ``(n, La, da)``, ``vision`` ``(n, Lv, dv)``, ``audio_lengths`` and
    ``vision_lengths`` ``(n,)``, ``regression_labels`` ``(n,)``, ``id`` ``(n,)``
    (``video$_$clip``) and ``raw_text`` ``(n,)``. Only the keys of the requested modalities
    must be present.

    Args:
        path: the pickle. Pickles run code while they load: load only trusted files.
        modalities: letters out of ``"TAV"`` (T text, A audio, V vision) to load.
        text_features: ``"bert"`` takes ``text`` as float32 ``(n, L, 768)``; ``"ids"`` takes
            ``text_bert[:, 0]`` as int64 token ids ``(n, L)``.

    Returns:
        ``{"train", "valid", "test"} -> MultimodalSplit``. Float features are float32 with
        non-finite values replaced by 0.0 (counted in ``info["nonfinite"]``). Masks
        ``(n, time)``: text from ``text_bert[:, 1]`` (all ``True`` without ``text_bert``);
        audio and vision from ``*_lengths`` (all ``True`` without them). Lengths longer than
        the time axis (aligned pickles may keep the pre-alignment length) are clipped to it
        and counted in ``info["lengths_clipped"]`` (printed). Labels float32 ``(n,)``;
        ``meta`` holds ``id`` and, when present, ``raw_text``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        DataFormatError: the file is not a pickled dict of splits, or a split lacks a key,
            has fields of different lengths, features of the wrong rank or ``*_lengths`` that
            are not whole non-negative numbers.
    """
    if text_features not in TEXT_FEATURES:
        raise ValueError(f"text_features must be one of {TEXT_FEATURES}, got {text_features!r}")
    path = Path(path)
    data = _load_pickle(path, _MMSA_HINT)
    wanted = parse_modalities(modalities)
    splits = {
        s: _mmsa_split(path, s, _get_split(data, s, path), wanted, text_features) for s in SPLITS
    }
    _print_repairs(path, splits)
    return splits


def load_mult(path: str | Path, modalities: str = "TAV") -> dict[str, MultimodalSplit]:
    """Load a MulT pickle (``mosei_senti_data.pkl``, ``mosi_data.pkl``) into three splits.

    The file is a dict ``{"train", "valid", "test"}`` of dicts with ``text`` ``(n, 50, 300)``
    (GloVe), ``audio`` ``(n, 50, 74)`` (COVAREP), ``vision`` ``(n, 50, 35)`` (Facet),
    ``labels`` ``(n, 1, 1)`` and ``id`` (``(n,)`` or ``(n, k)``, strings or bytes). Python 2
    pickles (MulT's) are read with ``encoding="latin1"`` when the default fails.

    Args:
        path: the pickle. Pickles run code while they load: load only trusted files.
        modalities: letters out of ``"TAV"`` to load.

    Returns:
        ``{"train", "valid", "test"} -> MultimodalSplit`` with float32 features whose
        non-finite values are replaced by 0.0 (counted in ``info["nonfinite"]``). MulT pads
        at the start with zero rows and stores no lengths, so each modality's mask
        ``(n, time)`` is ``True`` where the step is not all-zero in that modality, judged
        after the non-finite values are zeroed (a real step that is exactly zero everywhere
        counts as padding). Labels float32 ``(n,)``. Ids: bytes decoded, an ``(n, k)`` id
        (e.g. video, start, end) joined with ``$_$``; ``meta`` holds ``id``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        DataFormatError: as for :func:`load_mmsa`.
    """
    path = Path(path)
    data = _load_pickle(path, _MULT_HINT)
    wanted = parse_modalities(modalities)
    splits = {s: _mult_split(path, s, _get_split(data, s, path), wanted) for s in SPLITS}
    _print_repairs(path, splits)
    return splits


def nonfinite_report(splits: Mapping[str, MultimodalSplit]) -> pd.DataFrame:
    """The non-finite values a loader replaced: rows ``(split, modality)``, columns ``nan``,
    ``posinf``, ``neginf``, ``total`` (modalities without float features are left out)."""
    rows = [
        {"split": name, "modality": m, **counts, "total": sum(counts.values())}
        for name, split in splits.items()
        for m, counts in split.info.get("nonfinite_detail", {}).items()
    ]
    columns = ["split", "modality", "nan", "posinf", "neginf", "total"]
    return pd.DataFrame(rows, columns=columns).set_index(["split", "modality"])


def read_label_csv(path: str | Path) -> pd.DataFrame:
    """Read a segment table in MMSA's ``label.csv`` layout.

    Every column is read as text first, so ids such as ``clip_id`` ``"82_7645"`` or ``"3"`` and
    transcripts such as ``"NA"`` stay as written; ``label`` is then parsed as a number.

    Returns:
        The table with columns ``video_id, clip_id, text`` (str), ``label`` (float64 in
        [-3, 3]), ``mode`` (``train`` / ``valid`` / ``test``), any further columns of the file,
        and ``id`` = ``f"{video_id}$_${clip_id}"`` (the id MMSA pickles use). Rows with empty
        text are kept; their number is printed.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        DataFormatError: a column is missing, or ``label`` / ``mode`` has invalid values (the
            message shows some offending rows with their line numbers in the file).
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder, not a label.csv file. {LABEL_CSV_HINT}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. {LABEL_CSV_HINT}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: not a readable CSV file ({e})") from e
    missing = [c for c in LABEL_CSV_COLUMNS if c not in df.columns]
    if missing:
        raise DataFormatError(
            f"{path}: column(s) {missing} missing; the file has columns {list(df.columns)}. "
            f"{LABEL_CSV_HINT}"
        )
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = labels.isna() | (labels < -3) | (labels > 3)
    if bad.any():
        raise DataFormatError(
            f"{path}: column 'label' must hold numbers in [-3, 3]; {int(bad.sum())} row(s) do "
            f"not, e.g.\n{_sample_rows(df, bad)}"
        )
    bad = (df["video_id"].str.strip() == "") | (df["clip_id"].str.strip() == "")
    if bad.any():
        raise DataFormatError(
            f"{path}: columns 'video_id' and 'clip_id' must name every clip; {int(bad.sum())} "
            f"row(s) leave one empty, e.g.\n{_sample_rows(df, bad)}"
        )
    bad = ~df["mode"].isin(SPLITS)
    if bad.any():
        raise DataFormatError(
            f"{path}: column 'mode' must be one of {SPLITS}; {int(bad.sum())} row(s) are not, "
            f"e.g.\n{_sample_rows(df, bad)}"
        )
    df["label"] = labels.astype(np.float64)
    df["id"] = df["video_id"] + "$_$" + df["clip_id"]
    repeated = df["id"].duplicated(keep=False)
    if repeated.any():
        modes = df[repeated].groupby("id")["mode"].agg(lambda m: "/".join(sorted(set(m))))
        leaks = int((modes.str.contains("/")).sum())
        raise DataFormatError(
            f"{path}: {modes.size} clip(s) are listed more than once ({leaks} of them in two "
            "splits, a train/test leak); each (video_id, clip_id) must appear once, e.g.\n"
            f"{_sample_rows(df, repeated)}"
        )
    empty = int((df["text"].str.strip() == "").sum())
    if empty:
        print(f"{path.name}: {empty:,} row(s) with empty text (kept)")
    return df


def label_csv_splits(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split a :func:`read_label_csv` table by ``mode`` into ``train`` / ``valid`` / ``test``
    tables (each re-indexed from 0, file order kept)."""
    if "mode" not in df.columns:
        raise DataFormatError(f"the table has no 'mode' column; columns: {list(df.columns)}")
    return {s: df[df["mode"] == s].reset_index(drop=True) for s in SPLITS}


# --- pickles ---------------------------------------------------------------------------------


def _load_pickle(path: Path, hint: str) -> dict:
    """Unpickle ``path`` (default encoding, then latin1 for Python 2 pickles); must be a dict."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. {hint}")
    try:
        try:
            with path.open("rb") as f:
                data = pickle.load(f)
        except UnicodeDecodeError:  # Python 2 str in a numpy pickle: latin1 keeps the bytes
            with path.open("rb") as f:
                data = pickle.load(f, encoding="latin1")
    except _UNPICKLE_ERRORS as e:
        raise DataFormatError(
            f"{path}: not a readable pickle ({type(e).__name__}: {e}). {hint}"
        ) from e
    if not isinstance(data, Mapping):
        raise DataFormatError(
            f"{path}: expected a dict with splits {list(SPLITS)}, got {type(data).__name__}"
        )
    return data


def _get_split(data: Mapping, split: str, path: Path) -> Mapping:
    if split not in data:
        raise DataFormatError(
            f"{path}: split {split!r} missing; the file holds {sorted(map(str, data))}"
        )
    fields = data[split]
    if not isinstance(fields, Mapping):
        raise DataFormatError(
            f"{path} [{split}]: expected a dict of fields, got {type(fields).__name__}"
        )
    return fields


def _field(fields: Mapping, key: str, split: str, path: Path, purpose: str) -> np.ndarray:
    if key not in fields:
        raise DataFormatError(
            f"{path} [{split}]: key {key!r} (needed for {purpose}) missing; the split holds keys "
            f"{sorted(map(str, fields))}"
        )
    return np.asarray(fields[key])


def _labels(fields: Mapping, key: str, split: str, path: Path) -> np.ndarray:
    """``(n,)``, ``(n, 1)`` or ``(n, 1, 1)`` labels to float32 ``(n,)``."""
    raw = _field(fields, key, split, path, "labels")
    if raw.ndim == 0 or raw.size != raw.shape[0]:
        raise DataFormatError(
            f"{path} [{split}]: {key!r} has shape {raw.shape} ({raw.size} values for "
            f"{raw.shape[0] if raw.ndim else 0} samples); expected one value per sample"
        )
    try:
        labels = raw.reshape(-1).astype(np.float32)
    except (TypeError, ValueError) as e:
        raise DataFormatError(f"{path} [{split}]: {key!r} is not numeric ({e})") from e
    if not np.isfinite(labels).all():
        raise DataFormatError(
            f"{path} [{split}]: {key!r} holds {int((~np.isfinite(labels)).sum())} non-finite labels"
        )
    outside = np.flatnonzero((labels < -3) | (labels > 3))
    if len(outside):
        examples = ", ".join(f"sample {i}: {labels[i]:g}" for i in outside[:5])
        raise DataFormatError(
            f"{path} [{split}]: {key!r} must hold sentiment in [-3, 3]; {len(outside)} label(s) "
            f"do not ({examples})"
        )
    if not len(labels):
        raise DataFormatError(f"{path} [{split}]: the split holds no samples")
    return labels


def _features(raw: np.ndarray, key: str, split: str, path: Path) -> np.ndarray:
    """Check a ``(n, time, dim)`` field and return it as float32."""
    if raw.ndim != 3:
        raise DataFormatError(
            f"{path} [{split}]: {key!r} has shape {raw.shape}; expected 3-D (samples, time, dim)"
        )
    try:
        return raw.astype(np.float32, copy=False)
    except (TypeError, ValueError) as e:
        raise DataFormatError(f"{path} [{split}]: {key!r} is not numeric ({e})") from e


def _sanitise(x: np.ndarray) -> dict[str, int]:
    """Replace NaN, +inf and -inf in the float array ``x`` with 0.0, in place; return counts.

    Call on float32 data: float64 values beyond float32's range have become +-inf by then and
    are counted with them.
    """
    counts = {
        "nan": int(np.isnan(x).sum()),
        "posinf": int(np.isposinf(x).sum()),
        "neginf": int(np.isneginf(x).sum()),
    }
    if any(counts.values()):
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return counts


def _ids(raw: np.ndarray, key: str, split: str, path: Path) -> list[str]:
    """``(n,)`` or ``(n, k)`` ids (str, bytes, numbers) to ``n`` strings; rows joined by ``$_$``."""

    def text(v: object) -> str:
        return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)

    if raw.ndim == 1:
        return [text(v) for v in raw]
    if raw.ndim == 2:
        return ["$_$".join(text(v) for v in row) for row in raw]
    raise DataFormatError(
        f"{path} [{split}]: {key!r} has shape {raw.shape}; expected (samples,) or (samples, k)"
    )


def _check_lengths(sizes: dict[str, int], split: str, path: Path) -> None:
    """All fields of a split must describe the same samples; ``sizes`` is field -> len."""
    (ref, n), *rest = sizes.items()
    for key, size in rest:
        if size != n:
            raise DataFormatError(
                f"{path} [{split}]: field {key!r} has {size} samples but {ref!r} has {n}"
            )


def _lengths_mask(
    raw: np.ndarray, key: str, time: int, split: str, path: Path
) -> tuple[np.ndarray, int]:
    """``(n,)`` lengths to an end-padding mask ``(n, time)``; also how many were clipped.

    Lengths must be whole non-negative numbers (``3`` or ``3.0``; not NaN, inf or ``2.7``)."""
    lengths = raw.reshape(-1) if raw.ndim == 2 and raw.shape[1] == 1 else raw
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.number) or (lengths < 0).any():
        raise DataFormatError(
            f"{path} [{split}]: {key!r} must be (samples,) non-negative lengths, got shape "
            f"{raw.shape} dtype {raw.dtype}"
        )
    bad = np.flatnonzero(~np.isfinite(lengths) | (lengths != np.round(lengths)))
    if len(bad):
        examples = ", ".join(f"sample {i}: {lengths[i]}" for i in bad[:5])
        raise DataFormatError(
            f"{path} [{split}]: {key!r} must hold whole numbers of steps; {len(bad)} length(s) "
            f"are not ({examples})"
        )
    clipped = int((lengths > time).sum())
    return masks_from_lengths(np.minimum(lengths, time).astype(np.int64), time), clipped


def _mmsa_split(
    path: Path, split: str, fields: Mapping, wanted: tuple[str, ...], text_features: str
) -> MultimodalSplit:
    labels = _labels(fields, "regression_labels", split, path)
    sizes = {"regression_labels": len(labels)}
    features, masks, nonfinite, clipped, zeroed = {}, {}, {}, {}, {}
    for m in wanted:
        key = MODALITY_NAMES[m]
        if m == "T":
            bert = None
            if "text_bert" in fields or text_features == "ids":
                bert = _field(fields, "text_bert", split, path, "text token ids and mask")
                if bert.ndim != 3 or bert.shape[1] != 3:
                    raise DataFormatError(
                        f"{path} [{split}]: 'text_bert' has shape {bert.shape}; expected "
                        "(samples, 3, time): token ids, attention mask, segment ids"
                    )
                sizes["text_bert"] = len(bert)
            if text_features == "ids":
                x = bert[:, 0].astype(np.int64)
            else:
                x = _features(_field(fields, key, split, path, "modality T"), key, split, path)
                sizes[key] = len(x)
                nonfinite[m] = _sanitise(x)
            if bert is None:
                mask = np.ones(x.shape[:2], dtype=bool)
            elif bert.shape[2] != x.shape[1]:
                raise DataFormatError(
                    f"{path} [{split}]: 'text' has {x.shape[1]} steps but 'text_bert' has "
                    f"{bert.shape[2]}"
                )
            else:
                mask = bert[:, 1] != 0
        else:
            x = _features(_field(fields, key, split, path, f"modality {m}"), key, split, path)
            sizes[key] = len(x)
            nonfinite[m] = _sanitise(x)
            lengths_key = f"{key}_lengths"
            if lengths_key in fields:
                raw = np.asarray(fields[lengths_key])
                sizes[lengths_key] = len(raw) if raw.ndim else 0
                _check_lengths(sizes, split, path)
                mask, clipped[m] = _lengths_mask(raw, lengths_key, x.shape[1], split, path)
                padding = ~mask
                zeroed[m] = int((x[padding] != 0).any(axis=-1).sum())
                x[padding] = 0.0  # MMSA pads with zeros; other values there are not data
            else:
                mask = np.ones(x.shape[:2], dtype=bool)
        features[m], masks[m] = x, mask
    meta = {}
    for key in ("id", "raw_text"):
        if key in fields:
            raw = np.asarray(fields[key])
            sizes[key] = len(raw) if raw.ndim else 0
            meta[key] = _ids(raw, key, split, path)
    _check_lengths(sizes, split, path)
    ids = meta.get("id") or [f"{split}_{i}" for i in range(len(labels))]
    info = {"source": str(path), "format": "mmsa", "text_features": text_features,
            "padding_zeroed": zeroed}
    return _make_split(split, features, masks, labels, ids, meta, nonfinite, info, clipped)


def _mult_split(
    path: Path, split: str, fields: Mapping, wanted: tuple[str, ...]
) -> MultimodalSplit:
    labels = _labels(fields, "labels", split, path)
    sizes = {"labels": len(labels)}
    features, masks, nonfinite = {}, {}, {}
    for m in wanted:
        key = MODALITY_NAMES[m]
        x = _features(_field(fields, key, split, path, f"modality {m}"), key, split, path)
        sizes[key] = len(x)
        nonfinite[m] = _sanitise(x)
        features[m], masks[m] = x, (x != 0).any(axis=2)
    meta = {}
    if "id" in fields:
        raw = np.asarray(fields["id"])
        sizes["id"] = len(raw) if raw.ndim else 0
        meta["id"] = _ids(raw, "id", split, path)
    _check_lengths(sizes, split, path)
    ids = meta.get("id") or [f"{split}_{i}" for i in range(len(labels))]
    info = {"source": str(path), "format": "mult"}
    return _make_split(split, features, masks, labels, ids, meta, nonfinite, info, {})


def _make_split(
    split: str,
    features: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    labels: np.ndarray,
    ids: list[str],
    meta: dict[str, list[str]],
    nonfinite: dict[str, dict[str, int]],
    info: dict[str, object],
    clipped: dict[str, int],
) -> MultimodalSplit:
    info["nonfinite"] = {m: sum(c.values()) for m, c in nonfinite.items()}
    info["nonfinite_detail"] = nonfinite
    if clipped:
        info["lengths_clipped"] = clipped
    return MultimodalSplit(
        features=features,
        masks=masks,
        labels=labels,
        ids=ids,
        meta=pd.DataFrame({"id": ids, **meta}),
        name=split,
        info=info,
    )


def _print_repairs(path: Path, splits: Mapping[str, MultimodalSplit]) -> None:
    """Print a line for every repair a loader made: non-finite values replaced, padding
    zeroed, lengths clipped to the time axis."""
    for name, split in splits.items():
        for m, count in split.info.get("lengths_clipped", {}).items():
            if count:
                print(f"{path.name} [{name}] {MODALITY_NAMES[m]}: clipped {count:,} length(s) "
                      "longer than the time axis to it")
        for m, steps in split.info.get("padding_zeroed", {}).items():
            if steps:
                print(f"{path.name} [{name}] {MODALITY_NAMES[m]}: set {steps:,} padding steps "
                      "(past the lengths) that were not zero to zero")
        for m, c in split.info["nonfinite_detail"].items():
            total = sum(c.values())
            if total:
                print(
                    f"{path.name} [{name}] {MODALITY_NAMES[m]}: replaced {total:,} non-finite "
                    f"values (nan {c['nan']:,}, +inf {c['posinf']:,}, -inf {c['neginf']:,}) "
                    "with 0"
                )


def _sample_rows(df: pd.DataFrame, bad: pd.Series, k: int = 5) -> str:
    """Up to ``k`` offending rows, indexed by their line number in the file (header is 1)."""
    sample = df.loc[bad].head(k)
    sample.index = sample.index + 2
    return sample.to_string(max_colwidth=40)
