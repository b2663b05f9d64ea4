"""Frozen copies of the models as they were before the stacked rewrite (commit 25378d3).

``attention_v1``, ``mult_v1`` and ``evaluator_v1`` are that commit's
``cormult_lib/nn/attention.py``, ``cormult_lib/models/mult.py`` and
``cormult_lib/correlation/evaluator.py``, unchanged but for their imports. They are not part of
the library: ``tests/test_equivalence.py`` checks that the faster models compute the same
function from the same weights, and ``benchmarks/training_benchmark.py --reference`` times
them side by side. :func:`mult_state_dict` and :func:`evaluator_state_dict` map their weights
onto the stacked layout.
"""

from __future__ import annotations

import re

import torch

# v1 names inside a layer -> stacked names (own q/k/v projections, nn.MultiheadAttention,
# nn.Sequential indices of the evaluator's feed-forward).
_RENAMES = [
    (r"attention\.(q|k|v)_proj\.", r"attention.in_proj.\1."),
    (r"attention\.in_proj_(weight|bias)$", r"attention.in_proj.\1"),
    (r"feed_forward\.0\.", "feed_forward.linear1."),
    (r"feed_forward\.3\.", "feed_forward.linear2."),
]


def _stack(
    state: dict[str, torch.Tensor], stack: str, members: list[str]
) -> dict[str, torch.Tensor]:
    """``{stack}.{member}.{key}`` entries -> ``{stack}.{key}`` stacked in ``members`` order
    (q, k and v projections concatenated into ``in_proj``); other entries pass unchanged."""
    out, grouped = {}, {}
    for key, value in state.items():
        match = re.fullmatch(rf"{stack}\.(?P<member>[^.]+)\.(?P<key>.+)", key)
        if match is None:
            out[key] = value
            continue
        new_key = match["key"]
        for old, new in _RENAMES:
            new_key = re.sub(old, new, new_key)
        grouped.setdefault(f"{stack}.{new_key}", {})[match["member"]] = value
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, per_member in grouped.items():
        stacked = torch.stack([per_member[m] for m in members])
        qkv = re.fullmatch(r"(?P<head>.*\.in_proj\.)(?P<part>[qkv])\.(?P<tail>\w+)", key)
        if qkv is None:
            out[key] = stacked
        else:
            fused.setdefault(qkv["head"] + qkv["tail"], {})[qkv["part"]] = stacked
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=1)
    return out


def mult_state_dict(state: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """A ``mult_v1.MulT`` state dict (or gradients) for the stacked ``model``
    (:class:`cormult_lib.models.mult.MulT`)."""
    state = _stack(state, "crossmodal_encoders", list(model.directions))
    return _stack(state, "memory_encoders", list(model.modalities))


def evaluator_state_dict(state: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """An ``evaluator_v1.ModalityCorrelationEvaluator`` state dict for the stacked ``model``."""
    for stack in ("encoders", "cross", "projections"):
        state = _stack(state, stack, list(model.modalities))
    return state
