"""The shared training loop: exact resume, early stopping, atomic checkpoints, clipping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from cormult_lib.device import move_to_device
from cormult_lib.training.epoch import batch_size_of
from cormult_lib.training.loop import PLATEAU_PATIENCE, fit

N_TRAIN, N_VALID, BATCH = 48, 16, 8
TRAIN_BATCHES = N_TRAIN // BATCH


def make_data(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_VALID, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(len(x), generator=g)
    return TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), TensorDataset(x[N_TRAIN:], y[N_TRAIN:])


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    # Dropout makes the result depend on torch's global generator, which resume must restore.
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def noisy_mse(model: nn.Module, batch: list, generator: torch.Generator):
    """MSE on inputs jittered with the loss generator (stands in for negative sampling)."""
    x, y = batch
    x = x + 0.05 * torch.randn(x.shape, generator=generator)
    pred = model(x).squeeze(-1)
    loss = ((pred - y) ** 2).mean()
    return loss, {"mae": (pred - y).abs().mean().item()}


def loaders(seed: int = 0) -> tuple[DataLoader, DataLoader, torch.Generator]:
    train, valid = make_data()
    shuffle = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=BATCH, shuffle=True, generator=shuffle),
        DataLoader(valid, batch_size=BATCH),
        shuffle,
    )


def run(model: nn.Module, checkpoint: Path, loss_fn=noisy_mse, **kwargs):
    train, valid, shuffle = loaders()
    options = dict(epochs=5, lr=1e-2, grad_clip=1.0, progress=False, generator=shuffle)
    options.update(kwargs)
    return fit(model, train, valid, loss_fn, checkpoint_path=checkpoint, **options)


def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path):
    reference = run(make_model(0), tmp_path / "straight.pt")

    calls = {"train": 0}

    def crashing(model, batch, generator):
        if model.training:
            calls["train"] += 1
            if calls["train"] == 2 * TRAIN_BATCHES + 3:  # the third batch of epoch 3
                raise KeyboardInterrupt("killed")
        return noisy_mse(model, batch, generator)

    checkpoint = tmp_path / "resumed.pt"
    with pytest.raises(KeyboardInterrupt):
        run(make_model(0), checkpoint, loss_fn=crashing)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    # A fresh process: other initial weights, other global RNG state, a new shuffling generator.
    torch.manual_seed(123)
    resumed = run(make_model(99), checkpoint, loss_fn=crashing)

    assert calls["train"] == 5 * TRAIN_BATCHES + 3  # epochs 3-5 ran again, once
    assert resumed.best_epoch == reference.best_epoch
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    last_a = torch.load(tmp_path / "straight.pt", weights_only=True)["model"]
    last_b = torch.load(checkpoint, weights_only=True)["model"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    columns = ["epoch", "train_loss", "valid_loss", "lr", "train_mae", "valid_mae"]
    pd_a, pd_b = reference.history[columns], resumed.history[columns]
    assert pd_a.equals(pd_b)


VALID_BATCHES = N_VALID // BATCH


def scripted_validation(script: list[float], crash_in: int | None = None):
    """A loss function whose validation loss in epoch ``e`` is ``script[e - 1]`` (the epoch
    counted from the validation batches, so it stays right across a crash and a resume), and
    that is killed once, in the first training batch of epoch ``crash_in``."""
    state = {"valid_batches": 0, "crashed": False, "train_batches": 0}

    def loss_fn(model, batch, generator):
        epoch = state["valid_batches"] // VALID_BATCHES + 1
        if model.training:
            if epoch == crash_in and not state["crashed"]:
                state["crashed"] = True
                raise KeyboardInterrupt("killed")
            state["train_batches"] += 1
            return noisy_mse(model, batch, generator)
        state["valid_batches"] += 1
        return torch.tensor(script[epoch - 1]), {}

    return loss_fn, state


# Epoch 1 is the best; every later epoch is worse. The plateau scheduler halves lr after
# PLATEAU_PATIENCE + 1 bad epochs (epochs 2-4) and again after the next three (5-7);
# early stopping with patience 4 stops after epoch 5.
WORSE_AFTER_ONE = [1.0] + [2.0] * 8


@pytest.mark.parametrize(
    ("patience", "crash_in"),
    [(None, 6), (4, 4)],
    ids=["scheduler-state-mid-plateau", "early-stopping-state-mid-patience"],
)
def test_resume_keeps_the_scheduler_and_early_stopping_counts(tmp_path, patience, crash_in):
    """Resuming must restore the plateau scheduler's and early stopping's bad-epoch counts
    and best loss, not only weights and optimizer: a fresh count would halve lr later, stop
    later, and take a post-crash epoch as the best."""
    options = dict(epochs=len(WORSE_AFTER_ONE), patience=patience)
    reference = run(make_model(0), tmp_path / "straight.pt",
                    loss_fn=scripted_validation(WORSE_AFTER_ONE)[0], **options)  # fmt: skip
    if patience is None:  # the script halves lr twice, the second time after the crash
        assert reference.history["lr"].tolist()[-3:] == pytest.approx([5e-3, 2.5e-3, 2.5e-3])
    else:
        assert reference.stopped_early and len(reference.history) == 1 + patience
    checkpoint = tmp_path / "resumed.pt"
    crashing, _ = scripted_validation(WORSE_AFTER_ONE, crash_in)
    with pytest.raises(KeyboardInterrupt):
        run(make_model(0), checkpoint, loss_fn=crashing, **options)
    torch.manual_seed(123)
    resumed = run(make_model(99), checkpoint, loss_fn=crashing, **options)
    assert resumed.best_epoch == reference.best_epoch == 1
    assert resumed.stopped_early == reference.stopped_early
    assert resumed.history["lr"].tolist() == reference.history["lr"].tolist()
    assert resumed.history["epoch"].tolist() == reference.history["epoch"].tolist()
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_resuming_a_run_that_stopped_early_trains_nothing(tmp_path):
    checkpoint = tmp_path / "ck.pt"
    loss_fn, _ = scripted_validation(WORSE_AFTER_ONE)
    finished = run(make_model(0), checkpoint, loss_fn=loss_fn, epochs=9, patience=2)
    assert finished.stopped_early and len(finished.history) == 3
    again, state = scripted_validation(WORSE_AFTER_ONE)
    resumed = run(make_model(99), checkpoint, loss_fn=again, epochs=9, patience=2)
    assert state["train_batches"] == 0 and state["valid_batches"] == 0
    assert resumed.stopped_early and resumed.best_epoch == 1
    assert resumed.history.equals(finished.history)
    for key, value in finished.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_early_stopping_returns_the_best_epoch(tmp_path):
    script = [3.0, 2.0, 1.0, 1.5, 2.5, 0.5, 0.1]  # validation loss per epoch
    calls = {"train": 0}
    snapshots = {}

    def scripted(model, batch, generator):
        if model.training:
            calls["train"] += 1
            return noisy_mse(model, batch, generator)
        epoch = calls["train"] // TRAIN_BATCHES
        return torch.tensor(script[epoch - 1]), {}

    def snapshot(model, epoch):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"n_params": sum(p.numel() for p in model.parameters())}

    result = run(make_model(0), None, loss_fn=scripted, epochs=7, patience=2, log_extra=snapshot)
    assert result.stopped_early
    assert result.best_epoch == 3
    assert result.history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert result.history["valid_loss"].tolist() == script[:5]
    assert (result.history["n_params"] == 97).all()
    state = result.model.state_dict()
    assert all(torch.equal(state[k], snapshots[3][k]) for k in state)
    assert not all(torch.equal(state[k], snapshots[5][k]) for k in state)


def test_history_has_one_row_per_epoch_and_plateau_lowers_lr(tmp_path):
    def flat(model, batch, generator):
        loss, extras = noisy_mse(model, batch, generator)
        return (loss if model.training else torch.tensor(1.0)), extras

    result = run(make_model(0), None, loss_fn=flat, epochs=5)
    history = result.history
    assert len(history) == 5 and history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert list(history.columns[:5]) == ["epoch", "train_loss", "valid_loss", "lr", "seconds"]
    assert {"train_mae", "valid_mae"} <= set(history.columns)
    assert (history["seconds"] > 0).all()
    # Epoch 1 sets the best; after PLATEAU_PATIENCE + 1 epochs without improvement lr halves.
    halved = 2 + PLATEAU_PATIENCE
    assert history["lr"].tolist()[:halved] == [1e-2] * halved
    assert history["lr"].iloc[halved] == pytest.approx(5e-3)
    assert result.best_epoch == 1 and not result.stopped_early


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    checkpoint = tmp_path / "ck.pt"
    run(make_model(0), checkpoint, epochs=1)
    before = checkpoint.read_bytes()

    def failing_save(obj, stream, *args, **kwargs):
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        run(make_model(0), checkpoint, epochs=2)
    monkeypatch.undo()
    assert checkpoint.read_bytes() == before
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left


def test_gradient_clipping_bounds_the_norm_at_every_step():
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    def steep(model, batch, generator):
        loss, extras = noisy_mse(model, batch, generator)
        return 1000 * loss, extras

    handle = register_optimizer_step_pre_hook(record)
    try:
        run(make_model(0), None, loss_fn=steep, epochs=1, grad_clip=0.1)
        clipped, norms[:] = list(norms), []
        run(make_model(0), None, loss_fn=steep, epochs=1, grad_clip=None)
    finally:
        handle.remove()
    assert len(clipped) == TRAIN_BATCHES
    assert max(clipped) <= 0.1 * (1 + 1e-5)
    assert min(norms) > 0.1  # without clipping the same steps are far steeper


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    checkpoint = tmp_path / "ck.pt"
    run(make_model(0), checkpoint, epochs=1)
    with pytest.raises(ValueError, match="lr"):
        run(make_model(0), checkpoint, epochs=2, lr=1e-3)
    fresh = run(make_model(0), checkpoint, epochs=1, lr=1e-3, resume=False)
    assert len(fresh.history) == 1
    assert torch.load(checkpoint, weights_only=True)["settings"]["lr"] == 1e-3


def test_resume_refuses_fewer_epochs_than_the_checkpoint_holds_and_extra_settings(tmp_path):
    checkpoint = tmp_path / "ck.pt"
    run(make_model(0), checkpoint, epochs=3, settings={"loss": "a"})
    with pytest.raises(ValueError, match="epochs=2, but checkpoint .* already holds 3 epochs"):
        run(make_model(0), checkpoint, epochs=2, settings={"loss": "a"})
    with pytest.raises(ValueError, match="loss: checkpoint 'a' vs now 'b'"):
        run(make_model(0), checkpoint, epochs=4, settings={"loss": "b"})
    again = run(make_model(0), checkpoint, epochs=3, settings={"loss": "a"})
    assert again.history["epoch"].tolist() == [1, 2, 3], "a finished run trains nothing more"


def test_batches_are_moved_and_sized():
    batch = {"x": torch.zeros(3, 2), "ids": ["a", "b", "c"], "m": {"T": torch.ones(3, 5)}}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["ids"] == ["a", "b", "c"] and torch.equal(moved["m"]["T"], torch.ones(3, 5))
    assert batch_size_of(batch) == 3
    with pytest.raises(ValueError, match="epochs"):
        run(make_model(0), None, epochs=0)


def test_mixed_precision_runs_on_the_cpu_with_bfloat16(tmp_path):
    dtypes = []

    def recording(model, batch, generator):
        loss, extras = noisy_mse(model, batch, generator)
        dtypes.append(model[0](batch[0]).dtype)
        return loss, extras

    result = run(make_model(0), tmp_path / "amp.pt", loss_fn=recording, epochs=2, amp=True)
    assert set(dtypes) == {torch.bfloat16}
    assert result.history["valid_loss"].notna().all()
    assert torch.load(tmp_path / "amp.pt", weights_only=True)["settings"]["amp"] is True
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_fit_hands_the_loss_a_compiled_model_and_returns_the_plain_one(tmp_path, monkeypatch):
    real_compile, compiled, seen = torch.compile, [], set()

    def eager_compile(model, backend="inductor", mode=None):
        compiled.append((model, backend, mode))
        return real_compile(model, backend="eager")  # dynamo traces; no code generation

    def recording(model, batch, generator):
        seen.add(type(model).__name__)
        return noisy_mse(model, batch, generator)

    monkeypatch.setattr(torch, "compile", eager_compile)
    model = make_model(0)
    result = run(model, tmp_path / "c.pt", loss_fn=recording, epochs=3, compile=True)
    assert [(m, b, mode) for m, b, mode in compiled] == [(model, "inductor", None)]
    assert seen == {"OptimizedModule"}  # the loss ran the compiled module
    assert result.model is model and "_orig_mod" not in "".join(model.state_dict())
    losses = result.history["train_loss"]
    assert losses.iloc[-1] < losses.iloc[0]  # the compiled module trains the shared weights


def test_fit_steps_a_fused_adam(tmp_path):
    stepped = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: stepped.append(optimizer)
    )
    try:
        run(make_model(0), tmp_path / "c.pt", epochs=1)
    finally:
        hook.remove()
    assert stepped and all(type(o) is torch.optim.Adam for o in stepped)
    assert all(o.defaults["fused"] is True for o in stepped)
