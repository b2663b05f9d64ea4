"""Loaders for MMSA / MulT pickles and ``label.csv``: small fake files, plus the real table."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from cormult_lib.data import (
    DataFormatError,
    MultimodalDataset,
    collate_multimodal,
    label_csv_splits,
    load_mmsa,
    load_mult,
    nonfinite_report,
    read_label_csv,
)

SIZES = {"train": 5, "valid": 3, "test": 3}
L, LA, DA, LV, DV = 6, 7, 4, 5, 3
TEXT_LENGTHS = [6, 4, 2, 1, 3]
AUDIO_LENGTHS = [7, 3, 1, 0, 5]
VISION_LENGTHS = [5, 2, 4, 1, 3]
# Planted in MMSA train audio: (sample, step, dim) -> value.
PLANTED = {
    (0, 0, 0): np.nan,
    (1, 2, 1): np.nan,
    (2, 0, 3): np.inf,
    (3, 1, 0): -np.inf,
    (3, 1, 1): -np.inf,
    (4, 0, 2): -np.inf,
}


def end_mask(lengths: list[int], time: int) -> np.ndarray:
    return np.array([[t < n for t in range(time)] for n in lengths])


def mmsa_split(n: int, rng: np.random.Generator, drop: tuple[str, ...] = ()) -> dict:
    bert = np.zeros((n, 3, L), dtype=np.float64)
    for i, k in enumerate(TEXT_LENGTHS[:n]):
        bert[i, 0, :k] = rng.integers(100, 30000, k)
        bert[i, 1, :k] = 1
    fields = {
        "text": rng.normal(size=(n, L, 768)).astype(np.float32),
        "text_bert": bert,
        "audio": rng.normal(size=(n, LA, DA)).astype(np.float32),
        "vision": rng.normal(size=(n, LV, DV)).astype(np.float32),
        "audio_lengths": list(AUDIO_LENGTHS[:n]),
        "vision_lengths": np.array(VISION_LENGTHS[:n]),
        "regression_labels": np.linspace(-3, 3, n).astype(np.float32),
        "id": np.array([f"vid{i}$_${i + 1}" for i in range(n)], dtype=object),
        "raw_text": np.array([f"sentence {i}" for i in range(n)], dtype=object),
        "annotations": np.array(["Neutral"] * n),
    }
    for key, lengths in (("audio", AUDIO_LENGTHS[:n]), ("vision", VISION_LENGTHS[:n])):
        time = fields[key].shape[1]
        fields[key][~end_mask(lengths, time)] = 0.0  # MMSA pads with zeros
    return {k: v for k, v in fields.items() if k not in drop}


def make_mmsa(tmp_path: Path, drop: tuple[str, ...] = (), name: str = "aligned_50.pkl") -> Path:
    rng = np.random.default_rng(0)
    data = {s: mmsa_split(n, rng, drop) for s, n in SIZES.items()}
    for (i, t, d), value in PLANTED.items():
        data["train"]["audio"][i, t, d] = value
    if "vision" in data["valid"]:
        data["valid"]["vision"][1, 0, 2] = np.nan
    return dump(tmp_path / name, data)


def dump(path: Path, data: object, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


# --- MMSA --------------------------------------------------------------------------------------


def test_mmsa_shapes_masks_labels_ids(tmp_path: Path) -> None:
    path = make_mmsa(tmp_path)
    raw = pickle.loads(path.read_bytes())
    splits = load_mmsa(path)
    assert list(splits) == ["train", "valid", "test"]
    for name, n in SIZES.items():
        s = splits[name]
        assert (s.name, len(s), s.modalities) == (name, n, ("T", "A", "V"))
        assert s.features["T"].shape == (n, L, 768)
        assert s.features["A"].shape == (n, LA, DA)
        assert s.features["V"].shape == (n, LV, DV)
        assert all(x.dtype == np.float32 for x in s.features.values())
        np.testing.assert_array_equal(s.masks["T"], end_mask(TEXT_LENGTHS[:n], L))
        np.testing.assert_array_equal(s.masks["A"], end_mask(AUDIO_LENGTHS[:n], LA))
        np.testing.assert_array_equal(s.masks["V"], end_mask(VISION_LENGTHS[:n], LV))
        assert s.labels.dtype == np.float32 and s.labels.shape == (n,)
        np.testing.assert_allclose(s.labels, np.linspace(-3, 3, n))
        assert s.ids == [f"vid{i}$_${i + 1}" for i in range(n)]
        assert list(s.meta.columns) == ["id", "raw_text"]
        assert s.meta["raw_text"].tolist() == [f"sentence {i}" for i in range(n)]
        assert s.info["format"] == "mmsa"
        # The values themselves: the pickle's, with non-finite ones replaced by 0.
        for m, key in (("T", "text"), ("A", "audio"), ("V", "vision")):
            expected = np.nan_to_num(raw[name][key], nan=0.0, posinf=0.0, neginf=0.0)
            np.testing.assert_array_equal(s.features[m], expected.astype(np.float32), m)


def test_mmsa_nonfinite_replaced_and_counted(tmp_path: Path, capsys) -> None:
    splits = load_mmsa(make_mmsa(tmp_path))
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "aligned_50.pkl [train] audio: replaced 6 non-finite values (nan 2, +inf 1, -inf 3) with 0",
        "aligned_50.pkl [valid] vision: replaced 1 non-finite values (nan 1, +inf 0, -inf 0) "
        "with 0",
    ]
    assert splits["train"].info["nonfinite"] == {"T": 0, "A": 6, "V": 0}
    assert splits["valid"].info["nonfinite"] == {"T": 0, "A": 0, "V": 1}
    assert splits["test"].info["nonfinite"] == {"T": 0, "A": 0, "V": 0}
    for s in splits.values():
        assert all(np.isfinite(x).all() for x in s.features.values())
    for position in PLANTED:
        assert splits["train"].features["A"][position] == 0.0
    report = nonfinite_report(splits)
    assert report.shape == (9, 4)
    assert list(report.columns) == ["nan", "posinf", "neginf", "total"]
    assert report.loc[("train", "A")].tolist() == [2, 1, 3, 6]
    assert report.loc[("valid", "V")].tolist() == [1, 0, 0, 1]
    assert report["total"].sum() == 7


def test_mmsa_text_ids(tmp_path: Path) -> None:
    path = make_mmsa(tmp_path)
    raw = pickle.loads(path.read_bytes())
    s = load_mmsa(path, modalities="T", text_features="ids")["train"]
    assert s.modalities == ("T",)
    assert s.features["T"].shape == (5, L) and s.features["T"].dtype == np.int64
    np.testing.assert_array_equal(s.features["T"], raw["train"]["text_bert"][:, 0])
    np.testing.assert_array_equal(s.masks["T"], end_mask(TEXT_LENGTHS, L))
    assert s.dims() == {"T": 1}
    assert "T" not in s.info["nonfinite"]


def test_mmsa_subset_of_modalities(tmp_path: Path) -> None:
    path = make_mmsa(tmp_path, drop=("vision", "vision_lengths", "text_bert", "raw_text"))
    s = load_mmsa(path, modalities="TA")["valid"]
    assert s.modalities == ("T", "A")
    assert s.masks["T"].all()  # no text_bert: every step counts
    assert list(s.meta.columns) == ["id"]
    with pytest.raises(DataFormatError, match=r"'vision'.*missing") as err:
        load_mmsa(path, modalities="V")
    assert "[train]" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(DataFormatError, match="text_bert"):
        load_mmsa(path, modalities="T", text_features="ids")


def test_mmsa_without_lengths_and_with_overlong_lengths(tmp_path: Path, capsys) -> None:
    s = load_mmsa(make_mmsa(tmp_path, drop=("audio_lengths",)), "A")["train"]
    assert s.masks["A"].all()
    rng = np.random.default_rng(1)
    data = {name: mmsa_split(n, rng) for name, n in SIZES.items()}
    data["train"]["audio_lengths"] = [LA + 100, 3, 1, 0, 5]
    s = load_mmsa(dump(tmp_path / "long.pkl", data), "A")["train"]
    np.testing.assert_array_equal(s.masks["A"], end_mask([LA, 3, 1, 0, 5], LA))
    assert s.info["lengths_clipped"] == {"A": 1}
    assert "long.pkl [train] audio: clipped 1 length(s) longer than the time axis" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("lengths", "shown"),
    [
        ([2.0, np.nan, 4.0, 0.0, 1.0], "1 length(s) are not (sample 1: nan)"),
        ([2.7, 3.0, 1.0, 0.0, np.inf], "2 length(s) are not (sample 0: 2.7, sample 4: inf)"),
    ],
)
def test_mmsa_lengths_that_are_not_whole_numbers_are_refused(
    tmp_path: Path, lengths: list[float], shown: str
) -> None:
    rng = np.random.default_rng(1)
    data = {name: mmsa_split(n, rng) for name, n in SIZES.items()}
    data["train"]["vision_lengths"] = np.array(lengths)
    path = dump(tmp_path / "fractional.pkl", data)
    with pytest.raises(DataFormatError, match=re.escape(
        f"{path} [train]: 'vision_lengths' must hold whole numbers of steps; {shown}"
    )):
        load_mmsa(path, "V")
    data["train"]["vision_lengths"] = np.array([2.0, 3.0, 1.0, 0.0, 5.0])  # whole floats pass
    masks = load_mmsa(dump(tmp_path / "whole.pkl", data), "V")["train"].masks["V"]
    np.testing.assert_array_equal(masks, end_mask([2, 3, 1, 0, 5], LV))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "MOSEI" / "Processed" / "aligned_50.pkl"
    with pytest.raises(FileNotFoundError, match="MMSA") as err:
        load_mmsa(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError, match="mosei_senti_data.pkl") as err:
        load_mult(tmp_path / "nothere.pkl")
    assert str(tmp_path / "nothere.pkl") in str(err.value)


def test_not_a_pickle_and_not_a_dict(tmp_path: Path) -> None:
    text = tmp_path / "notes.pkl"
    text.write_text("this is not a pickle")
    with pytest.raises(DataFormatError, match="not a readable pickle"):
        load_mmsa(text)
    with pytest.raises(DataFormatError, match="expected a dict"):
        load_mult(dump(tmp_path / "list.pkl", [1, 2, 3]))


def test_missing_split_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {"train": mmsa_split(5, rng), "test": mmsa_split(3, rng)}
    with pytest.raises(DataFormatError, match=r"'valid' missing.*\['test', 'train'\]"):
        load_mmsa(dump(tmp_path / "two.pkl", data))


def test_mismatched_lengths_name_both_fields(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {name: mmsa_split(n, rng) for name, n in SIZES.items()}
    data["valid"]["audio"] = data["valid"]["audio"][:2]
    with pytest.raises(DataFormatError, match=r"\[valid\].*'audio' has 2 .*'regression_labels'"):
        load_mmsa(dump(tmp_path / "short.pkl", data))
    data = {name: mmsa_split(n, rng) for name, n in SIZES.items()}
    data["test"]["id"] = data["test"]["id"][:1]
    with pytest.raises(DataFormatError, match=r"'id' has 1 samples but 'regression_labels' has 3"):
        load_mmsa(dump(tmp_path / "ids.pkl", data))


def test_wrong_rank_and_wrong_label_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {name: mmsa_split(n, rng) for name, n in SIZES.items()}
    data["train"]["vision"] = data["train"]["vision"].reshape(5, -1)
    with pytest.raises(DataFormatError, match=r"'vision' has shape \(5, 15\); expected 3-D"):
        load_mmsa(dump(tmp_path / "rank.pkl", data))
    data = {name: mmsa_split(n, rng) for name, n in SIZES.items()}
    data["train"]["regression_labels"] = np.zeros((5, 2))
    with pytest.raises(DataFormatError, match=r"'regression_labels' has shape \(5, 2\)"):
        load_mmsa(dump(tmp_path / "labels.pkl", data))


# --- MulT --------------------------------------------------------------------------------------

T = 6
MULT_DIMS = {"text": 5, "audio": 4, "vision": 3}
START_PAD = [0, 2, 5, 1, 3]  # zero rows at the start of each sample


def make_mult(tmp_path: Path, ids: object = None, drop: tuple[str, ...] = ()) -> Path:
    rng = np.random.default_rng(0)
    data = {}
    for name, n in SIZES.items():
        fields = {}
        for key, dim in MULT_DIMS.items():
            x = rng.uniform(0.5, 1.5, size=(n, T, dim)).astype(np.float32)
            for i, pad in enumerate(START_PAD[:n]):
                x[i, :pad] = 0.0
            fields[key] = x
        fields["labels"] = np.linspace(-2, 2, n).reshape(n, 1, 1).astype(np.float32)
        fields["id"] = (
            np.array([[f"v{i}".encode(), b"1.5", b"3.25"] for i in range(n)])
            if ids is None
            else ids[name]
        )
        data[name] = {k: v for k, v in fields.items() if k not in drop}
    audio = data["train"]["audio"]
    audio[0, 0, 1] = -np.inf  # a real step, other values stay: still real
    audio[1, 0, 0] = np.nan  # a padding step: zero once sanitised, still padding
    audio[2, 5, :] = -np.inf  # a whole real step of -inf: all-zero once sanitised
    audio[3, 4, 2] = np.inf
    return dump(tmp_path / "mosei_senti_data.pkl", data, protocol=2)


def test_mult_shapes_masks_labels_ids(tmp_path: Path, capsys) -> None:
    path = make_mult(tmp_path)
    raw = pickle.loads(path.read_bytes())
    splits = load_mult(path)
    assert capsys.readouterr().out == (
        "mosei_senti_data.pkl [train] audio: replaced 7 non-finite values "
        "(nan 1, +inf 1, -inf 5) with 0\n"
    )
    start_mask = np.array([[t >= pad for t in range(T)] for pad in START_PAD])
    for name, n in SIZES.items():
        s = splits[name]
        assert s.features["T"].shape == (n, T, 5)
        assert s.features["A"].shape == (n, T, 4)
        assert s.features["V"].shape == (n, T, 3)
        np.testing.assert_array_equal(s.masks["T"], start_mask[:n])
        np.testing.assert_array_equal(s.masks["V"], start_mask[:n])
        assert s.labels.shape == (n,) and s.labels.dtype == np.float32
        np.testing.assert_allclose(s.labels, np.linspace(-2, 2, n))
        for m, key in (("T", "text"), ("A", "audio"), ("V", "vision")):
            expected = np.nan_to_num(raw[name][key], nan=0.0, posinf=0.0, neginf=0.0)
            np.testing.assert_array_equal(s.features[m], expected, m)
        assert s.ids == [f"v{i}$_$1.5$_$3.25" for i in range(n)]
        assert s.meta["id"].tolist() == s.ids
        assert all(np.isfinite(x).all() for x in s.features.values())
    audio_mask = start_mask.copy()
    audio_mask[2, 5] = False
    np.testing.assert_array_equal(splits["train"].masks["A"], audio_mask)
    assert splits["train"].info["nonfinite"] == {"T": 0, "A": 7, "V": 0}
    assert splits["train"].features["A"][0, 0, 1] == 0.0


def test_mult_collates_start_padded_batches(tmp_path: Path) -> None:
    dataset = MultimodalDataset(load_mult(make_mult(tmp_path), modalities="TV")["valid"])
    batch = collate_multimodal([dataset[1], dataset[2]])
    assert batch["features"]["T"].shape == (2, T - 2, 5)  # start pads 2 and 5: 2 steps trimmed
    assert batch["masks"]["T"].tolist() == [[True] * 4, [False] * 3 + [True]]


def test_mult_python2_pickle_and_plain_ids(tmp_path: Path) -> None:
    ids = {name: [f"ID{name}{i}" for i in range(n)] for name, n in SIZES.items()}
    raw = make_mult(tmp_path, ids=ids).read_bytes()
    # Turn one id into a Python 2 str (opcode SHORT_BINSTRING) holding a latin1 byte.
    placeholder = b"IDtest0"
    old = b"X" + len(placeholder).to_bytes(4, "little") + placeholder
    assert raw.count(old) == 1
    path = tmp_path / "py2.pkl"
    path.write_bytes(raw.replace(old, b"U\x04caf\xe9"))
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())
    splits = load_mult(path)
    assert splits["test"].ids == ["café", "IDtest1", "IDtest2"]
    assert splits["train"].ids == [f"IDtrain{i}" for i in range(5)]


def test_mult_missing_modality_key(tmp_path: Path) -> None:
    path = make_mult(tmp_path, drop=("vision",))
    assert load_mult(path, "TA")["test"].modalities == ("T", "A")
    with pytest.raises(DataFormatError, match=r"\[train\]: key 'vision'.*'audio', 'id'"):
        load_mult(path, "AV")


# --- label.csv ---------------------------------------------------------------------------------

CSV = """video_id,clip_id,text,label,mode
-3g5yACwYnA,82_7645,Key is part of it.,1.0,train
0123,0_0,NA,-0.6666667,valid
0123,007,,3,test
abc,1.50,"quoted, with comma",-3,train
"""


def test_read_label_csv_keeps_ids_as_text(tmp_path: Path, capsys) -> None:
    path = tmp_path / "label.csv"
    path.write_text(CSV)
    df = read_label_csv(path)
    assert "1 row(s) with empty text (kept)" in capsys.readouterr().out
    assert len(df) == 4
    assert df["clip_id"].tolist() == ["82_7645", "0_0", "007", "1.50"]
    assert df["video_id"].tolist() == ["-3g5yACwYnA", "0123", "0123", "abc"]
    assert df["text"].tolist() == ["Key is part of it.", "NA", "", "quoted, with comma"]
    assert df["label"].tolist() == pytest.approx([1.0, -0.6666667, 3.0, -3.0])
    assert df["id"].tolist()[:2] == ["-3g5yACwYnA$_$82_7645", "0123$_$0_0"]
    parts = label_csv_splits(df)
    assert {k: len(v) for k, v in parts.items()} == {"train": 2, "valid": 1, "test": 1}
    assert parts["train"].index.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (("1.0,train", "high,train"), r"(?s)column 'label'.*1 row.*\n2 .*high"),
        (("-3,train", "-3.5,train"), r"(?s)column 'label'.*\n5 .*-3.5"),
        (("3,test", "3,dev"), r"(?s)column 'mode'.*\n4 .*dev"),
        (("text,label", "transcript,label"), r"\['text'\] missing"),
    ],
)
def test_read_label_csv_errors(tmp_path: Path, edit: tuple[str, str], pattern: str) -> None:
    path = tmp_path / "label.csv"
    path.write_text(CSV.replace(*edit))
    with pytest.raises(DataFormatError, match=pattern) as err:
        read_label_csv(path)
    assert str(path) in str(err.value)


def test_read_label_csv_refuses_a_clip_listed_twice(tmp_path: Path) -> None:
    path = tmp_path / "label.csv"
    path.write_text(CSV + "0123,0_0,NA again,1.0,test\n")  # also in valid: a leak
    with pytest.raises(DataFormatError, match=r"(?s)1 clip\(s\) are listed more than once "
                       r"\(1 of them in two splits.*\n3 .*0_0.*\n6 .*0_0") as err:
        read_label_csv(path)
    assert str(path) in str(err.value)


def test_pickle_labels_outside_the_scale_and_empty_splits_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = {s: mmsa_split(n, rng) for s, n in SIZES.items()}
    data["valid"]["regression_labels"] = np.array([0.5, 9.0, -50.0], dtype=np.float32)
    with pytest.raises(DataFormatError, match=r"\[valid\].*\[-3, 3\]; 2 label\(s\).*"
                       r"sample 1: 9, sample 2: -50") as err:
        load_mmsa(dump(tmp_path / "bad.pkl", data))
    assert "bad.pkl" in str(err.value)
    empty = {s: mmsa_split(n, rng) for s, n in SIZES.items()}
    empty["test"] = {k: v[:0] for k, v in empty["test"].items()}
    with pytest.raises(DataFormatError, match=r"empty.pkl \[test\]: the split holds no samples"):
        load_mmsa(dump(tmp_path / "empty.pkl", empty))
    mult = {s: {"text": np.ones((2, 3, 4)), "audio": np.ones((2, 3, 2)),
                "vision": np.ones((2, 3, 2)), "labels": np.array([[1.0], [4.5]])}
            for s in SIZES}  # fmt: skip
    with pytest.raises(DataFormatError, match=r"\[train\].*'labels'.*sample 1: 4.5"):
        load_mult(dump(tmp_path / "mult.pkl", mult))


def test_mmsa_padding_that_is_not_zero_is_zeroed_and_counted(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(2)
    data = {s: mmsa_split(n, rng) for s, n in SIZES.items()}
    data["train"]["audio"][1, 5:] = 7.0  # sample 1 has 3 real audio steps: 2 padding steps
    data["train"]["vision"][3, 1:] = -1.0  # sample 3 has 1 real frame: 4 padding steps
    splits = load_mmsa(dump(tmp_path / "padded.pkl", data))
    train = splits["train"]
    assert train.info["padding_zeroed"] == {"A": 2, "V": 4}
    assert not train.features["A"][~train.masks["A"]].any()
    assert not train.features["V"][~train.masks["V"]].any()
    out = capsys.readouterr().out
    assert "padded.pkl [train] audio: set 2 padding steps" in out
    assert "padded.pkl [train] vision: set 4 padding steps" in out


def test_a_folder_given_for_a_pickle_and_a_file_for_a_cache_are_named(tmp_path: Path) -> None:
    from cormult_lib.features.loading import load_splits

    with pytest.raises(ValueError, match=r"data_path='.*' is a folder; dataset 'mmsa' reads one "
                       r"pickle file, e.g. .*aligned_50.pkl"):
        load_splits("mmsa", tmp_path)
    file = make_mmsa(tmp_path)
    with pytest.raises(ValueError, match="is a file; dataset 'raw' reads a feature cache folder"):
        load_splits("raw", file)


def test_read_label_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="label.csv"):
        read_label_csv(tmp_path / "label.csv")


def test_real_mosei_label_csv(cmu_dir: Path) -> None:
    path = cmu_dir / "mosei_label.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    df = read_label_csv(path)
    assert len(df) == 22_788
    assert df["mode"].value_counts().to_dict() == {"train": 16_274, "test": 4_653, "valid": 1_861}
    assert df["label"].between(-3, 3).all()
    assert df["clip_id"].iloc[0] == "82_7645" and isinstance(df["clip_id"].iloc[0], str)
    assert df["id"].iloc[0] == "-3g5yACwYnA$_$82_7645"
    assert df["id"].is_unique
    parts = label_csv_splits(df)
    assert {k: len(v) for k, v in parts.items()} == {"train": 16_274, "valid": 1_861, "test": 4_653}
