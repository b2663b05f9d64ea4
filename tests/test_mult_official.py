"""Interop with the official MulT code (yaohungt/Multimodal-Transformer): fairseq's positional
table, the ``positional`` option, and :func:`mult_from_official`.

The parity test runs the official ``MULTModel`` itself when ``MULT_REFERENCE_DIR`` names a
checkout of that repository (``src/models.py``, ``modules/``); it is skipped otherwise. On
torch 2.x the checkout needs one fix: in ``modules/position_embedding.py``,
``positions.view(-1)`` must read ``positions.reshape(-1)`` (the tensor is not contiguous).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cormult_lib.models.mult import MulT, mult_from_official
from cormult_lib.nn.attention import TransformerEncoder, attention_mask
from cormult_lib.nn.positions import (
    FairseqPositionalEncoding,
    fairseq_sinusoidal_table,
    valid_ranks,
)

REFERENCE_SKIP = "MULT_REFERENCE_DIR is not set (a checkout of yaohungt/Multimodal-Transformer)"

# Written out here, independently of cormult_lib.models.mult: the official name of each
# transformer, its width (in units of d) and whether it is a memory transformer.
#: official encoder -> (this project's stack, member key, width / d)
OFFICIAL_NAMES = {
    "trans_l_with_a": ("crossmodal_encoders", "A->T", 1),
    "trans_l_with_v": ("crossmodal_encoders", "V->T", 1),
    "trans_a_with_l": ("crossmodal_encoders", "T->A", 1),
    "trans_a_with_v": ("crossmodal_encoders", "V->A", 1),
    "trans_v_with_l": ("crossmodal_encoders", "T->V", 1),
    "trans_v_with_a": ("crossmodal_encoders", "A->V", 1),
    "trans_l_mem": ("memory_encoders", "T", 2),
    "trans_a_mem": ("memory_encoders", "A", 2),
    "trans_v_mem": ("memory_encoders", "V", 2),
}
#: a parameter inside one official layer -> the stacked layer's name
LAYER_NAMES = {
    "self_attn.in_proj_weight": "attention.in_proj.weight",
    "self_attn.in_proj_bias": "attention.in_proj.bias",
    "self_attn.out_proj.weight": "attention.out_proj.weight",
    "self_attn.out_proj.bias": "attention.out_proj.bias",
    "fc1.weight": "fc1.weight",
    "fc1.bias": "fc1.bias",
    "fc2.weight": "fc2.weight",
    "fc2.bias": "fc2.bias",
    "layer_norms.0.weight": "norm_attention.weight",
    "layer_norms.0.bias": "norm_attention.bias",
    "layer_norms.1.weight": "norm_feed_forward.weight",
    "layer_norms.1.bias": "norm_feed_forward.bias",
}
OFFICIAL_MODALITY = {"T": "l", "A": "a", "V": "v"}
HIDDEN, HEADS, LAYERS = 30, 5, 2
DIMS = {"T": 12, "A": 5, "V": 30}  # V: d_in == d, the official code skips its projection


def official_shapes(
    dims: dict[str, int], d: int, layers: int, outputs: int = 1
) -> dict[str, tuple[int, ...]]:
    """Every key of the official ``MULTModel.state_dict()`` (all three targets) and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for m, o in OFFICIAL_MODALITY.items():
        shapes[f"proj_{o}.weight"] = (d, dims[m], 1)
    for name, (stack, _, width) in OFFICIAL_NAMES.items():
        w = width * d
        count = layers if stack == "crossmodal_encoders" else max(layers, 3)
        shapes[f"{name}.version"] = (1,)
        shapes[f"{name}.embed_positions._float_tensor"] = (1,)
        for i in range(count):
            layer = f"{name}.layers.{i}"
            shapes[f"{layer}.self_attn.in_proj_weight"] = (3 * w, w)
            shapes[f"{layer}.self_attn.in_proj_bias"] = (3 * w,)
            shapes[f"{layer}.self_attn.out_proj.weight"] = (w, w)
            shapes[f"{layer}.self_attn.out_proj.bias"] = (w,)
            shapes[f"{layer}.fc1.weight"] = (4 * w, w)
            shapes[f"{layer}.fc1.bias"] = (4 * w,)
            shapes[f"{layer}.fc2.weight"] = (w, 4 * w)
            shapes[f"{layer}.fc2.bias"] = (w,)
            for j in range(2):
                shapes[f"{layer}.layer_norms.{j}.weight"] = (w,)
                shapes[f"{layer}.layer_norms.{j}.bias"] = (w,)
        shapes[f"{name}.layer_norm.weight"] = (w,)
        shapes[f"{name}.layer_norm.bias"] = (w,)
    combined = 6 * d
    shapes["proj1.weight"] = (combined, combined)
    shapes["proj1.bias"] = (combined,)
    shapes["proj2.weight"] = (combined, combined)
    shapes["proj2.bias"] = (combined,)
    shapes["out_layer.weight"] = (outputs, combined)
    shapes["out_layer.bias"] = (outputs,)
    return shapes


def random_official_state(
    dims: dict[str, int] = DIMS, layers: int = LAYERS, outputs: int = 1, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        key: 0.3 * torch.randn(shape, generator=g)
        for key, shape in official_shapes(dims, HIDDEN, layers, outputs).items()
    }


def to_official(model: MulT) -> dict[str, torch.Tensor]:
    """The inverse mapping, written here: a :class:`MulT` in the official configuration ->
    the official state dict (buffers ``[2.0]`` / ``[0.0]``, skipped projections as zeros)."""
    own = model.state_dict()
    d = model.hidden_dim
    out: dict[str, torch.Tensor] = {}
    for m, o in OFFICIAL_MODALITY.items():
        key = f"projections.{m}.weight"
        out[f"proj_{o}.weight"] = own[key] if key in own else torch.zeros(d, d, 1)
    for name, (stack, member_key, _) in OFFICIAL_NAMES.items():
        members = model.directions if stack == "crossmodal_encoders" else model.modalities
        i = members.index(member_key)
        out[f"{name}.version"] = torch.tensor([2.0])
        out[f"{name}.embed_positions._float_tensor"] = torch.zeros(1)
        for layer in range(len(getattr(model, stack).layers)):
            for official, project in LAYER_NAMES.items():
                value = own[f"{stack}.layers.{layer}.{project}"][i]
                out[f"{name}.layers.{layer}.{official}"] = value
        out[f"{name}.layer_norm.weight"] = own[f"{stack}.norm.weight"][i]
        out[f"{name}.layer_norm.bias"] = own[f"{stack}.norm.bias"][i]
    for key in ("proj1.weight", "proj1.bias", "proj2.weight", "proj2.bias"):
        out[key] = own[key]
    out["out_layer.weight"] = own["out_layer.weight"]
    out["out_layer.bias"] = own["out_layer.bias"]
    return {key: value.clone() for key, value in out.items()}


def features_without_zeros(
    times: dict[str, int], dims: dict[str, int], batch: int = 3, seed: int = 1
) -> dict[str, torch.Tensor]:
    """Random ``(batch, time_m, d_m)`` features with no exact 0 (the official code would count
    such a step as padding for its positions)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, t in times.items():
        x = torch.randn(batch, t, dims[m], generator=g)
        out[m] = torch.where(x == 0, 1.0, x)
    return out


# ------------------------------------------------------------------ positional tables


@pytest.mark.parametrize("dim", [8, 9, 30])
def test_fairseq_table_equals_its_formula(dim):
    num = 20
    half = dim // 2
    frequency = np.exp(np.arange(half) * -(np.log(10000.0) / (half - 1)))  # w_i
    position = np.arange(num)[:, None]  # n
    expected = np.zeros((num, dim))
    expected[:, :half] = np.sin(position * frequency)  # sin(n * w_i), first half
    expected[:, half : 2 * half] = np.cos(position * frequency)  # cos(n * w_i), second half
    expected[0] = 0.0  # the padding row (padding_idx 0); an odd dim keeps its last column 0
    table = fairseq_sinusoidal_table(num, dim)
    assert table.shape == (num, dim) and table.dtype == torch.float32
    np.testing.assert_allclose(table.numpy(), expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(fairseq_sinusoidal_table(num, dim, padding_idx=None)[0, :half], 0)
    assert fairseq_sinusoidal_table(num, dim, padding_idx=None)[0, half:].eq(1.0).sum() == half
    with pytest.raises(ValueError, match="dim >= 4"):
        fairseq_sinusoidal_table(num, 3)


def test_fairseq_positions_count_valid_steps_from_one():
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])
    table = fairseq_sinusoidal_table(9, 10)
    encoded = FairseqPositionalEncoding(10, max_len=8)(valid_ranks(mask))
    # the p-th valid step (0-based) gets row p + 1 wherever the padding is
    torch.testing.assert_close(encoded[0, :3], table[1:4], rtol=0, atol=0)
    torch.testing.assert_close(encoded[1, 1:], table[1:4], rtol=0, atol=0)
    encoder = TransformerEncoder(10, 2, 1, positional="fairseq", max_len=8)
    torch.testing.assert_close(encoder.positions.table, table, rtol=0, atol=0)
    with pytest.raises(ValueError, match="positional must be one of"):
        TransformerEncoder(10, 2, 1, positional="interleaved")


def _padded_batch(seed: int = 3) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    times = {"T": 6, "A": 9, "V": 4}
    features = features_without_zeros(times, {"T": 6, "A": 5, "V": 7}, batch=4, seed=seed)
    masks = {
        m: torch.arange(t)[None, :] < torch.tensor([t, t - 1, t - 2, 1])[:, None]
        for m, t in times.items()
    }
    return features, masks


def test_tutorial_positions_leave_todays_outputs_unchanged():
    dims = {"T": 6, "A": 5, "V": 7}
    sizes = {"hidden_dim": 8, "num_heads": 2, "num_layers": 2}
    torch.manual_seed(0)
    default = MulT(dims, **sizes).eval()
    torch.manual_seed(0)
    tutorial = MulT(dims, **sizes, positional="tutorial").eval()
    torch.manual_seed(0)
    fairseq = MulT(dims, **sizes, positional="fairseq").eval()
    features, masks = _padded_batch()
    with torch.no_grad():
        expected = default(features, masks)
        assert torch.equal(tutorial(features, masks), expected)
        assert not torch.allclose(fairseq(features, masks), expected, atol=1e-3)
    # the tutorial's table is still the interleaved one, counted from 0
    pe = default.crossmodal_encoders.positions.pe.numpy()
    position = np.arange(pe.shape[0])[:, None]
    frequency = np.exp(-np.log(10000.0) * np.arange(0, 8, 2) / 8)
    np.testing.assert_allclose(pe[:, 0::2], np.sin(position * frequency), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(position * frequency), atol=1e-6)


def test_shifted_causal_rule_is_the_official_mask():
    # the official buffered_future_mask: -inf above the diagonal shifted by |n_k - n_q|
    for n_q, n_k in [(4, 4), (3, 7), (7, 3)]:
        hidden = torch.ones(n_q, n_k).triu(1 + abs(n_k - n_q)).bool()
        allowed = attention_mask(
            torch.ones(1, n_q, dtype=torch.bool),
            torch.ones(1, n_k, dtype=torch.bool),
            causal=True,
            causal_rule="shifted",
        )
        assert torch.equal(allowed[0, 0], ~hidden), (n_q, n_k)
    with pytest.raises(ValueError, match="causal_rule must be one of"):
        TransformerEncoder(8, 2, 1, causal=True, causal_rule="diagonal")


# ------------------------------------------------------------------ mult_from_official


def test_mult_from_official_places_every_tensor():
    state = random_official_state()
    model = mult_from_official(state, DIMS, HEADS, LAYERS)
    assert model.hidden_dim == HIDDEN and model.modalities == ("T", "A", "V")
    assert model.causal and not model.use_padding_mask and model.head == "regression"
    assert model.positional == "fairseq" and model.causal_rule == "shifted"
    assert len(model.crossmodal_encoders.layers) == 2 and len(model.memory_encoders.layers) == 3
    assert isinstance(model.projections["V"], nn.Identity)
    assert model.projections["T"].kernel_size == (1,) and model.projections["T"].bias is None
    assert model.crossmodal_encoders.layers[0].attention.dropout == (0.0, 0.0, 0.1, 0.0, 0.1, 0.0)
    assert (model.embed_dropout, model.out_dropout) == (0.2, 0.0)
    back = to_official(model)
    assert set(back) == set(state)
    for key, value in state.items():
        if key.endswith(("version", "_float_tensor")) or key == "proj_v.weight":
            continue  # dropped: no weights / a projection the official code skips
        assert torch.equal(back[key], value), key


def test_round_trip_from_a_project_model_keeps_its_outputs():
    torch.manual_seed(0)
    options = {"causal": True, "causal_rule": "shifted", "use_padding_mask": False}
    original = MulT(
        DIMS,
        hidden_dim=HIDDEN,
        num_heads=HEADS,
        num_layers=3,
        kernel_sizes=(1, 1, 1),
        positional="fairseq",
        **options,
    ).eval()
    loaded = mult_from_official(to_official(original), DIMS, HEADS, 3).eval()
    features = features_without_zeros({"T": 5, "A": 8, "V": 3}, DIMS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(features), original(features), rtol=0, atol=0)


def test_mult_from_official_reads_a_classification_head_and_takes_options():
    model = mult_from_official(
        random_official_state(outputs=8), DIMS, HEADS, LAYERS, embed_dropout=0.0, max_len=64
    )
    assert model.head == "classification" and model.out_layer.out_features == 8
    assert model.embed_dropout == 0.0 and model.crossmodal_encoders.max_len == 64
    with pytest.raises(TypeError, match="hidden_dim"):
        mult_from_official(random_official_state(), DIMS, HEADS, LAYERS, hidden_dim=40)


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ("drop", "trans_v_with_a.layers.1.fc2.bias", "lacks key"),
        ("drop", "trans_l_mem.version", "lacks key"),
        ("drop", "proj_v.weight", "lacks key"),  # needed although the projection is skipped
        ("add", "trans_l_mem.layers.3.fc1.weight", "unexpected key"),
        ("add", "decoder.weight", "unexpected key"),
        ("shape", "proj_a.weight", "has shape (30, 6, 1), expected (30, 5, 1)"),
        ("shape", "trans_a_mem.layers.0.self_attn.in_proj_weight", "has shape"),
    ],
)
def test_mult_from_official_refuses_a_mismatching_state_dict(change, key, words):
    state = random_official_state()
    if change == "drop":
        del state[key]
    elif change == "add":
        state[key] = torch.zeros(3)
    elif key == "proj_a.weight":
        state[key] = torch.zeros(30, 6, 1)
    else:
        state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 1)
    with pytest.raises(ValueError, match=re.escape(words)) as error:
        mult_from_official(state, DIMS, HEADS, LAYERS)
    assert repr(key) in str(error.value)


def test_mult_from_official_explains_layers_and_partial_modes():
    with pytest.raises(ValueError, match=r"unexpected key .*num_layers=1"):
        mult_from_official(random_official_state(layers=2), DIMS, HEADS, 1)
    with pytest.raises(ValueError, match=r"lacks key .*num_layers=3"):
        mult_from_official(random_official_state(layers=2), DIMS, HEADS, 3)
    lonly = {k: v for k, v in random_official_state().items() if not k.startswith("trans_a_with")}
    with pytest.raises(ValueError, match=r"trans_a_with_l.*partial modes"):
        mult_from_official(lonly, DIMS, HEADS, LAYERS)


# ------------------------------------------------------------------ the official code itself


@pytest.fixture(scope="module")
def official_mult_class() -> type:
    """``MULTModel`` from the checkout that ``MULT_REFERENCE_DIR`` names."""
    root = os.environ.get("MULT_REFERENCE_DIR")
    if not root:
        pytest.skip(REFERENCE_SKIP)
    root_path = Path(root).resolve()
    if not (root_path / "src" / "models.py").is_file():
        pytest.fail(f"MULT_REFERENCE_DIR={root} holds no src/models.py")
    sys.path.insert(0, str(root_path))
    try:
        return importlib.import_module("src.models").MULTModel
    finally:
        sys.path.remove(str(root_path))


def official_hyperparameters(dims: dict[str, int], layers: int) -> argparse.Namespace:
    """The namespace the official ``main.py`` builds (its defaults, all three targets)."""
    return argparse.Namespace(
        orig_d_l=dims["T"],
        orig_d_a=dims["A"],
        orig_d_v=dims["V"],
        vonly=True,
        aonly=True,
        lonly=True,
        num_heads=HEADS,
        layers=layers,
        attn_dropout=0.1,
        attn_dropout_a=0.0,
        attn_dropout_v=0.0,
        relu_dropout=0.1,
        res_dropout=0.1,
        embed_dropout=0.2,
        out_dropout=0.0,
        attn_mask=True,
        output_dim=1,
    )


@pytest.mark.filterwarnings("ignore:The number of elements in the out tensor")
@pytest.mark.parametrize(
    ("dims", "times", "layers"),
    [
        (DIMS, {"T": 6, "A": 9, "V": 4}, 2),
        ({"T": 20, "A": 7, "V": 9}, {"T": 8, "A": 13, "V": 5}, 5),
    ],
)
def test_official_mult_outputs_are_reproduced(official_mult_class, dims, times, layers):
    torch.manual_seed(0)
    official = official_mult_class(official_hyperparameters(dims, layers))
    with torch.no_grad():  # move biases and LayerNorms off their initial zeros and ones
        for parameter in official.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    official.eval()
    state = official.state_dict()
    model = mult_from_official(state, dims, HEADS, layers).eval()
    features = features_without_zeros(times, dims)
    masks = {m: torch.ones(3, t, dtype=torch.bool) for m, t in times.items()}
    with torch.no_grad():  # the official attention scales a view in place: no autograd
        expected, expected_last = official(features["T"], features["A"], features["V"])
        out = model(features)
        last = model.fuse(model.crossmodal(features), masks)
        tutorial = mult_from_official(state, dims, HEADS, layers, positional="tutorial").eval()
        relative = mult_from_official(state, dims, HEADS, layers, causal_rule="relative").eval()
        off_by_layout = (tutorial(features) - expected[:, 0]).abs().max()
        off_by_rule = (relative(features) - expected[:, 0]).abs().max()
    assert expected.shape == (3, 1) and out.shape == (3,)
    torch.testing.assert_close(out, expected[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(last, expected_last, rtol=0, atol=1e-5)
    # both choices matter: the tutorial's table or the relative causal rule break parity
    assert off_by_layout > 1e-3 and off_by_rule > 1e-3
