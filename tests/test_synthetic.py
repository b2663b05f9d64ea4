"""The synthetic corpus: reproducible, the right shapes, and it teaches what it claims."""

import subprocess
import time
from dataclasses import replace

import cv2
import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.stats import mannwhitneyu
from sklearn.metrics import r2_score

from cormult_lib.config import DataConfig
from cormult_lib.data.cmu import read_label_csv
from cormult_lib.data.synthetic import (
    DISCREPANCIES,
    SyntheticCorpus,
    facial_descriptors,
    make_synthetic_splits,
    shown_sentiment,
    source_word,
)
from cormult_lib.data.synthetic_raw import (
    RENDERER,
    ensure_raw_corpus,
    export_raw_corpus,
    render_audio,
    render_frames,
    render_raw,
    speech_envelope,
    write_raw_sample,
)
from cormult_lib.features import loading
from cormult_lib.tutorial.probes import AgreementProbe, fit_sentiment_probes, predict_sentiment


@pytest.fixture(scope="module")
def corpus() -> SyntheticCorpus:
    return SyntheticCorpus(DataConfig(n_samples=600), seed=0)


@pytest.fixture(scope="module")
def splits(corpus):
    return corpus.feature_splits()


def test_shapes_masks_and_labels(splits):
    train = splits["train"]
    assert train.features["T"].shape == (420, 50, 300)
    assert train.features["A"].shape == (420, 50, 74)
    assert train.features["V"].shape == (420, 50, 35)
    lengths = train.masks["T"].sum(1)
    assert np.array_equal(lengths, train.meta["n_words"].to_numpy())
    # Padding is exactly zero and every modality shares the word-aligned mask.
    for m in "TAV":
        assert np.array_equal(train.masks[m], train.masks["T"])
        assert not train.features[m][~train.masks[m]].any()
    assert train.labels.min() >= -3 and train.labels.max() <= 3
    assert np.allclose(train.labels * 3, np.round(train.labels * 3), atol=1e-5)
    assert (train.labels == 0).any(), "exact zeros are needed to tell Has0 from Non0"


def test_splits_partition_the_corpus(corpus, splits):
    ids = [i for s in splits.values() for i in s.ids]
    assert len(ids) == len(set(ids)) == 600
    assert [len(s) for s in splits.values()] == [420, 90, 90]
    assert corpus.metadata()["split"].value_counts().to_dict() == {
        "train": 420,
        "valid": 90,
        "test": 90,
    }


def test_weak_fraction_and_discrepancy_types_are_recorded(corpus):
    meta = corpus.metadata()
    counts = meta["discrepancy"].value_counts()
    assert counts["none"] == 420
    assert all(counts[d] == 45 for d in DISCREPANCIES)
    assert (meta["correlation"] == "weak").sum() == 180
    content = meta[meta["discrepancy"] == "content"]
    assert (np.sign(content["text_sentiment"]) != np.sign(content["sentiment"])).all()
    aligned = meta[meta["discrepancy"] == "alignment"]
    assert (np.sign(aligned["audio_shift_s"]) == -np.sign(aligned["video_shift_s"])).all()
    durations = np.array([corpus.specs[i].clip_duration for i in aligned.index])
    for column in ("audio_shift_s", "video_shift_s"):
        fraction = aligned[column].abs().to_numpy() / durations
        assert ((fraction >= 0.25) & (fraction <= 0.45)).all(), column
    assert set(meta.loc[meta["discrepancy"] == "clarity", "noisy_modality"]) == {"A", "V"}
    strong = meta[meta["correlation"] == "strong"]
    assert (strong["text_sentiment"] == strong["sentiment"]).all()
    assert (strong[["audio_shift_s", "video_shift_s"]] == 0).all().all()


def test_shifted_streams_show_the_neighbouring_utterance(corpus):
    spec = corpus.specs[_first_of(corpus, "alignment")]
    own, outside = source_word(spec, 0.0)
    assert (own == np.arange(len(spec.words))).all() and not outside.any()
    for shift in (spec.audio_shift_s, spec.video_shift_s):
        source, neighbour = source_word(spec, shift)
        centres = spec.onsets + spec.durations / 2 - shift
        assert (neighbour == ((centres < 0) | (centres >= spec.clip_duration))).all()
        assert 0 < neighbour.sum() < len(spec.words)
        assert (source >= 0).sum() > len(spec.words) / 2, "the wrapped stream is mostly speech"
    # The face shows the neighbour's expression where the video leaves the clip.
    _, neighbour = source_word(spec, spec.video_shift_s)
    smile = facial_descriptors(spec, np.random.default_rng(0))[:, 0] - spec.face["resting_smile"]
    other = spec.previous_sentiment if spec.video_shift_s > 0 else spec.next_sentiment
    np.testing.assert_allclose(smile[neighbour], 0.8 * other / 3, atol=0.4)
    np.testing.assert_allclose(smile[~neighbour], 0.8 * spec.expressed_sentiment / 3, atol=0.4)
    assert shown_sentiment(spec, neighbour, spec.video_shift_s)[neighbour] == pytest.approx(
        other / 3
    )


def test_source_word_takes_the_first_word_within_a_tenth_of_a_second(corpus):
    """As documented: spans widened by 0.1 s, the earlier word where two overlap."""
    spec = replace(
        corpus.specs[0],
        words=["a", "b", "c", "d"],
        onsets=np.array([0.0, 0.35, 1.0, 1.8]),
        durations=np.array([0.3, 0.3, 0.3, 0.1]),
        clip_duration=3.0,
    )
    # Shifted centres: 0.36 (inside "b", in "a"'s margin), 0.71 (pause 0.06 s after "b"),
    # 1.36 (pause 0.06 s after "c"), 2.06 (pause 0.16 s after "d": silence).
    source, neighbour = source_word(spec, -0.21)
    assert source.tolist() == [0, 1, 2, -1] and not neighbour.any()


def test_deterministic_per_seed():
    cfg = DataConfig(n_samples=50)
    a = make_synthetic_splits(cfg, seed=3)["train"]
    b = make_synthetic_splits(cfg, seed=3)["train"]
    c = make_synthetic_splits(cfg, seed=4)["train"]
    for m in "TAV":
        assert np.array_equal(a.features[m], b.features[m])
    assert a.ids == b.ids and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_bert_sized_text_and_bad_configs():
    split = make_synthetic_splits(DataConfig(n_samples=20, text_dim=768), seed=0)["test"]
    assert split.features["T"].shape[2] == 768
    with pytest.raises(ValueError, match="weak_fraction"):
        SyntheticCorpus(DataConfig(weak_fraction=1.5))
    with pytest.raises(ValueError, match="split_fractions"):
        SyntheticCorpus(DataConfig(split_fractions=(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="n_samples"):
        SyntheticCorpus(DataConfig(n_samples=3))


def test_a_split_left_without_samples_is_refused_naming_the_fractions():
    # round(3.5) + round(5.5) = 4 + 6 = 10: the test split would get nothing.
    with pytest.raises(ValueError, match=(
        r"split_fractions=\(0\.35, 0\.55, 0\.1\) with n_samples=10 give the split\(s\) "
        r"\['test'\] no sample \(\{'train': 4, 'valid': 6, 'test': 0\}\)"
    )):
        SyntheticCorpus(DataConfig(n_samples=10, split_fractions=(0.35, 0.55, 0.10)))
    with pytest.raises(ValueError, match=r"\['train'\] no sample"):
        SyntheticCorpus(DataConfig(n_samples=10, split_fractions=(0.04, 0.5, 0.46)))
    corpus = SyntheticCorpus(DataConfig(n_samples=10, split_fractions=(0.45, 0.45, 0.10)))
    sizes = pd.Series(corpus.split_of).value_counts().to_dict()
    assert sizes == {"train": 4, "valid": 4, "test": 2}


def test_load_splits_refuses_an_empty_synthetic_split(monkeypatch):
    def without_test(config, seed):
        splits = make_synthetic_splits(DataConfig(n_samples=20), seed)
        return {**splits, "test": splits["test"].select([])}

    monkeypatch.setattr(loading, "make_synthetic_splits", without_test)
    with pytest.raises(ValueError, match=r"the synthetic corpus: the split\(s\) \['test'\] hold"):
        loading.load_splits("synthetic")


def test_two_thousand_feature_samples_take_seconds():
    start = time.perf_counter()
    splits = make_synthetic_splits(DataConfig(n_samples=2000), seed=0)
    elapsed = time.perf_counter() - start
    assert sum(len(s) for s in splits.values()) == 2000
    assert elapsed < 20, f"generating 2,000 samples took {elapsed:.1f} s"


def _strong(split):
    return split.select((split.meta["correlation"] == "strong").to_numpy())


def test_each_modality_carries_the_label_on_strong_samples():
    splits = make_synthetic_splits(DataConfig(n_samples=1500), seed=1)
    train, test = _strong(splits["train"]), _strong(splits["test"])
    preds = predict_sentiment(fit_sentiment_probes(train), test)
    nonzero = test.labels != 0
    for m in "TAV":
        acc = np.mean((preds[m].to_numpy() > 0)[nonzero] == (test.labels > 0)[nonzero])
        assert acc > 0.65, f"{m} probe: Non0 Acc-2 {acc:.2f} on strong test samples"
        assert r2_score(test.labels, preds[m]) > 0.2
    # Probes trained on shuffled labels explain nothing: the checks above can fail.
    rng = np.random.default_rng(0)
    shuffled = replace(train, labels=rng.permutation(train.labels))
    chance = predict_sentiment(fit_sentiment_probes(shuffled), test)
    for m in "TAV":
        assert r2_score(test.labels, chance[m]) < 0.08


def test_agreement_is_lower_on_weak_samples_of_every_type(splits):
    probe = AgreementProbe().fit(_strong(splits["train"]))
    table = pd.concat(
        probe.score(s).assign(d=s.meta["discrepancy"].to_numpy())
        for s in (splits["valid"], splits["test"])
    )
    strong = table.loc[table["d"] == "none", "agreement"]
    for kind in DISCREPANCIES:
        weak = table.loc[table["d"] == kind, "agreement"]
        p = mannwhitneyu(weak, strong, alternative="less").pvalue
        assert weak.mean() < strong.mean() and p < 0.01, f"{kind}: p={p:.3g}"
    # Each discrepancy hurts the pairs it should.
    by = table.groupby("d").mean(numeric_only=True)
    assert by.loc["content", "gap_TA"] > 1.5 * by.loc["none", "gap_TA"]
    assert by.loc["alignment", "sync_AV"] < by.loc["none", "sync_AV"] - 0.3
    assert by.loc["voice", "sync_TA"] < by.loc["none", "sync_TA"] - 0.2


def test_raw_form_matches_the_feature_form(corpus, splits, tmp_path):
    meta = corpus.metadata().set_index("id")
    for index in range(6):
        raw = render_raw(corpus, index)
        spec = raw.spec
        row = meta.loc[spec.id]
        assert raw.transcript == row["transcript"]
        assert len(raw.words) == row["n_words"]
        assert raw.waveform.dtype == np.float32 and np.abs(raw.waveform).max() <= 1
        assert abs(len(raw.waveform) / raw.sample_rate - spec.clip_duration) < 1e-3
        assert raw.frames.shape == (int(spec.clip_duration * raw.fps), 96, 96, 3)
    paths = write_raw_sample(render_raw(corpus, 0), tmp_path)
    audio, rate = sf.read(paths["audio"])
    assert rate == 16_000 and len(audio) == len(render_raw(corpus, 0).waveform)
    video = cv2.VideoCapture(str(paths["video"]))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(render_raw(corpus, 0).frames)


def _first_of(corpus, kind, **fields):
    for spec in corpus.specs:
        if spec.discrepancy == kind and all(getattr(spec, k) == v for k, v in fields.items()):
            return spec.index
    raise AssertionError(f"no {kind} sample")


def _energy(wave, rate, hop=160):
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    return np.sqrt((frames**2).mean(1)), rate / hop


def test_raw_alignment_delays_the_audio_and_the_face(corpus):
    raw = render_raw(corpus, _first_of(corpus, "alignment"))
    energy, rate = _energy(raw.waveform, raw.sample_rate)
    times = np.arange(len(energy)) / rate
    half = len(energy) // 2
    lags = np.arange(-half, half + 1)  # every circular lag, in 10 ms steps
    words = speech_envelope(raw.spec, times)
    xcorr = [np.dot(np.roll(words, lag), energy) for lag in lags]
    measured = lags[int(np.argmax(xcorr))] / rate
    assert abs(measured - raw.spec.audio_shift_s) < 0.1


def _syllable_over_the_edge(corpus, direction: int):
    """An alignment clip whose audio shift (sign ``direction``) moves a syllable at least
    60 ms over the clip's end: ``(spec, samples before the end, samples after it)``."""
    rate = corpus.config.sample_rate
    for spec in corpus.specs:
        if spec.discrepancy != "alignment" or np.sign(spec.audio_shift_s) != direction:
            continue
        for onset, duration in zip(spec.onsets, spec.durations, strict=True):
            start = np.mod(onset + spec.audio_shift_s, spec.clip_duration)
            over = start + duration - spec.clip_duration
            if 0.06 < over < duration - 0.06:
                return spec, round((duration - over) * rate), round(over * rate)
    raise AssertionError(f"no alignment clip shifts a syllable over the edge ({direction=})")


@pytest.mark.parametrize("direction", [1, -1], ids=["delayed", "advanced"])
def test_a_syllable_shifted_over_the_clips_edge_goes_on_at_the_other_end(corpus, direction):
    spec, before, after = _syllable_over_the_edge(corpus, direction)
    rate = corpus.config.sample_rate

    def audio(spec):
        return render_audio(spec, rate, np.random.default_rng([corpus.seed, spec.index]))

    wave = audio(spec)
    end, start = wave[len(wave) - before :], wave[:after]  # the syllable's two parts
    # Its remainder sounds at the clip's start (not only room noise, 25 dB below speech).
    loud = np.sqrt(np.mean(wave[speech_envelope(spec, np.arange(len(wave)) / rate) > 0.3] ** 2))
    assert np.sqrt(np.mean(start**2)) > 0.2 * loud
    # Each part shows the utterance that its side of the edge shows: a delayed syllable ends
    # as the previous utterance's, an advanced one begins as the next utterance's. Changing
    # that neighbour's sentiment changes that part only.
    field = "previous_sentiment" if direction > 0 else "next_sentiment"
    other = replace(spec, **{field: -3.0 if getattr(spec, field) > 0 else 3.0})
    changed = audio(other)
    same, differs = (end, start) if direction > 0 else (start, end)
    same_then, differs_then = (
        (changed[len(wave) - before :], changed[:after])
        if direction > 0
        else (changed[:after], changed[len(wave) - before :])
    )
    assert np.corrcoef(same, same_then)[0, 1] > 0.99
    assert np.corrcoef(differs, differs_then)[0, 1] < 0.8


def test_raw_speech_lines_up_with_words_and_mouth(corpus):
    raw = render_raw(corpus, _first_of(corpus, "none"))
    energy, rate = _energy(raw.waveform, raw.sample_rate)
    words = speech_envelope(raw.spec, np.arange(len(energy)) / rate)
    assert np.corrcoef(words, energy)[0, 1] > 0.8
    # The mouth region darkens (opens) when a word is spoken.
    mouth = raw.frames[:, 60:80, 36:60].astype(float).mean((1, 2, 3))
    spoken = speech_envelope(raw.spec, (np.arange(len(raw.frames)) + 0.5) / raw.fps)
    assert np.corrcoef(spoken, mouth)[0, 1] < -0.5


def test_raw_voice_and_clarity_discrepancies(corpus):
    clean = render_raw(corpus, _first_of(corpus, "none"))
    voice = render_raw(corpus, _first_of(corpus, "voice"))
    energy, rate = _energy(voice.waveform, voice.sample_rate)
    words = speech_envelope(voice.spec, np.arange(len(energy)) / rate)
    assert np.corrcoef(words, energy)[0, 1] < 0.5, "the interfering sound should dominate"
    # Clarity (video): the same frames as a clean rendering, blurred and noisy.
    spec = corpus.specs[_first_of(corpus, "clarity", noisy_modality="V")]
    noisy = render_frames(spec, 8, 96, np.random.default_rng(0)).astype(float).mean(0)
    clean_spec = replace(spec, discrepancy="none", noisy_modality="")
    clean = render_frames(clean_spec, 8, 96, np.random.default_rng(0)).astype(float).mean(0)
    blurred = cv2.GaussianBlur(clean, (0, 0), sigmaX=96 / 12)
    # Averaging over frames removes most of the noise; what is left is the blur.
    assert np.mean((noisy - blurred) ** 2) < 0.3 * np.mean((noisy - clean) ** 2)


def test_drawn_faces_are_found_by_opencvs_detector(corpus):
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = []
    for index in range(10):
        frames = render_raw(corpus, index).frames[::5]
        found += [
            len(cascade.detectMultiScale(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 1.1, 3)) > 0
            for f in frames
        ]
    assert np.mean(found) > 0.9


def test_export_raw_corpus_writes_the_cmu_layout(corpus, tmp_path):
    table = export_raw_corpus(corpus, tmp_path, indices=[0, 1, 2])
    labels = read_label_csv(table)
    assert labels["id"].tolist() == ["synth0$_$00000", "synth0$_$00001", "synth0$_$00002"]
    assert labels["label"].tolist() == [corpus.specs[i].sentiment for i in range(3)]
    clip = tmp_path / "Raw" / "synth0" / "00001.mp4"
    # Both streams are there: the frames (OpenCV) and the AAC audio track (ffmpeg).
    video = cv2.VideoCapture(str(clip))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(render_raw(corpus, 1).frames)
    decoded = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(clip), "-f", "s16le", "-ac", "1", "-"],
        capture_output=True,
    ).stdout
    audio = np.frombuffer(decoded, np.int16) / 32768
    reference = render_raw(corpus, 1).waveform
    assert abs(len(audio) - len(reference)) < 0.05 * 16_000
    assert abs(np.sqrt(np.mean(audio**2)) - np.sqrt(np.mean(reference**2))) < 0.02


def test_ensure_raw_corpus_renders_only_when_the_clips_differ(corpus, tmp_path):
    folder = tmp_path / "clips"
    table, rendered = ensure_raw_corpus(corpus, folder, indices=[0, 1])
    assert rendered and read_label_csv(table)["id"].tolist() == ["synth0$_$00000", "synth0$_$00001"]
    (folder / "cache").mkdir()  # something made from these clips
    assert ensure_raw_corpus(corpus, folder, indices=[0, 1]) == (table, False)
    assert (folder / "cache").is_dir(), "the same clips are kept with what was made from them"
    # Other clips (a third sample, or another corpus seed) replace the folder entirely.
    _, rendered = ensure_raw_corpus(corpus, folder, indices=[0, 1, 2])
    assert rendered and not (folder / "cache").exists()
    assert len(read_label_csv(table)) == 3
    other = SyntheticCorpus(corpus.config, seed=corpus.seed + 1)
    assert ensure_raw_corpus(other, folder, indices=[0, 1, 2])[1]
    # Clips drawn by an older renderer are drawn again (the table names the renderer).
    table.write_text(table.read_text().replace(f",{RENDERER}\n", f",{RENDERER - 1}\n"))
    assert ensure_raw_corpus(other, folder, indices=[0, 1, 2])[1]
    assert (read_label_csv(table)["renderer"] == str(RENDERER)).all()


def test_agreement_refuses_unaligned_streams_and_counts_undefined_synchrony(splits):
    train = _strong(splits["train"])
    unaligned = train.select(np.arange(len(train)))
    unaligned.masks["V"] = unaligned.masks["V"].copy()
    unaligned.masks["V"][0, 0] = not unaligned.masks["V"][0, 0]
    with pytest.raises(ValueError, match=r"pairs the time steps of T and V, which must be "
                                         r"aligned \(equal masks\).*differing in 1 steps"):
        AgreementProbe().fit(unaligned)
    probe = AgreementProbe().fit(train)
    short = splits["test"].select(np.arange(6))
    for m in "TAV":  # two valid steps: no correlation over time for any pair
        short.masks[m] = short.masks[m] & (np.arange(short.masks[m].shape[1]) < 2)
    with pytest.warns(UserWarning, match="6 of 6 samples have no synchrony.*6 have none"):
        scores = probe.score(short)
    assert scores["agreement"].isna().all()
