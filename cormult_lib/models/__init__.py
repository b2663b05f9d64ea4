"""Sentiment models: every one maps ``(features, masks)`` to ``(batch,)`` scores or
``(batch, num_classes)`` logits and exposes ``head`` and ``modalities``.

Modules:
    attention: the pre-LayerNorm transformer block and encoder of MulT as stacks of
        independent members (self- and crossmodal attention, padding and optional causal
        masks).
    mult: MulT (crossmodal transformers, memory transformers, pooling, head), with optional
        per-sample weights on its crossmodal outputs keyed ``"source->target"``.
    cormult: CorMulT, MulT weighted by the correlation coefficients of a pre-trained
        Modality Correlation Evaluator (``product`` or ``residual`` fusion).
    late_fusion: a late-fusion baseline (masked mean + MLP per modality, MLP head).
"""

from cormult_lib.models.cormult import CorMulT
from cormult_lib.models.late_fusion import LateFusion
from cormult_lib.models.mult import MulT

__all__ = ["CorMulT", "LateFusion", "MulT"]
