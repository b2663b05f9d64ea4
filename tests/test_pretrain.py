"""MCE pre-training on the synthetic corpus: it learns, it saves, it resumes, it ignores labels."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cormult_lib.config import DataConfig, get_config
from cormult_lib.correlation.distances import Distance
from cormult_lib.correlation.evaluation import (
    auc_comparisons,
    coefficient_table,
    separation_auc,
    weak_strong_auc,
)
from cormult_lib.correlation.evaluator import build_evaluator
from cormult_lib.correlation.negatives import (
    batch_size_without_a_lone_sample,
    changed_pairs,
    make_negatives,
)
from cormult_lib.data.dataset import make_loader
from cormult_lib.data.synthetic import make_synthetic_splits
from cormult_lib.training import pretrain
from cormult_lib.training.pretrain import (
    OutdatedEvaluatorError,
    load_evaluator,
    load_or_pretrain,
    pretrain_evaluator,
    save_evaluator,
)

QUICK = get_config("quick").correlation  # hidden 32, t = 8, o = 32
# Strategy D, measured on this corpus: lr 2e-3 collapses after a few epochs (all embeddings
# alike, loss back at 2 x margin); lr 1e-3 (the quick preset's) learns steadily; 12 epochs take
# about 26 s on 2 cores.
LEARNING = replace(QUICK, epochs=12)


@pytest.fixture(scope="module")
def splits():
    return make_synthetic_splits(DataConfig(n_samples=600), seed=0)


@pytest.fixture(scope="module")
def tiny():
    """A corpus small enough for runs that only check plumbing."""
    return make_synthetic_splits(DataConfig(n_samples=60, seq_len=12), seed=1)


@pytest.fixture(scope="module")
def trained(splits):
    return pretrain_evaluator(splits["train"], splits["valid"], LEARNING, progress=False)


def test_pretraining_lowers_the_validation_loss(trained):
    history = trained.history
    assert len(history) == LEARNING.epochs
    assert history["valid_loss"].iloc[0] > history["valid_loss"].iloc[-1]
    assert {"train_LOSS_T", "valid_LOSS_A", "valid_LOSS_V"} <= set(history.columns)
    assert trained.settings["best_epoch"] == int(history["valid_loss"].idxmin()) + 1


def test_coefficients_separate_real_samples_from_negatives(trained, splits):
    auc = separation_auc(trained.model, splits["test"], trained.distance, strategies=("A", "B"))
    assert list(auc.columns) == [
        "strategy", "pair", "auc", "auc_low", "auc_high", "paired", "paired_low", "paired_high",
        "n_pos", "n_neg",
    ]  # fmt: skip
    assert ((auc["auc_low"] < auc["auc"]) & (auc["auc"] < auc["auc_high"])).all(), "95% interval"
    assert len(auc) == 6 and (auc["n_pos"] == len(splits["test"])).all()
    # A swap breaks the two pairs of the swapped modality only; B's shifts break all three.
    n_neg = auc.set_index(["strategy", "pair"])["n_neg"]
    assert (n_neg["A"] < len(splits["test"])).all() and (n_neg["A"] > 20).all()
    assert (n_neg["B"] == len(splits["test"])).all()
    # Measured: A 0.90 / 0.83 / 0.75 (TA / TV / AV), B 0.87 / 0.71 / 0.74.
    table = auc.pivot(index="strategy", columns="pair", values="auc")
    assert (table > 0.6).all().all(), table
    assert (table.mean(axis=1) > 0.7).all(), table
    assert (auc["paired"] > 0.6).all(), auc
    assert ((auc["paired_low"] < auc["paired"]) & (auc["paired"] < auc["paired_high"])).all()


def test_paired_counts_negatives_below_their_own_real_sample(tiny):
    """``paired`` by hand for one batch holding the whole split (untrained evaluator)."""
    options = {"noise_std": 0.5}
    result = pretrain_evaluator(
        tiny["train"],
        tiny["valid"],
        replace(QUICK, epochs=1),
        negative_options=options,
        anchor="own",
        progress=False,
    )
    recorded = {"shift_seconds": 1.0, "noise_std": 0.5, "replace_prob": 0.15}  # defaults too
    assert result.settings["negative_options"] == recorded and result.settings["anchor"] == "own"
    test, strategies = tiny["test"], ("A", "B", "C", "D")
    table = separation_auc(
        result.model, test, result.distance, seed=4, batch_size=len(test), negative_options=options
    ).set_index(["strategy", "pair"])
    batch = next(iter(make_loader(test, len(test), shuffle=False)))
    with torch.no_grad():
        real = result.model.coefficients(batch["features"], batch["masks"], result.distance)
        for i, strategy in enumerate(strategies):
            generator = torch.Generator().manual_seed(4 + i)
            neg = make_negatives(batch["features"], batch["masks"], strategy, generator, **options)
            fake = result.model.coefficients(neg.features, neg.masks, result.distance)
            broken = changed_pairs(neg, result.model.modalities)
            for pair, keep in broken.items():
                wins = (real[pair][keep] > fake[pair][keep]).float().mean().item()
                row = table.loc[(strategy, "".join(pair))]
                assert row["paired"] == pytest.approx(wins), (strategy, pair)
                assert row["n_neg"] == int(keep.sum())
                # auc: every real sample (label 1) against every kept negative (label 0)
                scores = np.r_[real[pair].numpy(), fake[pair][keep].numpy()]
                truth = np.r_[np.ones(len(test)), np.zeros(int(keep.sum()))]
                assert row["auc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-9)
                # the Wilson interval of that share, written out
                n, z = int(keep.sum()), 1.959963984540054
                share = int((real[pair][keep] > fake[pair][keep]).sum()) / n  # exact, not float32
                centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
                half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
                assert row["paired_low"] == pytest.approx(centre - half, abs=1e-9)
                assert row["paired_high"] == pytest.approx(centre + half, abs=1e-9)
    with pytest.raises(ValueError, match="negative_options.*noise"):
        separation_auc(result.model, test, result.distance, negative_options={"noise": 1.0})


def test_a_lone_last_sample_still_gets_its_negatives(tiny):
    # A batch size that would leave the last test sample alone: strategies A and D cannot mix
    # a batch of one, so the batches grow instead of that sample's negatives being dropped.
    torch.manual_seed(0)
    test = tiny["test"]
    model = build_evaluator(test.dims(), QUICK)
    table = separation_auc(model, test, Distance("cosine"), batch_size=len(test) - 1)
    whole = separation_auc(model, test, Distance("cosine"), batch_size=len(test))
    pd.testing.assert_frame_equal(table, whole)
    assert (table.loc[table["strategy"] == "B", "n_neg"] == len(test)).all()


def test_weak_strong_and_coefficient_tables(trained, splits):
    test = splits["test"]
    table = coefficient_table(trained.model, test, trained.distance)
    assert list(table.columns) == ["id", "cor_TA", "cor_TV", "cor_AV", "correlation", "discrepancy"]
    assert table["id"].tolist() == test.ids
    assert table[["cor_TA", "cor_TV", "cor_AV"]].abs().le(1 + 1e-6).all().all()
    ranking = weak_strong_auc(trained.model, test, trained.distance)
    weak_kinds = set(test.meta.loc[test.meta["correlation"] == "weak", "discrepancy"])
    assert set(ranking["discrepancy"]) == weak_kinds | {"all"}
    strong = int((test.meta["correlation"] == "strong").sum())
    assert (ranking["n_strong"] == strong).all()
    # Each row against sklearn: strong clips label 1, the weak clips of its discrepancy label 0.
    is_strong = (test.meta["correlation"] == "strong").to_numpy()
    is_weak = (test.meta["correlation"] == "weak").to_numpy()
    for _, row in ranking.iterrows():
        chosen = is_weak & ((test.meta["discrepancy"] == row["discrepancy"]).to_numpy()
                            | (row["discrepancy"] == "all"))  # fmt: skip
        cor = table[f"cor_{row['pair']}"].to_numpy()
        truth = np.r_[np.ones(is_strong.sum()), np.zeros(chosen.sum())]
        expected = roc_auc_score(truth, np.r_[cor[is_strong], cor[chosen]])
        assert row["n_weak"] == chosen.sum()
        assert row["auc"] == pytest.approx(expected, abs=1e-9), (row["discrepancy"], row["pair"])
    # As comparisons with chance: both group sizes travel with the interval.
    for comparison, (_, row) in zip(
        auc_comparisons(ranking, by=["discrepancy", "pair"]), ranking.iterrows(), strict=True
    ):
        assert comparison.groups == (row["n_strong"], row["n_weak"])
        assert comparison.difference == pytest.approx(row["auc"] - 0.5)
        assert f"(n={row['n_strong']} vs {row['n_weak']}, 1 seed)" in comparison.sentence()


def test_save_and_load_give_identical_coefficients(trained, splits, tmp_path):
    path = save_evaluator(tmp_path / "mce.pt", trained)
    loaded = load_evaluator(path)
    assert loaded.settings == trained.settings
    assert loaded.history.equals(trained.history)
    batch = next(iter(make_loader(splits["test"], 16, shuffle=False)))
    with torch.no_grad():
        a = trained.model.coefficients(batch["features"], batch["masks"], trained.distance)
        b = loaded.model.coefficients(batch["features"], batch["masks"], loaded.distance)
    assert all(torch.equal(a[p], b[p]) for p in a)
    with pytest.raises(FileNotFoundError, match="save_evaluator"):
        load_evaluator(tmp_path / "missing.pt")


def test_two_modalities_with_mahalanobis_round_trip(tiny, tmp_path):
    config = replace(QUICK, epochs=2, distance="mahalanobis")
    result = pretrain_evaluator(
        tiny["train"], tiny["valid"], config, modalities="AT", progress=False
    )
    assert result.model.modalities == ("T", "A")
    assert result.settings["modalities"] == "TA"
    assert result.distance.covariance.shape == (QUICK.shared_dim, QUICK.shared_dim)
    assert {"train_LOSS_T", "train_LOSS_A"} <= set(result.history.columns)
    assert "train_LOSS_V" not in result.history.columns
    loaded = load_evaluator(save_evaluator(tmp_path / "ta.pt", result))
    np.testing.assert_array_equal(loaded.distance.covariance, result.distance.covariance)
    test = tiny["test"]
    a = coefficient_table(result.model, test, result.distance)
    b = coefficient_table(loaded.model, test, loaded.distance)
    assert list(a.columns[:2]) == ["id", "cor_TA"] and "cor_AV" not in a
    assert a.equals(b)


def test_token_id_text_sets_the_vocabulary_from_the_data(tiny):
    def with_ids(split):
        ids = np.where(split.masks["T"], split.features["T"].argmax(axis=2) + 2, 0)
        features = {**split.features, "T": ids.astype(np.int64)}
        return replace(split, features=features)

    train, valid = with_ids(tiny["train"]), with_ids(tiny["valid"])
    expected = int(max(train.features["T"].max(), valid.features["T"].max())) + 1
    result = pretrain_evaluator(train, valid, replace(QUICK, epochs=1), progress=False)
    assert result.settings["vocab_size"] == expected == result.model.vocab_size
    assert np.isfinite(result.history["valid_loss"]).all()


def test_resume_matches_an_uninterrupted_run_and_labels_are_ignored(tiny, tmp_path, monkeypatch):
    config = replace(QUICK, epochs=3)
    train, valid = tiny["train"], tiny["valid"]
    straight = pretrain_evaluator(train, valid, config, progress=False, seed=3)

    # Other labels, same features: pre-training is unsupervised, so nothing may change.
    rng = np.random.default_rng(0)
    relabelled = replace(train, labels=rng.uniform(-3, 3, len(train)).astype(np.float32))
    calls = {"n": 0}
    original = pretrain.make_negatives

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, second training batch (2 train + 1 valid per epoch)
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    checkpoint = tmp_path / "mce.ckpt"
    monkeypatch.setattr(pretrain, "make_negatives", crashing)
    with pytest.raises(KeyboardInterrupt):
        pretrain_evaluator(
            relabelled, valid, config, progress=False, seed=3, checkpoint_path=checkpoint
        )
    monkeypatch.undo()
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    resumed = pretrain_evaluator(
        relabelled, valid, config, progress=False, seed=3, checkpoint_path=checkpoint
    )
    state = resumed.model.state_dict()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert straight.history["valid_loss"].tolist() == resumed.history["valid_loss"].tolist()


def test_resume_refuses_a_checkpoint_of_another_loss_and_accepts_more_epochs(tiny, tmp_path):
    train, valid, checkpoint = tiny["train"], tiny["valid"], tmp_path / "mce.ckpt"
    one = replace(QUICK, epochs=1)
    pretrain_evaluator(train, valid, one, strategy="A", progress=False, checkpoint_path=checkpoint)
    others = [
        ({"strategy": "B"}, "strategy: checkpoint 'A' vs now 'B'"),
        ({"strategy": "A", "anchor": "own"}, "anchor: checkpoint 'real' vs now 'own'"),
        ({"strategy": "A", "negative_options": {"noise_std": 0.5}}, "noise_std': 0.5"),
        ({"strategy": "A", "distance": "euclidean"}, "distance: checkpoint 'cosine'"),
        ({"strategy": "A", "cross_attention": False}, "cross_attention: checkpoint True"),
    ]
    for options, named in others:
        with pytest.raises(ValueError, match=re.escape(named)):
            pretrain_evaluator(train, valid, replace(one, epochs=2), progress=False,
                               checkpoint_path=checkpoint, **options)
    with pytest.raises(ValueError, match="other training settings.*margin"):
        pretrain_evaluator(train, valid, replace(one, epochs=2, margin=0.5), strategy="A",
                           progress=False, checkpoint_path=checkpoint)
    longer = pretrain_evaluator(train, valid, replace(one, epochs=2), strategy="A",
                                progress=False, checkpoint_path=checkpoint)
    assert longer.history["epoch"].tolist() == [1, 2], "more epochs continue the same run"


def test_pretraining_refuses_a_validation_split_too_small_for_its_negatives(tiny):
    one = tiny["valid"].select(np.arange(1))
    for strategy in ("A", "D"):
        with pytest.raises(ValueError, match=rf"strategy {strategy} .*valid_split.*got \d+ and 1"):
            pretrain_evaluator(tiny["train"], one, QUICK, strategy=strategy, progress=False)
    result = pretrain_evaluator(
        tiny["train"], one, replace(QUICK, epochs=1), strategy="B", progress=False
    )
    assert np.isfinite(result.history["valid_loss"]).all()


def test_positions_cover_the_longest_split_not_only_the_training_one(tiny):
    train = tiny["train"].with_modalities("AV")
    longest = max(1024, train.features["A"].shape[1]) + 8
    valid = tiny["valid"].select(np.arange(2)).with_modalities("AV")
    long_valid = replace(
        valid,
        features={m: np.pad(x, ((0, 0), (0, longest - x.shape[1]), (0, 0)))
                  for m, x in valid.features.items()},
        masks={m: np.pad(k, ((0, 0), (0, longest - k.shape[1]))) for m, k in valid.masks.items()},
    )
    result = pretrain_evaluator(
        train, long_valid, replace(QUICK, epochs=1), strategy="B", modalities="AV",
        progress=False,
    )
    assert result.settings["max_len"] == longest and np.isfinite(result.history["valid_loss"]).all()


def test_bad_arguments_are_named(tiny):
    with pytest.raises(ValueError, match="strategy"):
        pretrain_evaluator(tiny["train"], tiny["valid"], QUICK, strategy="E")
    with pytest.raises(ValueError, match="modalities"):
        pretrain_evaluator(tiny["train"], tiny["valid"], QUICK, modalities="T")
    with pytest.raises(ValueError, match="anchor"):
        pretrain_evaluator(tiny["train"], tiny["valid"], QUICK, anchor="negative")
    # Options beyond its own and RunOptions name pretrain_evaluator, not fit.
    for misspelt in ({"progres": False}, {"on_epoch_start": None}, {"amp": True}):
        with pytest.raises(TypeError, match=r"pretrain_evaluator\(\) got unexpected .*'progress'"):
            pretrain_evaluator(tiny["train"], tiny["valid"], QUICK, **misspelt)


def test_load_or_pretrain_reuses_only_an_evaluator_of_the_same_data(tiny, tmp_path, capsys):
    config = replace(QUICK, epochs=1)
    path = tmp_path / "mce.pt"
    first, loaded = load_or_pretrain(path, tiny["train"], tiny["valid"], config, progress=False)
    assert not loaded and path.is_file()
    assert f"pre-trained an evaluator (1 epochs), saved to {path}" in capsys.readouterr().out
    again, loaded = load_or_pretrain(path, tiny["train"], tiny["valid"], config, progress=False)
    assert loaded and f"loaded the evaluator {path}" in capsys.readouterr().out
    # Another budget or seed: the saved file is named with what differs, and not used.
    longer = replace(config, epochs=2)
    assert not load_or_pretrain(path, tiny["train"], tiny["valid"], longer, progress=False)[1]
    assert "config.epochs: 1 -> 2" in capsys.readouterr().out
    assert not load_or_pretrain(
        path, tiny["train"], tiny["valid"], longer, seed=1, progress=False
    )[1]
    assert "seed: 0 -> 1" in capsys.readouterr().out
    first, _ = load_or_pretrain(path, tiny["train"], tiny["valid"], config, progress=False)
    again, loaded = load_or_pretrain(path, tiny["train"], tiny["valid"], config, progress=False)
    assert loaded
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    # Other training samples, another strategy or other modalities: pre-train afresh.
    fewer = tiny["train"].select(np.arange(len(tiny["train"]) - 1))
    assert not load_or_pretrain(path, fewer, tiny["valid"], config, progress=False)[1]
    assert not load_or_pretrain(path, fewer, tiny["valid"], config, strategy="B", progress=False)[1]
    result, loaded = load_or_pretrain(
        path, fewer, tiny["valid"], config, strategy="B", modalities="TV", progress=False
    )
    assert not loaded and result.settings["modalities"] == "TV"
    assert load_evaluator(path).settings["modalities"] == "TV", "the stale file is replaced"
    # Trained with other options or validated on other samples: not the evaluator asked for.
    _, loaded = load_or_pretrain(path, fewer, tiny["valid"], config, strategy="B",
                                 modalities="TV", anchor="own", progress=False)
    assert not loaded and "anchor: 'real' -> 'own'" in capsys.readouterr().out
    assert load_or_pretrain(path, fewer, tiny["valid"], config, strategy="B", modalities="TV",
                            anchor="own", progress=False)[1], "the options reach pretraining"
    assert load_evaluator(path).settings["anchor"] == "own"
    other_valid = tiny["valid"].select(np.arange(len(tiny["valid"]) - 1))
    _, loaded = load_or_pretrain(path, fewer, other_valid, config, strategy="B",
                                 modalities="TV", anchor="own", progress=False)
    assert not loaded and "other validation samples" in capsys.readouterr().out
    with pytest.raises(TypeError, match="unknown options \\['anchors'\\]"):
        load_or_pretrain(path, fewer, other_valid, config, anchors="own")
    # With save_path, a misfit at path is left alone and the new evaluator goes to save_path.
    other = tmp_path / "mine.pt"
    _, loaded = load_or_pretrain(
        path, tiny["train"], tiny["valid"], config, save_path=other, progress=False
    )
    assert not loaded and load_evaluator(path).settings["modalities"] == "TV"
    assert load_or_pretrain(
        path, tiny["train"], tiny["valid"], config, save_path=other, progress=False
    )[1], "found at save_path"


@pytest.mark.parametrize(
    ("batch", "n_train", "n_valid", "expected"),
    [
        (8, 17, 9, [8, 8, 9]),  # 2 x 8 + 1 training samples, 8 + 1 validation ones
        (4, 9, 21, [4, 4, 6, 6, 6, 3]),  # 21 leaves one over in batches of 4 and of 5
    ],
)
def test_no_batch_of_one_sample_reaches_the_negatives(tiny, batch, n_train, n_valid, expected):
    """Sizes of 1 modulo the batch size: strategy D needs two samples in every batch."""
    config = replace(QUICK, epochs=1, batch_size=batch)
    train = tiny["train"].select(np.arange(n_train))
    valid = tiny["train"].select(np.arange(n_valid))  # plumbing only: any samples will do
    sizes = []
    original = pretrain.make_negatives

    def recording(features, *args, **kwargs):
        sizes.append(next(iter(features.values())).shape[0])
        return original(features, *args, **kwargs)

    pretrain.make_negatives = recording
    try:
        result = pretrain_evaluator(train, valid, config, strategy="D", progress=False)
    finally:
        pretrain.make_negatives = original
    assert sizes == expected, "full training batches, validation batches of two or more"
    assert np.isfinite(result.history["valid_loss"]).all()


def test_the_validation_batch_grows_until_no_sample_is_left_alone():
    for n in range(2, 120):
        for batch in range(2, 40):
            size = batch_size_without_a_lone_sample(n, batch)
            assert n % size != 1 and size >= batch
            assert all(n % smaller == 1 for smaller in range(batch, size)), (n, batch, size)


def test_an_evaluator_of_the_older_format_is_refused_by_name_and_pre_trained_anew(
    tiny, tmp_path, capsys
):
    config = replace(QUICK, epochs=1)
    path = tmp_path / "mce.pt"
    load_or_pretrain(path, tiny["train"], tiny["valid"], config, progress=False)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "format": 1}, path)  # as written before the stacked layers
    with pytest.raises(OutdatedEvaluatorError, match="format 1 .*pre-train it again"):
        load_evaluator(path)
    _, loaded = load_or_pretrain(path, tiny["train"], tiny["valid"], config, progress=False)
    assert not loaded and "not used:" in capsys.readouterr().out
    assert load_evaluator(path).settings["modalities"] == "TAV"  # replaced by a current one
