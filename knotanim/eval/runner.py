"""Run KnotBench: generate the eval clips, stream each model over them, score every row the same way.

Rows of every report, for each clip:
- "ground-truth": the clip's own frames (the ceiling of each measurement; not a baseline),
- "copy-reference": the reference image copied to every frame,
- "<model>:audio-zeroed": the model (default variant) with its audio replaced by zeros,
- "<model>:<variant>": the model under each requested variant (knot / run-ahead ablations).

Memory: every row is scored in blocks of BLOCK_FRAMES frames as it streams, and the ground truth of
a long clip (the long-horizon stream, or any clip over IN_MEMORY_FRAMES frames) is rendered into a
temporary file on disk (np.memmap) and read back block by block, so a 10-minute stream
(15,000 frames, 2.9 GB at 256 px) never sits in memory. Still-head clips (head_motion 0) stream
with the model's head-motion control at 0.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from knotanim.errors import ConfigError, InputError
from knotanim.eval.report import aggregate, write_reports
from knotanim.eval.scoring import ClipScore, ClipScorer, ClipTruth
from knotanim.eval.spec import BenchSpec
from knotanim.eval.speech import EvalSpeech

# variant name -> stream(knot=..., run_ahead=...)
VARIANTS: dict[str, tuple[bool, bool]] = {
    "default": (True, True),
    "no-knot": (False, True),
    "no-run-ahead": (True, False),
    "no-knot-no-run-ahead": (False, False),
}
BLOCK_FRAMES = 25  # frames of audio pushed per call, and frames scored per block (1 s at 25 fps)
IN_MEMORY_FRAMES = 1500  # longer clips (and every long-horizon clip) keep their ground truth on disk

Progress = Callable[[str], None]


def parse_variants(text: str | Sequence[str]) -> tuple[str, ...]:
    """'default,no-knot' (or a list) -> validated variant names, in order, without repeats."""
    names = [v.strip() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise ConfigError(f"unknown variant(s) {', '.join(bad) or '(none)'}; choose from {', '.join(VARIANTS)}")
    return tuple(dict.fromkeys(names))


def load_animators(models: Iterable[Any], device: str = "auto", dtype: Any = None) -> list[tuple[str, Any]]:
    """Each of `models` (a KnotAnimator, a checkpoint folder, None for the default model, or a
    (name, one of those) pair) -> (unique display name, animator)."""
    out: list[tuple[str, Any]] = []
    for m in models:
        given_name = None
        if isinstance(m, tuple):  # an already named (name, model) pair
            given_name, m = m
        if m is None or isinstance(m, (str, Path)):
            from knotanim.animator import KnotAnimator

            anim = KnotAnimator.from_pretrained(m, device=device, dtype=dtype)
            name = "default" if m is None else Path(m).name or str(m)
        else:
            anim, name = m, getattr(m.config, "name", "model")
        name = given_name or name
        taken = {n for n, _ in out}
        base, k = name, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        out.append((name, anim))
    if not out:
        raise InputError("no model to evaluate")
    return out


def _stream_video(anim: Any, clip_truth: ClipTruth, audio: np.ndarray, scorer: ClipScorer, seed: int,
                  knot: bool, run_ahead: bool, steps: int | None) -> float:
    """Stream `audio` (float32 [n_frames * spf] at 16 kHz) through a new stream of `anim`, scoring
    frames in blocks of BLOCK_FRAMES as they come; -> seconds spent generating (push_audio + finish
    only). A still-head clip streams with head_motion=0.0 (its PSNR/SSIM assume a still head)."""
    spec, n = clip_truth.spec, clip_truth.n_frames
    head_motion = 0.0 if spec.still else float(spec.head_motion)
    stream = anim.stream(clip_truth.reference, seed=seed, head_motion=head_motion, knot=knot,
                         run_ahead=run_ahead, steps=steps)
    spf = len(audio) // n
    pending: list[np.ndarray] = []
    spent = 0.0

    def take(frames) -> None:
        pending.extend(np.asarray(f.image) for f in frames)
        while len(pending) >= BLOCK_FRAMES:
            scorer.update(np.stack(pending[:BLOCK_FRAMES]))
            del pending[:BLOCK_FRAMES]

    for a in range(0, len(audio), BLOCK_FRAMES * spf):
        t0 = time.perf_counter()
        frames = stream.push_audio(np.ascontiguousarray(audio[a : a + BLOCK_FRAMES * spf], dtype=np.float32))
        spent += time.perf_counter() - t0
        take(frames)
    t0 = time.perf_counter()
    frames = stream.finish(total_frames=n)
    spent += time.perf_counter() - t0
    take(frames)
    if pending:
        scorer.update(np.stack(pending))
    return spent


def _score_array(truth: ClipTruth, video: np.ndarray, is_truth: bool, strip: int) -> ClipScore:
    scorer = ClipScorer(truth, is_truth=is_truth, strip_frames=strip)
    for a in range(0, truth.n_frames, BLOCK_FRAMES):
        scorer.update(video[a : a + BLOCK_FRAMES])
    return scorer.result()


def run_knotbench(
    animators_or_paths: Sequence[Any] | Any,
    spec: BenchSpec,
    out_dir: str | Path | None = None,
    variants: str | Sequence[str] = ("default",),
    progress: Progress | None = None,
    *,
    device: str = "auto",
    dtype: Any = None,
    seed: int = 0,
    steps: int | None = None,
    plots: bool = True,
    corpus: Any = None,
) -> dict[str, Any]:
    """Evaluate models on `spec`; write report.json, report.md and PNG plots to `out_dir` (if given).

    animators_or_paths: a KnotAnimator / checkpoint folder / None (default model) / (name, either)
    pair, or a list of them.
    variants: names from `VARIANTS` (a comma-separated string or a list). progress: called with
    one line of text per clip and per scored (clip, row). device/dtype: for models given as paths
    ("auto": CUDA if present; dtype None: bf16 on CUDA, fp32 on CPU). seed: stream seed. steps:
    sampler steps (None: the config's). corpus: eval-split speech corpus (.npz path or SpeechCorpus,
    built by `knotanim data build-speech --split eval`; None: synthesise held-out speech with
    espeak-ng; InputError at once when neither is available). Returns the report dict (see
    `report.aggregate`).
    """
    say = progress or (lambda line: None)
    if not isinstance(animators_or_paths, (list, tuple)):
        animators_or_paths = [animators_or_paths]
    variant_names = parse_variants(variants)
    models = load_animators(animators_or_paths, device, dtype)
    cfgs = [a.config for _, a in models]
    if len({(c.frame_size, c.fps, c.audio.sample_rate) for c in cfgs}) != 1:
        raise ConfigError("models compared in one run must share frame_size, fps and audio.sample_rate")
    cfg = cfgs[0]
    speech = EvalSpeech(corpus)  # fails here, before any work, without a corpus or espeak-ng
    scratch = tempfile.TemporaryDirectory(prefix="knotbench-")  # ground truth of long clips (memmap)
    rows: dict[str, dict[str, Any]] = {}
    clips: dict[str, dict[str, ClipScore]] = {}
    meta: dict[str, dict[str, Any]] = {}
    try:
        _run_clips(spec, cfg, models, variant_names, speech, Path(scratch.name), seed, steps, say, rows, clips, meta)
    finally:
        scratch.cleanup()
    report = aggregate(spec, list(rows.values()), clips, meta,
                       {"frame_size": cfg.frame_size, "fps": cfg.fps, "chunk": cfg.stream.chunk,
                        "device": str(getattr(models[0][1], "device", device)), "seed": seed, "variants": list(variant_names),
                        "models": [n for n, _ in models]})
    if out_dir is not None:
        paths = write_reports(report, clips, Path(out_dir), plots=plots)
        report["files"] = [str(p) for p in paths]
        say(f"reports written to {out_dir}")
    return report


def frames_buffer(n_frames: int, size: int, on_disk: bool, folder: Path, name: str) -> np.ndarray:
    """uint8 [n_frames, size, size, 3] to render a clip into: in memory, or a np.memmap file in `folder`."""
    shape = (n_frames, size, size, 3)
    if not on_disk:
        return np.empty(shape, np.uint8)
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)


def _run_clips(spec, cfg, models, variant_names, speech, scratch: Path, seed, steps, say, rows, clips, meta) -> None:
    """Generate, stream and score every clip of `spec`, filling rows / clips / meta (see run_knotbench)."""
    from knotanim.data import make_clip

    def add_row(name: str, kind: str, model: str | None = None, variant: str | None = None) -> None:
        rows.setdefault(name, {"name": name, "kind": kind, "model": model, "variant": variant})

    total = len(spec.clips)
    for ci, cs in enumerate(spec.clips, 1):
        t0 = time.perf_counter()
        utterance = speech.for_clip(cs.seed, cs.n_frames / cfg.fps)
        on_disk = cs.long or cs.n_frames > IN_MEMORY_FRAMES
        buffer = frames_buffer(cs.n_frames, cfg.frame_size, on_disk, scratch, f"clip{ci}")
        clip = make_clip(cs.seed, cs.n_frames, size=cfg.frame_size, fps=cfg.fps, head_motion=cs.head_motion,
                         speech=utterance, split=cs.split, source=cs.source, frames_out=buffer)
        truth = ClipTruth.from_clip(cs, clip, cfg.stream.chunk, spec.mouth_margin, spec.drift_window_s)
        say(f"[{ci}/{total}] {cs.name}: {truth.n_frames} frames ({truth.n_frames / cfg.fps:.1f} s, "
            f"{cs.source}, head_motion {cs.head_motion}) generated in {time.perf_counter() - t0:.1f} s")
        meta[cs.name] = {"identity": getattr(clip, "identity", ""), "languages": utterance.lang, **cs.__dict__}
        scores: dict[str, ClipScore] = {}
        add_row("ground-truth", "ground-truth")
        scores["ground-truth"] = _score_array(truth, truth.frames, True, spec.strip_frames)
        add_row("copy-reference", "copy-reference")
        copied = np.broadcast_to(truth.reference, truth.frames.shape)
        scores["copy-reference"] = _score_array(truth, copied, False, spec.strip_frames)
        _say_row(say, cs.name, "ground-truth", scores["ground-truth"])
        _say_row(say, cs.name, "copy-reference", scores["copy-reference"])
        for mname, anim in models:
            chunk = anim.config.stream.chunk
            t_model = truth if chunk == truth.chunk else ClipTruth(**{**truth.__dict__, "chunk": chunk})
            runs = [(f"{mname}:{v}", "model", v, clip.audio, *VARIANTS[v]) for v in variant_names]
            runs.append((f"{mname}:audio-zeroed", "audio-zeroed", "default", np.zeros_like(clip.audio), True, True))
            for rname, kind, variant, audio, knot, run_ahead in runs:
                add_row(rname, kind, mname, variant)
                scorer = ClipScorer(t_model, strip_frames=spec.strip_frames)
                spent = _stream_video(anim, t_model, audio, scorer, seed, knot, run_ahead, steps)
                scores[rname] = scorer.result(seconds=spent)
                _say_row(say, cs.name, rname, scores[rname])
        clips[cs.name] = scores
        del clip, truth, buffer, t_model
        if on_disk:
            (scratch / f"clip{ci}.npy").unlink(missing_ok=True)


def _say_row(say: Progress, clip: str, row: str, score: ClipScore) -> None:
    s = score.scalars
    parts = [f"{k} {s[k]:.3f}" for k in ("lipsync", "envelope_corr", "psnr", "ssim", "jump_ratio", "flicker") if k in s]
    if "fps" in s:
        parts.append(f"{s['fps']:.1f} frames/s")
    say(f"    {clip:>14} | {row:<28} | " + ", ".join(parts))
