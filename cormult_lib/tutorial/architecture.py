"""The papers' architecture figures, redrawn, each box labelled with the code that implements it.

``draw(CORMULT)`` is CorMulT's framework (its Fig. 2), ``draw(MCE)`` the Modality Correlation
Evaluator (its Fig. 3) and ``draw(CLIP_MSA)`` CLIP-MSA (its Fig. 1). A box is a
:class:`Box`: what it computes and ``ref``, the ``module:attribute`` that computes it; a test
imports every ``ref``, so a figure cannot name code that has moved or gone.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

#: Box colours by role.
COLOURS = {
    "input": "#e8eef7",
    "feature": "#dbe9d8",
    "correlation": "#f7e3c6",
    "model": "#e6dcf1",
    "output": "#f4d4d4",
}


@dataclass(frozen=True)
class Box:
    """One step of a figure: ``title`` at ``(x, y)`` (its centre, in a 12 x 7 canvas)."""

    key: str
    title: str
    ref: str  # "module:attribute", e.g. "cormult_lib.models.mult:MulT"
    x: float
    y: float
    role: str = "model"
    width: float = 2.3
    height: float = 0.85


@dataclass(frozen=True)
class Diagram:
    """Boxes and the arrows ``(from key, to key, label)`` between them."""

    title: str
    boxes: tuple[Box, ...]
    arrows: tuple[tuple[str, str, str], ...]


def _short(ref: str) -> str:
    module, attribute = ref.split(":")
    return f"{module.removeprefix('cormult_lib.')}.{attribute}"


def _edge(box: Box, x: float, y: float, pad: float = 0.08) -> tuple[float, float]:
    """Where the line from ``box``'s centre towards ``(x, y)`` leaves the box."""
    dx, dy = x - box.x, y - box.y
    scale = min(
        (box.width / 2 + pad) / abs(dx) if dx else float("inf"),
        (box.height / 2 + pad) / abs(dy) if dy else float("inf"),
    )
    return box.x + scale * dx, box.y + scale * dy


def draw(diagram: Diagram) -> plt.Figure:
    """The figure of ``diagram``: rounded boxes (title, then the implementing code in
    monospace) and labelled arrows."""
    fig, ax = plt.subplots(figsize=(12, 7))
    ax.set(xlim=(0, 12), ylim=(0, 7))
    ax.axis("off")
    boxes = {box.key: box for box in diagram.boxes}
    for box in diagram.boxes:
        ax.add_patch(FancyBboxPatch(
            (box.x - box.width / 2, box.y - box.height / 2), box.width, box.height,
            boxstyle="round,pad=0.04", facecolor=COLOURS[box.role], edgecolor="#555555",
        ))
        ax.text(box.x, box.y + 0.15, box.title, ha="center", va="center", fontsize=9)
        ax.text(box.x, box.y - 0.22, _short(box.ref), ha="center", va="center", fontsize=6.5,
                family="monospace", color="#333333")
    for start, end, label in diagram.arrows:
        a, b = boxes[start], boxes[end]
        tail, head = _edge(a, b.x, b.y), _edge(b, a.x, a.y)
        ax.annotate("", xy=head, xytext=tail,
                    arrowprops={"arrowstyle": "->", "color": "#444444", "lw": 1.0})
        if label:
            ax.text((tail[0] + head[0]) / 2, (tail[1] + head[1]) / 2, label, ha="center",
                    va="center", fontsize=7, color="#224488",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_title(diagram.title, fontsize=11)
    fig.tight_layout()
    return fig


CORMULT = Diagram(
    "CorMulT (its Fig. 2): correlation coefficients from a pre-trained evaluator weight MulT's "
    "crossmodal features",
    (
        Box("A", "audio: log-Mel F_A", "cormult_lib.features.audio:LogMel", 1.4, 5.8, "input"),
        Box("T", "text: token ids F_T", "cormult_lib.features.text:Vocabulary", 1.4, 3.5, "input"),
        Box("V", "vision: ResNet F_V", "cormult_lib.features.vision:FrameEncoder", 1.4, 1.2,
            "input"),
        Box("mce", "correlation evaluator (MCE)",
            "cormult_lib.correlation.evaluator:ModalityCorrelationEvaluator", 4.6, 6.2,
            "correlation", width=3.2),
        Box("cor", "coefficients Cor per pair",
            "cormult_lib.correlation.distances:Distance", 8.0, 6.2, "correlation"),
        Box("proj", "temporal conv projections", "cormult_lib.models.mult:MulT", 4.6, 3.5),
        Box("cross", "6 crossmodal transformers",
            "cormult_lib.nn.attention:TransformerEncoder", 4.6, 1.8, width=2.6),
        Box("weight", "weight by Cor (product)", "cormult_lib.models.cormult:CorMulT", 8.0,
            3.5),
        Box("memory", "3 memory transformers", "cormult_lib.nn.attention:TransformerEncoder",
            8.0, 1.8),
        Box("head", "pool, concatenate, head", "cormult_lib.models.mult:MulT", 10.6, 1.8,
            width=2.0),
        Box("out", "sentiment score / 7 classes", "cormult_lib.models.mult:HEADS",
            10.6, 0.6, "output", width=2.4, height=0.7),
    ),
    (
        ("A", "mce", ""), ("T", "mce", ""), ("V", "mce", ""), ("mce", "cor", "distance"),
        ("A", "proj", ""), ("T", "proj", ""), ("V", "proj", ""), ("proj", "cross", ""),
        ("cross", "weight", "Y_{S->T}"), ("cor", "weight", "Cor"), ("weight", "memory", ""),
        ("memory", "head", ""), ("head", "out", ""),
    ),
)

MCE = Diagram(
    "Modality Correlation Evaluator (CorMulT Fig. 3), pre-trained with negatives and a "
    "triplet loss",
    (
        Box("x", "features of T, A, V", "cormult_lib.data.dataset:MultimodalSplit", 1.4, 5.5,
            "input"),
        Box("neg", "negatives (strategies A-D)", "cormult_lib.correlation.negatives:make_negatives",
            1.4, 2.0, "input", width=2.6),
        Box("trans", "transformation per modality",
            "cormult_lib.correlation.evaluator:ModalityTransformation", 4.4, 5.5, width=2.8),
        Box("enc", "encoder layers (Eq. 4-7)", "cormult_lib.correlation.evaluator:EncoderLayer",
            4.4, 3.8, width=2.8),
        Box("crossatt", "crossmodal attention",
            "cormult_lib.correlation.evaluator:CrossModalAttention", 4.4, 2.1, width=2.8),
        Box("pool", "pool to t steps", "cormult_lib.correlation.evaluator:masked_time_pool",
            7.6, 2.1, "correlation"),
        Box("space", "shared space (t, o)", "cormult_lib.nn.stacked:StackedLinear", 7.6, 3.8,
            "correlation"),
        Box("dist", "distance -> Cor", "cormult_lib.correlation.distances:Distance", 7.6, 5.5,
            "correlation"),
        Box("loss", "triplet loss (Eq. 8)",
            "cormult_lib.correlation.losses:correlation_triplet_loss", 10.5, 3.8, "output",
            width=2.4),
        Box("fit", "pre-training loop", "cormult_lib.training.pretrain:pretrain_evaluator",
            10.5, 2.1, "output", width=2.4),
    ),
    (
        ("x", "trans", ""), ("neg", "trans", "real / negative"), ("trans", "enc", ""),
        ("enc", "crossatt", ""), ("crossatt", "pool", ""), ("pool", "space", ""),
        ("space", "dist", ""), ("dist", "loss", "real vs negative"), ("loss", "fit", ""),
    ),
)

CLIP_MSA = Diagram(
    "CLIP-MSA (its Fig. 1): a specific and a CLIP-family encoder per modality, hierarchical "
    "co-attention fusion",
    (
        Box("t_spec", "ALBERT [CLS]", "cormult_lib.features.clip_encoders:ClipMSAEncoders", 1.5,
            6.2, "feature"),
        Box("t_clip", "CLIP text", "cormult_lib.features.clip_encoders:ClipMSAEncoders", 1.5,
            5.1, "feature"),
        Box("a_spec", "wav2vec 2.0", "cormult_lib.features.clip_encoders:ClipMSAEncoders", 1.5,
            3.9, "feature"),
        Box("a_clip", "CLAP audio (for ESResNeXt)",
            "cormult_lib.features.clip_encoders:ClipMSAEncoders", 1.5, 2.8, "feature",
            width=2.6),
        Box("v_spec", "VGG-11 on face crops", "cormult_lib.features.sources:VGGFeatures", 1.5,
            1.6, "feature"),
        Box("v_clip", "CLIP image per frame",
            "cormult_lib.features.clip_encoders:ClipMSAEncoders", 1.5, 0.5, "feature"),
        Box("cache", "per-clip feature cache",
            "cormult_lib.features.clip_msa_cache:load_clip_msa_cache", 4.4, 3.4, "input",
            width=2.7),
        Box("uni", "unimodal projections, frame Transformer + LSTM",
            "cormult_lib.models.clip_msa:ClipMSA", 7.8, 3.4, width=3.4),
        Box("fuse", "hierarchical co-attention (A with V, then T)",
            "cormult_lib.models.co_attention:HierarchicalFusion", 7.8, 1.6, width=3.4),
        Box("out", "predictor -> sentiment score", "cormult_lib.models.clip_msa:ClipMSA", 10.8,
            1.6, "output", width=2.1),
    ),
    (
        ("t_spec", "cache", ""), ("t_clip", "cache", ""), ("a_spec", "cache", ""),
        ("a_clip", "cache", ""), ("v_spec", "cache", ""), ("v_clip", "cache", ""),
        ("cache", "uni", "F_t, F_a, F_v"), ("uni", "fuse", ""), ("fuse", "out", "F_m"),
    ),
)

DIAGRAMS = {"cormult": CORMULT, "mce": MCE, "clip_msa": CLIP_MSA}

