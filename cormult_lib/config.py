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

from dataclasses import asdict, dataclass, field, fields, replace


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
    """

    hidden_dim: int = 32
    num_layers: int = 3
    num_heads: int = 4
    ff_dim: int = 64
    dropout: float = 0.1
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
                "expected data, features, correlation, model or train"
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
