"""The one validation path for a batch of features and masks, run once per forward call.

Every model (MulT, CorMulT, late fusion) and the correlation evaluator call
:func:`check_inputs` before any computation, so a wrong shape, dtype or token id fails with a
message that names the modality instead of deep inside an attention kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from cormult_lib.modalities import MODALITY_NAMES


def check_inputs(
    features: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    input_dims: Mapping[str, int],
    id_modalities: Sequence[str] = (),
    vocab_size: int | None = None,
    exact: bool = False,
) -> dict[str, torch.Tensor]:
    """Validate a batch for a model over ``input_dims``' modalities; returns their masks.

    Args:
        features: modality -> ``(batch, time, input_dims[m])`` float, or ``(batch, time)``
            integer ids for the modalities in ``id_modalities``. Other modalities are ignored.
        masks: modality -> ``(batch, time)`` bool, ``True`` on real steps; missing: all real.
        input_dims: modality -> feature size, for the modalities the model needs.
        id_modalities: modalities given as token ids in ``[0, vocab_size)``.
        vocab_size: the size of the vocabulary of those ids.
        exact: refuse features for modalities outside ``input_dims`` too (the evaluator, whose
            pairs are all pairs of the modalities it is given).

    Returns:
        modality -> bool mask ``(batch, time)`` for every modality of ``input_dims``.
    """
    masks = dict(masks or {})
    if exact and set(features) != set(input_dims):
        raise ValueError(
            f"the model was built for modalities {''.join(input_dims)}, got features for "
            f"{''.join(sorted(features))}"
        )
    missing = [m for m in input_dims if m not in features]
    if missing:
        raise ValueError(
            f"features lack modalities {missing}; the model was built for "
            f"{''.join(input_dims)} and got {''.join(sorted(features))}"
        )
    sizes = {m: features[m].shape[0] for m in input_dims}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"features have different batch sizes per modality: {sizes}")
    out = {}
    for m, dim in input_dims.items():
        x = features[m]
        name = f"features[{m!r}] ({MODALITY_NAMES[m]})"
        if m in id_modalities:
            if x.ndim != 2 or x.is_floating_point():
                raise ValueError(
                    f"{name} must be integer token ids (batch, time) since vocab_size is set; "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
        elif x.ndim != 3 or x.shape[2] != dim or not x.is_floating_point():
            hint = " (token ids need vocab_size)" if x.ndim == 2 else ""
            raise ValueError(
                f"{name} must be float (batch, time, {dim}); got {x.dtype} {tuple(x.shape)}{hint}"
            )
        mask = masks.get(m)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        elif mask.dtype != torch.bool or mask.shape != x.shape[:2]:
            raise ValueError(
                f"masks[{m!r}] must be bool {tuple(x.shape[:2])} (True = real step), got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        if m in id_modalities and mask.any():
            valid = x[mask]
            low, high = int(valid.min()), int(valid.max())
            if low < 0 or high >= vocab_size:
                raise ValueError(
                    f"{name} holds ids in [{low}, {high}] on real steps, outside "
                    f"[0, {vocab_size}); vocab_size must be the size of the vocabulary"
                )
        out[m] = mask
    return out
