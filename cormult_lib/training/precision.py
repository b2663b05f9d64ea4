"""Mixed precision and the optimiser step of :func:`~cormult_lib.training.loop.fit`.

With mixed precision the forward pass runs under ``torch.autocast``: float16 on CUDA, bfloat16
on the CPU. float16 gradients can underflow, so on CUDA the loss is scaled up before the
backward pass and the gradients scaled back down before the step (``torch.amp.GradScaler``,
which also skips a step whose gradients overflowed). bfloat16 has float32's range and needs no
scaling; without mixed precision the scaler is disabled and passes everything through.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn


class MixedPrecision:
    """Autocast and gradient scaling for training on ``device``.

    Args:
        device: where the model trains.
        enabled: use mixed precision; ``None``: on for CUDA, off for the CPU.

    Attributes:
        enabled: whether mixed precision is on.
        dtype: the autocast dtype (float16 on CUDA, bfloat16 elsewhere).
        scaler: the ``GradScaler`` (enabled only for float16); its state is checkpointed.
    """

    def __init__(self, device: torch.device, enabled: bool | None = None):
        self.device_type = device.type
        self.enabled = device.type == "cuda" if enabled is None else bool(enabled)
        self.dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.enabled and self.dtype == torch.float16
        )

    def autocast(self) -> AbstractContextManager:
        """The context to run the forward pass (and the loss) in."""
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        grad_clip: float | None,
    ) -> None:
        """Backpropagate ``loss`` and update ``model``'s parameters with ``optimizer``,
        clipping the global gradient norm to ``grad_clip`` first (``None``: no clipping)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if grad_clip is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
