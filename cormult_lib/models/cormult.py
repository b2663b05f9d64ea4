"""CorMulT: MulT whose crossmodal outputs are weighted by modality correlations (section 3.3.2).

The pre-trained Modality Correlation Evaluator
(:class:`~cormult_lib.correlation.evaluator.ModalityCorrelationEvaluator`) gives, per sample,
the coefficients ``Cor_{T,A}``, ``Cor_{T,V}``, ``Cor_{A,V}``
(:meth:`~cormult_lib.correlation.evaluator.ModalityCorrelationEvaluator.coefficients` with a
:class:`~cormult_lib.correlation.distances.Distance`). Each coefficient weights the crossmodal
outputs of both directions of its pair before the memory transformers of :class:`MulT`
(direction keys ``"S->T"`` as in :mod:`cormult_lib.models.mult`):

* ``fusion="product"``, the paper's equations: ``h'_{S->T} = h_{S->T} * Cor_{S,T}``;
* ``fusion="residual"``, the authors' code: ``h'_{S->T} = h_{S->T} + h_{S->T} * Cor_{S,T}
  = (1 + Cor_{S,T}) * h_{S->T}``;
* ``fusion="post_norm"``, **this repository's variant, in neither the paper nor the authors'
  code**: the pooled memory output of each target is multiplied by the mean ``Cor`` of the two
  pairs that feed it, ``H'_A = Transformer(Concat(h_{T->A}, h_{V->A})) * (Cor_{T,A} +
  Cor_{A,V}) / 2``, after the memory transformer's final LayerNorm.

Why a third placement: MulT's blocks are pre-LayerNorm and its memory transformer ends in a
LayerNorm, and a LayerNorm ignores a common scale, ``LayerNorm(c h) = LayerNorm(h)`` for
``c > 0``. A per-sample factor on the memory's *input* therefore reaches the prediction only
through the residual stream's scale against the attention outputs, the ratio of the two
coefficients of one target, and the content's scale against the sinusoidal positions the
memory transformer adds (``sqrt(d) * Cor * h + PE``); chapter 07 measures how much is left.
Weighting after the final LayerNorm cannot be cancelled that way.

**From the weighted features to the prediction** (a departure from section 3.3.2, as MulT's
code): the paper concatenates the weighted memory outputs, ``H_concat = Concat(H'_T, H'_A,
H'_V)``, and applies one linear layer (and a softmax over the 7 classes). Here, as in MulT, each
memory output is pooled at its last valid step (``pooling``), the concatenation passes MulT's
residual block ``x + W_2 Dropout(ReLU(W_1 x))`` and then the output layer.

With cosine, ``Cor`` lies in [-1, 1]: a product can flip the sign of a crossmodal output and
``Cor = 0`` removes it; the residual form keeps at least ``h`` at ``Cor = 0`` and drops it only
for perfectly anti-correlated pairs.

By default the evaluator is frozen, as in the paper: its parameters get no gradient, the
coefficients are computed without autograd, and it stays in eval mode (no dropout) even when
the CorMulT module is put in training mode. ``freeze_evaluator=False`` fine-tunes a copy of it
with the sentiment loss, leaving the pre-trained evaluator that was passed in as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from contextlib import nullcontext

import torch
from torch import nn

from cormult_lib.correlation.distances import Distance, get_distance, present_pairs
from cormult_lib.correlation.evaluator import ModalityCorrelationEvaluator
from cormult_lib.modalities import MODALITIES
from cormult_lib.models.mult import MulT, direction

FUSIONS = ("product", "residual", "post_norm")


class CorMulT(nn.Module):
    """A :class:`~cormult_lib.models.mult.MulT` fused with correlation coefficients.

    Args:
        mult: the MulT that does the fusion (its head and pooling are used as they are).
        evaluator: a (pre-trained) evaluator sharing at least one pair of modalities with the
            MulT. Pairs it does not know (Table 6: a TAV MulT with an evaluator pre-trained on
            TA only) keep their crossmodal outputs unweighted (factor 1).
        distance: the distance turning the evaluator's embeddings into ``Cor``, a name from
            :data:`~cormult_lib.correlation.distances.DISTANCES` or a fitted
            :class:`~cormult_lib.correlation.distances.Distance`.
        fusion: ``"product"`` (``h * Cor``, the paper), ``"residual"`` (``(1 + Cor) * h``,
            the authors' code) or ``"post_norm"`` (this repository's variant: ``Cor`` on the
            pooled memory outputs, see the module docstring).
        freeze_evaluator: keep the evaluator fixed (no gradients, eval mode); it is then
            shared with the caller. ``False`` fine-tunes a copy with every parameter
            trainable, so that the caller's pre-trained evaluator stays as it was (several
            seeds built from one evaluator each start from the pre-trained weights).

    Attributes:
        modalities: the modalities the inputs must hold: the MulT's and the evaluator's (it
            reads all of its own, also those the MulT does not fuse), canonical order.
        fused_modalities: the MulT's modalities.
        pairs: the pairs ``(X, Y)`` whose ``Cor`` weights the fusion (the MulT's pairs that the
            evaluator knows).
        head: the MulT's head.
    """

    def __init__(
        self,
        mult: MulT,
        evaluator: ModalityCorrelationEvaluator,
        distance: str | Distance = "cosine",
        fusion: str = "product",
        freeze_evaluator: bool = True,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        shared = [p for p in present_pairs(mult.modalities) if set(p) <= set(evaluator.modalities)]
        if not shared:
            raise ValueError(
                f"the MulT fuses {''.join(mult.modalities)} and the evaluator knows "
                f"{''.join(evaluator.modalities)}: they share no pair of modalities, so there is "
                "no coefficient to weight the fusion with"
            )
        if freeze_evaluator:
            evaluator.requires_grad_(False)
            evaluator.eval()
        else:
            evaluator = copy.deepcopy(evaluator).requires_grad_(True)
        self.mult = mult
        self.evaluator = evaluator
        self.distance = get_distance(distance)
        self.fusion = fusion
        self.freeze_evaluator = freeze_evaluator
        self.modalities = tuple(
            m for m in MODALITIES if m in mult.modalities or m in evaluator.modalities
        )
        self.fused_modalities = mult.modalities
        self.pairs = shared
        self.head = mult.head

    def train(self, mode: bool = True) -> CorMulT:
        """Set training mode; a frozen evaluator stays in eval mode."""
        super().train(mode)
        if self.freeze_evaluator:
            self.evaluator.eval()
        return self

    def coefficients(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[tuple[str, str], torch.Tensor]:
        """``Cor`` per pair of :attr:`pairs`: ``("T", "A")`` -> ``(batch,)``.

        ``features`` / ``masks`` as in :meth:`forward`. Without gradient when frozen.
        """
        needed = self.evaluator.modalities
        missing = [m for m in needed if m not in features]
        if missing:
            raise ValueError(
                f"features lack modalities {missing}: the evaluator reads "
                f"{''.join(needed)}, got {''.join(sorted(features))}"
            )
        inputs = {m: features[m] for m in needed}
        input_masks = None if masks is None else {m: masks[m] for m in needed if m in masks}
        with torch.no_grad() if self.freeze_evaluator else nullcontext():
            cor = self.evaluator.coefficients(inputs, input_masks, self.distance)
        return {pair: cor[pair] for pair in self.pairs}

    def direction_weights(
        self, coefficients: Mapping[tuple[str, str], torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The factors on the crossmodal outputs: key ``"S->T"`` -> ``(batch,)``.

        ``Cor_{X,Y}`` weights both ``"X->Y"`` and ``"Y->X"``: ``Cor`` (product) or ``1 + Cor``
        (residual); none for ``post_norm``.
        """
        weights = {}
        if self.fusion == "post_norm":
            return weights
        for (a, b), cor in coefficients.items():
            factor = cor if self.fusion == "product" else 1.0 + cor
            weights[direction(a, b)] = factor
            weights[direction(b, a)] = factor
        return weights

    def target_weights(
        self, coefficients: Mapping[tuple[str, str], torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``post_norm`` only: target modality -> ``(batch,)`` mean ``Cor`` of the pairs that
        feed its memory transformer (pairs the evaluator does not know count as 1)."""
        if self.fusion != "post_norm":
            return {}
        like = next(iter(coefficients.values()))
        weights = {}
        for target in self.fused_modalities:
            factors = [
                coefficients.get((a, b), coefficients.get((b, a), torch.ones_like(like)))
                for a, b in [(s, target) for s in self.fused_modalities if s != target]
            ]
            weights[target] = torch.stack(factors).mean(0)
        return weights

    def forward_with(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None,
        coefficients: Mapping[tuple[str, str], torch.Tensor],
    ) -> torch.Tensor:
        """The prediction with the given ``coefficients`` (pair -> ``(batch,)``) in place of
        the evaluator's: how chapter 07 replaces ``Cor`` by 1, by 0 or by another sample's."""
        return self.mult(
            features,
            masks,
            weights=self.direction_weights(coefficients),
            target_weights=self.target_weights(coefficients),
        )

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
        return_coefficients: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[tuple[str, str], torch.Tensor]]:
        """Predict sentiment with correlation-weighted fusion.

        Args:
            features: modality -> ``(batch, time, d_in)`` float32 or ``(batch, time)`` int64
                text ids, for every modality of :attr:`modalities`.
            masks: modality -> ``(batch, time)`` bool, ``True`` on real steps.
            return_coefficients: also return :meth:`coefficients`' dict.

        Returns:
            As :class:`MulT`: ``(batch,)`` scores or ``(batch, num_classes)`` logits; with
            ``return_coefficients`` the pair ``(output, coefficients)``.
        """
        cor = self.coefficients(features, masks)
        output = self.forward_with(features, masks, cor)
        return (output, cor) if return_coefficients else output
