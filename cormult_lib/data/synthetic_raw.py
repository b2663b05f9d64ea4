"""The raw form of the synthetic corpus: a waveform, video frames and a timed transcript.

Rendered from the same :class:`~cormult_lib.data.synthetic.SampleSpec` as the feature form, so
the feature-extraction chapters start from signals whose content is known:

* audio (``sample_rate`` Hz, mono float32): one voiced, harmonic syllable per word, pitched by
  the speaker and the sentiment, as loud as the word is stressed;
* video (``fps`` frames per second, RGB ``uint8``): a drawn face that smiles or frowns with the
  sentiment and opens its mouth while a word is spoken;
* transcript: the words with their start and end times.

The discrepancies act on the signals: ``voice`` adds a louder interfering melody, ``alignment``
delays audio and video by the spec's shifts (what a shift moves out of the clip shows the
neighbouring utterance, as in :func:`~cormult_lib.data.synthetic.source_word`), ``clarity``
buries the audio in noise or blurs the video.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pandas as pd
import soundfile as sf

from cormult_lib.data.synthetic import (
    SampleSpec,
    SyntheticCorpus,
    outside_clip,
    shown_sentiment,
)
from cormult_lib.progress import tqdm

#: Version of the rendering, written into ``label.csv``: a clip drawn by an older renderer is
#: not taken for this one's (:func:`ensure_raw_corpus` renders again). 2: a syllable that the
#: audio shift moves over the clip's edge goes on at the other end instead of being cut there.
RENDERER = 2


@dataclass
class RawSample:
    """One rendered sample.

    Attributes:
        spec: what the sample was generated from (label, words, discrepancy, ...).
        waveform: ``(n_audio_samples,)`` float32 in [-1, 1].
        sample_rate: audio rate in Hz.
        frames: ``(n_frames, height, width, 3)`` uint8 RGB.
        fps: video frame rate.
    """

    spec: SampleSpec
    waveform: np.ndarray
    sample_rate: int
    frames: np.ndarray
    fps: int

    @property
    def words(self) -> pd.DataFrame:
        return self.spec.word_table()

    @property
    def transcript(self) -> str:
        return self.spec.transcript


def render_raw(corpus: SyntheticCorpus, index: int) -> RawSample:
    """Render sample ``index`` of ``corpus`` (deterministic for a given corpus seed)."""
    if not 0 <= index < len(corpus.specs):
        raise IndexError(f"sample index {index} is outside 0..{len(corpus.specs) - 1}")
    spec = corpus.specs[index]
    cfg = corpus.config
    rng = np.random.default_rng([corpus.seed, 3_000_000 + index])
    waveform = render_audio(spec, cfg.sample_rate, rng)
    frames = render_frames(spec, cfg.fps, cfg.frame_size, rng)
    return RawSample(spec, waveform, cfg.sample_rate, frames, cfg.fps)


def speech_envelope(spec: SampleSpec, times: np.ndarray, shift_s: float = 0.0) -> np.ndarray:
    """Loudness of the speaker at ``times`` (seconds in the clip), delayed by ``shift_s``:
    ``(len(times),)``.

    Each word is a raised-cosine bump as loud as the word is stressed. The delay wraps
    around the clip (what leaves the clip is a neighbouring utterance with this clip's timing).
    """
    env = np.zeros_like(times, dtype=np.float64)
    source_times = np.mod(times - shift_s, spec.clip_duration)
    for onset, duration, emph in zip(spec.onsets, spec.durations, spec.emphasis, strict=True):
        phase = (source_times - onset) / duration
        inside = (phase >= 0) & (phase < 1)
        env[inside] = np.maximum(env[inside], (0.3 + 0.7 * emph) * np.sin(np.pi * phase[inside]))
    return env


def render_audio(spec: SampleSpec, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The speech waveform ``(round(clip_duration * sample_rate),)`` float32."""
    n = round(spec.clip_duration * sample_rate)
    t = np.arange(n) / sample_rate
    wave = np.zeros(n)
    for onset, duration, emph in zip(spec.onsets, spec.durations, spec.emphasis, strict=True):
        for first, positions, neighbour in _syllable_pieces(spec, onset, duration, n, sample_rate):
            # Where the shifted syllable lies outside the clip, the neighbouring utterance's
            # syllable is heard at the wrapped-around time (see ``source_word``).
            s = float(shown_sentiment(spec, np.array(neighbour), spec.audio_shift_s))
            # Brighter voices (positive) keep more energy in the upper harmonics.
            rolloff = 1.6 - 0.6 * np.clip(s + spec.voice["brightness"], -1, 1)
            local = t[positions] - t[positions.start] + first / sample_rate  # time in the word
            f0 = spec.speaker_f0 * (1 + 0.08 * s) * (1 + 0.1 * emph)
            # A gentle pitch glide plus vibrato: rising for positive, falling for negative.
            contour = f0 * (1 + 0.06 * s * local / duration + 0.01 * np.sin(2 * np.pi * 5 * local))
            phase = 2 * np.pi * np.cumsum(contour) / sample_rate
            syllable = sum(np.sin(k * phase) / k**rolloff for k in range(1, 7))
            roughness = max(0.0, -0.35 * s + spec.voice["roughness"])
            syllable = syllable + roughness * 0.3 * rng.standard_normal(len(local))
            envelope = np.sin(np.pi * local / duration)
            wave[positions] += spec.speaker_loudness * (0.3 + 0.7 * emph) * envelope * syllable
    wave /= np.abs(wave).max() + 1e-9
    wave *= 0.5
    speech_rms = np.sqrt(np.mean(wave**2))
    wave += rng.normal(0, speech_rms * 10 ** (-25 / 20), n)  # room noise, 25 dB SNR
    if spec.discrepancy == "voice":
        wave += spec.extras["interference_gain"] * speech_rms * _interfering_melody(t, rng)
    if spec.noisy_modality == "A":
        wave += rng.normal(0, speech_rms * 10 ** (5 / 20), n)  # -5 dB SNR
    return (wave / max(1.0, np.abs(wave).max())).astype(np.float32)


def _syllable_pieces(
    spec: SampleSpec, onset: float, duration: float, n: int, sample_rate: int
) -> list[tuple[int, slice, bool]]:
    """Where the audio shift puts one syllable in a clip of ``n`` samples, in at most two
    pieces: ``(first, positions, neighbour)`` with ``first`` the piece's first sample counted
    from the syllable's onset, ``positions`` its samples in the clip and ``neighbour`` whether
    it shows the neighbouring utterance.

    The shifted syllable starts at ``onset + audio_shift_s``, wrapped into the clip. A
    syllable that runs over the clip's end continues at its start, on the other side of the
    edge: a delayed syllable (judged at its onset, inside) goes on as the previous
    utterance's (judged at its end, outside), an advanced one (onset before the clip, the next
    utterance's) as this clip's own. Each piece is judged by the clip time it would have without
    the wrap (``outside_clip(onset + shift)``); the features judge a window by the source time
    it shows (``outside_clip(centre - shift)``), which is outside the clip exactly when that is,
    as every shift is shorter than the clip. So every sample shows what
    :func:`speech_envelope` says.
    """
    shifted = onset + spec.audio_shift_s
    start = round(np.mod(shifted, spec.clip_duration) * sample_rate)
    length = round(duration * sample_rate)
    head = min(length, n - start)  # samples before the clip's end
    pieces = [(0, slice(start, start + head), bool(outside_clip(spec, np.array(shifted))))]
    if head < length:
        wrapped = bool(outside_clip(spec, np.array(shifted + duration)))
        pieces.append((head, slice(0, length - head), wrapped))
    return [piece for piece in pieces if piece[1].stop > piece[1].start]


def _interfering_melody(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS background melody: notes of 0.25 s on a fixed grid, each sounding with
    probability 0.75 at a random pitch (250-800 Hz)."""
    melody = np.zeros_like(t)
    note_len = 0.25
    for start in np.arange(0, t[-1], note_len):
        if rng.random() < 0.25:
            continue
        inside = (t >= start) & (t < start + note_len)
        local = t[inside] - start
        freq = rng.uniform(250, 800)
        melody[inside] = np.sin(2 * np.pi * freq * local) * np.sin(np.pi * local / note_len)
    return melody / (np.sqrt(np.mean(melody**2)) + 1e-9)


def render_frames(spec: SampleSpec, fps: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Video frames ``(n_frames, size, size, 3)`` uint8 RGB of the speaker's face."""
    n_frames = max(1, int(spec.clip_duration * fps))
    times = (np.arange(n_frames) + 0.5) / fps
    mouth = speech_envelope(spec, times, spec.video_shift_s)
    neighbour = outside_clip(spec, times - spec.video_shift_s)
    s = shown_sentiment(spec, neighbour, spec.video_shift_s)  # (n_frames,)
    smile = np.clip(0.8 * s + spec.face["resting_smile"], -1, 1)
    brow = np.clip(-0.5 * s + spec.face["resting_brow"], -1, 1)
    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    for i in range(n_frames):
        blink = rng.random() < spec.face["blink_rate"] / fps * 3
        head = (spec.face["yaw"] + rng.normal(0, 0.05), spec.face["pitch"] + rng.normal(0, 0.05))
        frames[i] = draw_face(size, spec.face, smile[i], brow[i], mouth[i], blink, head)
    if spec.noisy_modality == "V":
        for i in range(n_frames):
            blurred = cv2.GaussianBlur(frames[i], (0, 0), sigmaX=size / 12)
            noisy = blurred + rng.normal(0, 40, blurred.shape)
            frames[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return frames


def draw_face(
    size: int,
    face: dict[str, float],
    smile: float,
    brow: float,
    mouth_open: float,
    blink: bool,
    head: tuple[float, float],
) -> np.ndarray:
    """One RGB frame ``(size, size, 3)`` of a cartoon face drawn with OpenCV.

    ``smile`` in [-1, 1] bends the mouth up or down, ``brow`` in [-1, 1] lowers the inner
    brows (a frown), ``mouth_open`` in [0, 1] opens the jaw, ``head`` = (yaw, pitch) moves it.
    """
    img = np.full((size, size, 3), (70, 80, 95), dtype=np.uint8)  # BGR background
    u = size / 96
    cx = int(size / 2 + head[0] * 6 * u)
    cy = int(size / 2 + head[1] * 6 * u)
    skin = tuple(int(c * face["skin"]) for c in (160, 190, 235))
    half_w = int(face["width"] * size / 1.1)
    cv2.ellipse(img, (cx, cy), (half_w, int(half_w * 1.3)), 0, 0, 360, skin, -1, cv2.LINE_AA)
    dark = (40, 40, 50)
    for side in (-1, 1):
        ex, ey = cx + side * int(13 * u), cy - int(9 * u)
        if blink:
            cv2.line(img, (ex - int(5 * u), ey), (ex + int(5 * u), ey), dark, max(1, int(2 * u)))
        else:
            cv2.ellipse(img, (ex, ey), (int(6 * u), int(4 * u)), 0, 0, 360, (245, 245, 245), -1)
            cv2.circle(img, (ex, ey), int(2.5 * u), dark, -1, cv2.LINE_AA)
        inner = (cx + side * int(6 * u), cy - int((17 - 4 * brow) * u))
        outer = (cx + side * int(20 * u), cy - int(19 * u))
        cv2.line(img, inner, outer, dark, max(1, int(2.5 * u)), cv2.LINE_AA)
    nose = np.array(
        [
            [cx, cy - int(4 * u)],
            [cx - int(4 * u), cy + int(7 * u)],
            [cx + int(3 * u), cy + int(7 * u)],
        ]
    )
    cv2.polylines(
        img, [nose], False, tuple(int(c * 0.7) for c in skin), max(1, int(u)), cv2.LINE_AA
    )
    # Mouth: corners move up with a smile; the jaw drops while speaking.
    my, half = cy + int(19 * u), int(11 * u)
    corner_y = my - int(5 * smile * u)
    xs = np.linspace(-half, half, 21)
    bend = 1 - (xs / half) ** 2
    upper = np.column_stack([cx + xs, corner_y + (my - corner_y) * bend])
    lower = np.column_stack([cx + xs, corner_y + (my - corner_y + mouth_open * 9 * u) * bend + u])
    lips = np.vstack([upper, lower[::-1]]).astype(np.int32)
    cv2.fillPoly(img, [lips], (60, 50, 150), cv2.LINE_AA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_raw_sample(sample: RawSample, directory: str | Path) -> dict[str, Path]:
    """Write ``<id>.wav`` (PCM 16-bit), ``<id>.mp4`` (mp4v, video only) and ``<id>.json``
    (transcript, word timings, label, discrepancy) into ``directory``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = sample.spec
    paths = {
        "audio": directory / f"{spec.id}.wav",
        "video": directory / f"{spec.id}.mp4",
        "transcript": directory / f"{spec.id}.json",
    }
    sf.write(paths["audio"], sample.waveform, sample.sample_rate, subtype="PCM_16")
    height, width = sample.frames.shape[1:3]
    writer = cv2.VideoWriter(
        str(paths["video"]), cv2.VideoWriter_fourcc(*"mp4v"), sample.fps, (width, height)
    )
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open {paths['video']} for writing (codec mp4v)")
    for frame in sample.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    record = {
        "id": spec.id,
        "transcript": spec.transcript,
        "words": sample.words.round(4).to_dict(orient="records"),
        "sentiment": spec.sentiment,
        "discrepancy": spec.discrepancy,
        "noisy_modality": spec.noisy_modality,
        "audio_shift_s": spec.audio_shift_s,
        "video_shift_s": spec.video_shift_s,
        "sample_rate": sample.sample_rate,
        "fps": sample.fps,
    }
    paths["transcript"].write_text(json.dumps(record, indent=2))
    return paths


def mux_clip(video: Path, audio: Path, output: Path) -> Path:
    """Combine a video-only file and a wav into one mp4 with an AAC audio track.

    Uses the ffmpeg binary that ``imageio-ffmpeg`` ships (OpenCV cannot write audio); the video
    stream is copied as it is.
    """
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    command = [ffmpeg, "-y", "-loglevel", "error", "-i", str(video), "-i", str(audio)]
    command += ["-c:v", "copy", "-c:a", "aac", "-b:a", "64k", str(output)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"ffmpeg could not write {output}: {done.stderr.strip()}")
    return output


def export_raw_corpus(
    corpus: SyntheticCorpus, directory: str | Path, indices: Sequence[int] | None = None
) -> Path:
    """Write clips the way CMU-MOSEI's raw release is laid out, and return the label table.

    ``directory/Raw/<video_id>/<clip_id>.mp4`` holds video and audio (AAC) together, and
    ``directory/label.csv`` has the columns ``video_id, clip_id, text, label, mode`` of MMSA's
    segment table plus ``discrepancy``, ``noisy_modality`` and the two shifts from the
    synthetic specs, and the ``renderer`` that drew the clips (:data:`RENDERER`). This is the
    input of the raw-clip feature pipeline (chapter 02).
    """
    directory = Path(directory)
    indices = range(len(corpus.specs)) if indices is None else indices
    with tempfile.TemporaryDirectory() as scratch:
        for index in tqdm(indices, desc="writing raw clips"):
            sample = render_raw(corpus, int(index))
            video_id, clip_id = sample.spec.id.rsplit("_", 1)
            parts = write_raw_sample(sample, scratch)
            target = directory / "Raw" / video_id / f"{clip_id}.mp4"
            target.parent.mkdir(parents=True, exist_ok=True)
            mux_clip(parts["video"], parts["audio"], target)
    table = directory / "label.csv"
    table.write_text(_label_table(corpus, indices))
    return table


def _label_table(corpus: SyntheticCorpus, indices: Sequence[int]) -> str:
    """The text of the ``label.csv`` that :func:`export_raw_corpus` writes for ``indices``."""
    rows = []
    for index in indices:
        spec = corpus.specs[int(index)]
        video_id, clip_id = spec.id.rsplit("_", 1)
        rows.append(
            {
                "video_id": video_id,
                "clip_id": clip_id,
                "text": spec.transcript,
                "label": spec.sentiment,
                "mode": corpus.split_of[spec.index],
                "discrepancy": spec.discrepancy,
                "noisy_modality": spec.noisy_modality,
                "audio_shift_s": spec.audio_shift_s,
                "video_shift_s": spec.video_shift_s,
                "renderer": RENDERER,
            }
        )
    return pd.DataFrame(rows).to_csv(index=False)


def ensure_raw_corpus(
    corpus: SyntheticCorpus, directory: str | Path, indices: Sequence[int] | None = None
) -> tuple[Path, bool]:
    """:func:`export_raw_corpus`, unless ``directory`` already holds exactly these clips.

    "Exactly" means that ``directory/label.csv`` is the table this corpus writes for
    ``indices`` (same samples, transcripts, labels, splits and :data:`RENDERER`). Otherwise the
    folder is deleted and rendered again, so that nothing made from other clips (a feature
    cache kept inside it) survives.

    Returns:
        The label table's path and whether the clips were rendered now.
    """
    directory = Path(directory)
    indices = range(len(corpus.specs)) if indices is None else indices
    table = directory / "label.csv"
    if table.is_file() and table.read_text() == _label_table(corpus, indices):
        return table, False
    if directory.exists():
        shutil.rmtree(directory)
    return export_raw_corpus(corpus, directory, indices), True
