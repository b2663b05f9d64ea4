"""Supervised training, evaluation on subsets, and the multi-seed runner."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cormult_lib.config import DataConfig, TrainConfig
from cormult_lib.data.dataset import make_loader
from cormult_lib.data.synthetic import make_synthetic_splits
from cormult_lib.metrics import METRIC_KEYS, classification_metrics, regression_metrics
from cormult_lib.models.mult import MulT
from cormult_lib.training.supervised import (
    correlation_sensitivity,
    evaluate,
    predict,
    run_seeds,
    summarize_seeds,
    supervised_loss,
    train_model,
)

CONFIG = TrainConfig(epochs=4, batch_size=32, lr=3e-3, grad_clip=1.0, patience=None)


class MeanPool(nn.Module):
    """Masked time mean per modality, concatenated, one hidden layer: a tiny test model."""

    def __init__(self, dims: dict[str, int], head: str = "regression"):
        super().__init__()
        self.modalities = tuple(dims)
        self.head = head
        out = 1 if head == "regression" else 7
        self.net = nn.Sequential(nn.Linear(sum(dims.values()), 16), nn.ReLU(), nn.Linear(16, out))

    def forward(self, features, masks):
        pooled = []
        for m in self.modalities:
            weight = masks[m].unsqueeze(-1).float()
            pooled.append((features[m] * weight).sum(1) / weight.sum(1).clamp(min=1))
        out = self.net(torch.cat(pooled, dim=-1))
        return out.squeeze(-1) if self.head == "regression" else out


@pytest.fixture(scope="module")
def splits():
    return make_synthetic_splits(DataConfig(n_samples=300), seed=0)


def _build(splits, head="regression", modalities="TAV"):
    dims = splits["train"].dims()
    return MeanPool({m: dims[m] for m in modalities}, head)


def test_training_lowers_the_validation_loss_and_predicts_in_order(splits):
    torch.manual_seed(0)
    trained = train_model(_build(splits), splits["train"], splits["valid"], CONFIG, progress=False)
    history = trained.history
    assert history["valid_loss"].min() < history["valid_loss"].iloc[0]
    assert trained.best_epoch == int(history["valid_loss"].idxmin()) + 1
    test = splits["test"]
    outputs = predict(trained.model, test, batch_size=7)
    assert outputs.shape == (len(test),)
    # One batch of everything gives the same numbers: order and padding trims do not matter.
    np.testing.assert_allclose(outputs, predict(trained.model, test, len(test)), atol=1e-5)


def test_a_mult_without_padding_mask_predicts_the_same_in_any_batch(splits):
    """The official code's MulT attends to padded steps too: trimming a batch to the steps its
    samples use would make a sample's output depend on its batch (and on the batch size)."""
    torch.manual_seed(0)
    model = MulT(splits["test"].dims(), "TAV", hidden_dim=16, num_heads=2, num_layers=1,
                 use_padding_mask=False)
    test = splits["test"].select(np.arange(24))
    lengths = test.masks["A"].sum(1)
    assert lengths.min() < lengths.max(), "needs samples of different lengths"
    alone, together = predict(model, test, batch_size=1), predict(model, test, batch_size=24)
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_evaluate_scores_all_and_subsets(splits):
    torch.manual_seed(1)
    model = _build(splits)
    test = splits["test"]
    weak = (test.meta["correlation"] == "weak").to_numpy()
    results = evaluate(model, test, subsets={"weak": weak, "none": np.zeros(len(test), bool)})
    outputs = predict(model, test)
    assert results["all"] == {**regression_metrics(outputs, test.labels), "n": len(test)}
    assert results["weak"] == {
        **regression_metrics(outputs[weak], test.labels[weak]),
        "n": int(weak.sum()),
    }
    assert results["none"]["n"] == 0 and np.isnan(results["none"]["mae"])
    with pytest.raises(ValueError, match="subset 'weak' must be a bool mask"):
        evaluate(model, test, subsets={"weak": weak[:-1]})


def test_classification_head_uses_cross_entropy_and_class_metrics(splits):
    torch.manual_seed(2)
    model = _build(splits, head="classification", modalities="TA")
    trained = train_model(model, splits["train"], splits["valid"], CONFIG, progress=False)
    test = splits["test"]
    logits = predict(trained.model, test)
    assert logits.shape == (len(test), 7)
    metrics = evaluate(trained.model, test)["all"]
    assert metrics == {**classification_metrics(logits, test.labels), "n": len(test)}


def test_losses_match_torch_and_reject_bad_names(splits):
    model = _build(splits)
    batch = next(iter(make_loader(splits["train"], 8, shuffle=False)))
    output = model(batch["features"], batch["masks"])
    l1, _ = supervised_loss("regression", "l1")(model, batch, torch.Generator())
    smooth, _ = supervised_loss("regression", "smooth_l1")(model, batch, torch.Generator())
    torch.testing.assert_close(l1, (output - batch["labels"]).abs().mean())
    torch.testing.assert_close(smooth, nn.SmoothL1Loss()(output, batch["labels"]))
    with pytest.raises(ValueError, match="loss must be one of"):
        supervised_loss("regression", "mse")
    with pytest.raises(ValueError, match="head must be one of"):
        supervised_loss("ordinal")


def test_train_model_refuses_options_it_does_not_pass_on(splits):
    model = _build(splits)
    config = TrainConfig(epochs=1, batch_size=8)
    for unknown in ({"progres": False}, {"patience": 2}, {"weight_decay": 0.1}):
        with pytest.raises(TypeError, match=r"train_model\(\) got unexpected .*'resume'"):
            train_model(model, splits["train"], splits["valid"], config, **unknown)


def test_train_model_resumes_only_a_run_of_the_same_loss(splits, tmp_path):
    config = TrainConfig(epochs=1, batch_size=32)
    checkpoint = tmp_path / "run.pt"
    options = {"checkpoint_path": checkpoint, "progress": False}
    train_model(_build(splits), splits["train"], splits["valid"], config, **options)
    longer = TrainConfig(epochs=2, batch_size=32)
    with pytest.raises(ValueError, match="loss: checkpoint 'l1' vs now 'smooth_l1'"):
        train_model(_build(splits), splits["train"], splits["valid"], longer, loss="smooth_l1",
                    **options)
    resumed = train_model(_build(splits), splits["train"], splits["valid"], longer, **options)
    assert resumed.history["epoch"].tolist() == [1, 2]


def test_run_seeds_is_reproducible_and_summaries_are_mean_and_std(splits):
    quick = replace(CONFIG, epochs=2)
    weak = (splits["test"].meta["correlation"] == "weak").to_numpy()
    runs = run_seeds(
        lambda seed: _build(splits), splits, quick, [0, 1], subsets={"weak": weak}, progress=False
    )
    assert list(runs["seed"]) == [0, 0, 1, 1] and list(runs["subset"]) == ["all", "weak"] * 2
    seen = []
    again, scores = run_seeds(
        lambda seed: _build(splits),
        splits,
        quick,
        [1],
        progress=False,
        return_outputs=True,
        after_training=lambda seed, model: seen.append((seed, model.training)),
    )
    assert seen == [(1, False)], "called once per seed with the trained model in eval mode"
    row = runs[(runs["seed"] == 1) & (runs["subset"] == "all")].iloc[0]
    assert again.iloc[0][list(METRIC_KEYS)].equals(row[list(METRIC_KEYS)]), "same seed, same run"
    assert scores.shape == (1, len(splits["test"]))
    mae = np.abs(scores[0] - splits["test"].labels).mean()
    assert mae == pytest.approx(row["mae"]), "the returned outputs are the scored ones"
    assert runs.loc[runs["subset"] == "all", "mae"].nunique() == 2, "seeds must differ"

    table = summarize_seeds(runs)
    maes = runs.loc[runs["subset"] == "all", "mae"].to_numpy()
    assert table.loc["all", ("mae", "mean")] == pytest.approx(maes.mean())
    assert table.loc["all", ("mae", "std")] == pytest.approx(maes.std(ddof=1))
    assert table.loc["weak", ("n_seeds", "")] == 2
    single = summarize_seeds(again)
    assert np.isnan(single.loc["all", ("mae", "std")]), "one seed has no spread"
    with pytest.raises(ValueError, match="lacks"):
        run_seeds(lambda seed: _build(splits), {"train": splits["train"]}, quick, [0])


def _tiny_cormult(splits, fusion: str):
    from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator
    from cormult_lib.models import CorMulT
    from cormult_lib.models.mult import MulT

    dims = splits["train"].dims()
    torch.manual_seed(0)
    mult = MulT(dims, hidden_dim=8, num_heads=2, num_layers=1)
    evaluator = ModalityCorrelationEvaluator(
        dims, hidden_dim=8, num_layers=1, num_heads=2, ff_dim=16, shared_time=4, shared_dim=8
    )
    return CorMulT(mult, evaluator, "cosine", fusion=fusion).eval()


@pytest.mark.parametrize("fusion", ["product", "post_norm"])
def test_correlation_sensitivity_replaces_the_coefficients_and_measures_the_change(splits, fusion):
    model = _tiny_cormult(splits, fusion)
    test = splits["test"]
    table = correlation_sensitivity(model, test, scales=(0.5,), seed=3).set_index("replacement")
    assert list(table.index) == [
        "Cor (learned)", "Cor = 1", "Cor = 0", "Cor of another sample", "Cor x 0.5"
    ]  # fmt: skip
    assert table.loc["Cor (learned)", "mean_abs_change"] == 0.0
    reference = predict(model, test)
    plain = predict(model.mult, test)  # Cor = 1 is plain MulT for product and post_norm
    expected = np.abs(plain - reference).mean()
    assert table.loc["Cor = 1", "mean_abs_change"] == pytest.approx(expected, rel=1e-5)
    assert table.loc["Cor = 1", "mae"] == pytest.approx(np.abs(plain - test.labels).mean())
    ratio = table.loc["Cor = 1", "relative_change"] / table.loc["Cor = 1", "mean_abs_change"]
    assert ratio == pytest.approx(1 / reference.std())
    assert (table["n"] == len(test)).all()
    assert table.loc["Cor of another sample", "mean_abs_change"] > 0
    # Cor = 0 and Cor x 0.5: predictions of the model with its coefficients replaced so.
    for name, factor in [("Cor = 0", 0.0), ("Cor x 0.5", 0.5)]:
        changed = predict(_Scaled(model, factor), test)
        expected = np.abs(changed - reference).mean()
        assert expected > 0, name
        assert table.loc[name, "mean_abs_change"] == pytest.approx(expected, rel=1e-5), name


class _Scaled(nn.Module):
    """A CorMulT predicting with its coefficients multiplied by ``factor``."""

    def __init__(self, model: nn.Module, factor: float):
        super().__init__()
        self.model, self.factor, self.modalities = model, factor, model.modalities

    def forward(self, features, masks):
        cor = self.model.coefficients(features, masks)
        scaled = {pair: value * self.factor for pair, value in cor.items()}
        return self.model.forward_with(features, masks, scaled)


def test_a_class_head_run_returns_its_argmax_classes_as_the_scored_predictions(splits):
    """Chapter 07 compares the 7-class head with paired bootstraps over these scores: they
    must be argmax - 3 of the model's logits, and the very predictions the metrics scored."""
    trained = []
    runs, scores = run_seeds(
        lambda seed: _build(splits, head="classification"),
        splits,
        replace(CONFIG, epochs=6, lr=1e-2),
        [0],
        progress=False,
        return_outputs=True,
        after_training=lambda seed, model: trained.append(model),
    )
    test = splits["test"]
    logits = predict(trained[0], test)
    assert logits.shape == (len(test), 7) and len(set(scores[0])) > 1, "not one class for all"
    np.testing.assert_array_equal(scores[0], logits.argmax(axis=1) - 3)
    row = runs[runs["subset"] == "all"].iloc[0]
    assert np.abs(scores[0] - test.labels).mean() == pytest.approx(row["mae"])
    assert row["acc7"] == pytest.approx(classification_metrics(logits, test.labels)["acc7"])
