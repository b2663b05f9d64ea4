"""Frame features for the vision modality (CorMulT section 3.2.1, "image").

The paper decodes each video into frames with OpenCV, encodes every frame with an ImageNet
ResNet50 and pools the per-frame vectors to a feature dimension ``i``, giving
``F_V`` of shape ``(batch, f, i)``. CLIP-MSA first crops the speaker's face. The steps here:

.. code-block:: python

    frames, fps = read_frames("clip.mp4", num_frames=16)    # (16, H, W, 3) uint8 RGB
    crops, detected = FaceCropper().crop(frames)              # (16, 224, 224, 3), (16,) bool
    x = frames_to_tensor(crops)                               # (16, 3, 224, 224) float32
    encoder = FrameEncoder(weights="imagenet")                # ResNet50, 2048-d per frame
    f_v = extract_frame_features(encoder, x[None])            # (1, 16, 2048)

No ResNet weights ship with any package: ``weights="imagenet"`` reads torchvision's checkpoint
from the torch hub cache (or downloads it with ``download=True``), a path loads a local state
dict, and ``weights=None`` gives a randomly initialised network (with a warning).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from cormult_lib.device import resolve_device
from cormult_lib.progress import tqdm

#: ImageNet channel statistics that torchvision's ResNet weights were trained with (RGB order).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Backbones: constructor, ImageNet weights enum and the width of the pooled feature.
#: ``resnet50`` is the paper's; ``resnet18`` (512-d, about 4x cheaper) serves CPU tests and the
#: quick profile.
BACKBONES = {
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2, 2048),
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, 512),
}


class VideoReadError(ValueError):
    """A video file is missing, cannot be opened or holds no decodable frame."""


# ----------------------------------------------------------------------------- decoding


def uniform_frame_indices(n_frames: int, num_frames: int) -> np.ndarray:
    """``num_frames`` indices spread evenly over ``[0, n_frames - 1]``, both ends included.

    ``np.linspace(0, n_frames - 1, num_frames).round()``; when ``num_frames > n_frames`` some
    indices repeat, so short clips yield the nearest frames twice. Shape ``(num_frames,)``.
    """
    if n_frames < 1 or num_frames < 1:
        raise ValueError(f"n_frames and num_frames must be >= 1, got {n_frames}, {num_frames}")
    return np.linspace(0, n_frames - 1, num_frames).round().astype(np.int64)


def read_frames(path: str | Path, num_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video with OpenCV into ``(frames, fps)``.

    Args:
        path: any container/codec OpenCV's FFmpeg backend reads (mp4 with H.264 or mp4v, avi,
            webm, ...).
        num_frames: ``None`` keeps every frame; otherwise ``num_frames`` frames sampled
            uniformly over the clip (:func:`uniform_frame_indices`). A clip with fewer decodable
            frames than asked gives repeated (nearest) frames rather than an error.

    Returns:
        ``frames`` ``(f, H, W, 3)`` uint8 RGB and ``fps`` as the container states it (0.0 when
        it states none).

    The file is read sequentially (seeking is frame-inexact with some codecs). The container's
    frame count is only a hint: it picks the indices for a single pass, and when the number of
    frames actually decoded differs, a second pass samples from the true count.

    Raises:
        VideoReadError: missing file, a file OpenCV cannot open (not a video, an audio-only
            file, random bytes), no decodable frame, or ``num_frames < 1``.
    """
    path = Path(path)
    if num_frames is not None and num_frames < 1:
        raise VideoReadError(
            f"{path}: num_frames must be >= 1 (or None for every frame), got {num_frames}"
        )
    if not path.is_file():
        raise VideoReadError(f"{path}: no such video file")
    capture = _open_video(path)
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if num_frames is None:
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        capture.release()
        if not frames:
            raise VideoReadError(f"{path}: no decodable video frame (corrupt or not a video)")
        return np.stack(frames), fps

    claimed = capture.get(cv2.CAP_PROP_FRAME_COUNT)  # 0, negative or NaN when unknown
    hinted = int(claimed) if np.isfinite(claimed) else 0
    if hinted > 0:
        frames, decoded = _read_indices(capture, uniform_frame_indices(hinted, num_frames), path)
        if decoded == hinted:
            return frames, fps
    else:
        capture.release()
        decoded = _count_frames(path)
    if decoded == 0:
        raise VideoReadError(f"{path}: no decodable video frame (corrupt or not a video)")
    frames, _ = _read_indices(_open_video(path), uniform_frame_indices(decoded, num_frames), path)
    return frames, fps


def _open_video(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoReadError(
            f"{path}: OpenCV cannot open it as a video (not a video file, audio only, or corrupt)"
        )
    return capture


def _count_frames(path: Path) -> int:
    """Frames actually decodable in ``path`` (``grab`` decodes without colour conversion)."""
    capture = _open_video(path)
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def _read_indices(
    capture: cv2.VideoCapture, indices: np.ndarray, path: Path
) -> tuple[np.ndarray, int]:
    """Read through ``capture`` keeping frames at ``indices`` (may repeat); release it.

    Returns ``(frames (len(indices), H, W, 3) uint8 RGB, frames decoded in total)``. Frames at
    indices past the true end stay zero: callers compare the total with what they assumed.
    """
    wanted = set(indices.tolist())
    kept: dict[int, np.ndarray] = {}
    count = 0
    while capture.grab():
        if count in wanted:
            ok, frame = capture.retrieve()
            if not ok:
                raise VideoReadError(f"{path}: frame {count} was found but could not be decoded")
            kept[count] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        count += 1
    capture.release()
    if not kept:
        return np.zeros((len(indices), 0, 0, 3), dtype=np.uint8), count
    shape = next(iter(kept.values())).shape
    frames = np.zeros((len(indices), *shape), dtype=np.uint8)
    for slot, index in enumerate(indices.tolist()):
        if index in kept:
            frames[slot] = kept[index]
    return frames, count


# ----------------------------------------------------------------------------- faces


def check_frames(frames: np.ndarray, name: str = "frames") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``frames`` is a non-empty ``(f, H, W, 3)``
    uint8 RGB array."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", type(frames).__name__)
        raise ValueError(f"{name} must be a (f, H, W, 3) RGB array, got {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0..255), got {frames.dtype}")
    if len(frames) == 0:
        raise ValueError(f"{name} is empty: need at least one frame")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, C)`` -> ``(size, size, C)``: ``INTER_AREA`` when shrinking (no aliasing),
    ``INTER_LINEAR`` when enlarging (``INTER_AREA`` would repeat pixels there)."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    shrinking = size < min(height, width)
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _default_cascade() -> Path | None:
    data = getattr(cv2, "data", None)
    if data is None:
        return None
    return Path(data.haarcascades) / "haarcascade_frontalface_default.xml"


class FaceCropper:
    """Square face crops with OpenCV's frontal-face Haar cascade (as CLIP-MSA crops faces).

    Args:
        cascade_path: the cascade XML; default ``haarcascade_frontalface_default.xml`` from
            ``cv2.data.haarcascades`` (shipped by opencv-python-headless 4.x).
        scale_factor, min_neighbors: ``detectMultiScale`` parameters.
        min_face_fraction: smallest face searched, as a fraction of the shorter image side
            (larger is faster).
        detect_size: frames whose shorter side is longer are searched at this shorter side
            (boxes are scaled back), which keeps detection at tens of milliseconds per frame
            for HD video; None searches at full resolution.
    """

    def __init__(
        self,
        cascade_path: str | Path | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face_fraction: float = 0.1,
        detect_size: int | None = 240,
    ) -> None:
        path = Path(cascade_path) if cascade_path is not None else _default_cascade()
        if path is None or not path.is_file() or not hasattr(cv2, "CascadeClassifier"):
            raise FileNotFoundError(
                f"Haar cascade not available (looked for {path}; cv2 {cv2.__version__}). "
                "opencv-python-headless 4.x ships haarcascade_frontalface_default.xml under "
                "cv2.data.haarcascades together with cv2.CascadeClassifier; OpenCV 5 wheels ship "
                "neither. Install opencv-python-headless==4.14.0.94 or pass cascade_path=."
            )
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise ValueError(f"cascade_path={path} is not a valid OpenCV cascade XML file")
        self.cascade_path = path
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction
        self.detect_size = detect_size

    def detect(self, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        """The largest face in one ``(H, W, 3)`` uint8 RGB frame as ``(x, y, w, h)``, or None."""
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        scale = 1.0
        if self.detect_size is not None and min(gray.shape) > self.detect_size:
            scale = self.detect_size / min(gray.shape)
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        smallest = max(1, int(self.min_face_fraction * min(gray.shape)))
        faces = self.classifier.detectMultiScale(
            gray, self.scale_factor, self.min_neighbors, minSize=(smallest, smallest)
        )
        if len(faces) == 0:
            return None
        box = max(faces.tolist(), key=lambda b: b[2] * b[3])
        x, y, w, h = (round(value / scale) for value in box)
        return x, y, w, h

    def square_boxes(
        self, frames: np.ndarray, margin: float = 0.2
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crop boxes for ``frames`` ``(f, H, W, 3)`` uint8 RGB.

        Each detected face box grows by ``margin`` times its size on every side, becomes a
        square around the face centre (at most the shorter image side) and is shifted to lie
        inside the image. A frame without a detection takes the box of the last earlier frame
        with one, else of the next later one, else (no face anywhere) the centred square.

        Returns:
            ``boxes`` ``(f, 4)`` int64 as ``(x, y, side, side)`` and ``detected`` ``(f,)`` bool.
        """
        check_frames(frames)
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        height, width = frames.shape[1:3]
        found = [self.detect(frame) for frame in frames]
        detected = np.array([box is not None for box in found])
        boxes = np.zeros((len(frames), 4), dtype=np.int64)
        hits = np.flatnonzero(detected)
        for i, box in enumerate(found):
            if box is None:
                if len(hits) == 0:
                    side = min(height, width)
                    boxes[i] = ((width - side) // 2, (height - side) // 2, side, side)
                    continue
                earlier = hits[hits < i]
                box = found[earlier[-1] if len(earlier) else hits[0]]
            boxes[i] = _square_box(box, margin, height, width)
        return boxes, detected

    def crop(
        self, frames: np.ndarray, size: int = 224, margin: float = 0.2
    ) -> tuple[np.ndarray, np.ndarray]:
        """Face crops ``(f, size, size, 3)`` uint8 RGB and ``detected`` ``(f,)`` bool.

        Boxes come from :meth:`square_boxes`; ``detected`` tells which frames had a face of
        their own (``detected.mean()`` is the detection rate to report).
        """
        boxes, detected = self.square_boxes(frames, margin)
        crops = np.stack(
            [
                resize_image(frame[y : y + side, x : x + side], size)
                for frame, (x, y, side, _) in zip(frames, boxes, strict=True)
            ]
        )
        return crops, detected


def _square_box(
    box: tuple[int, int, int, int], margin: float, height: int, width: int
) -> tuple[int, int, int, int]:
    x, y, w, h = box
    side = min(round(max(w, h) * (1 + 2 * margin)), height, width)
    left = int(np.clip(round(x + w / 2 - side / 2), 0, width - side))
    top = int(np.clip(round(y + h / 2 - side / 2), 0, height - side))
    return left, top, side, side


# ----------------------------------------------------------------------------- tensors


def frames_to_tensor(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """``(f, H, W, 3)`` uint8 RGB -> ``(f, 3, size, size)`` float32, ImageNet-normalised.

    Each frame is resized to ``size`` x ``size`` (:func:`resize_image`; the aspect ratio is not
    kept, so pass square crops such as :meth:`FaceCropper.crop` gives), scaled to [0, 1] and
    normalised per channel with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`, as torchvision's
    ResNet weights expect.
    """
    check_frames(frames)
    resized = np.stack([resize_image(frame, size) for frame in frames])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


# ----------------------------------------------------------------------------- encoder


def pool_channels(features: torch.Tensor, out_dim: int) -> torch.Tensor:
    """Average-pool the last axis of ``(..., d)`` to ``(..., out_dim)`` (the paper's pooling).

    ``F.adaptive_avg_pool1d`` over channels: when ``d`` is a multiple of ``out_dim`` each output
    is the mean of ``d // out_dim`` consecutive channels.
    """
    if features.shape[-1] == out_dim:
        return features
    lead = features.shape[:-1]
    flat = features.reshape(-1, 1, features.shape[-1])
    return F.adaptive_avg_pool1d(flat, out_dim).reshape(*lead, out_dim)


def imagenet_checkpoint_path(backbone: str = "resnet50") -> Path:
    """Where torchvision looks for the ImageNet checkpoint of ``backbone``:
    ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``), e.g.
    ``resnet50-11ad3fa6.pth``."""
    weights = _backbone(backbone)[1]
    filename = Path(urlparse(weights.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _backbone(name: str) -> tuple:
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {name!r}")
    return BACKBONES[name]


def resolved_weights(weights: str | Path | None, backbone: str = "resnet50") -> str | Path | None:
    """What :class:`FrameEncoder` loads for ``weights``: ``"auto"`` becomes ``"imagenet"``
    when the ImageNet checkpoint of ``backbone`` is in the torch hub cache, else ``None``
    (random weights); any other value is returned as it is."""
    if weights == "auto":
        return "imagenet" if imagenet_checkpoint_path(backbone).is_file() else None
    return weights


def _build_backbone(name: str, weights: str | Path | None, download: bool) -> nn.Module:
    build, enum, _ = _backbone(name)
    checkpoint = imagenet_checkpoint_path(name)
    how = (
        f"put {checkpoint.name} (from {enum.url}) into $TORCH_HOME/hub/checkpoints/ "
        f"(here: {checkpoint.parent}) and pass weights='imagenet', or pass weights= a local "
        f"state-dict path"
    )
    weights = resolved_weights(weights, name)
    if weights is None:
        warnings.warn(
            f"FrameEncoder(weights=None): the {name} backbone is randomly initialised, so its "
            f"frame features are random (fine for shape checks, meaningless for sentiment). "
            f"For ImageNet features {how}.",
            UserWarning,
            stacklevel=3,
        )
        return build(weights=None)
    if weights == "imagenet":
        if not checkpoint.is_file() and not download:
            raise FileNotFoundError(
                f"weights='imagenet' needs torchvision's {enum} checkpoint {checkpoint.name}, "
                f"which is not in the torch hub cache ({checkpoint}). To provide it, {how}; "
                "or pass download=True on a machine with internet access."
            )
        try:
            return build(weights=enum)
        except (OSError, RuntimeError) as err:
            raise RuntimeError(
                f"Could not download {enum} from {enum.url} ({err}). Without internet, {how}."
            ) from err
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={str(weights)!r}: expected 'imagenet', None or the path of a {name} "
            "state dict, but no such file exists"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (dict of tensors), got {type(state)}")
    model = build(weights=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a torchvision {name} state dict: {err}") from err
    return model


class FrameEncoder(nn.Module):
    """ResNet frame encoder: ``(batch, f, 3, H, W)`` -> ``F_V`` ``(batch, f, out_dim)``.

    The torchvision ResNet up to its global average pooling gives one ``feature_dim``-vector per
    frame (2048 for resnet50, 512 for resnet18); :func:`pool_channels` then reduces it to
    ``out_dim`` (the paper's feature dimension ``i``).

    Args:
        weights: ``"imagenet"`` (torchvision's ``IMAGENET1K_V2`` for resnet50 /
            ``IMAGENET1K_V1`` for resnet18, read from the torch hub cache), ``"auto"``
            (ImageNet when that checkpoint is in the cache, otherwise random init with the
            warning below), a path to a local state dict of the same torchvision architecture,
            or None (random init, warns and says how to get the real weights).
        out_dim: feature dimension ``i``, at most ``feature_dim``; None keeps ``feature_dim``.
        backbone: ``"resnet50"`` (the paper's) or ``"resnet18"`` (cheaper; CPU tests and the
            quick profile).
        download: with ``weights="imagenet"``, fetch a checkpoint missing from the cache.
            Off by default so that an offline machine fails at once instead of retrying.
    """

    def __init__(
        self,
        weights: str | Path | None = "imagenet",
        out_dim: int | None = None,
        backbone: str = "resnet50",
        download: bool = False,
    ) -> None:
        super().__init__()
        feature_dim = _backbone(backbone)[2]
        out_dim = feature_dim if out_dim is None else out_dim
        if not 1 <= out_dim <= feature_dim:
            raise ValueError(f"out_dim must be in 1..{feature_dim} for {backbone}, got {out_dim}")
        net = _build_backbone(backbone, weights, download)
        net.fc = nn.Identity()
        self.backbone = net
        self.backbone_name = backbone
        self.feature_dim = feature_dim
        self.out_dim = out_dim

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` normalised frames -> ``(n, out_dim)``."""
        return pool_channels(self.backbone(frames), self.out_dim)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``(batch, f, 3, H, W)`` -> ``(batch, f, out_dim)``."""
        _check_clips(clips)
        batch, num_frames = clips.shape[:2]
        return self.encode_frames(clips.flatten(0, 1)).view(batch, num_frames, self.out_dim)


def _check_clips(clips: torch.Tensor) -> None:
    if clips.ndim != 5 or clips.shape[2] != 3:
        raise ValueError(f"clips must be (batch, f, 3, H, W), got {tuple(clips.shape)}")


def extract_frame_features(
    encoder: FrameEncoder,
    clips: torch.Tensor | Sequence[torch.Tensor],
    batch_size: int = 32,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> torch.Tensor:
    """Run ``encoder`` over clips for inference: ``F_V`` ``(batch, f, out_dim)`` float32, CPU.

    Args:
        clips: ``(batch, f, 3, H, W)`` from :func:`frames_to_tensor`, or a list of
            ``(f, 3, H, W)`` clips with the same ``f`` (read them with ``num_frames=f``).
        batch_size: frames per forward pass (clips are flattened to frames first).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.

    The encoder is switched to eval mode and moved to ``device`` in ``channels_last`` layout
    (in place). Runs under ``torch.no_grad()``; on CUDA, chunks go through pinned memory and
    ``torch.autocast`` float16.
    """
    if not isinstance(clips, torch.Tensor):
        shapes = {tuple(clip.shape) for clip in clips}
        if len(shapes) != 1:
            raise ValueError(
                f"clips in a list must share one shape (f, 3, H, W), got {sorted(shapes)}; "
                "read every video with the same num_frames"
            )
        clips = torch.stack(list(clips))
    _check_clips(clips)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device, verbose=False)
    on_cuda = device.type == "cuda"
    encoder.eval().to(device, memory_format=torch.channels_last)
    batch, num_frames = clips.shape[:2]
    frames = clips.flatten(0, 1)
    out = torch.empty(len(frames), encoder.out_dim)
    autocast = torch.autocast("cuda", dtype=torch.float16) if on_cuda else contextlib.nullcontext()
    starts = range(0, len(frames), batch_size)
    with torch.no_grad(), autocast:
        for start in tqdm(starts, desc="frame features", disable=not progress, leave=False):
            chunk = frames[start : start + batch_size]
            if on_cuda:
                chunk = chunk.pin_memory()
            chunk = chunk.to(device, non_blocking=True).contiguous(
                memory_format=torch.channels_last
            )
            out[start : start + len(chunk)] = encoder.encode_frames(chunk).float().cpu()
    return out.view(batch, num_frames, encoder.out_dim)
