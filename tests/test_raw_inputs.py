"""Raw and extracted inputs of the same clips (the CorMulT paper's Table 5 variants)."""

from __future__ import annotations

import numpy as np
import pytest

from cormult_lib.config import DataConfig, FeatureConfig
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import render_raw
from cormult_lib.features.audio import LogMel, floored_log
from cormult_lib.features.raw_inputs import raw_input_splits
from cormult_lib.features.vision import FaceCropper, uniform_frame_indices

CONFIG = FeatureConfig(
    backbone="resnet18", weights=None, image_size=32, num_frames=4, feature_dim=16, hop_length=1600
)


@pytest.fixture(scope="module")
def corpus() -> SyntheticCorpus:
    return SyntheticCorpus(DataConfig(n_samples=40), seed=0)


def test_forms_share_clips_and_time_axes(corpus):
    raw = raw_input_splits(corpus, list(range(12)), "waveform", "pixels", CONFIG, progress=False)
    feat = raw_input_splits(corpus, list(range(12)), "log_mel", "resnet", CONFIG, progress=False)
    for name in raw:
        assert raw[name].ids == feat[name].ids
        assert np.array_equal(raw[name].masks["A"], feat[name].masks["A"])
        assert np.array_equal(raw[name].features["T"], feat[name].features["T"])
        assert raw[name].features["A"].shape[2] == CONFIG.n_fft
        assert feat[name].features["A"].shape[2] == CONFIG.n_mels
        assert raw[name].features["V"].shape[1:] == (4, 24 * 24 * 3)
        assert feat[name].features["V"].shape[1:] == (4, 16)
    # The log-Mel form is exactly Eq. 1-3 of the clip with the configured hop.
    split = feat["train"]
    index = int(split.meta["id"].str.rsplit("_", n=1).str[1].astype(int).iloc[0])
    expected = floored_log(
        LogMel(16_000, hop_length=1600).mel_power(render_raw(corpus, index).waveform)
    )[0].numpy()
    got = split.features["A"][0][split.masks["A"][0]]
    assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-4)


def test_bad_form_names(corpus):
    with pytest.raises(ValueError, match="audio must be one of"):
        raw_input_splits(corpus, [0, 1], "mfcc", "pixels", CONFIG, progress=False)


def test_face_detection_is_recorded_and_a_split_left_out_is_warned(corpus):
    clips = [0, 1, 2, 4]  # train and valid clips: none of the test split
    assert "test" not in {corpus.split_of[i] for i in clips}
    with pytest.warns(UserWarning, match=r"none of the 4 clips \(indices\) is in split 'test'"):
        feat = raw_input_splits(corpus, clips, "log_mel", "resnet", CONFIG, progress=False)
    with pytest.warns(UserWarning, match="split 'test'"):
        raw = raw_input_splits(corpus, clips, "waveform", "pixels", CONFIG, progress=False)
    assert set(feat) == set(raw) == {"train", "valid"}
    cropper = FaceCropper()
    for name, split in feat.items():
        expected = []
        for clip_id in split.ids:
            frames = render_raw(corpus, int(clip_id.rsplit("_", 1)[1])).frames
            picks = frames[uniform_frame_indices(len(frames), CONFIG.num_frames)]
            expected.append(float(cropper.crop(picks, size=CONFIG.image_size)[1].mean()))
        assert split.meta["faces_detected"].tolist() == expected and min(expected) > 0
        assert raw[name].meta["faces_detected"].isna().all()  # pixels: no face looked for
