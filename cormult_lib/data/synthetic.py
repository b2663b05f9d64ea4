"""A synthetic multimodal sentiment corpus built to teach modality correlation.

Real CMU-MOSEI cannot ship with a tutorial, so every chapter runs out of the box on this
corpus. It is generated from a small *world* (a lexicon, word embeddings and the linear maps
that stand in for COVAREP and Facet) and, per sample, a :class:`SampleSpec`:

* a latent sentiment ``s`` in [-3, 3] (multiples of 1/3, like the mean of three CMU
  annotators), the regression label, also binned to 7 classes;
* a transcript whose sentiment words follow ``s``, with word timings;
* per word an *emphasis*: stressed words are louder in the audio and open the mouth wider in
  the video, so the three modalities share one temporal structure that alignment can learn;
* a speaker (pitch, loudness, expressiveness) and a face.

A configurable fraction of samples is *weakly correlated*, with one of the four discrepancies
of the CorMulT paper's Fig. 1, recorded per sample:

``voice``      a louder interfering sound over the speaker (audio no longer carries ``s``);
``content``    the transcript's sentiment contradicts face and voice;
``alignment``  audio and video shifted against each other, the words and into the neighbours;
``clarity``    heavy noise (audio) or blur (video) on one modality.

Two forms come from the same specs: the *features* form built here (word-aligned sequences
with CMU-MOSEI's dimensions, for fast training) and the *raw* form rendered by
:mod:`cormult_lib.data.synthetic_raw` (waveform, video frames of a drawn face, transcript).
Each sample has its own random stream ``(seed, index)``, so both forms and every split are
reproducible and independent of generation order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from cormult_lib.config import DataConfig
from cormult_lib.data.dataset import (
    SPLITS,
    MultimodalSplit,
    label_to_class,
    masks_from_lengths,
)
from cormult_lib.progress import tqdm

DISCREPANCIES = ("voice", "content", "alignment", "clarity")
#: Mean and sd of a clip's (unrounded) sentiment, and the range of the factor by which a person
#: shows it in face and voice: the clip's own and its neighbours' are drawn alike.
SENTIMENT_MEAN, SENTIMENT_SD = 0.2, 1.25
EXPRESSIVENESS = (0.3, 1.2)

# Valence of the sentiment words, on the annotators' [-3, 3] scale.
POSITIVE_WORDS = {
    "good": 1.0, "nice": 1.0, "liked": 1.0, "fun": 1.5, "enjoyed": 1.5, "funny": 1.5,
    "great": 2.0, "best": 2.0, "beautiful": 2.0, "happy": 2.0, "love": 2.5, "amazing": 2.5,
    "wonderful": 2.5,
}  # fmt: skip
NEGATIVE_WORDS = {
    "bad": -1.0, "poor": -1.0, "dull": -1.0, "weak": -1.0, "boring": -1.5, "annoying": -1.5,
    "sad": -1.5, "disappointing": -2.0, "waste": -2.0, "stupid": -2.0, "terrible": -2.5,
    "awful": -2.5, "worst": -2.5, "hate": -2.5,
}  # fmt: skip
CONTENT_WORDS = (
    "movie", "film", "story", "actor", "plot", "ending", "music", "scene", "character",
    "director", "script", "camera", "book", "show",
)  # fmt: skip
FUNCTION_WORDS = (
    "the", "it", "was", "i", "and", "a", "this", "really", "just", "so", "but", "of", "think",
    "very", "to", "is", "that", "kind", "um", "uh",
)  # fmt: skip
# How strongly a word is stressed when spoken: drives loudness and mouth opening.
STRESS = {"sentiment": 1.0, "content": 0.7, "function": 0.25}

ACOUSTIC_FIELDS = ("log_pitch", "energy", "voicing", "brightness", "roughness", "duration")
FACIAL_FIELDS = ("smile", "brow_lower", "mouth_open", "cheek_raise", "yaw", "pitch", "eye_open")
SILENCE_ACOUSTICS = np.array([0.0, 0.02, 0.0, 0.0, 0.0, 0.1])


@dataclass
class SampleSpec:
    """Everything that defines one synthetic sample; both forms are rendered from it.

    Times are in seconds. ``audio_shift_s`` / ``video_shift_s`` delay the audio and video
    against the transcript (non-zero only for the ``alignment`` discrepancy). A delayed
    stream starts with the end of the *previous* utterance of the same video, an advanced one
    ends with the start of the *next*; ``previous_sentiment`` / ``next_sentiment`` are the
    sentiments those neighbours express (see :func:`source_word`).
    """

    id: str
    index: int
    sentiment: float
    text_sentiment: float
    expressed_sentiment: float
    words: list[str]
    onsets: np.ndarray  # (n_words,)
    durations: np.ndarray  # (n_words,)
    emphasis: np.ndarray  # (n_words,) in [0, 1]
    clip_duration: float
    speaker_f0: float
    speaker_loudness: float
    face: dict[str, float]
    voice: dict[str, float]
    discrepancy: str = "none"
    noisy_modality: str = ""
    audio_shift_s: float = 0.0
    video_shift_s: float = 0.0
    previous_sentiment: float = 0.0
    next_sentiment: float = 0.0
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def correlation(self) -> str:
        """``"strong"`` for clean samples, ``"weak"`` for samples with a discrepancy."""
        return "strong" if self.discrepancy == "none" else "weak"

    @property
    def transcript(self) -> str:
        return " ".join(self.words)

    def word_table(self) -> pd.DataFrame:
        """The transcript with word timings: columns ``word, start, end, emphasis``."""
        return pd.DataFrame(
            {
                "word": self.words,
                "start": self.onsets,
                "end": self.onsets + self.durations,
                "emphasis": self.emphasis,
            }
        )


class SyntheticWorld:
    """The fixed parts shared by every sample: lexicon, embeddings and feature maps.

    The world does not depend on the corpus seed (a language and its feature extractors do
    not change between experiments), only on the feature sizes.
    """

    def __init__(self, text_dim: int = 300, audio_dim: int = 74, vision_dim: int = 35):
        rng = np.random.default_rng([20_240_101, text_dim, audio_dim, vision_dim])
        self.text_dim, self.audio_dim, self.vision_dim = text_dim, audio_dim, vision_dim
        self.valence = {**POSITIVE_WORDS, **NEGATIVE_WORDS}
        self.vocabulary = [*self.valence, *CONTENT_WORDS, *FUNCTION_WORDS]
        self.word_index = {w: i for i, w in enumerate(self.vocabulary)}
        self.stress = np.array([self.word_stress(w) for w in self.vocabulary])
        valence = np.array([self.valence.get(w, 0.0) for w in self.vocabulary])
        # Word embeddings: a random identity part plus interpretable directions for valence
        # and stress, the way GloVe vectors carry sentiment along a few directions.
        basis, _ = np.linalg.qr(rng.standard_normal((text_dim, 2)))
        identity = rng.standard_normal((len(self.vocabulary), text_dim)) / np.sqrt(text_dim)
        self.embeddings = (
            identity
            + 0.8 * np.outer(valence / 2.5, basis[:, 0])
            + 0.6 * np.outer(self.stress, basis[:, 1])
        ).astype(np.float32)
        # Linear "extractors" from interpretable acoustic / facial descriptors to the
        # COVAREP-sized and Facet-sized feature vectors.
        self.audio_map = rng.standard_normal((len(ACOUSTIC_FIELDS), audio_dim)) / np.sqrt(2)
        self.vision_map = rng.standard_normal((len(FACIAL_FIELDS), vision_dim)) / np.sqrt(2)

    def word_stress(self, word: str) -> float:
        if word in self.valence:
            return STRESS["sentiment"]
        return STRESS["content"] if word in CONTENT_WORDS else STRESS["function"]


class SyntheticCorpus:
    """Generate specs, feature-form splits and raw samples from one seed.

    >>> corpus = SyntheticCorpus(DataConfig(n_samples=100), seed=0)
    >>> splits = corpus.feature_splits()
    >>> splits["train"].features["A"].shape
    (70, 50, 74)
    """

    def __init__(self, config: DataConfig | None = None, seed: int = 0):
        self.config = config or DataConfig()
        self.seed = seed
        _validate_config(self.config)
        self.world = SyntheticWorld(
            self.config.text_dim, self.config.audio_dim, self.config.vision_dim
        )
        self.specs = [self._make_spec(i, d) for i, d in enumerate(self._assign_discrepancies())]
        self.split_of = self._assign_splits()

    # ----------------------------------------------------------------------------- specs
    def _assign_discrepancies(self) -> list[str]:
        """Exactly ``round(weak_fraction * n)`` weak samples, the four types in turn."""
        n = self.config.n_samples
        rng = np.random.default_rng([self.seed, 1])
        n_weak = round(self.config.weak_fraction * n)
        kinds = ["none"] * n
        for rank, i in enumerate(rng.permutation(n)[:n_weak]):
            kinds[i] = DISCREPANCIES[rank % len(DISCREPANCIES)]
        return kinds

    def _assign_splits(self) -> np.ndarray:
        """``round(fraction * n)`` train and valid samples, the rest test; every split must
        get at least one sample."""
        n = self.config.n_samples
        order = np.random.default_rng([self.seed, 2]).permutation(n)
        n_train = round(self.config.split_fractions[0] * n)
        n_valid = round(self.config.split_fractions[1] * n)
        sizes = dict(zip(SPLITS, (n_train, n_valid, n - n_train - n_valid), strict=True))
        empty = [name for name, size in sizes.items() if size == 0]
        if empty:
            raise ValueError(
                f"DataConfig.split_fractions={self.config.split_fractions} with "
                f"n_samples={n} give the split(s) {empty} no sample ({sizes}); every split "
                "needs at least one: raise n_samples or those fractions"
            )
        split_of = np.empty(n, dtype=object)
        split_of[order[:n_train]] = "train"
        split_of[order[n_train : n_train + n_valid]] = "valid"
        split_of[order[n_train + n_valid :]] = "test"
        return split_of

    def _make_spec(self, index: int, discrepancy: str) -> SampleSpec:
        rng = np.random.default_rng([self.seed, 1000 + index])
        # Mean of three annotators: multiples of 1/3. Shaped like CMU-MOSEI's labels: about
        # a fifth exactly neutral, the rest slightly positive on average (mean 0.19, sd 1.26).
        neutral = rng.random() < 0.14
        sentiment = (
            0.0
            if neutral
            else float(np.clip(np.round(rng.normal(SENTIMENT_MEAN, SENTIMENT_SD) * 3) / 3, -3, 3))
        )
        sentiment += 0.0  # no negative zero
        text_sentiment = sentiment
        if discrepancy == "content":
            # The words say the opposite of what face and voice show.
            text_sentiment = (
                -sentiment
                if abs(sentiment) >= 1
                else -np.sign(sentiment or 1) * rng.uniform(1.5, 3)
            )
        words = self._sentence(rng, text_sentiment)
        n = len(words)
        syllables = np.array([max(1, round(len(w) / 3)) for w in words])
        durations = 0.12 + 0.09 * syllables * rng.uniform(0.85, 1.15, n)
        gaps = rng.uniform(0.04, 0.16, n) + (rng.random(n) < 0.1) * rng.uniform(0.2, 0.4, n)
        lead = rng.uniform(0.2, 0.4)
        onsets = lead + np.concatenate([[0.0], np.cumsum(durations + gaps)[:-1]])
        stress = np.array([self.world.word_stress(w) for w in words])
        emphasis = np.clip(stress * rng.uniform(0.75, 1.15, n) + rng.normal(0, 0.08, n), 0, 1)
        spec = SampleSpec(
            id=f"synth{self.seed}_{index:05d}",
            index=index,
            sentiment=sentiment,
            text_sentiment=float(text_sentiment),
            # Some people show what they feel, some barely do.
            expressed_sentiment=sentiment * rng.uniform(*EXPRESSIVENESS),
            words=words,
            onsets=onsets,
            durations=durations,
            emphasis=emphasis,
            clip_duration=float(onsets[-1] + durations[-1] + rng.uniform(0.2, 0.4)),
            speaker_f0=float(rng.uniform(95, 240)),
            speaker_loudness=float(rng.uniform(0.6, 1.0)),
            face={
                "skin": float(rng.uniform(0.72, 1.0)),
                "width": float(rng.uniform(0.30, 0.36)),
                "yaw": float(rng.normal(0, 0.3)),
                "pitch": float(rng.normal(0, 0.3)),
                "blink_rate": float(rng.uniform(0.15, 0.4)),
                # Resting expression, unrelated to sentiment: why faces are hard to read.
                "resting_smile": float(rng.normal(0, 0.35)),
                "resting_brow": float(rng.normal(0, 0.4)),
            },
            # A speaker's natural timbre, unrelated to sentiment.
            voice={"brightness": float(rng.normal(0, 0.2)), "roughness": float(rng.normal(0, 0.2))},
            discrepancy=discrepancy,
        )
        if discrepancy == "alignment":
            # A segment cut at the wrong place: audio and video move by a quarter to under
            # half of the clip, in opposite directions (so they also disagree with each
            # other), and bring in part of the neighbouring utterances, whose sentiment is
            # their own.
            direction = rng.choice([-1.0, 1.0])
            spec.audio_shift_s = float(direction * rng.uniform(0.25, 0.45) * spec.clip_duration)
            spec.video_shift_s = float(-direction * rng.uniform(0.25, 0.45) * spec.clip_duration)
            spec.previous_sentiment, spec.next_sentiment = (
                float(
                    np.clip(rng.normal(SENTIMENT_MEAN, SENTIMENT_SD), -3, 3)
                    * rng.uniform(*EXPRESSIVENESS)
                )
                for _ in range(2)
            )
        elif discrepancy == "clarity":
            spec.noisy_modality = str(rng.choice(["A", "V"]))
        elif discrepancy == "voice":
            spec.extras["interference_gain"] = float(rng.uniform(2.0, 3.0))
        return spec

    def _sentence(self, rng: np.random.Generator, sentiment: float) -> list[str]:
        """Words whose sentiment words follow ``sentiment``: more of them, stronger and of
        the right polarity as ``|sentiment|`` grows; a few of the other polarity as noise."""
        n_words = int(rng.integers(8, 25))
        p_sentiment = 0.06 + 0.09 * abs(sentiment)
        p_right_polarity = 0.5 + 0.5 * np.tanh(1.2 * abs(sentiment))
        sign = np.sign(sentiment) or rng.choice([-1.0, 1.0])
        words = []
        for _ in range(n_words):
            u = rng.random()
            if u < p_sentiment:
                polarity = sign if rng.random() < p_right_polarity else -sign
                pool = POSITIVE_WORDS if polarity > 0 else NEGATIVE_WORDS
                names = list(pool)
                strengths = np.abs(np.array([pool[w] for w in names]))
                weights = np.exp(-((strengths - max(abs(sentiment), 1.0)) ** 2))
                words.append(str(rng.choice(names, p=weights / weights.sum())))
            elif u < p_sentiment + 0.3:
                words.append(str(rng.choice(CONTENT_WORDS)))
            else:
                words.append(str(rng.choice(FUNCTION_WORDS)))
        return words

    # -------------------------------------------------------------------- features form
    def metadata(self) -> pd.DataFrame:
        """One row per sample: id, split, labels, correlation strength and discrepancy."""
        return pd.DataFrame([self._meta_row(s) for s in self.specs])

    def _meta_row(self, spec: SampleSpec) -> dict:
        return {
            "id": spec.id,
            "split": self.split_of[spec.index],
            "sentiment": spec.sentiment,
            "label7": int(label_to_class(spec.sentiment)),
            "text_sentiment": spec.text_sentiment,
            "correlation": spec.correlation,
            "discrepancy": spec.discrepancy,
            "noisy_modality": spec.noisy_modality,
            "audio_shift_s": spec.audio_shift_s,
            "video_shift_s": spec.video_shift_s,
            "previous_sentiment": spec.previous_sentiment,
            "next_sentiment": spec.next_sentiment,
            "n_words": len(spec.words),
            "transcript": spec.transcript,
        }

    def feature_splits(self, progress: bool = False) -> dict[str, MultimodalSplit]:
        """Word-aligned features with CMU-MOSEI's shapes, one :class:`MultimodalSplit` per split.

        Text ``(n, seq_len, text_dim)``, audio ``(n, seq_len, audio_dim)``, vision
        ``(n, seq_len, vision_dim)``; step ``i`` of every modality belongs to word ``i`` (as
        in CMU-MOSEI's aligned features); steps past the last word are padding.
        """
        cfg = self.config
        features = {
            "T": np.zeros((len(self.specs), cfg.seq_len, cfg.text_dim), np.float32),
            "A": np.zeros((len(self.specs), cfg.seq_len, cfg.audio_dim), np.float32),
            "V": np.zeros((len(self.specs), cfg.seq_len, cfg.vision_dim), np.float32),
        }
        lengths = np.zeros(len(self.specs), dtype=np.int64)
        for spec in tqdm(self.specs, desc="synthetic features", disable=not progress):
            sample = self.sample_features(spec)
            n = len(sample["T"])
            lengths[spec.index] = n
            for m in features:
                features[m][spec.index, :n] = sample[m]
        masks = masks_from_lengths(lengths, cfg.seq_len)
        meta = self.metadata()
        labels = meta["sentiment"].to_numpy(np.float32)
        splits = {}
        for name in SPLITS:
            idx = np.flatnonzero(self.split_of == name)
            splits[name] = MultimodalSplit(
                features={m: x[idx] for m, x in features.items()},
                masks={m: masks[idx] for m in features},
                labels=labels[idx],
                ids=meta["id"].iloc[idx].tolist(),
                meta=meta.iloc[idx].reset_index(drop=True),
                name=f"synthetic[{name}]",
                info={"seed": self.seed, "config": asdict(cfg)},
            )
        return splits

    def sample_features(self, spec: SampleSpec) -> dict[str, np.ndarray]:
        """Per-word features of one sample: ``{"T": (n, text_dim), "A": ..., "V": ...}``,
        truncated to ``seq_len`` words."""
        n = min(len(spec.words), self.config.seq_len)
        rng = np.random.default_rng([self.seed, 2_000_000 + spec.index])
        world = self.world
        ids = np.array([world.word_index[w] for w in spec.words[:n]])
        text = world.embeddings[ids] + rng.normal(0, 0.02, (n, world.text_dim))
        acoustic = acoustic_descriptors(spec, rng)[:n]
        facial = facial_descriptors(spec, rng)[:n]
        audio_noise, vision_noise = 0.35, 0.35
        if spec.noisy_modality == "A":
            audio_noise = 1.5
        elif spec.noisy_modality == "V":
            facial[:, :4] *= 0.3  # a blurred face: expressions are barely measurable
            vision_noise = 1.2
        audio = acoustic @ world.audio_map + rng.normal(0, audio_noise, (n, world.audio_dim))
        vision = facial @ world.vision_map + rng.normal(0, vision_noise, (n, world.vision_dim))
        return {
            "T": text.astype(np.float32),
            "A": audio.astype(np.float32),
            "V": vision.astype(np.float32),
        }


def source_word(spec: SampleSpec, shift_s: float) -> tuple[np.ndarray, np.ndarray]:
    """What a stream delayed by ``shift_s`` seconds shows in each word window.

    A time that the shift moves out of the clip shows a neighbouring utterance: the previous
    one before the start, the next one after the end. The neighbours are drawn with this
    clip's word timing (the time wraps around, ``t mod clip_duration``) and express their own
    sentiment (``spec.previous_sentiment`` / ``spec.next_sentiment``).

    Returns:
        ``source``: ``(n_words,)`` index of the first word whose span widened by 0.1 s on each
        side, ``[onset - 0.1, onset + duration + 0.1)``, holds the window's centre (shifted
        and wrapped), -1 where none does: a centre in a pause within 0.1 s of a word counts
        as that word, and where two widened spans overlap the earlier word is taken, also when
        the centre lies inside the later one. ``neighbour``: ``(n_words,)`` bool, True where
        that word belongs to a neighbouring utterance.
    """
    centres = spec.onsets + spec.durations / 2 - shift_s
    neighbour = outside_clip(spec, centres)
    source = np.full(len(spec.words), -1)
    for i, t in enumerate(np.mod(centres, spec.clip_duration)):
        inside = np.flatnonzero((spec.onsets - 0.1 <= t) & (t < spec.onsets + spec.durations + 0.1))
        if inside.size:
            source[i] = inside[0]
    return source, neighbour


def outside_clip(spec: SampleSpec, times: np.ndarray) -> np.ndarray:
    """True where ``times`` (seconds, any shape) lie outside ``[0, clip_duration)``: where a
    shifted stream shows a neighbouring utterance. Same shape as ``times``."""
    return (times < 0) | (times >= spec.clip_duration)


def shown_sentiment(spec: SampleSpec, neighbour: np.ndarray, shift_s: float) -> np.ndarray:
    """The expressed sentiment, scaled to [-1, 1], that a stream shifted by ``shift_s`` shows
    where ``neighbour`` (any shape, bool) marks the neighbouring utterance: same shape."""
    other = spec.previous_sentiment if shift_s > 0 else spec.next_sentiment
    return np.where(neighbour, other, spec.expressed_sentiment) / 3


def acoustic_descriptors(spec: SampleSpec, rng: np.random.Generator) -> np.ndarray:
    """Per word window the voice descriptors ``ACOUSTIC_FIELDS``: ``(n_words, 6)``.

    Positive speakers talk higher and brighter, negative ones rougher; stressed words are
    louder. The ``voice`` discrepancy lets a louder interfering sound dominate the pitch,
    brightness and energy that an extractor measures.
    """
    n = len(spec.words)
    source, neighbour = source_word(spec, spec.audio_shift_s)
    out = np.tile(SILENCE_ACOUSTICS, (n, 1)).astype(np.float64)
    voiced = source >= 0
    s = shown_sentiment(spec, neighbour, spec.audio_shift_s)[voiced]
    emph = spec.emphasis[source[voiced]]
    f0 = spec.speaker_f0 * (1 + 0.08 * s) * (1 + 0.1 * emph)
    out[voiced, 0] = np.log(f0 / 150) + rng.normal(0, 0.03, voiced.sum())
    out[voiced, 1] = spec.speaker_loudness * (0.3 + 0.7 * emph)
    out[voiced, 2] = 0.9
    out[voiced, 3] = 0.45 * s + spec.voice["brightness"] + rng.normal(0, 0.1, voiced.sum())
    out[voiced, 4] = -0.35 * s + spec.voice["roughness"] + rng.normal(0, 0.1, voiced.sum())
    out[voiced, 5] = spec.durations[source[voiced]]
    if spec.discrepancy == "voice":
        gain = spec.extras["interference_gain"]
        interferer = np.column_stack(
            [
                np.log(rng.uniform(250, 800, n) / 150),
                gain * rng.uniform(0.3, 1.0, n),
                np.ones(n),
                rng.normal(0, 0.5, n),
                rng.normal(0, 0.5, n),
                rng.uniform(0.1, 0.6, n),
            ]
        )
        weight = gain / (gain + 1)
        out = (1 - weight) * out + weight * interferer
        out[:, 1] = spec.speaker_loudness * (0.3 + 0.7 * spec.emphasis) + interferer[:, 1]
    return out


def facial_descriptors(spec: SampleSpec, rng: np.random.Generator) -> np.ndarray:
    """Per word window the facial descriptors ``FACIAL_FIELDS``: ``(n_words, 7)``.

    Smile and cheek raise grow with positive sentiment, brow lowering with negative; the
    mouth opens with the emphasis of the word being spoken (delayed for ``alignment``, with
    the neighbouring utterance's expression where the shift leaves the clip).
    """
    n = len(spec.words)
    source, neighbour = source_word(spec, spec.video_shift_s)
    s = shown_sentiment(spec, neighbour, spec.video_shift_s)
    mouth = np.where(source >= 0, 0.15 + 0.85 * spec.emphasis[np.maximum(source, 0)], 0.05)
    return np.column_stack(
        [
            0.8 * s + spec.face["resting_smile"] + rng.normal(0, 0.1, n),
            -0.5 * s + spec.face["resting_brow"] + rng.normal(0, 0.1, n),
            mouth + rng.normal(0, 0.05, n),
            0.5 * np.maximum(s, 0) + 0.6 * spec.face["resting_smile"] + rng.normal(0, 0.1, n),
            spec.face["yaw"] + rng.normal(0, 0.1, n),
            spec.face["pitch"] + rng.normal(0, 0.1, n),
            (rng.random(n) > spec.face["blink_rate"] / 2).astype(float),
        ]
    )


def _validate_config(cfg: DataConfig) -> None:
    if cfg.n_samples < 10:
        raise ValueError(f"DataConfig.n_samples must be at least 10, got {cfg.n_samples}")
    if not 0 <= cfg.weak_fraction <= 1:
        raise ValueError(f"DataConfig.weak_fraction must be in [0, 1], got {cfg.weak_fraction}")
    fractions = cfg.split_fractions
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            "DataConfig.split_fractions must be three positive fractions summing to 1, "
            f"got {fractions}"
        )
    if cfg.seq_len < 8:
        raise ValueError(f"DataConfig.seq_len must be at least 8, got {cfg.seq_len}")
    for name in ("text_dim", "audio_dim", "vision_dim"):
        if getattr(cfg, name) < 8:
            raise ValueError(f"DataConfig.{name} must be at least 8, got {getattr(cfg, name)}")


def make_synthetic_splits(
    config: DataConfig | None = None, seed: int = 0, progress: bool = False
) -> dict[str, MultimodalSplit]:
    """Shortcut: the feature-form train/valid/test splits of ``SyntheticCorpus(config, seed)``."""
    return SyntheticCorpus(config, seed).feature_splits(progress=progress)


def correlation_subsets(split: MultimodalSplit) -> dict[str, np.ndarray]:
    """Bool masks ``(n,)`` over ``split`` for evaluating on groups of the synthetic corpus:
    ``"strong"``, ``"weak"`` and ``"weak:<discrepancy>"`` for each of :data:`DISCREPANCIES`.

    Raises:
        ValueError: ``split.meta`` lacks the ``correlation`` / ``discrepancy`` columns (only the
            synthetic corpus records them).
    """
    meta = split.meta
    if meta is None or not {"correlation", "discrepancy"} <= set(meta.columns):
        raise ValueError(
            f"{split.name}: correlation_subsets needs split.meta with 'correlation' and "
            "'discrepancy' columns (the synthetic corpus has them)"
        )
    weak = (meta["correlation"] == "weak").to_numpy()
    subsets = {"strong": ~weak, "weak": weak}
    for kind in DISCREPANCIES:
        subsets[f"weak:{kind}"] = weak & (meta["discrepancy"] == kind).to_numpy()
    return subsets
