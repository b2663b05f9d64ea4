"""Frame decoding, face crops, ImageNet normalisation and the ResNet frame encoder."""

from __future__ import annotations

import subprocess
import time
import warnings
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from torchvision import models

from cormult_lib.config import DataConfig
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import draw_face, render_raw, write_raw_sample
from cormult_lib.features.vision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FaceCropper,
    FrameEncoder,
    VideoReadError,
    extract_frame_features,
    frames_to_tensor,
    imagenet_checkpoint_path,
    pool_channels,
    read_frames,
    resize_image,
    resolved_weights,
    uniform_frame_indices,
)

REAL_CLIP = "mosi_Oz06ZWiO20M_6.mp4"


@pytest.fixture(scope="module")
def raw_sample():
    """A synthetic sample whose video is clean (no 'V' noise, which blurs the face)."""
    corpus = SyntheticCorpus(DataConfig(n_samples=20), seed=0)
    index = next(i for i, spec in enumerate(corpus.specs) if spec.noisy_modality != "V")
    return render_raw(corpus, index)


@pytest.fixture(scope="module")
def synthetic_clip(raw_sample, tmp_path_factory) -> Path:
    return write_raw_sample(raw_sample, tmp_path_factory.mktemp("raw"))["video"]


@pytest.fixture(scope="module")
def cropper() -> FaceCropper:
    return FaceCropper()


def random_encoder(**kwargs) -> FrameEncoder:
    with pytest.warns(UserWarning, match="randomly initialised"):
        return FrameEncoder(weights=None, **kwargs)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ----------------------------------------------------------------------------- decoding


def test_uniform_frame_indices():
    assert uniform_frame_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert uniform_frame_indices(64, 1).tolist() == [0]
    assert uniform_frame_indices(3, 5).tolist() == [0, 0, 1, 2, 2]  # short clip: repeats


def test_read_frames_gives_the_rendered_frames(raw_sample, synthetic_clip):
    frames, fps = read_frames(synthetic_clip)
    assert fps == 8.0
    assert frames.shape == raw_sample.frames.shape
    assert frames.dtype == np.uint8
    assert mean_abs_diff(frames, raw_sample.frames) < 10  # mp4v is lossy
    # RGB, not OpenCV's BGR: swapping channels would be far off.
    assert mean_abs_diff(frames[..., ::-1], raw_sample.frames) > 2 * mean_abs_diff(
        frames, raw_sample.frames
    )


def test_read_frames_samples_uniform_indices(raw_sample, synthetic_clip):
    frames, _ = read_frames(synthetic_clip, num_frames=7)
    indices = uniform_frame_indices(len(raw_sample.frames), 7)
    assert frames.shape == (7, *raw_sample.frames.shape[1:])
    for frame, index in zip(frames, indices, strict=True):
        diffs = [mean_abs_diff(frame, rendered) for rendered in raw_sample.frames]
        assert diffs[index] < 10
        assert diffs[index] <= min(diffs) + 1  # the closest rendered frame, or as close


def test_read_frames_trusts_decoded_frames_over_the_container_count(raw_sample, tmp_path):
    """A truncated clip whose header (moov first) still claims every frame."""
    full = write_raw_sample(raw_sample, tmp_path)["video"]
    faststart = tmp_path / "faststart.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(full)]
        + ["-c", "copy", "-movflags", "+faststart", str(faststart)],
        check=True,
    )
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    claimed = int(cv2.VideoCapture(str(truncated)).get(cv2.CAP_PROP_FRAME_COUNT))
    every, _ = read_frames(truncated)
    n = len(every)
    assert claimed == len(raw_sample.frames) > n > 0

    frames, _ = read_frames(truncated, num_frames=6)
    assert np.array_equal(frames, every[uniform_frame_indices(n, 6)])
    # More frames asked than decodable: the nearest frames repeat, no crash.
    frames, _ = read_frames(truncated, num_frames=n + 9)
    assert np.array_equal(frames, every[uniform_frame_indices(n, n + 9)])


def test_read_frames_on_real_h264_clip(cmu_dir, cropper):
    path = cmu_dir / REAL_CLIP
    frames, fps = read_frames(path)
    assert 20 <= fps <= 60
    assert abs(len(frames) / fps - 7.5) < 0.5
    assert frames.dtype == np.uint8 and frames.shape[-1] == 3
    assert frames.std() > 10  # real picture content, not a blank decode

    sampled, fps16 = read_frames(path, num_frames=16)
    assert sampled.shape == (16, *frames.shape[1:]) and fps16 == fps
    assert np.array_equal(sampled, frames[uniform_frame_indices(len(frames), 16)])

    crops, detected = cropper.crop(sampled, size=112)
    rate = detected.mean()
    print(f"face detection rate on {REAL_CLIP}: {detected.sum()}/16 = {rate:.2f}")
    assert crops.shape == (16, 112, 112, 3)
    assert rate >= 0.75  # measured 16/16


@pytest.mark.parametrize("kind", ["missing", "empty", "random", "wav", "no_frames", "bad_n"])
def test_read_frames_errors_name_the_file(kind, raw_sample, synthetic_clip, tmp_path):
    path = tmp_path / f"{kind}.mp4"
    num_frames = None
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "wav":
        path = write_raw_sample(raw_sample, tmp_path)["audio"]
    elif kind == "no_frames":  # opens (valid header) but every frame's data is zeroed
        data = synthetic_clip.read_bytes()
        start, stop = data.find(b"mdat") + 4, data.find(b"moov") - 4
        path.write_bytes(data[:start] + bytes(stop - start) + data[stop:])
        assert cv2.VideoCapture(str(path)).isOpened()
    elif kind == "bad_n":
        path, num_frames = synthetic_clip, 0
    for n in (num_frames, 4) if kind != "bad_n" else (0,):
        with pytest.raises(VideoReadError, match=path.name) as info:
            read_frames(path, num_frames=n)
        assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- faces


def test_face_cropper_finds_and_centres_the_drawn_face(raw_sample, cropper):
    frames = raw_sample.frames
    boxes, detected = cropper.square_boxes(frames, margin=0.2)
    assert detected.mean() > 0.9
    size = frames.shape[1]
    head = raw_sample.spec.face  # drawn centre: size / 2 shifted by yaw/pitch (+ jitter)
    centre = np.array([size / 2 + head["yaw"] * 6, size / 2 + head["pitch"] * 6])
    box_centres = boxes[:, :2] + boxes[:, 2:] / 2
    assert np.abs(box_centres[detected] - centre).max() < 0.1 * size
    assert (boxes[:, 2] == boxes[:, 3]).all()  # square
    assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= size).all()

    crops, crop_detected = cropper.crop(frames, size=64)
    assert crops.shape == (len(frames), 64, 64, 3) and crops.dtype == np.uint8
    assert np.array_equal(crop_detected, detected)
    x, y, side, _ = boxes[0]
    expected = cv2.resize(frames[0, y : y + side, x : x + side], (64, 64))
    assert mean_abs_diff(crops[0], expected) < 3


def test_face_cropper_falls_back_and_counts_frames_without_a_face(cropper):
    size = 240
    grey = np.full((size, size, 3), 128, dtype=np.uint8)
    face = grey.copy()  # a 128-pixel face whose centre is at (164, 120)
    face[56:184, 100:228] = draw_face(128, {"skin": 1.0, "width": 0.3}, 0.5, 0, 0, False, (0, 0))
    frames = np.stack([grey, face, grey, face, grey])
    boxes, detected = cropper.square_boxes(frames)
    assert detected.tolist() == [False, True, False, True, False]
    print(f"frames without a face: {(~detected).sum()} of {len(frames)}")
    # Before the first detection: the next box; afterwards: the last detected box.
    assert (boxes == boxes[1]).all()
    x, y, side, _ = boxes[1]
    assert abs(x + side / 2 - 164) < 12 and abs(y + side / 2 - 120) < 12
    assert 100 < side < size

    boxes, detected = cropper.square_boxes(np.stack([grey, grey]))
    assert not detected.any()
    assert boxes.tolist() == [[0, 0, size, size]] * 2  # centred square = whole square frame
    wide = np.full((2, 60, 100, 3), 128, dtype=np.uint8)
    assert cropper.square_boxes(wide)[0].tolist() == [[20, 0, 60, 60]] * 2


def test_face_detection_on_downscaled_frames_maps_back(cropper):
    face = np.full((240, 240, 3), 128, dtype=np.uint8)
    face[56:184, 100:228] = draw_face(128, {"skin": 1.0, "width": 0.3}, 0.5, 0, 0, False, (0, 0))
    large = cv2.resize(face, (720, 720), interpolation=cv2.INTER_LINEAR)
    small_box = np.array(cropper.detect(face))
    assert cropper.detect_size == 240
    large_box = np.array(cropper.detect(large))  # searched at 240 x 240, reported at 720
    full_box = np.array(FaceCropper(detect_size=None).detect(large))
    assert np.abs(large_box - 3 * small_box).max() <= 3
    assert np.abs(full_box - 3 * small_box).max() < 0.1 * 3 * small_box[2]


def test_face_cropper_missing_cascade_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="opencv-python-headless 4.x.*OpenCV 5"):
        FaceCropper(cascade_path=tmp_path / "nope.xml")


# ----------------------------------------------------------------------------- tensors


def test_imagenet_constants_agree_with_torchvision():
    transform = models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert tuple(transform.mean) == IMAGENET_MEAN
    assert tuple(transform.std) == IMAGENET_STD


def test_frames_to_tensor_matches_torchvision_transform(raw_sample):
    frames = raw_sample.frames[:2]
    x = frames_to_tensor(frames, size=160)
    assert x.shape == (2, 3, 160, 160) and x.dtype == torch.float32
    # torchvision's own preset (resize + centre crop are no-ops at the resized size).
    transform = models.ResNet50_Weights.IMAGENET1K_V2.transforms(crop_size=160, resize_size=160)
    resized = torch.from_numpy(resize_image(frames[0], 160)).permute(2, 0, 1)
    torch.testing.assert_close(x[0], transform(resized), atol=1e-5, rtol=0)


def test_resize_image_uses_area_to_shrink_and_linear_to_enlarge():
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    shrink = cv2.resize(image, (10, 10), interpolation=cv2.INTER_AREA)
    assert np.array_equal(resize_image(image, 10), shrink)
    grow = cv2.resize(image, (100, 100), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resize_image(image, 100), grow)


def test_frames_to_tensor_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(f, H, W, 3\)"):
        frames_to_tensor(np.zeros((8, 8, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------- encoder


@pytest.fixture(scope="module")
def resnet18_encoder() -> FrameEncoder:
    torch.manual_seed(0)
    return random_encoder(backbone="resnet18", out_dim=128)


@pytest.mark.parametrize("out_dim", [None, 256])
def test_resnet50_encoder_shapes(out_dim):
    torch.manual_seed(0)
    encoder = random_encoder(out_dim=out_dim).eval()
    clips = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        out = encoder(clips)
    assert out.shape == (2, 3, out_dim or 2048)
    assert encoder.feature_dim == 2048


def test_resnet50_at_224_and_resnet18_width():
    torch.manual_seed(0)
    out = extract_frame_features(random_encoder(), torch.randn(1, 2, 3, 224, 224), device="cpu")
    assert out.shape == (1, 2, 2048) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert random_encoder(backbone="resnet18").out_dim == 512


def test_pool_channels_is_the_mean_of_consecutive_groups():
    features = torch.randn(2, 5, 2048)
    for out_dim in (2048, 512, 256, 1):
        expected = features.reshape(2, 5, out_dim, 2048 // out_dim).mean(-1)
        torch.testing.assert_close(pool_channels(features, out_dim), expected)


def test_encoder_pools_backbone_features(resnet18_encoder):
    frames = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        full = resnet18_encoder.eval().backbone(frames)
        pooled = resnet18_encoder.encode_frames(frames)
    assert full.shape == (4, 512)
    torch.testing.assert_close(pooled, full.reshape(4, 128, 4).mean(-1))


def test_encoder_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="out_dim"):
        FrameEncoder(weights=None, backbone="resnet18", out_dim=2048)
    with pytest.raises(ValueError, match="backbone"):
        FrameEncoder(weights=None, backbone="vgg16")
    with pytest.raises(FileNotFoundError, match="no such file"):
        FrameEncoder(weights=tmp_path / "missing.pth", backbone="resnet18")
    wrong = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="other.pth is not a torchvision resnet18"):
        FrameEncoder(weights=wrong, backbone="resnet18")
    torch.save([torch.zeros(1)], wrong)
    with pytest.raises(ValueError, match="other.pth: expected a state dict"):
        FrameEncoder(weights=wrong, backbone="resnet18")


def test_imagenet_weights_offline_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert imagenet_checkpoint_path() == tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        FrameEncoder(weights="imagenet")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "resnet50-11ad3fa6.pth" in message and "TORCH_HOME" in message
    assert str(tmp_path / "hub" / "checkpoints") in message


def test_imagenet_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    """A checkpoint in $TORCH_HOME/hub/checkpoints goes through torchvision's weights enum."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    reference = models.resnet18().eval()
    checkpoint = imagenet_checkpoint_path("resnet18")
    checkpoint.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoint)
    encoder = FrameEncoder(weights="imagenet", backbone="resnet18").eval()
    for name, tensor in reference.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(encoder.backbone.state_dict()[name], tensor), name


def test_auto_weights_use_imagenet_when_cached_and_random_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert resolved_weights("auto", "resnet18") is None
    with pytest.warns(UserWarning, match="randomly initialised"):
        FrameEncoder(weights="auto", backbone="resnet18")
    torch.manual_seed(3)
    reference = models.resnet18()
    checkpoint = imagenet_checkpoint_path("resnet18")
    checkpoint.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder = FrameEncoder(weights="auto", backbone="resnet18")
    assert torch.equal(encoder.backbone.conv1.weight, reference.conv1.weight)
    assert resolved_weights("auto", "resnet18") == "imagenet"
    assert resolved_weights("auto", "resnet50") is None, "each backbone has its own checkpoint"
    assert resolved_weights(None) is None and resolved_weights("imagenet") == "imagenet"


def test_local_state_dict_gives_that_models_outputs(tmp_path):
    torch.manual_seed(2)
    reference = models.resnet18().eval()
    path = tmp_path / "resnet18_state.pth"
    torch.save(reference.state_dict(), path)
    encoder = FrameEncoder(weights=path, backbone="resnet18")
    clips = torch.randn(2, 3, 3, 64, 64)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        expected = reference(clips.flatten(0, 1)).view(2, 3, 512)
    out = extract_frame_features(encoder, clips, batch_size=4, device="cpu", progress=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_extract_frame_features_is_eval_mode_and_batch_independent(resnet18_encoder):
    clips = [torch.randn(3, 3, 64, 64) for _ in range(3)]
    resnet18_encoder.train()
    first = extract_frame_features(resnet18_encoder, clips, batch_size=4, device="cpu")
    assert not resnet18_encoder.training
    second = extract_frame_features(resnet18_encoder, clips, batch_size=4, device="cpu")
    assert torch.equal(first, second)
    one_pass = extract_frame_features(resnet18_encoder, clips, batch_size=32, device="cpu")
    torch.testing.assert_close(one_pass, first, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        direct = resnet18_encoder(torch.stack(clips))
    torch.testing.assert_close(first, direct, atol=1e-5, rtol=1e-5)
    # Train-mode batch norm would give other numbers: the check above can fail.
    with torch.no_grad():
        assert not torch.allclose(resnet18_encoder.train()(torch.stack(clips)), first, atol=1e-3)
    with pytest.raises(ValueError, match="share one shape"):
        extract_frame_features(resnet18_encoder, [clips[0], clips[0][:2]])


def test_real_clip_end_to_end(cmu_dir, cropper, resnet18_encoder):
    frames, _ = read_frames(cmu_dir / REAL_CLIP, num_frames=4)
    crops, _ = cropper.crop(frames, size=64)
    clips = frames_to_tensor(crops, size=64)[None]
    out = extract_frame_features(resnet18_encoder, clips, device="cpu", progress=False)
    assert out.shape == (1, 4, 128) and torch.isfinite(out).all()
    assert out[0].std(0).mean() > 0  # different frames, different features
