"""KnotBench's real-photo set: animate real photographs with held-out speech, judge every frame with
dlib's face models (`knotanim.eval.judge`), beside two reference rows.

    knotanim eval --real-photos --model lite --seconds 60 --out rp_lite     # render here, then judge
    knotanim eval --real-photos --judge-videos DIR --out rp_gpu             # judge mp4s rendered elsewhere

Rows, for each photo (`knotanim.eval.photo_set`):
- "photo copy": the photo copied to every frame (the ceiling of identity and sharpness; its mouth
  never moves). COPY_FRAMES frames are scored: they are all the same.
- "generator": the data generator's warped-photo animation of the same photo (`make_clip`, source
  "photo", 256 x 256, still head), with the same held-out speech, in the mildest of its random looks
  (`mildest_generator_look`); only for a photo the generator knows (not the derived variants), at
  most GENERATOR_MAX_S seconds.
- each model: `knotanim render` of the photo (still head, seed 0, pasted back into the photo) with
  the held-out speech, and the same render with the audio zeroed (its mouth scored against the
  speech it did not hear: a mouth that moves without listening shows there).

A folder of videos to judge holds `<photo>.mp4` (rendered with the speech, which its audio track
carries) and `<photo>.audio-zeroed.mp4` (rendered with the same length of silence; scored against
the speech of `<photo>.mp4`, or of `speech=`/`--speech`). `<photo>` is a name of the set.
Long streams: the identity descriptor (~0.3 s a frame on this CPU) runs on at most
IDENTITY_FRAMES frames spread evenly over a stream; detection, landmarks and sharpness on every frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from knotanim.errors import InputError
from knotanim.eval.judge import FaceJudge, FrameScores, PhotoFace
from knotanim.eval.photo_set import RealPhoto, held_out_speech, load_real_photo, write_inputs
from knotanim.eval.speech import EvalSpeech

ROW_COPY = "photo copy"
ROW_GENERATOR = "generator"
ZEROED = ".audio-zeroed"  # file-name suffix of a stream rendered with its audio zeroed
COPY_FRAMES = 50
GENERATOR_MAX_S = 60.0
GENERATOR_LOOKS = 8  # generator seeds tried for its mildest look (see mildest_generator_look)
IDENTITY_FRAMES = 300
STRIP_SECONDS = (1.0, 10.0, 60.0)  # frames kept for the strip (after the photo itself)
MOUTH_LAGS = range(-2, 3)  # frames the mouth may lag (+) or lead (-) the audio envelope
SAMPLE_RATE = 16000

Progress = Callable[[str], None]


@dataclass
class StreamResult:
    """One judged stream: model ("" for a reference row), photo and row names; summary (see
    `summarise`); per_second: identity / sharpness / found, 1-s medians (means for found);
    strip: seconds -> uint8 [H, W, 3] frame kept for the strip."""

    model: str
    photo: str
    row: str
    summary: dict
    per_second: dict = field(default_factory=dict)
    strip: dict = field(default_factory=dict)


def video_info(path: str | Path) -> tuple[float, int]:
    """(frames per second, frame count) of the first video stream of `path`; InputError if unreadable."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video track")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            n = int(stream.frames or 0)
            if n == 0:  # the container does not say: count
                n = sum(1 for _ in container.decode(video=0))
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: not a video ffmpeg can read ({str(e).splitlines()[0]})") from None
    if fps <= 0:
        raise InputError(f"{path}: the video has no frame rate")
    return fps, n


def video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of `path` as uint8 [H, W, 3] RGB, in order."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def check_length(path, fps: float, n_frames: int) -> None:
    """InputError when a stream is shorter than one second (too short for any of the measurements)."""
    if n_frames < fps:
        raise InputError(f"{path}: {n_frames} frames ({n_frames / fps:.2f} s) is shorter than a second; "
                         f"the judge needs at least 1 s of video")


def mouth_envelope_r(lip_opening: np.ndarray, envelope: np.ndarray) -> tuple[float, int]:
    """(best Pearson r, its lag in frames) of lip opening [T] against the audio's RMS envelope [T] over
    MOUTH_LAGS (lag > 0: the mouth follows the audio); frames without a face are left out."""
    from knotanim.eval.metrics import pearson

    best = (-2.0, 0)
    n = min(len(lip_opening), len(envelope))
    for lag in MOUTH_LAGS:
        a = lip_opening[max(lag, 0):n + min(lag, 0)]
        b = envelope[max(-lag, 0):n - max(lag, 0)]
        r = pearson(a, b)
        best = max(best, (r, lag))
    return best


def _median(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")


def summarise(scores: FrameScores, envelope: np.ndarray | None, fps: float) -> tuple[dict, dict]:
    """(summary, per_second) of a judged stream.

    summary: frames, seconds, identity_median / identity_max (over frames with a descriptor),
    sharpness (median ratio to the photo), found (fraction of frames with a face), mouth_r and
    mouth_lag (None without an envelope), lip_range (5th to 95th percentile of lip opening, fraction
    of face height: how far the mouth moves), jitter_pct (median rigid-landmark motion, % of face
    height per frame), window_s and first_window / last_window (identity and sharpness medians over
    the first and last window: 60 s, or a fifth of a shorter stream)."""
    n = len(scores)
    lips = scores.lip_opening[np.isfinite(scores.lip_opening)]
    ident = scores.identity[np.isfinite(scores.identity)]
    window = max(1, int(min(60.0 * fps, n / 5)))
    summary = {
        "frames": n, "seconds": n / fps,
        "identity_median": _median(scores.identity), "identity_max": float(ident.max()) if len(ident) else float("nan"),
        "sharpness": _median(scores.sharpness), "found": float(scores.found.mean()) if n else 0.0,
        "lip_range": float(np.percentile(lips, 95) - np.percentile(lips, 5)) if len(lips) else float("nan"),
        "jitter_pct": 100 * _median(scores.jitter), "mouth_r": None, "mouth_lag": None, "window_s": window / fps,
        "first_window": {"identity": _median(scores.identity[:window]), "sharpness": _median(scores.sharpness[:window])},
        "last_window": {"identity": _median(scores.identity[-window:]), "sharpness": _median(scores.sharpness[-window:])},
    }
    if envelope is not None:
        summary["mouth_r"], summary["mouth_lag"] = mouth_envelope_r(scores.lip_opening, envelope)
    step = max(1, int(round(fps)))
    per_second = {k: [(_median(v[i:i + step]) if k != "found" else float(v[i:i + step].mean())) for i in range(0, n, step)]
                  for k, v in (("identity", scores.identity), ("sharpness", scores.sharpness), ("found", scores.found))}
    return summary, per_second


def _kept(frames, fps: float, strip: dict) -> Iterator[np.ndarray]:
    """Pass frames through, keeping those at STRIP_SECONDS in `strip`."""
    wanted = {int(round(s * fps)): s for s in STRIP_SECONDS}
    for i, f in enumerate(frames):
        if i in wanted:
            strip[wanted[i]] = f
        yield f


def judge_stream(judge: FaceJudge, photo_face: PhotoFace, frames, n_frames: int, fps: float, speech: np.ndarray | None,
                 model: str, photo: str, row: str) -> StreamResult:
    """Judge n_frames frames (an array or an iterator of uint8 [H, W, 3]) at `fps` against the photo;
    speech: float32 16-kHz samples the mouth is scored against (None: no mouth score)."""
    from knotanim.eval.metrics import envelope

    every = max(1, -(-n_frames // IDENTITY_FRAMES))
    strip: dict = {}
    scores = judge.score_frames(_kept(frames, fps, strip), photo_face, identity_every=every)
    env = None
    if speech is not None:
        env = envelope(speech, int(round(SAMPLE_RATE / fps)), len(scores))
    summary, per_second = summarise(scores, env, fps)
    summary["identity_every"] = every
    return StreamResult(model, photo, row, summary, per_second, strip)


def judge_video(judge: FaceJudge, photo_face: PhotoFace, path: Path, speech: np.ndarray | None, model: str, photo: str,
                row: str) -> StreamResult:
    """Judge one mp4 (InputError when unreadable or shorter than a second)."""
    fps, n = video_info(path)
    check_length(path, fps, n)
    return judge_stream(judge, photo_face, video_frames(path), n, fps, speech, model, photo, row)


def video_speech(path: Path, speech: np.ndarray | None) -> np.ndarray:
    """The speech a stream is scored against: for `<photo>.audio-zeroed.mp4`, `<photo>.mp4`'s audio
    track, else `speech`; for any other video, its own audio track."""
    from knotanim.frontends.audio_io import load_audio

    if path.name.endswith(ZEROED + ".mp4"):
        sibling = path.with_name(path.name[:-len(ZEROED + ".mp4")] + ".mp4")
        if sibling.exists():
            return load_audio(sibling, SAMPLE_RATE)
        if speech is None:
            raise InputError(f"{path}: rendered with its audio zeroed, and neither {sibling.name} nor --speech gives "
                             f"the speech to score its mouth against")
        return speech
    return load_audio(path, SAMPLE_RATE)


def videos_in(folder: str | Path, photos: tuple[RealPhoto, ...]) -> list[tuple[RealPhoto, Path]]:
    """(photo, mp4) pairs of a judge folder for the selected photos (other mp4s are left alone);
    InputError when the folder holds none of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of videos to judge")
    by_name = {p.name: p for p in photos}
    pairs, others = [], []
    for path in sorted(folder.glob("*.mp4")):
        stem = path.name[:-len(ZEROED + ".mp4")] if path.name.endswith(ZEROED + ".mp4") else path.stem
        (pairs.append((by_name[stem], path)) if stem in by_name else others.append(path.name))
    if not pairs:
        raise InputError(f"{folder}: no <photo>.mp4 of the selected photos ({', '.join(sorted(by_name))}); "
                         f"it holds {', '.join(others) or 'no mp4'}")
    return pairs


def render_streams(name: str, animator, photos: tuple[RealPhoto, ...], inputs: dict, folder: Path, say: Progress) -> Path:
    """Render every photo with the speech and with silence (`knotanim.render.render_to_file`, still head,
    seed 0) into folder/<photo>.mp4 and folder/<photo>.audio-zeroed.mp4; existing files are kept."""
    from knotanim.render import RenderOptions, render_to_file

    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        for audio, target in ((inputs["speech"], folder / f"{p.name}.mp4"), (inputs["silence"], folder / f"{p.name}{ZEROED}.mp4")):
            if not target.exists():
                s = render_to_file(animator, inputs["photos"][p.name], audio, target,
                                   options=RenderOptions(head_motion=0.0, seed=0))
                say(s.line())
                with open(folder / "render_times.txt", "a") as log:  # as scripts/real_photo_renders.sh keeps it
                    log.write(f"{name} {p.name} {'silence' if target.name.endswith(ZEROED + '.mp4') else 'speech'} "
                              f"{s.video_seconds:g}s: {s.elapsed:.0f} s\n")
    return folder


def mildest_generator_look(photo: RealPhoto, fps: int = 25, size: int = 256, seeds: int = GENERATOR_LOOKS) -> int:
    """The seed (0..seeds-1) whose generated look of `photo` (the generator draws a colour transform,
    grain and sometimes blur per clip) is closest to the photo itself (mean absolute difference of
    the neutral reference frame to the photo cropped the same way): the generator at its cleanest.
    Each look comes from a one-frame clip with one frame of speech, which draws its random numbers
    as a clip whose speech fills it exactly (`generator_row`'s) does, so it has the same look."""
    from knotanim.config import CropConfig
    from knotanim.data.clips import make_clip
    from knotanim.data.photo import PHOTOS, crop_affine
    from knotanim.data.speech import Utterance

    one_frame = Utterance(np.zeros(SAMPLE_RATE // fps, np.float32), np.zeros(1, np.float32), np.zeros(1, np.int16), 0.0)
    info = PHOTOS[photo.shipped_as]
    a = crop_affine(info["box"], size, CropConfig())
    ideal = cv2.warpAffine(load_real_photo(photo.shipped_as), a, (size, size), flags=cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
    split = "train" if photo.split == "train" else "eval"
    errors = [np.abs(make_clip(seed, 1, size=size, fps=fps, head_motion=0.0, speech=one_frame, split=split,
                               source="photo", augment_audio=False).reference - ideal).mean() for seed in range(seeds)]
    return int(np.argmin(errors))


def generator_row(judge: FaceJudge, photo: RealPhoto, face: PhotoFace, seconds: float, fps: int, seed: int,
                  corpus) -> StreamResult | None:
    """The data generator's warped-photo animation of `photo`, still head, in its mildest look (None for a
    derived or user photo, which it does not know); `seed` picks the held-out speech."""
    from knotanim.data.clips import make_clip

    if photo.derived or not photo.shipped_as:
        return None
    seconds = min(seconds, GENERATOR_MAX_S)
    speech = held_out_speech(seconds, seed, corpus)
    n = int(round(seconds * fps))
    look = mildest_generator_look(photo, fps)
    clip = make_clip(look, n, fps=fps, head_motion=0.0, speech=speech, split="train" if photo.split == "train" else "eval",
                     source="photo", augment_audio=False)
    result = judge_stream(judge, face, clip.frames, n, fps, clip.audio, "", photo.name, ROW_GENERATOR)
    result.summary["generator_seed"] = look
    return result


def machine_description() -> str:
    """CPU model and count, torch and dlib versions: where a report's judging ran."""
    import os
    import platform

    import dlib
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}, dlib {dlib.__version__}"


def run_real_photos(photos: tuple[RealPhoto, ...], out: str | Path, *, models=(), video_dirs=(), seconds: float = 10.0,
                    seed: int = 0, corpus=None, speech_path: str | Path | None = None, plots: bool = True,
                    say: Progress = print) -> dict:
    """Judge the real-photo set and write out/report.json, out/report.md and plots.

    models: (name, KnotAnimator) pairs, rendered here into out/videos/<name>/; video_dirs: (name,
    folder) pairs of already rendered videos. Returns the report dict."""
    from knotanim.eval.real_photo_report import write_real_photo_report

    out = Path(out)
    if not models and not video_dirs:
        raise InputError("nothing to judge: give a model or a folder of videos (--judge-videos)")
    speech = None
    if speech_path is not None:
        from knotanim.frontends.audio_io import load_audio

        speech = load_audio(speech_path, SAMPLE_RATE)
    judged = [(name, videos_in(folder, photos)) for name, folder in video_dirs]  # checked before any rendering
    judge = FaceJudge()
    faces = {p.name: judge.photo_face(load_real_photo(p), p.name) for p in photos}  # each must hold a face, first
    if models:
        inputs = write_inputs(out / "inputs", photos, seconds, seed, corpus)
        for name, anim in models:
            judged.append((name, videos_in(render_streams(name, anim, photos, inputs, out / "videos" / name, say), photos)))
    results: list[StreamResult] = []
    for p in photos:
        face = faces[p.name]
        results.append(judge_stream(judge, face, [face.image] * COPY_FRAMES, COPY_FRAMES, 25.0, None, "", p.name, ROW_COPY))
        say(f"{p.name}: {ROW_COPY} judged")
        lengths = [n / fps for fps, n in (video_info(path) for _, pairs in judged for q, path in pairs if q is p)]
        try:
            gen = generator_row(judge, p, face, max(lengths, default=seconds), 25, seed, corpus)
        except InputError as e:  # no held-out speech here (neither espeak-ng nor an eval corpus)
            gen = None
            say(f"{p.name}: {ROW_GENERATOR} row left out: {e}")
        if gen is not None:
            results.append(gen)
            say(f"{p.name}: {ROW_GENERATOR} judged ({gen.summary['frames']} frames)")
    for name, pairs in judged:
        for p, path in pairs:
            row = "audio zeroed" if path.name.endswith(ZEROED + ".mp4") else "speech"
            results.append(judge_video(judge, faces[p.name], path, video_speech(path, speech), name, p.name, row))
            say(f"{name} {p.name} {row}: judged {path}")
    info = {"seconds": seconds, "seed": seed, "judged_on": machine_description(), "models": [n for n, _ in models],
            "video_dirs": [str(f) for _, f in video_dirs], "speech_file": str(speech_path or ""),
            "render_times": {name: (pairs[0][1].parent / "render_times.txt").read_text().splitlines()
                             for name, pairs in judged if (pairs[0][1].parent / "render_times.txt").exists()}}
    try:
        info["speech"] = EvalSpeech(corpus).describe()  # of the generator row and of the streams rendered here
    except InputError:
        info["speech"] = {"source": "the videos' own audio tracks"}
    return write_real_photo_report(results, photos, out, plots=plots, faces=faces, info=info)
