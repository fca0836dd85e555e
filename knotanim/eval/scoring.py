"""Scoring one video (one row of one clip) against a clip's ground truth, block by block.

`ClipTruth` holds what every row of a clip is scored against; `ClipScorer` takes the video in
blocks of frames, in order (so a 10-minute stream never sits in memory), keeps per-frame series,
and summarises them with `knotanim.eval.metrics`. Every row (ground truth, copy-reference,
audio-zeroed, each model and variant) goes through this same code, so their numbers compare.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from knotanim.eval import metrics as M
from knotanim.eval.spec import ClipSpec

# Per-frame series a scorer keeps, and the scalar each becomes (mean over frames).
SERIES = ("openness", "psnr", "ssim", "psnr_mouth", "ssim_mouth", "appearance_ssim", "jump_energy", "flicker")


@dataclass
class ClipTruth:
    """What every row of one clip is scored against.

    frames: uint8 [T, H, W, 3] ground truth (for a photo clip: the generator's frames, not trusted
    as targets). reference: uint8 [H, W, 3]. boxes: [T, 4] px measurement boxes (mouth boxes of
    one size following the mouth, `metrics.measurement_boxes`). true_open: [T] ground-truth
    mouth_open (None without ground truth). env: [T] audio RMS per frame. mouth_crop: one pixel box
    holding every mouth box (for mouth PSNR/SSIM). static: bool [H, W], the face outside the mouth
    (appearance SSIM, flicker). ref_box: the mouth box of the reference (still pose). chunk: frames per
    chunk. window: frames per time window for drift. fps: frames per second.
    """

    spec: ClipSpec
    frames: np.ndarray
    reference: np.ndarray
    boxes: np.ndarray
    true_open: np.ndarray | None
    env: np.ndarray
    mouth_crop: tuple[int, int, int, int]
    static: np.ndarray
    ref_box: np.ndarray
    chunk: int
    window: int
    fps: int

    @classmethod
    def from_clip(cls, spec: ClipSpec, clip, chunk: int, margin: float, window_s: float) -> "ClipTruth":
        """Build from a `knotanim.data.Clip` (frames, audio, reference, params, fps)."""
        frames = np.asarray(clip.frames)
        t, h, w = frames.shape[:3]
        raw = np.asarray(clip.params["mouth_box"], dtype=np.float64).reshape(-1, 4)[:t]
        boxes = M.measurement_boxes(raw, margin)
        spf = len(clip.audio) // t
        crop = M.union_box(raw, h, w, margin=0.1)
        window = max(2, min(int(round(window_s * clip.fps)), t // 2))
        true_open = np.asarray(clip.params["mouth_open"], dtype=np.float64)[:t] if spec.has_ground_truth else None
        return cls(
            spec=spec, frames=frames, reference=np.asarray(clip.reference), boxes=boxes, true_open=true_open,
            env=M.envelope(clip.audio, spf, t), mouth_crop=crop,
            static=M.box_mask(M.union_box(boxes, h, w), h, w, inside=False),
            ref_box=_reference_box(spec, boxes), chunk=chunk, window=window,
            fps=int(clip.fps),
        )

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def sample_indices(self, count: int) -> list[int]:
        """`count` frame indices spread evenly over the clip (for the sample strips)."""
        return sorted({int(round(i)) for i in np.linspace(0, self.n_frames - 1, max(1, count))})


@dataclass
class ClipScore:
    """One row's result on one clip: scalars (JSON-ready floats), per-frame series, sample frames."""

    scalars: dict[str, float]
    series: dict[str, np.ndarray]
    over_time: dict[str, list[float]]
    samples: dict[int, np.ndarray] = field(default_factory=dict)


class ClipScorer:
    """Score one video against a `ClipTruth`, fed in order with `update(block)`.

    is_truth: the video is the ground truth itself (no comparison with itself; its lip-sync is the
    metric's ceiling). seconds: generation time, for frames/s (None for rows that are not generated).
    """

    def __init__(self, truth: ClipTruth, is_truth: bool = False, strip_frames: int = 8) -> None:
        self.truth = truth
        self.is_truth = is_truth
        self.count = 0
        self._tail = np.zeros((0,) + truth.frames.shape[1:], dtype=np.uint8)  # last 2 frames seen
        self._series: dict[str, list[np.ndarray]] = {k: [] for k in SERIES}
        self._want = set(truth.sample_indices(strip_frames))
        self.samples: dict[int, np.ndarray] = {}

    @property
    def compares_to_truth(self) -> bool:
        """PSNR/SSIM against ground truth apply: exact targets on a still head, not the truth itself."""
        s = self.truth.spec
        return s.has_ground_truth and s.still and not self.is_truth

    def update(self, block: np.ndarray) -> None:
        """Score the next frames: uint8 [n, H, W, 3] (frames count..count+n-1 of the clip)."""
        block = np.asarray(block)
        n = min(len(block), self.truth.n_frames - self.count)
        if n <= 0:
            return
        block = block[:n]
        tr, idx = self.truth, slice(self.count, self.count + n)
        if block.shape[1:] != tr.frames.shape[1:]:
            raise ValueError(f"frames are {block.shape[1:]}, the clip's are {tr.frames.shape[1:]}")
        add = self._series
        add["openness"].append(M.mouth_openness(block, tr.boxes[idx], tr.reference, tr.ref_box))
        if self.compares_to_truth:
            gt = tr.frames[idx]
            add["psnr"].append(M.psnr_frames(block, gt))
            add["ssim"].append(M.ssim_frames(block, gt))
            mouth, gt_mouth = M.crop(block, tr.mouth_crop), M.crop(gt, tr.mouth_crop)
            add["psnr_mouth"].append(M.psnr_frames(mouth, gt_mouth))
            add["ssim_mouth"].append(M.ssim_frames(mouth, gt_mouth))
        ref = np.broadcast_to(tr.reference, block.shape)
        add["appearance_ssim"].append(M.ssim_frames(block, ref, mask=tr.static))
        ext = np.concatenate([self._tail, block])
        add["jump_energy"].append(M.frame_diff_energy(ext[max(0, len(self._tail) - 1):]))
        add["flicker"].append(M.second_diff_energy(ext, tr.static))
        for i in self._want & set(range(self.count, self.count + n)):
            self.samples[i] = block[i - self.count].copy()
        self._tail = ext[-2:].copy()
        self.count += n

    def result(self, seconds: float | None = None) -> ClipScore:
        """Summarise: scalars, series and per-window values (see `knotanim.eval.report.METRICS`)."""
        tr = self.truth
        s = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in self._series.items()}
        if self.is_truth and tr.true_open is not None:
            s["true_open"] = tr.true_open[: self.count]
        sc: dict[str, float] = {"frames": float(self.count)}
        if tr.true_open is not None:
            sc["lipsync"] = M.lipsync_correlation(s["openness"], tr.true_open)
        sc["envelope_corr"] = M.pearson(s["openness"], tr.env)
        for k in ("psnr", "ssim", "psnr_mouth", "ssim_mouth"):
            if len(s[k]):
                sc[k] = float(np.mean(s[k]))
        sc["appearance_ssim"] = _nanmean(s["appearance_ssim"])
        # jump_energy[t] is the transition into frame t+1 (the first entry starts the clip at frame 0)
        sc["jump_ratio"] = M.jump_ratio_from_energy(s["jump_energy"], tr.chunk, 0)
        sc["flicker"] = _nanmean(s["flicker"])
        if seconds is not None and seconds > 0:
            sc["fps"] = self.count / seconds
        over = self._over_time(s)
        if len(over["appearance_ssim"]) >= 2:
            d = M.drift_ratio(over["appearance_ssim"][0], over["appearance_ssim"][-1])
            sc["appearance_drift_pct"] = d["change_pct"]
        return ClipScore(scalars=sc, series=s, over_time=over, samples=dict(self.samples))

    def _over_time(self, s: dict[str, np.ndarray]) -> dict[str, list[float]]:
        """Each metric per time window of `truth.window` frames (lip-sync and jump ratio recomputed
        inside each window)."""
        tr, w = self.truth, self.truth.window
        out: dict[str, list[float]] = {"start_s": []}
        for k in ("psnr", "ssim", "psnr_mouth", "ssim_mouth", "appearance_ssim", "flicker"):
            if len(s[k]):
                out[k] = M.window_means(s[k], w).tolist()
        n_win = len(M.window_means(s["openness"], w))
        lips, envc, jump = [], [], []
        for i in range(n_win):
            a, b = i * w, min((i + 1) * w, self.count)
            if tr.true_open is not None:
                lips.append(M.lipsync_correlation(s["openness"][a:b], tr.true_open[a:b]))
            envc.append(M.pearson(s["openness"][a:b], tr.env[a:b]))
            e0 = max(0, a - 1)  # jump_energy index of the transition into frame a
            jump.append(M.jump_ratio_from_energy(s["jump_energy"][e0 : b - 1], tr.chunk, e0))
            out["start_s"].append(a / tr.fps)
        if lips:
            out["lipsync"] = lips
        out["envelope_corr"], out["jump_ratio"] = envc, jump
        return out


def _reference_box(spec: ClipSpec, boxes: np.ndarray) -> np.ndarray:
    """Where the mouth sits in the reference (the still pose): the first box of a still clip, else
    the median box (the head moves around its still pose)."""
    return boxes[0].copy() if spec.still else np.median(boxes, axis=0)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else math.nan
