"""Model selection and early stopping on the validation loss, as :func:`~.loop.fit` does them.

:class:`EarlyStopping` remembers the epoch with the lowest validation loss and a copy of its
weights (the weights :func:`~.loop.fit` returns), counts the epochs since then, and says when
``patience`` of them have passed without a better one. Its state goes into every checkpoint, so
a resumed run selects and stops exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's weights that later training does not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EarlyStopping:
    """Best-epoch tracking and patience.

    Args:
        model: the model being trained; its current weights are the best until an epoch beats
            them (a run that never improves on ``inf`` returns its initial weights).
        patience: stop after this many epochs without a lower validation loss (``None``: never).

    Attributes:
        best_state: a copy of the weights of ``best_epoch``.
        best_loss: the lowest validation loss so far.
        best_epoch: the (1-based) epoch of ``best_loss``; 0 before the first epoch.
        bad_epochs: the epochs since ``best_epoch``.
        stopped: whether training should stop (never after the last epoch).
    """

    def __init__(self, model: nn.Module, patience: int | None):
        self.patience = patience
        self.best_state = state_copy(model)
        self.best_loss = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped = False

    def update(self, valid_loss: float, epoch: int, model: nn.Module, last_epoch: int) -> None:
        """Account for ``epoch`` (of ``last_epoch``), whose validation loss is ``valid_loss``."""
        if valid_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = valid_loss, epoch, 0
            self.best_state = state_copy(model)
        else:
            self.bad_epochs += 1
        self.stopped = (
            self.patience is not None and self.bad_epochs >= self.patience and epoch < last_epoch
        )

    def state_dict(self) -> dict:
        """The state to checkpoint, under the keys a checkpoint of ``fit`` holds."""
        return {
            "best_state": self.best_state,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Undo :meth:`state_dict` (extra keys of a whole checkpoint are ignored)."""
        self.best_state, self.best_loss = state["best_state"], state["best_loss"]
        self.best_epoch, self.bad_epochs = state["best_epoch"], state["bad_epochs"]
        self.stopped = state["stopped_early"]
