"""The CUDA path of training: mixed precision, pinned memory, models and data on the GPU.

Skipped without a CUDA device (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cormult_lib.config import get_config
from cormult_lib.correlation.evaluation import separation_auc
from cormult_lib.data import make_loader
from cormult_lib.features.loading import load_splits
from cormult_lib.models import CorMulT
from cormult_lib.models.clip_msa import ClipMSA
from cormult_lib.models.mult import build_mult
from cormult_lib.training.pretrain import pretrain_evaluator
from cormult_lib.training.supervised import evaluate, train_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def splits():
    config = get_config("quick")
    return config, load_splits("synthetic", None, "TAV", config.data, 0)


def test_loader_pins_memory_on_cuda(splits) -> None:
    _, data = splits
    batch = next(iter(make_loader(data["train"], 8, False, device="cuda")))
    assert batch["features"]["A"].is_pinned() and batch["labels"].is_pinned()


def test_pretraining_and_cormult_train_with_amp_on_cuda(splits) -> None:
    config, data = splits
    train, valid, test = data["train"], data["valid"], data["test"]
    pretrained = pretrain_evaluator(
        train,
        valid,
        replace(config.correlation, epochs=4, batch_size=16),
        strategy="B",
        device="cuda",
        progress=False,
    )
    assert next(pretrained.model.parameters()).is_cuda
    history = pretrained.history["valid_loss"]
    assert np.isfinite(history).all() and history.min() < history.iloc[0]
    auc = separation_auc(pretrained.model, test, pretrained.distance, strategies=("B",))
    assert auc["auc"].notna().all()
    torch.manual_seed(0)
    model = CorMulT(
        build_mult(train.dims(), config.model, "TAV", "regression", None),
        pretrained.model,
        pretrained.distance,
    )
    trained = train_model(
        model, train, valid, replace(config.train, epochs=3), device="cuda", progress=False
    )
    assert next(trained.model.parameters()).is_cuda
    losses = trained.history["train_loss"]
    assert np.isfinite(losses).all() and losses.iloc[-1] < losses.iloc[0]
    metrics = evaluate(trained.model, test)["all"]
    assert np.isfinite(metrics["mae"]) and metrics["mae"] < 1.5


def test_clip_msa_trains_on_cuda() -> None:
    rng = np.random.default_rng(0)
    dims = {"T": (6, 5), "A": (4, 3), "V": (7, 5)}
    from cormult_lib.data.dataset import MultimodalSplit

    def split(n: int, name: str) -> MultimodalSplit:
        features = {
            "T": rng.normal(size=(n, 1, 11)).astype(np.float32),
            "A": rng.normal(size=(n, 1, 7)).astype(np.float32),
            "V": rng.normal(size=(n, 4, 12)).astype(np.float32),
        }
        labels = np.clip(features["T"][:, 0, 0] - features["A"][:, 0, 1], -3, 3)
        masks = {m: np.ones(x.shape[:2], dtype=bool) for m, x in features.items()}
        return MultimodalSplit(
            features, masks, labels.astype(np.float32), [f"{name}{i}" for i in range(n)], name=name
        )

    torch.manual_seed(0)
    trained = train_model(
        ClipMSA(dims, hidden_dim=16, num_heads=2),
        split(129, "train"),
        split(64, "valid"),
        replace(get_config("quick").train, epochs=8, lr=3e-3),
        loss="smooth_l1",
        device="cuda",
        progress=False,
    )
    assert next(trained.model.parameters()).is_cuda
    history = trained.history["valid_loss"]
    assert history.min() < 0.8 * history.iloc[0], history.tolist()


def test_clip_msa_fine_tunes_encoders_on_cuda(tmp_path) -> None:
    """End to end on the GPU with AMP: prepared clips are moved there batch by batch and only
    the fine-tuned encoder moves."""
    from cormult_lib.config import DataConfig, EncoderConfig
    from cormult_lib.data.synthetic import SyntheticCorpus
    from cormult_lib.data.synthetic_raw import export_raw_corpus
    from cormult_lib.features.clip_encoders import ClipMSAEncoders
    from cormult_lib.features.clip_msa_cache import prepare_raw_clips
    from cormult_lib.models.clip_msa import ClipMSAEndToEnd

    corpus = SyntheticCorpus(DataConfig(n_samples=30), seed=0)
    export_raw_corpus(corpus, tmp_path, indices=range(30))
    encoders = ClipMSAEncoders(EncoderConfig.tiny(num_frames=3), device="cuda")
    raw, _ = prepare_raw_clips(tmp_path, tmp_path / "label.csv", encoders, progress=False)
    clip_before = [p.detach().clone() for p in encoders.clip.parameters()]
    vgg_before = [p.detach().clone() for p in encoders.vgg.parameters()]
    torch.manual_seed(0)
    model = ClipMSAEndToEnd(encoders, ClipMSA(encoders.branch_dims, hidden_dim=16), ["vgg"], 1e-4)
    config = replace(get_config("quick").train, epochs=2, batch_size=8)
    trained = train_model(
        model, raw["train"], raw["valid"], config, loss="smooth_l1", device="cuda", progress=False
    )
    assert encoders.device.type == "cuda" and np.isfinite(trained.history["valid_loss"]).all()
    assert all(
        torch.equal(a, b) for a, b in zip(clip_before, encoders.clip.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(vgg_before, encoders.vgg.parameters(), strict=True)
    )
    assert np.isfinite(evaluate(trained.model, raw["test"])["all"]["mae"])


def test_stacked_mult_on_cuda_equals_the_cpu() -> None:
    from cormult_lib.models.mult import MulT

    torch.manual_seed(0)
    dims = {"T": 6, "A": 5, "V": 7}
    model = MulT(dims, hidden_dim=8, num_heads=2, num_layers=2, causal=True).eval()
    g = torch.Generator().manual_seed(1)
    features = {m: torch.randn(4, 9, d, generator=g) for m, d in dims.items()}
    masks = {m: torch.arange(9)[None, :] < torch.tensor([9, 7, 5, 1])[:, None] for m in dims}
    expected = model(features, masks)
    on_gpu = model.cuda()(
        {m: x.cuda() for m, x in features.items()}, {m: x.cuda() for m, x in masks.items()}
    )
    torch.testing.assert_close(on_gpu.cpu(), expected, atol=1e-4, rtol=1e-4)


def test_attention_on_cuda_uses_fused_kernels_with_per_member_rates() -> None:
    from cormult_lib.nn.functional import attention

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(4, 2, 6, 8, device="cuda", generator=g, requires_grad=True) for _ in range(3)
    )
    eval_out = attention(q, k, v)
    torch.testing.assert_close(
        eval_out, torch.nn.functional.scaled_dot_product_attention(q, k, v)
    )
    # Two members (batch 4 = 2 members x 2 samples): the first without dropout.
    train_out = attention(q, k, v, dropout_p=(0.0, 0.5), training=True)
    torch.testing.assert_close(train_out[:2], eval_out[:2])
    assert not torch.allclose(train_out[2:], eval_out[2:])
    train_out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_compiled_mult_trains_on_cuda_with_cuda_graphs(splits) -> None:
    config, data = splits
    torch.manual_seed(0)
    model = build_mult(data["train"].dims(), config.model, "TAV", "regression", None)
    trained = train_model(
        model,
        data["train"],
        data["valid"],
        replace(config.train, epochs=3, compile=True),
        device="cuda",
        progress=False,
    )
    losses = trained.history["train_loss"]
    assert np.isfinite(losses).all() and losses.iloc[-1] < losses.iloc[0]
    assert "_orig_mod" not in "".join(trained.model.state_dict())


def test_a_killed_cuda_run_resumes_to_the_same_weights(tmp_path) -> None:
    """The checkpoint is read onto the CPU: torch.set_rng_state and the run's generators take
    only CPU states, so a checkpoint read onto the GPU could not be resumed."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from cormult_lib.training.loop import fit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0])
    calls = {"train": 0}

    def loss_fn(model, batch, generator):
        if model.training:
            calls["train"] += 1
            if calls["train"] == 2 * 6 + 3 and calls.get("crash"):  # epoch 3, third batch
                raise KeyboardInterrupt("killed")
        inputs, target = batch
        noise = torch.randn(inputs.shape, generator=generator).to(inputs.device)
        pred = model(inputs + 0.05 * noise).squeeze(-1)
        return ((pred - target) ** 2).mean(), {}

    def run(checkpoint, model_seed):
        torch.manual_seed(model_seed)  # dropout draws from the CUDA generator, resume restores it
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        shuffle = torch.Generator().manual_seed(0)
        train = DataLoader(TensorDataset(x[:48], y[:48]), 8, shuffle=True, generator=shuffle)
        valid = DataLoader(TensorDataset(x[48:], y[48:]), 8)
        return fit(
            model, train, valid, loss_fn, epochs=5, lr=1e-2, device="cuda", generator=shuffle,
            checkpoint_path=checkpoint, progress=False,
        )

    reference = run(tmp_path / "straight.pt", 0)
    calls.update(train=0, crash=True)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed.pt", 0)
    resumed = run(tmp_path / "resumed.pt", 99)  # other initial weights: they come from the file
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=1e-6)
