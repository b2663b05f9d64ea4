"""The official MulT code's checkpoint layout (yaohungt/Multimodal-Transformer, src/models.py).

Tables from each key of the official ``MULTModel`` state dict to this project's parameter (and
member of a stacked layer), and the checks that refuse a state dict that does not fit, naming the
key. :func:`cormult_lib.models.mult.mult_from_official` uses them to load official weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cormult_lib.models.mult import MulT


#: The official ``MULTModel``'s transformers -> (this project's stack, member key). The official
#: ``trans_X_with_Y`` takes queries from X and keys / values from Y: direction ``"Y->X"``
#: (l = T text, a = A audio, v = V vision). Its memory transformer ``trans_X_mem`` is the
#: member of target X.
OFFICIAL_ENCODERS: dict[str, tuple[str, str]] = {
    "trans_l_with_a": ("crossmodal_encoders", "A->T"),
    "trans_l_with_v": ("crossmodal_encoders", "V->T"),
    "trans_a_with_l": ("crossmodal_encoders", "T->A"),
    "trans_a_with_v": ("crossmodal_encoders", "V->A"),
    "trans_v_with_l": ("crossmodal_encoders", "T->V"),
    "trans_v_with_a": ("crossmodal_encoders", "A->V"),
    "trans_l_mem": ("memory_encoders", "T"),
    "trans_a_mem": ("memory_encoders", "A"),
    "trans_v_mem": ("memory_encoders", "V"),
}

#: Inside layer ``i`` of one official ``TransformerEncoder`` -> inside layer ``i`` of a stacked
#: :class:`~cormult_lib.nn.attention.TransformerEncoder`. A stacked parameter holds one member
#: per transformer on its first axis (:mod:`cormult_lib.nn.stacked`): the official tensor
#: ``(...)`` becomes ``stacked[member]`` of the stacked ``(count, ...)``. Shapes are the same
#: (``in_proj`` rows: queries ``[0, d)``, keys ``[d, 2d)``, values ``[2d, 3d)`` in both).
OFFICIAL_LAYER_PARAMETERS: dict[str, str] = {
    "self_attn.in_proj_weight": "attention.in_proj.weight",  # (3d, d)
    "self_attn.in_proj_bias": "attention.in_proj.bias",  # (3d,)
    "self_attn.out_proj.weight": "attention.out_proj.weight",  # (d, d)
    "self_attn.out_proj.bias": "attention.out_proj.bias",  # (d,)
    "layer_norms.0.weight": "norm_attention.weight",  # (d,) before attention
    "layer_norms.0.bias": "norm_attention.bias",
    "layer_norms.1.weight": "norm_feed_forward.weight",  # (d,) before the feed-forward
    "layer_norms.1.bias": "norm_feed_forward.bias",
    "fc1.weight": "fc1.weight",  # (4d, d)
    "fc1.bias": "fc1.bias",  # (4d,)
    "fc2.weight": "fc2.weight",  # (d, 4d)
    "fc2.bias": "fc2.bias",  # (d,)
}

#: Official encoder-level parameters -> stacked ones (the final LayerNorm), member as above.
OFFICIAL_ENCODER_PARAMETERS: dict[str, str] = {
    "layer_norm.weight": "norm.weight",  # (d,)
    "layer_norm.bias": "norm.bias",
}

#: Buffers of each official encoder that hold no weights (fairseq's version stamp ``[2.0]`` and
#: the positional module's dtype probe): their keys must be there, their values are dropped.
OFFICIAL_IGNORED_BUFFERS: tuple[str, ...] = ("version", "embed_positions._float_tensor")

#: The official projections -> the modality they project. ``proj_X`` is ``Conv1d(d_in, d,
#: kernel_size=1, bias=False)``, weight ``(d, d_in, 1)``, as ``projections[m]`` here; the
#: official code skips it when ``d_in == d`` but still stores it: then it must be there and is
#: dropped (``nn.Identity`` here).
OFFICIAL_PROJECTIONS: dict[str, str] = {
    "proj_l.weight": "T",
    "proj_a.weight": "A",
    "proj_v.weight": "V",
}

#: Top-level official parameters -> this project's.
OFFICIAL_TOP_PARAMETERS: dict[str, str] = {
    **{key: f"projections.{m}.weight" for key, m in OFFICIAL_PROJECTIONS.items()},
    "proj1.weight": "proj1.weight",  # (6d, 6d)
    "proj1.bias": "proj1.bias",
    "proj2.weight": "proj2.weight",
    "proj2.bias": "proj2.bias",
    "out_layer.weight": "out_layer.weight",  # (output_dim, 6d)
    "out_layer.bias": "out_layer.bias",
}

#: The official ``main.py`` defaults that :func:`mult_from_official` starts from.
OFFICIAL_OPTIONS: dict[str, object] = {
    "attn_dropout": 0.1,
    "attn_dropout_audio": 0.0,  # --attn_dropout_a
    "attn_dropout_vision": 0.0,  # --attn_dropout_v
    "relu_dropout": 0.1,
    "res_dropout": 0.1,
    "embed_dropout": 0.2,
    "out_dropout": 0.0,
    "causal": True,  # --attn_mask (store_false: on unless given)
    "causal_rule": "shifted",
    "use_padding_mask": False,
    "positional": "fairseq",
    "pooling": "last",
}

#: :class:`MulT` arguments that the official checkpoint decides (refused in ``options``).
OFFICIAL_FIXED = ("modalities", "hidden_dim", "kernel_sizes", "head", "num_classes", "vocab_size")

#: Official key -> (this project's key or ``None`` when dropped, member or ``None``, shape).
Layout = dict[str, tuple[str | None, int | None, tuple[int, ...]]]


def official_layout(model: MulT) -> Layout:
    """Every key of the official state dict that fits ``model``, where it goes and its shape."""
    own = model.state_dict()
    layout: Layout = {}
    for official, project in OFFICIAL_TOP_PARAMETERS.items():
        if project in own:
            layout[official] = (project, None, tuple(own[project].shape))
        else:  # a skipped projection (d_in == d): stored (d, d, 1), unused
            layout[official] = (None, None, (model.hidden_dim, model.hidden_dim, 1))
    for name, (stack, key) in OFFICIAL_ENCODERS.items():
        keys = model.directions if stack == "crossmodal_encoders" else model.modalities
        member = keys.index(key)
        names = dict(OFFICIAL_ENCODER_PARAMETERS)
        for i in range(len(getattr(model, stack).layers)):
            names.update(
                {f"layers.{i}.{a}": f"layers.{i}.{b}" for a, b in OFFICIAL_LAYER_PARAMETERS.items()}
            )
        for official, project in names.items():
            target = f"{stack}.{project}"
            layout[f"{name}.{official}"] = (target, member, tuple(own[target].shape[1:]))
        for buffer in OFFICIAL_IGNORED_BUFFERS:
            layout[f"{name}.{buffer}"] = (None, None, (1,))
    unmapped = set(own) - {project for project, _, _ in layout.values()}
    if unmapped:  # the tables above must cover every parameter of the model
        raise RuntimeError(f"no official key maps to {sorted(unmapped)}")
    return layout


def listed(keys: Sequence[str], limit: int = 5) -> str:
    """``'a', 'b' and 3 more`` for an error message."""
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown if len(keys) <= limit else f"{shown} and {len(keys) - limit} more"


def required(state: Mapping[str, torch.Tensor], key: str, purpose: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"official MulT state dict lacks key {key!r} ({purpose})")
    return torch.as_tensor(state[key])


def check_official(
    state_dict: Mapping[str, torch.Tensor], layout: Layout, model: MulT, num_layers: int
) -> None:
    """Refuse a state dict whose keys or shapes differ from ``layout``, naming the key."""
    layers_hint = (
        f" (num_layers={num_layers}: crossmodal transformers have layers 0..{num_layers - 1}, "
        f"memory transformers 0..{max(num_layers, 3) - 1})"
    )
    missing = [key for key in layout if key not in state_dict]
    if missing:
        hint = layers_hint if any(".layers." in key for key in missing) else ""
        absent = sorted(
            {key.split(".")[0] for key in missing if key.startswith("trans_")}
            - {key.split(".")[0] for key in state_dict}
        )
        if absent:
            hint = (
                f" (no weights at all for {absent}: the official partial modes --lonly, "
                "--aonly and --vonly are not supported)"
            )
        raise ValueError(f"official MulT state dict lacks key {listed(missing)}{hint}")
    unexpected = [key for key in state_dict if key not in layout]
    if unexpected:
        hint = layers_hint if any(".layers." in key for key in unexpected) else ""
        raise ValueError(f"official MulT state dict has unexpected key {listed(unexpected)}{hint}")
    for key, (_, _, shape) in layout.items():
        got = tuple(torch.as_tensor(state_dict[key]).shape)
        if got == shape:
            continue
        hint = f" (d = {model.hidden_dim} from 'proj_l.weight')"
        if key in OFFICIAL_PROJECTIONS:
            m = OFFICIAL_PROJECTIONS[key]
            hint = (
                f" (kernel-1 Conv1d from input_dims[{m!r}] = {model.input_dims[m]} to "
                f"d = {model.hidden_dim})"
            )
        raise ValueError(
            f"official MulT state dict key {key!r} has shape {got}, expected {shape}{hint}"
        )
