"""The real-photo set of KnotBench: which photographs, which split, and the held-out speech they speak.

Every photo is a real photograph that an installable package ships, or a named variant derived from
one of them for a property no shipped photo has (a tilted head, a small face in a big picture, a
large photo); glasses and a hat need none: Grace Hopper wears both. The split of a shipped photo is
read from `knotanim.data.photo.PHOTOS`, the one table the data generator also reads, and a derived
photo inherits the split of the photo it comes from, so "held-out" is written in one place. A held-out photo is never used in training:
`make_clip` animates grace_hopper only for split="eval".

Not used: `lfw_faces.npz` (200 grey faces of 25 x 25 pixels from scikit-image's lfw_subset, a
training texture source: too small for any face detector); the portraits in the `face_recognition`
sdist's tests (MIT-licensed repository, but no provenance or licence per photograph).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from knotanim.errors import InputError


@dataclass(frozen=True)
class RealPhoto:
    """One photograph of the set.

    name: row label and file stem. shipped_as: the generator's photo (`knotanim.data.photo.PHOTOS`)
    it is, or is derived from ("" for a user's photo file, `user_photo`). source: package and file
    the pixels come from (a user's photo: its path). hard: what makes the face hard ("" for none).
    derivation: how a variant is made from its shipped photo ("" = none).
    """

    name: str
    shipped_as: str
    source: str
    hard: str = ""
    derivation: str = ""

    @property
    def split(self) -> str:
        """"train" or "held-out", from the generator's table (the one place a split is written); "user"."""
        from knotanim.data.photo import PHOTOS

        if not self.shipped_as:
            return "user"
        return "train" if PHOTOS[self.shipped_as]["split"] == "train" else "held-out"

    @property
    def derived(self) -> bool:
        return bool(self.derivation)


ASTRONAUT = "scikit-image 0.x, skimage/data/astronaut.png (Eileen Collins, NASA, public domain)"
GRACE_HOPPER = "matplotlib sample data, grace_hopper.jpg (US Navy photograph, public domain)"

REAL_PHOTOS: tuple[RealPhoto, ...] = (
    RealPhoto("astronaut", "astronaut", ASTRONAUT, hard="small face (95 px) in a 512 x 512 picture"),
    RealPhoto("grace_hopper", "grace_hopper", GRACE_HOPPER, hard="glasses and a hat (navy service cap)"),
    RealPhoto("grace_hopper_tilted_15deg", "grace_hopper", GRACE_HOPPER, hard="head tilted 15 degrees (at 18+ the Haar cropper finds no face)",
              derivation="the photo rotated 15 degrees counter-clockwise about the face, canvas grown to fit"),
    RealPhoto("grace_hopper_small_in_2mp", "grace_hopper", GRACE_HOPPER, hard="small face in a 2 MP picture",
              derivation="the photo at 0.5x pasted into a 1920 x 1080 canvas of its own blurred enlargement"),
    RealPhoto("grace_hopper_upscaled_2mp", "grace_hopper", GRACE_HOPPER, hard="large photo (2.08 MP)",
              derivation="the photo upscaled 2.6x (bicubic) to 1331 x 1560"),
)


def real_photo(name: str) -> RealPhoto:
    """The set's photo called `name`; InputError naming the choices otherwise."""
    for p in REAL_PHOTOS:
        if p.name == name:
            return p
    raise InputError(f"no real photo called {name!r}; the set has {', '.join(p.name for p in REAL_PHOTOS)}")


def user_photo(path: str | Path) -> RealPhoto:
    """A photo file of the user's, judged like the set's (its videos are named after its file stem)."""
    return RealPhoto(Path(path).stem, "", str(path))


def select_photos(names: str | None) -> tuple[RealPhoto, ...]:
    """Comma-separated names, "held-out", "all" or None (= held-out) -> photos in table order."""
    if names is None or names == "held-out":
        return tuple(p for p in REAL_PHOTOS if p.split == "held-out")
    if names == "all":
        return REAL_PHOTOS
    return tuple(real_photo(n.strip()) for n in names.split(",") if n.strip())


def load_real_photo(photo: RealPhoto | str) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of a set photo (a derived one is made here, deterministically)."""
    from knotanim.data.photo import PHOTOS
    from knotanim.data.randomize import load_asset_rgb

    photo = real_photo(photo) if isinstance(photo, str) else photo
    if not photo.shipped_as:
        from knotanim.frontends.image import load_image

        return load_image(photo.source)
    info = PHOTOS[photo.shipped_as]
    image = load_asset_rgb(info["file"])
    if not photo.derived:
        return image
    x, y, w, h = info["box"]
    centre = (x + w / 2, y + h / 2)
    if photo.name.endswith("_tilted_15deg"):
        return rotate_grown(image, 15.0, centre)
    if photo.name.endswith("_small_in_2mp"):
        return paste_small(image, 0.5, (1920, 1080), (1180, 260))
    if photo.name.endswith("_upscaled_2mp"):
        return cv2.resize(image, None, fx=2.6, fy=2.6, interpolation=cv2.INTER_CUBIC)
    raise InputError(f"no derivation is defined for {photo.name!r}")


def rotate_grown(image: np.ndarray, degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """uint8 [H, W, 3] rotated counter-clockwise by `degrees` about `centre` (pixels), on a canvas
    grown to hold the whole rotated picture; corners filled by replicating the border."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ m.T
    lo, hi = corners.min(0), corners.max(0)
    m[:, 2] -= lo
    size = tuple(int(np.ceil(v)) for v in hi - lo)
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def paste_small(image: np.ndarray, scale: float, canvas_wh: tuple[int, int], top_left: tuple[int, int]) -> np.ndarray:
    """uint8 [canvas_h, canvas_w, 3]: `image` resized by `scale` pasted at `top_left` (x, y pixels)
    into a canvas of its own enlargement, blurred (sigma 12 px) so only the pasted face is sharp."""
    cw, ch = canvas_wh
    canvas = cv2.GaussianBlur(cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR), (0, 0), 12)
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    x, y = top_left
    canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
    return canvas


def held_out_speech(seconds: float, seed: int = 0, corpus=None):
    """An `Utterance` of exactly round(seconds * 16000) samples of held-out speech at 16 kHz (eval voices
    and languages, utterances joined by pauses; `knotanim.eval.speech.EvalSpeech`: espeak-ng, or
    `corpus`, an eval-split .npz), its phoneme events cut to the same length."""
    from knotanim.data.speech import Utterance
    from knotanim.eval.speech import EvalSpeech

    u = EvalSpeech(corpus).for_clip(seed, seconds)
    n = int(round(seconds * 16000))
    audio = np.zeros(n, np.float32)
    audio[:min(n, len(u.audio))] = u.audio[:n]
    keep = np.asarray(u.times) < seconds
    return Utterance(audio, np.asarray(u.times)[keep], np.asarray(u.phonemes)[keep], min(float(u.speech_end), seconds),
                     u.voice, u.lang, u.text)


def write_inputs(folder: str | Path, photos: tuple[RealPhoto, ...], seconds: float, seed: int = 0, corpus=None) -> dict:
    """Write what a renderer elsewhere needs: photos/<name>.png, speech_<s>s.wav (held-out speech) and
    silence_<s>s.wav (the same length of zeros, for the audio-zeroed row). Returns the paths."""
    from knotanim.frontends.audio_io import write_wav

    folder = Path(folder)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    paths = {"photos": {}}
    for p in photos:
        path = folder / "photos" / f"{p.name}.png"
        if not path.exists():
            cv2.imwrite(str(path), cv2.cvtColor(load_real_photo(p), cv2.COLOR_RGB2BGR))
        paths["photos"][p.name] = path
    tag = f"{seconds:g}s"
    speech = held_out_speech(seconds, seed, corpus).audio
    paths["speech"], paths["silence"] = folder / f"speech_{tag}.wav", folder / f"silence_{tag}.wav"
    write_wav(paths["speech"], speech, 16000)
    write_wav(paths["silence"], np.zeros_like(speech), 16000)
    return paths
