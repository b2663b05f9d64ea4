"""A late-fusion baseline: each modality summarised on its own, fused only at the end.

Per modality ``m``: the masked mean of its valid steps (text token ids are embedded first with
``Embedding(vocab_size, hidden_dim, padding_idx=0)``), then ``Linear -> ReLU -> Dropout`` to
``hidden_dim``. The modality vectors are concatenated and an MLP
(``Linear -> ReLU -> Dropout -> Linear``) gives one score or ``num_classes`` logits. No time
step of one modality ever meets another modality: what MulT adds over this is exactly the
crossmodal attention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from cormult_lib.modalities import parse_modalities
from cormult_lib.models.mult import check_head
from cormult_lib.nn.checks import check_inputs
from cormult_lib.nn.pooling import masked_mean


class LateFusion(nn.Module):
    """Masked-mean + MLP per modality, concatenated, MLP head.

    Args:
        input_dims: modality -> feature size (``input_dims["T"]`` is ignored when
            ``vocab_size`` is given). May hold more modalities than ``modalities``.
        modalities: one or more of T, A, V (e.g. ``"TA"``); ``None``: those of ``input_dims``.
        hidden_dim: width of each modality's vector and of the head's hidden layer.
        head: ``"regression"`` (output ``(batch,)``) or ``"classification"``
            (``(batch, num_classes)`` logits).
        dropout: after each ReLU.
        num_classes: classes of the classification head.
        vocab_size: text comes as token ids ``(batch, time)`` in ``[0, vocab_size)``.

    Attributes:
        modalities: the modalities used, canonical order.
        head: ``"regression"`` or ``"classification"``.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        modalities: str | Sequence[str] | None = None,
        hidden_dim: int = 32,
        head: str = "regression",
        dropout: float = 0.1,
        num_classes: int = 7,
        vocab_size: int | None = None,
    ):
        super().__init__()
        self.modalities = parse_modalities(list(input_dims) if modalities is None else modalities)
        missing = [m for m in self.modalities if m not in input_dims]
        if missing:
            raise ValueError(
                f"input_dims lacks modalities {missing} of modalities={''.join(self.modalities)}"
            )
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        if vocab_size is not None and vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (0 = padding), got {vocab_size}")
        out_dim = check_head(head, num_classes)
        self.head = head
        self.input_dims = {m: int(input_dims[m]) for m in self.modalities}
        self.vocab_size = vocab_size if "T" in self.modalities else None
        self.id_modalities = ("T",) if self.vocab_size is not None else ()
        self.text_embedding = (
            nn.Embedding(self.vocab_size, hidden_dim, padding_idx=0)
            if self.vocab_size is not None
            else None
        )
        self.encoders = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(
                        hidden_dim if m in self.id_modalities else self.input_dims[m], hidden_dim
                    ),
                    nn.ReLU(),
                    nn.Dropout(dropout),
                )
                for m in self.modalities
            }
        )
        self.classifier = nn.Sequential(
            nn.Linear(len(self.modalities) * hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predict sentiment.

        Args:
            features: modality -> ``(batch, time, d_in)`` float32 or ``(batch, time)`` int64
                text ids; modalities beyond :attr:`modalities` are ignored.
            masks: modality -> ``(batch, time)`` bool, ``True`` on real steps.

        Returns:
            ``(batch,)`` scores (regression) or ``(batch, num_classes)`` logits.
        """
        masks = check_inputs(features, masks, self.input_dims, self.id_modalities, self.vocab_size)
        vectors = []
        for m in self.modalities:
            x = features[m]
            if m in self.id_modalities:
                x = self.text_embedding(torch.where(masks[m], x, 0))
            vectors.append(self.encoders[m](masked_mean(x, masks[m])))
        out = self.classifier(torch.cat(vectors, dim=-1))
        return out.squeeze(-1) if self.head == "regression" else out
