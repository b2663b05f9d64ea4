"""CLIP-MSA (Huang et al.): dual-branch unimodal representations and hierarchical co-attention.

The frozen pre-trained encoders run once per clip (:mod:`cormult_lib.features.clip_encoders`); their
outputs arrive here as a :class:`~cormult_lib.data.dataset.MultimodalSplit` with, per modality,
the specific branch and the CLIP branch concatenated on the last axis:

* ``"T"`` ``(batch, 1, d_albert + d_clip_text)``: ALBERT's [CLS] vector and CLIP's text features;
* ``"A"`` ``(batch, 1, d_wav2vec2 + d_clap)``: wav2vec 2.0 averaged over time and the audio
  tower trained jointly with text (CLAP here; ESResNeXt in the paper);
* ``"V"`` ``(batch, frames, d_vgg + d_clip_image)``: VGG-11 features of the face in each frame
  and CLIP image features of each whole frame.

What is trained (section 2.2-2.4), with ``d`` = ``dim``:

* text and audio: ``F = BatchNorm(Linear([F^specific; F^clip]))`` ``(batch, d)``;
* vision: the VGG frame features pass a Linear to ``d`` and a Transformer over frames (masked
  mean over valid frames) -> ``F_v^trans``; the CLIP frame features an LSTM (state at the last
  valid frame) -> ``F_v^clip``; ``F_v = BatchNorm(Linear([F_v^trans; F_v^clip]))``;
* fusion: :class:`~cormult_lib.models.co_attention.HierarchicalFusion` in ``order``, or, for the
  "w/o Co-Attn" ablation, ``Linear([F_t; F_a; F_v])`` (concatenation instead of co-attention);
* the sentiment predictor: a fully connected network ``d -> d -> 1``; trained with SmoothL1.

Ablations of the paper's Table 2 are constructor switches: ``use_clip`` (all modalities, or a
subset such as ``"AV"`` for "w/o CLIP-T"), ``co_attention`` and ``order``; ``use_specific``
drops specific branches the same way (``"AV"``: text from its CLIP branch alone), which the
paper does not ablate.

Fine-tuning on request: :class:`ClipMSAEndToEnd` puts the encoders in front of a
:class:`ClipMSA`, reads prepared raw clips (:func:`~cormult_lib.features.clip_msa_cache.
prepare_raw_clips`) and trains the encoders named in ``finetune`` together with the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cormult_lib.config import ENCODERS, ClipMSAConfig
from cormult_lib.features.clip_encoders import ClipMSAEncoders
from cormult_lib.modalities import MODALITIES
from cormult_lib.models.co_attention import HierarchicalFusion
from cormult_lib.nn.attention import TransformerEncoder
from cormult_lib.nn.pooling import last_valid, masked_mean

__all__ = ["FUSION_ORDERS", "ClipMSA", "ClipMSAEndToEnd", "ablation_settings"]

#: Fusion orders of Table 2: first pair, then the third modality.
FUSION_ORDERS = {"AVT": ("A", "V", "T"), "ATV": ("A", "T", "V"), "VTA": ("V", "T", "A")}


def ablation_settings() -> dict[str, dict]:
    """The rows of the paper's Table 2 as :class:`ClipMSA` keyword arguments."""
    return {
        "CLIP-MSA": {},
        "w/o CLIP": {"use_clip": ""},
        "w/o Co-Attn": {"co_attention": False},
        "w/o CLIP, Co-Attn": {"use_clip": "", "co_attention": False},
        "w/o CLIP-T": {"use_clip": "AV"},
        "w/o CLIP-A": {"use_clip": "TV"},
        "w/o CLIP-V": {"use_clip": "TA"},
        "(A,T,V)": {"order": "ATV"},
        "(V,T,A)": {"order": "VTA"},
    }


class _Projection(nn.Sequential):
    """``Linear`` + ``BatchNorm1d``: ``(batch, d_in)`` -> ``(batch, d)``."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__(nn.Linear(in_dim, dim), nn.BatchNorm1d(dim))


class ClipMSA(nn.Module):
    """CLIP-MSA on cached encoder outputs; ``forward`` returns ``(batch,)`` sentiment scores.

    Args:
        branch_dims: modality -> ``(d_specific, d_clip)``, the split of each feature vector
            (``split.info["branch_dims"]`` of the encoder cache).
        hidden_dim: ``d``, the size of every unimodal representation and of the fusion.
        num_heads: heads of the co-attention units (``d_h = d / m``) and the frame Transformer.
        use_clip: the modalities whose CLIP branch is used: ``True`` (all), ``False`` / ``""``
            (none: "w/o CLIP") or letters such as ``"AV"``.
        use_specific: the modalities whose specific branch is used, in the same form; every
            modality must keep at least one of its two branches.
        co_attention: hierarchical co-attention (``True``) or concatenation + Linear.
        order: ``"AVT"`` (paper: audio with vision, then text), ``"ATV"`` or ``"VTA"``.
        frame_layers: layers of the Transformer over the VGG frame features.
        dropout: in the co-attention units, the frame Transformer and the predictor.
    """

    head = "regression"
    modalities = MODALITIES

    def __init__(
        self,
        branch_dims: Mapping[str, Sequence[int]],
        hidden_dim: int = 32,
        num_heads: int = 4,
        use_clip: bool | str = True,
        use_specific: bool | str = True,
        co_attention: bool = True,
        order: str = "AVT",
        frame_layers: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        missing = [m for m in MODALITIES if m not in branch_dims]
        if missing:
            raise ValueError(
                f"branch_dims needs (d_specific, d_clip) for T, A and V; lacks {missing}"
            )
        self.branch_dims = {m: tuple(int(x) for x in branch_dims[m]) for m in MODALITIES}
        for m, dims in self.branch_dims.items():
            if len(dims) != 2 or min(dims) < 1:
                raise ValueError(f"branch_dims[{m!r}] must be two positive sizes, got {dims}")
        if order not in FUSION_ORDERS:
            raise ValueError(f"order must be one of {tuple(FUSION_ORDERS)}, got {order!r}")
        self.use_clip = _branch_modalities("use_clip", use_clip)
        self.use_specific = _branch_modalities("use_specific", use_specific)
        bare = [m for m in MODALITIES if m not in self.use_clip | self.use_specific]
        if bare:
            raise ValueError(
                f"modalities {bare} would have neither branch (use_clip={use_clip!r}, "
                f"use_specific={use_specific!r}): keep at least one of the two"
            )
        self.co_attention, self.order, self.hidden_dim = co_attention, order, hidden_dim

        def in_dim(m: str) -> int:
            specific, clip = self.branch_dims[m]
            return specific * (m in self.use_specific) + clip * (m in self.use_clip)

        self.text = _Projection(in_dim("T"), hidden_dim)
        self.audio = _Projection(in_dim("A"), hidden_dim)
        vgg_dim, clip_image_dim = self.branch_dims["V"]
        self.face_input, self.face_transformer = None, None
        if "V" in self.use_specific:
            self.face_input = nn.Linear(vgg_dim, hidden_dim)
            self.face_transformer = TransformerEncoder(
                hidden_dim, num_heads, frame_layers, attn_dropout=dropout, res_dropout=dropout
            )
        self.clip_lstm = (
            nn.LSTM(clip_image_dim, hidden_dim, batch_first=True) if "V" in self.use_clip else None
        )
        vision_parts = ("V" in self.use_specific) + ("V" in self.use_clip)
        self.vision = _Projection(hidden_dim * vision_parts, hidden_dim)
        if co_attention:
            self.fusion = HierarchicalFusion(
                hidden_dim, FUSION_ORDERS[order], num_heads, dropout=dropout
            )
        else:
            self.fusion = nn.Linear(3 * hidden_dim, hidden_dim)
        self.predictor = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
        )

    def _utterance(self, m: str, x: torch.Tensor) -> torch.Tensor:
        """Text or audio ``(batch, 1, d_specific + d_clip)`` -> the kept branches ``(batch, .)``."""
        specific, clip = self.branch_dims[m]
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] != specific + clip:
            raise ValueError(
                f"modality {m} must be (batch, 1, {specific + clip}) (specific + CLIP branch), "
                f"got {tuple(x.shape)}"
            )
        parts = []
        if m in self.use_specific:
            parts.append(x[:, 0, :specific])
        if m in self.use_clip:
            parts.append(x[:, 0, specific:])
        return torch.cat(parts, dim=-1)

    def unimodal(
        self, features: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``F_t, F_a, F_v``, each ``(batch, d)`` (section 2.2)."""
        vgg_dim, clip_dim = self.branch_dims["V"]
        frames, frame_mask = features["V"], masks["V"]
        if frames.ndim != 3 or frames.shape[2] != vgg_dim + clip_dim:
            raise ValueError(
                f"modality V must be (batch, frames, {vgg_dim + clip_dim}) (VGG + CLIP branch), "
                f"got {tuple(frames.shape)}"
            )
        frames = torch.where(frame_mask[..., None], frames, 0.0)
        parts = []
        if self.face_transformer is not None:
            faces = self.face_transformer(self.face_input(frames[..., :vgg_dim]), frame_mask)
            parts.append(masked_mean(faces, frame_mask))  # F_v^trans
        if self.clip_lstm is not None:
            # The LSTM reads from the first frame on: each clip's valid frames go to the front
            # (a stable sort keeps their order), so start-padded clips give the same F_v^clip.
            order = torch.argsort((~frame_mask).to(torch.int8), dim=1, stable=True)
            clip_frames = frames[..., vgg_dim:].gather(1, order[..., None].expand(-1, -1, clip_dim))
            states, _ = self.clip_lstm(clip_frames)
            parts.append(last_valid(states, frame_mask.gather(1, order)))  # F_v^clip
        return {
            "T": self.text(self._utterance("T", features["T"])),
            "A": self.audio(self._utterance("A", features["A"])),
            "V": self.vision(torch.cat(parts, dim=-1)),
        }

    def fuse(
        self, vectors: Mapping[str, torch.Tensor], return_weights: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``F_m`` ``(batch, d)`` and the co-attention maps (empty without co-attention)."""
        if self.co_attention:
            return self.fusion(dict(vectors), return_weights)
        return self.fusion(torch.cat([vectors[m] for m in MODALITIES], dim=-1)), {}

    def forward(
        self, features: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """``features``/``masks`` as in the module docstring -> sentiment ``(batch,)``."""
        fused, _ = self.fuse(self.unimodal(features, masks))
        return self.predictor(fused).squeeze(-1)

    @torch.no_grad()
    def attention_maps(
        self, features: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The co-attention maps ``(batch, heads, d, d)`` keyed like ``"A<-V"`` (eval mode)."""
        if not self.co_attention:
            raise ValueError("this model fuses by concatenation: it has no co-attention maps")
        was_training = self.training
        self.eval()
        try:
            return self.fuse(self.unimodal(features, masks), return_weights=True)[1]
        finally:
            self.train(was_training)


class ClipMSAEndToEnd(nn.Module):
    """CLIP-MSA from prepared clips through its encoders, some of them fine-tuned.

    ``forward(inputs)`` takes a list of prepared clips
    (:meth:`~cormult_lib.features.clip_encoders.ClipMSAEncoders.prepare`, batches of
    :func:`~cormult_lib.data.raw_clips.raw_clip_loader`), runs the encoders
    (:meth:`~cormult_lib.features.clip_encoders.ClipMSAEncoders.encode_inputs`: the same calls that
    fill the cache) and then ``model``; it returns sentiment ``(batch,)``. With
    ``finetune=()`` it computes exactly what ``model`` computes on the cached features.

    Args:
        encoders: a ``ClipMSAEncoders``; the encoders named in ``finetune`` are made trainable,
            every other one frozen (no gradients, always in eval mode, so its dropout never
            fires and it gives the cache's features).
        model: the :class:`ClipMSA` on top, built with ``encoders.branch_dims``.
        finetune: encoders to train, out of ``albert``, ``clip`` (its text and image towers),
            ``wav2vec2``, ``clap``, ``vgg``.
        encoder_lr: learning rate of the fine-tuned encoders (:meth:`param_groups`); ``None``
            trains them at the head's rate. Pretrained encoders want a small one (1e-5 is the
            usual start for BERT-like models); the head keeps the training config's rate.

    Fine-tuning is expensive: the encoders run forward *and* backward on every step (on this
    2-core CPU the pretrained ones take ~2.4 s per clip forward alone), checkpoints hold their
    weights, and the prepared inputs stay in memory. Use a CUDA machine and a small learning
    rate for pretrained encoders.
    """

    head = "regression"
    modalities = MODALITIES

    def __init__(
        self,
        encoders: ClipMSAEncoders,
        model: ClipMSA,
        finetune: Sequence[str] = (),
        encoder_lr: float | None = None,
    ):
        super().__init__()
        if encoder_lr is not None and not encoder_lr > 0:
            raise ValueError(f"encoder_lr must be positive or None, got {encoder_lr!r}")
        if isinstance(finetune, str):
            raise TypeError(f"finetune must be a list of encoder names, got {finetune!r}")
        unknown = sorted(set(finetune) - set(ENCODERS))
        if unknown:
            raise ValueError(f"finetune names unknown encoders {unknown}; known: {ENCODERS}")
        if dict(model.branch_dims) != dict(encoders.branch_dims):
            raise ValueError(
                f"model.branch_dims {model.branch_dims} differ from the encoders' "
                f"{encoders.branch_dims}: build ClipMSA(encoders.branch_dims, ...)"
            )
        self.encoders, self.model, self.encoder_lr = encoders, model, encoder_lr
        self.finetune = tuple(name for name in ENCODERS if name in finetune)
        self.frozen = tuple(name for name in ENCODERS if name not in finetune)
        encoders.requires_grad_(False)
        for name in self.finetune:
            for module in encoders.used_modules(name):  # not CLAP's unused text tower
                module.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> ClipMSAEndToEnd:
        """Train/eval mode as usual, except that frozen encoders always stay in eval mode."""
        super().train(mode)
        for name in self.frozen:
            self.encoders.encoder(name).eval()
        return self

    def param_groups(self, lr: float) -> list[dict]:
        """Adam's parameter groups: the CLIP-MSA head at ``lr``, the fine-tuned encoders at
        ``encoder_lr`` (``lr`` when None); frozen encoders are left out."""
        groups = [{"params": list(self.model.parameters()), "lr": lr}]
        tuned = [
            p
            for name in self.finetune
            for module in self.encoders.used_modules(name)
            for p in module.parameters()
        ]
        if tuned:
            groups.append({"params": tuned, "lr": self.encoder_lr or lr})
        return groups

    def forward(self, inputs: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """Prepared clips (on the model's device) -> sentiment ``(batch,)``."""
        features, masks = self.encoders.encode_inputs(inputs)
        return self.model(features, masks)


def _branch_modalities(name: str, value: bool | str) -> frozenset[str]:
    """``use_clip`` / ``use_specific`` as a set of modality letters."""
    if value is True:
        return frozenset(MODALITIES)
    if value is False or value == "":
        return frozenset()
    letters = set(str(value).upper())
    if not letters <= set(MODALITIES):
        raise ValueError(f"{name} must be True, False or letters out of 'TAV', got {value!r}")
    return frozenset(letters)


def build_clip_msa(
    branch_dims: Mapping[str, Sequence[int]], config: ClipMSAConfig, **settings: Any
) -> ClipMSA:
    """:class:`ClipMSA` with the sizes of ``config`` (a profile's ``clip_msa`` section);
    ``settings`` are the ablation switches (``use_clip``, ``use_specific``, ``co_attention``,
    ``order``)."""
    return ClipMSA(
        branch_dims,
        hidden_dim=config.hidden_dim,
        num_heads=config.num_heads,
        frame_layers=config.frame_layers,
        dropout=config.dropout,
        **settings,
    )
