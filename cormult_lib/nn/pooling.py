"""Pooling a padded sequence ``(batch, time, d)`` to one vector per sample ``(batch, d)``.

Both read only the steps a boolean mask ``(batch, time)`` marks as real, so padding (even NaN)
never reaches a model's output.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``(batch, time, d)`` over the steps where ``mask`` ``(batch, time)`` is
    ``True``: ``(batch, d)``; zeros for a sample without valid steps. Padded values (even NaN)
    are never read."""
    total = torch.where(mask[..., None], x, 0.0).sum(dim=1)
    return total / mask.sum(dim=1, keepdim=True).clamp(min=1).to(total.dtype)


def last_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` ``(batch, time, d)`` at the last step where ``mask`` ``(batch, time)`` is ``True``:
    ``(batch, d)``; zeros for a sample without valid steps. Works for start- and end-padding."""
    steps = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, steps, -1).amax(dim=1)  # (batch,), -1 when empty
    picked = x[torch.arange(x.shape[0], device=x.device), last.clamp(min=0)]
    return torch.where((last >= 0)[:, None], picked, 0.0)
