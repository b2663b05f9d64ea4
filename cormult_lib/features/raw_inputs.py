"""Model inputs straight from rendered synthetic clips, with or without feature extraction.

The CorMulT paper's Table 5 asks what the modality-specific feature extraction buys the
correlation evaluator: raw inputs against log-Mel audio and ResNet vision. :func:`raw_input_splits`
builds the same clips in each form:

* audio ``"waveform"``: the waveform cut into 25 ms frames every 10 ms, ``(frames, 400)``;
  ``"log_mel"``: Eq. 1-3 on the same frames, ``(frames, n_mels)``;
* vision ``"pixels"``: every sampled frame shrunk to ``pixel_size`` and flattened,
  ``(f, pixel_size**2 * 3)``; ``"resnet"``: ResNet features of the face crops, ``(f, i)``;
* text: word ids of the transcript (``str.split`` words, vocabulary built on the training clips).

Both forms share the time axis of their modality, so only the representation differs.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import torch

from cormult_lib.config import FeatureConfig
from cormult_lib.data.dataset import MultimodalSplit, pad_sequences
from cormult_lib.data.synthetic import SPLITS, SyntheticCorpus
from cormult_lib.data.synthetic_raw import render_raw
from cormult_lib.features.audio import LogMel
from cormult_lib.features.text import Vocabulary
from cormult_lib.features.vision import (
    FaceCropper,
    FrameEncoder,
    extract_frame_features,
    frames_to_tensor,
    uniform_frame_indices,
)
from cormult_lib.progress import tqdm

AUDIO_FORMS = ("waveform", "log_mel")
VISION_FORMS = ("pixels", "resnet")


def raw_input_splits(
    corpus: SyntheticCorpus,
    indices: list[int],
    audio: str = "log_mel",
    vision: str = "resnet",
    config: FeatureConfig | None = None,
    pixel_size: int = 24,
    progress: bool = True,
) -> dict[str, MultimodalSplit]:
    """Render clips ``indices`` of ``corpus`` and turn them into train/valid/test splits.

    Args:
        audio: ``"waveform"`` or ``"log_mel"``; vision: ``"pixels"`` or ``"resnet"``.
        config: frame count, image size, backbone and weights (``weights="auto"``: ImageNet
            when on disk, otherwise random with a warning) and the log-Mel settings.

    Returns:
        ``{split: MultimodalSplit}`` for the splits that ``indices`` reach; a split without
        any of the clips is left out (warned). ``meta["faces_detected"]`` is each clip's share
        of frames with a detected face for ``"resnet"`` (a frame without one is cropped with
        another frame's box, :meth:`FaceCropper.square_boxes`); NaN for ``"pixels"``, which
        looks for no face.
    """
    if audio not in AUDIO_FORMS or vision not in VISION_FORMS:
        raise ValueError(
            f"audio must be one of {AUDIO_FORMS} and vision one of {VISION_FORMS}, "
            f"got audio={audio!r}, vision={vision!r}"
        )
    config = config or FeatureConfig()
    log_mel = LogMel(config.sample_rate, config.n_fft, config.hop_length, n_mels=config.n_mels)
    encoder = cropper = None
    if vision == "resnet":
        with warnings.catch_warnings(), torch.random.fork_rng():
            warnings.simplefilter("ignore")
            torch.manual_seed(config.seed)
            encoder = FrameEncoder(config.weights, config.feature_dim, config.backbone).eval()
        cropper = FaceCropper()
    meta = corpus.metadata()
    samples = {"T": [], "A": [], "V": []}
    faces_detected = []
    for index in tqdm(indices, desc=f"clips ({audio}, {vision})", disable=not progress):
        raw = render_raw(corpus, int(index))
        samples["T"].append(raw.transcript)
        wave = torch.from_numpy(raw.waveform)
        if audio == "log_mel":
            samples["A"].append(log_mel(wave)[0].numpy())
        else:
            padded = torch.nn.functional.pad(wave, (config.n_fft // 2, config.n_fft // 2))
            frames = padded.unfold(0, config.n_fft, config.hop_length)
            samples["A"].append(frames.numpy().astype(np.float32))
        picks = raw.frames[uniform_frame_indices(len(raw.frames), config.num_frames)]
        if vision == "resnet":
            crops, detected = cropper.crop(picks, size=config.image_size)
            faces_detected.append(float(detected.mean()))
            pixels = frames_to_tensor(crops, size=config.image_size)[None]
            feats = extract_frame_features(encoder, pixels, device="cpu", progress=False)
            samples["V"].append(feats[0].numpy())
        else:
            small = [
                cv2.resize(f, (pixel_size, pixel_size), interpolation=cv2.INTER_AREA) for f in picks
            ]
            samples["V"].append((np.stack(small).reshape(len(small), -1) / 255).astype(np.float32))
            faces_detected.append(np.nan)
    rows = meta.loc[list(indices)].reset_index(drop=True)
    rows["faces_detected"] = faces_detected
    train_text = [t for t, s in zip(samples["T"], rows["split"], strict=True) if s == "train"]
    vocabulary = Vocabulary.build(train_text, tokenize=str.split)
    ids = vocabulary.encode(samples["T"], corpus.config.seq_len, tokenize=str.split)[0].numpy()
    splits = {}
    for name in SPLITS:
        keep = np.flatnonzero(rows["split"].to_numpy() == name)
        if keep.size == 0:
            warnings.warn(
                f"raw_input_splits: none of the {len(rows)} clips (indices) is in split "
                f"{name!r}; the split is left out",
                UserWarning,
                stacklevel=2,
            )
            continue
        text_mask = ids[keep] != 0
        audio_x, audio_mask = pad_sequences([samples["A"][i] for i in keep])
        vision_x, vision_mask = pad_sequences([samples["V"][i] for i in keep])
        splits[name] = MultimodalSplit(
            features={"T": ids[keep], "A": audio_x, "V": vision_x},
            masks={"T": text_mask, "A": audio_mask, "V": vision_mask},
            labels=rows["sentiment"].to_numpy(np.float32)[keep],
            ids=rows["id"].iloc[keep].tolist(),
            meta=rows.iloc[keep].reset_index(drop=True),
            name=f"raw-inputs[{name}, {audio}, {vision}]",
            info={"vocab_size": len(vocabulary)},
        )
    return splits
