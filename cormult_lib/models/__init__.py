"""Sentiment models: every one maps ``(features, masks)`` to ``(batch,)`` scores or
``(batch, num_classes)`` logits and exposes ``head`` and ``modalities``.

Modules:
    mult: MulT (crossmodal transformers, memory transformers, pooling, head), with optional
        per-sample weights on its crossmodal outputs keyed ``"source->target"``.
    cormult: CorMulT, MulT weighted by the correlation coefficients of a pre-trained
        Modality Correlation Evaluator (``product`` or ``residual`` fusion).
    late_fusion: a late-fusion baseline (masked mean + MLP per modality, MLP head).
    official_mult: the official MulT code's checkpoint layout, for ``mult_from_official``.
    co_attention, clip_msa: CLIP-MSA's co-attention units and its model (cached features, or
        end to end with fine-tuned encoders).
    sentence: a fine-tuned sentence encoder with a regression head (chapter 09).

MulT's transformer blocks live in :mod:`cormult_lib.nn.attention`.
"""

from cormult_lib.models.cormult import CorMulT
from cormult_lib.models.late_fusion import LateFusion
from cormult_lib.models.mult import MulT

__all__ = ["CorMulT", "LateFusion", "MulT"]
