"""`make_clip`: one training/eval example (frames, aligned audio, reference, per-frame ground truth).

Alignment: frame i covers audio samples [i * spf, (i + 1) * spf) with spf = 16000 / fps, and its
mouth parameters come from the phoneme events inside that interval (plus coarticulation).
Seeds: `seed` fixes everything. Identities are numbered 2 * seed (train) and 2 * seed + 1 (eval),
so train and eval identities never coincide; photo identities are astronaut (train) and
grace_hopper (eval only).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from knotanim.config import CropConfig
from knotanim.data.audio_augment import augment_audio as _augment
from knotanim.data.compose import Pose
from knotanim.data.corpus import SpeechCorpus
from knotanim.data.motion import motion_tracks
from knotanim.data.speech import SAMPLE_RATE, Utterance
from knotanim.data.visemes import viseme_track
from knotanim.errors import InputError

_SPLITS = {"train": 0, "eval": 1}
_SOURCES = ("synthetic", "photo", "mixed")


@dataclass
class Clip:
    """frames uint8 [T, H, W, 3] RGB; audio float32 [T * spf] 16 kHz aligned with the frames;
    reference uint8 [H, W, 3] (same identity, neutral pose, closed mouth, open eyes);
    params: per-frame arrays of length T: mouth_open (0..1), mouth_width (-1 rounded..1 spread),
    yaw, pitch, roll (degrees), tx, ty (pixels), blink (0..1), phoneme (int32 ids into
    visemes.PHONEMES), mouth_box float32 [T, 4] (x0, y0, x1, y1 pixels)."""

    frames: np.ndarray
    audio: np.ndarray
    reference: np.ndarray
    params: dict[str, np.ndarray]
    fps: int
    identity: str


def _fit_speech(u: Utterance, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Place an utterance in a clip of n_samples: pad (random offset) or cut a random window.

    Returns (audio float32 [n_samples], event times (s, clip time), event ids, speech_end (s))."""
    a = np.asarray(u.audio, np.float32)
    times, ids = np.asarray(u.times, np.float64), np.asarray(u.phonemes, np.int64)
    out = np.zeros(n_samples, np.float32)
    if len(a) <= n_samples:
        off = int(rng.integers(0, n_samples - len(a) + 1))
        out[off:off + len(a)] = a
        return out, times + off / SAMPLE_RATE, ids, u.speech_end + off / SAMPLE_RATE
    start = int(rng.integers(0, len(a) - n_samples + 1))
    out[:] = a[start:start + n_samples]
    t0 = start / SAMPLE_RATE
    rel = times - t0
    keep = rel >= 0
    before = np.nonzero(~keep)[0]
    if len(before):  # the phoneme already sounding at the window start begins at t = 0
        keep[before[-1]] = True
        rel[before[-1]] = 0.0
    return out, rel[keep], ids[keep], u.speech_end - t0


def _loudness(audio: np.ndarray, n: int, spf: int) -> np.ndarray:
    """Per-frame RMS mapped to 0..1 (about -40 dBFS -> 0, -10 dBFS -> 1)."""
    rms = np.sqrt((audio[: n * spf].reshape(n, spf).astype(np.float64) ** 2).mean(1) + 1e-10)
    return np.clip((20 * np.log10(rms) + 40) / 30, 0, 1)


def make_clip(seed: int, n_frames: int, *, size: int = 256, fps: int = 25, head_motion: float = 0.5,
              speech: Utterance | None = None, corpus: SpeechCorpus | None = None, split: str = "train",
              source: str = "synthetic", augment_audio: bool = True, crop: CropConfig = CropConfig(),
              frames_out: np.ndarray | None = None) -> Clip:
    """Generate one clip; `seed` determines identity, motion, speech choice and randomisation.

    frames_out: optional uint8 [n_frames, size, size, 3] array (e.g. a np.memmap, so a long clip
    never sits in memory) the frames are rendered into; it becomes `Clip.frames`."""
    if split not in _SPLITS:
        raise InputError(f"split must be 'train' or 'eval', not {split!r}")
    if source not in _SOURCES:
        raise InputError(f"source must be one of {_SOURCES}, not {source!r}")
    if n_frames < 1 or size < 32 or SAMPLE_RATE % fps:
        raise InputError(f"bad clip shape: n_frames={n_frames}, size={size}, fps={fps}")
    spf = SAMPLE_RATE // fps
    rng = np.random.default_rng([seed, _SPLITS[split], 0x6B6E6F74])
    ident = 2 * int(seed) + _SPLITS[split]
    if source == "mixed":
        source = "photo" if rng.random() < 0.25 else "synthetic"
    # --- speech ---
    n_samples = n_frames * spf
    if speech is None and corpus is not None and len(corpus):
        speech = corpus[int(rng.integers(len(corpus)))]
    if speech is not None:
        clean, times, ids, end = _fit_speech(speech, n_samples, rng)
    else:
        clean, times, ids, end = np.zeros(n_samples, np.float32), np.zeros(0), np.zeros(0, np.int64), 0.0
    loud = _loudness(clean, n_frames, spf)
    mouth = viseme_track(times, ids, n_frames, fps, speech_end=end, loudness=loud)
    audio = _augment(clean, np.random.default_rng([seed, _SPLITS[split], 1])) if augment_audio and speech is not None else clean
    # --- renderer ---
    if source == "photo":
        from knotanim.data.photo import PhotoRenderer

        name = "astronaut" if split == "train" else "grace_hopper"
        renderer = PhotoRenderer(name, rng, size, crop)
        identity = f"photo:{name}"
        motion_scale = 0.35  # warping a photo only stays believable for small motions
    else:
        from knotanim.data.renderer import SyntheticRenderer

        renderer = SyntheticRenderer(np.random.default_rng([ident, 0x1D]), rng, size, crop)
        identity = f"synthetic:{ident}"
        motion_scale = 1.0
    tracks = motion_tracks(rng, n_frames, fps, head_motion * motion_scale, size, loud)
    if frames_out is not None and (frames_out.shape != (n_frames, size, size, 3) or frames_out.dtype != np.uint8):
        raise InputError(f"frames_out must be uint8 {(n_frames, size, size, 3)}, not {frames_out.dtype} {frames_out.shape}")
    frames = np.empty((n_frames, size, size, 3), np.uint8) if frames_out is None else frames_out
    boxes = np.empty((n_frames, 4), np.float32)
    for i in range(n_frames):
        pose = Pose(float(tracks["yaw"][i]), float(tracks["pitch"][i]), float(tracks["roll"][i]),
                    float(tracks["tx"][i]), float(tracks["ty"][i]))
        frames[i], boxes[i] = renderer.frame(pose, float(mouth["mouth_open"][i]), float(mouth["mouth_width"][i]),
                                             float(tracks["blink"][i]), (float(tracks["gaze_x"][i]), float(tracks["gaze_y"][i])),
                                             float(tracks["brow"][i]))
    reference, _ = renderer.frame(Pose(), 0.0, 0.0, 0.0, (0.0, 0.0), 0.0)
    params = {"mouth_open": mouth["mouth_open"], "mouth_width": mouth["mouth_width"], "phoneme": mouth["phoneme"],
              "blink": tracks["blink"], "mouth_box": boxes}
    for k in ("yaw", "pitch", "roll", "tx", "ty"):
        params[k] = tracks[k]
    return Clip(frames, audio.astype(np.float32), reference, params, fps, identity)

