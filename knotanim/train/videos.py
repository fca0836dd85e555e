"""Training batches from a folder of real talking-head videos (one speaker per file).

`VideoClips` yields the same items as `GeneratedClips` (knotanim.train.data):
  frames    uint8 [T, S, S, 3]     face crops, S = config.frame_size, at config.fps
  reference uint8 [S, S, 3]        a frame from another time of the same video, same crop box
  audio     float32 [T, n_mels, W] per-frame log-mel windows (AudioFeatures.clip_features)
  motion    float32 []             head-motion intensity estimated from the window, in [0, 1]

The folder is indexed once (recursively: *.mp4, *.mkv, *.mov, *.webm; each probed with PyAV for a
video and an audio track, duration and frame rate); files that cannot be read, lack a track or are
too short are skipped and counted (`VideoIndex.skipped`, one warning).

One item, for a window of T frames starting at time t0 (seconds, on the video's timeline):
* video: output frame i is the decoded frame whose timestamp is nearest to t0 + i / fps (so any
  source frame rate is resampled to config.fps, duplicating or dropping frames);
* audio: the samples of [t0, t0 + T / fps), resampled to 16 kHz mono (mean of the channels, as in
  knotanim.frontends.audio_io), so frame i covers samples [i * spf, (i + 1) * spf) exactly as in
  the generated clips;
  Timing comes from the container's timestamps (edit lists honoured), so a fragmented mp4 without
  an edit list (e.g. knotanim's own renders) reads its AAC encoder priming as ~21 ms of extra delay;
* crop: faces are detected on the window's first frame (the largest face; OpenCV Haar cascades),
  and ONE crop box (CropConfig of the model config, eyes levelled) serves every frame of the window
  and the reference. No face, or a face smaller than crop.min_face_pixels: the centred square;
* reference: the frame nearest to a random time at least REF_GAP_S away from the window (the far
  end of the video when no such time exists), so the model must copy appearance, not the frame;
* motion: see `motion_intensity`.

Videos are drawn with probability proportional to their duration. Seeds never repeat across
ranks, workers or steps (the GeneratedClips rule): seed = base + (i * world + rank) * workers + worker.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from knotanim.config import KnotAnimConfig
from knotanim.errors import ConfigError
from knotanim.frontends.audio_features import AudioFeatures
from knotanim.frontends.audio_io import clean_samples
from knotanim.frontends.face import centre_crop, detect_faces, eye_angle, face_crop_for_box, mouth_area_box, warp_to_crop
from knotanim.train.config import DataConfig

EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm")
REF_GAP_S = 0.5  # the reference is at least this far (seconds) from the window when the video allows
MOTION_SIZE = 64  # side (pixels) of the grey crops the optical flow runs on
CHANGE_LEVELS = 1.0  # grey levels (after blur) a pixel must change by for its flow to count
MOTION_FULL_SCALE = 0.0028  # mean flow (crop sides per second) that counts as motion 1.0 (see motion_intensity)
MAX_FAILURES = 64  # consecutive unreadable windows before VideoClips gives up


@dataclass(frozen=True)
class VideoEntry:
    """One usable video: path, duration (s), source frame rate (frames/s)."""

    path: str
    duration: float
    fps: float


@dataclass(frozen=True)
class VideoIndex:
    """The usable videos of a folder, and what was skipped (count and one reason per file)."""

    entries: tuple[VideoEntry, ...]
    skipped: int
    reasons: tuple[str, ...]


def probe_video(path: str | Path) -> VideoEntry:
    """Duration and frame rate of a file with a video and an audio track; ValueError if unusable."""
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot open ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    try:
        if not container.streams.video:
            raise ValueError("no video track")
        if not container.streams.audio:
            raise ValueError("no audio track")
        v = container.streams.video[0]
        rate = v.guessed_rate or v.average_rate or v.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if not duration or duration <= 0:  # unknown in the header: read the packet timestamps
            last = [float(p.pts * p.time_base) for p in container.demux(v) if p.pts is not None]
            duration = (max(last) + 1.0 / fps) if last and fps > 0 else 0.0
        if fps <= 0 or duration <= 0:
            raise ValueError("unknown frame rate or duration")
        return VideoEntry(str(path), float(duration), fps)
    finally:
        container.close()


def index_folder(folder: str | Path, min_seconds: float) -> VideoIndex:
    """Find and probe every video under `folder`; keep those of at least `min_seconds`."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"data.video_folder {str(folder)!r} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    entries, reasons = [], []
    for p in files:
        try:
            e = probe_video(p)
        except ValueError as err:
            reasons.append(f"{p}: {err}")
            continue
        if e.duration < min_seconds:
            reasons.append(f"{p}: {e.duration:.2f} s, shorter than the {min_seconds:.2f} s needed")
            continue
        entries.append(e)
    return VideoIndex(tuple(entries), len(reasons), tuple(reasons))


def _nearest_frames(container, t_targets: np.ndarray) -> list[np.ndarray]:
    """RGB uint8 [H, W, 3] frames nearest in time to each of the increasing times `t_targets` (s)."""
    v = container.streams.video[0]
    first = float(t_targets[0])
    container.seek(max(0, int(first / v.time_base)), stream=v, backward=True, any_frame=False)
    out: list[np.ndarray] = []
    prev_t, prev_img, prev_frame = -math.inf, None, None
    for frame in container.decode(v):
        if frame.pts is None:
            continue
        ft = float(frame.time)
        img = None
        while len(out) < len(t_targets) and ft >= t_targets[len(out)]:
            tgt = t_targets[len(out)]
            if prev_frame is not None and tgt - prev_t <= ft - tgt:
                prev_img = prev_img if prev_img is not None else prev_frame.to_ndarray(format="rgb24")
                out.append(prev_img)
            else:
                img = img if img is not None else frame.to_ndarray(format="rgb24")
                out.append(img)
        if len(out) == len(t_targets):
            break
        prev_t, prev_frame, prev_img = ft, frame, img
    if prev_frame is None and not out:
        raise ValueError("no video frame decoded")
    while len(out) < len(t_targets):  # past the last frame: hold it
        prev_img = prev_img if prev_img is not None else prev_frame.to_ndarray(format="rgb24")
        out.append(prev_img)
    return out


def _audio_window(container, t0: float, n_samples: int, rate: int) -> np.ndarray:
    """float32 [n_samples] mono at `rate` Hz starting at time t0 (s); zeros where the track has none."""
    import av

    a = container.streams.audio[0]
    container.seek(max(0, int((t0 - 0.1) / a.time_base)), stream=a, backward=True, any_frame=False)
    resampler, start, chunks, got = None, None, [], 0
    for frame in container.decode(a):
        if resampler is None:
            resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
        if start is None:
            if frame.pts is None:
                continue
            start = float(frame.time)
        for f in resampler.resample(frame):
            x = f.to_ndarray().astype(np.float32, copy=False)
            chunks.append(x.reshape(-1, x.shape[-1]).mean(axis=0))  # mono = mean of the channels
            got += chunks[-1].size
        if start + got / rate >= t0 + n_samples / rate:
            break
    out = np.zeros(n_samples, np.float32)
    if start is None:
        return out
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    offset = int(round((t0 - start) * rate))  # index in `data` of the window's first sample
    lo, hi = max(0, offset), min(data.size, offset + n_samples)
    if hi > lo:
        out[lo - offset : hi - offset] = data[lo:hi]
    return clean_samples(out)


def mouth_mask(size: int, face_scale: float, face_center_y: float) -> np.ndarray:
    """bool [size, size]: True OUTSIDE `mouth_area_box`."""
    x0, y0, x1, y1 = mouth_area_box(size, face_scale, face_center_y)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return ~inside


def motion_intensity(frames: np.ndarray, fps: float, face_scale: float = 2.2, face_center_y: float = 0.48) -> float:
    """Head-motion intensity of a window, in [0, 1].

    frames: uint8 [T, S, S, 3] face crops at `fps`. The crops are turned grey, shrunk to MOTION_SIZE
    and blurred (3 x 3 Gaussian); dense optical flow (Farneback) from the first frame to each later
    frame t, divided by t, is a speed per pixel. Pixels whose grey level changed by at most
    CHANGE_LEVELS count as still (Farneback invents flow on flat areas; this also absorbs sensor and
    compression noise). The mean speed outside the mouth area (`mouth_mask`: speech moves the mouth,
    not the head), background included, in crop sides per second, divided by MOTION_FULL_SCALE and
    clipped to [0, 1], is the intensity. Fewer than 2 frames: 0.

    Calibration (256 px synthetic clips of 13 frames, 10-12 seeds each): mean speed 0, 0.0003,
    0.0011, 0.0022, 0.0028 sides/s at the generator's head_motion 0, 0.2, 0.5, 0.8, 1.0, i.e.
    intensity about 0, 0.1, 0.4, 0.8, 1.0 (monotone, not linear); Gaussian noise of 2 grey levels on
    every pixel changes it by < 2%. The generator's heads move slowly, so most real talking-head
    footage reads near 1: the scale is the generator's, which is what the model's control means.
    """
    if len(frames) < 2:
        return 0.0
    grey = [cv2.GaussianBlur(cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY),
                                        (MOTION_SIZE, MOTION_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32),
                             (3, 3), 0) for f in frames]
    grey8 = [np.clip(g + 0.5, 0, 255).astype(np.uint8) for g in grey]
    keep = mouth_mask(MOTION_SIZE, face_scale, face_center_y)
    speeds = []
    for t in range(1, len(grey)):
        flow = cv2.calcOpticalFlowFarneback(grey8[0], grey8[t], None, 0.5, 3, 9, 3, 5, 1.1, 0)
        changed = np.abs(grey[t] - grey[0]) > CHANGE_LEVELS
        speeds.append(float((np.hypot(flow[..., 0], flow[..., 1]) * changed)[keep].mean()) / t)
    sides_per_second = float(np.mean(speeds)) * fps / MOTION_SIZE
    return float(np.clip(sides_per_second / MOTION_FULL_SCALE, 0.0, 1.0))


class VideoClips(IterableDataset):
    """An endless stream of training items cut from the videos of `data_cfg.video_folder`, for one rank.

    request: a knotanim.train.data.ClipRequest (n_frames T, rank, world, base_seed). index: an
    already built VideoIndex (default: built here, once, in the constructing process).
    """

    def __init__(self, model_cfg: KnotAnimConfig, data_cfg: DataConfig, request, index: VideoIndex | None = None):
        self.model_cfg, self.data_cfg, self.request = model_cfg, data_cfg, request
        if not data_cfg.video_folder and index is None:
            raise ConfigError("data.source is 'videos' but data.video_folder is empty")
        self.window_s = request.n_frames / model_cfg.fps
        self.index = index or index_folder(data_cfg.video_folder, self.window_s + 1.0 / model_cfg.fps)
        if self.index.skipped:
            warnings.warn(f"{self.index.skipped} video file(s) under {data_cfg.video_folder} skipped, e.g. "
                          f"{self.index.reasons[0]}", stacklevel=2)
        if not self.index.entries:
            raise ConfigError(f"no usable video (with audio, at least {self.window_s:.2f} s long) under "
                              f"{data_cfg.video_folder!r} ({self.index.skipped} skipped)")
        d = np.array([e.duration for e in self.index.entries])
        self._weights = d / d.sum()

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rq, dc = self.request, self.data_cfg
        features = AudioFeatures(self.model_cfg)
        bad: set[int] = set()
        i, failures = 0, 0
        while True:
            seed = rq.base_seed + dc.seed_offset + ((i * rq.world + rq.rank) * n_workers + worker)
            i += 1
            rng = np.random.default_rng([seed, 0x766964])
            try:
                item, _ = self.sample(rng, features, bad)
            except (ValueError, OSError, RuntimeError) as e:
                failures += 1
                if failures >= MAX_FAILURES:
                    raise RuntimeError(f"{failures} video windows in a row could not be read; last: {e}") from None
                continue
            failures = 0
            yield item

    def sample(self, rng: np.random.Generator, features: AudioFeatures | None = None,
               bad: set[int] | None = None, at: tuple[int, float] | None = None) -> tuple[dict, dict]:
        """One item (the batch dict of one clip) and facts about it: {"path", "t0" (s), "t_ref" (s),
        "face" (bool: a face was detected)}. at: (entry index, t0 in seconds) to cut a chosen window
        instead of a random one (the reference time stays random). Raises ValueError when the chosen
        file cannot be read (its index goes into `bad`, which later draws avoid)."""
        import av

        cfg, T = self.model_cfg, self.request.n_frames
        features = features or AudioFeatures(cfg)
        bad = set() if bad is None else bad
        w = self._weights.copy()
        if bad:
            w[list(bad)] = 0.0
            if w.sum() <= 0:
                raise ValueError("every video failed to decode")
            w /= w.sum()
        k = int(rng.choice(len(w), p=w)) if at is None else int(at[0])
        entry = self.index.entries[k]
        last = max(0.0, entry.duration - 1.0 / entry.fps)  # time of the last frame
        t0 = float(rng.uniform(0.0, max(0.0, entry.duration - self.window_s))) if at is None else float(at[1])
        t_ref = _reference_time(rng, t0, self.window_s, last)
        times = t0 + np.arange(T) / cfg.fps
        try:
            with av.open(entry.path, mode="r") as container:
                container.streams.video[0].thread_type = "AUTO"
                frames = _nearest_frames(container, times)
                (ref,) = _nearest_frames(container, np.array([t_ref]))
                audio = _audio_window(container, t0, T * cfg.samples_per_frame, cfg.audio.sample_rate)
        except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
            bad.add(k)
            raise ValueError(f"{entry.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        fc, face = self._crop_box(frames[0])
        crops = np.stack([warp_to_crop(f, fc) for f in frames])
        item = {
            "frames": crops,
            "reference": warp_to_crop(ref, fc),
            "audio": features.clip_features(audio, T),
            "motion": np.float32(motion_intensity(crops, cfg.fps, cfg.crop.face_scale, cfg.crop.face_center_y)),
            # no landmarks here: the crop geometry's mouth area stands in for the mouth box
            "mouth_box": np.tile(mouth_area_box(cfg.frame_size, cfg.crop.face_scale, cfg.crop.face_center_y), (T, 1)),
        }
        return item, {"path": entry.path, "t0": t0, "t_ref": t_ref, "face": face}

    def _crop_box(self, image: np.ndarray):
        """(FaceCrop for the window, whether a face was found): largest detected face, else the centre."""
        cfg = self.model_cfg
        faces = detect_faces(image)
        if faces and min(faces[0].w, faces[0].h) >= cfg.crop.min_face_pixels:
            box = faces[0]
            return face_crop_for_box(image.shape, box, cfg.crop, cfg.frame_size, eye_angle(image, box)), True
        return centre_crop(image.shape, cfg.frame_size), False


def _reference_time(rng: np.random.Generator, t0: float, window_s: float, last: float) -> float:
    """A time in [0, last] at least REF_GAP_S from the window [t0, t0 + window_s]; the farther end of
    the video when no such time exists."""
    left = max(0.0, t0 - REF_GAP_S)  # length of [0, t0 - gap]
    lo_right = t0 + window_s + REF_GAP_S
    right = max(0.0, last - lo_right)
    if left + right <= 0.0:
        return 0.0 if t0 > last - (t0 + window_s) else last
    u = float(rng.uniform(0.0, left + right))
    return u if u < left else lo_right + (u - left)
