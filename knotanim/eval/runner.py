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
with the model's head-motion control at 0. On CUDA a worker thread scores each block while the GPU
generates the next (`score_in_thread`): the same scores in the same order, without scoring's ~10 ms
a frame adding to a fast backend's wall time.

Backend (`backend=`, `knotanim eval --backend`): every model stream runs its chunks on one backend
of `knotanim.engines` ("torch": eager, the default; "compiled", "onnxruntime", "tensorrt", "aoti",
"auto"). `EvalBackends` builds one per (model, static ChunkStep variant: knot on/off, sampler
steps), compiles/exports and warms it up before the first clip, and hands the same object to every
stream of that variant (every clip, the long stream, the audio-zeroed row; run-ahead on/off share
it: the reference position is an input, not a shape). That is safe because a backend keeps no
stream state: the reference cache, history ring, knot and positions are the stream's own tensors,
passed in at every chunk, and every backend returns fresh output tensors (CUDA graphs: cloned out
of the graph's buffers). frames/s therefore never includes compile or export time; the report
names the backend each row actually ran on ("compiled->torch" when compilation failed).
"""
from __future__ import annotations

import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from knotanim.config import BACKENDS
from knotanim.errors import BackendUnavailable, ConfigError, InputError
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
WARMUP_CHUNKS = 3  # chunks a warm-up stream runs through a new backend (compile; CUDA graphs: warm-up, record, replay)
BLOCK_FRAMES = 25  # frames of audio pushed per call, and frames scored per block (1 s at 25 fps)
SCORE_AHEAD = 4  # blocks a scoring thread may still hold while the stream generates (see score_in_thread)
IN_MEMORY_FRAMES = 1500  # longer clips (and every long-horizon clip) keep their ground truth on disk
REFERENCE_ROWS = ("ground-truth", "copy-reference", "audio-zeroed")  # rows beside the model variants

Progress = Callable[[str], None]


def parse_reference_rows(text: str | Sequence[str]) -> tuple[str, ...]:
    """Which of REFERENCE_ROWS to score: a comma-separated string or a list; "none" or empty: none."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["none"]:
        return ()
    bad = [n for n in names if n not in REFERENCE_ROWS]
    if bad:
        raise ConfigError(f"unknown reference row(s) {', '.join(bad)}; choose from {', '.join(REFERENCE_ROWS)} or none")
    return tuple(n for n in REFERENCE_ROWS if n in names)


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


class EvalBackends:
    """The chunk backend of every model stream of a run: one per (model, static ChunkStep variant).

    name: a `knotanim.engines` backend name ("torch": eager torch, exactly as before backends
    existed: `get` returns None and the stream makes its own). Any other name is built with
    `engines.select_backend` (exporting a missing ONNX graph / TensorRT engine / AOTInductor
    package into `artifacts`, default the knotanim cache) and warmed up by a short silent stream
    (`WARMUP_CHUNKS` chunks) before the first clip, so compile, export and CUDA-graph capture stay
    out of every row's frames/s. Variants with the same shapes (the same knot setting and sampler
    steps; run-ahead is an input value) share one backend. `build(name, animator, knot, steps,
    model_path)` -> (backend, reason) replaces select_backend (tests).
    """

    def __init__(self, name: str = "torch", *, artifacts: str | Path | None = None, progress: Progress | None = None,
                 build: Callable[..., tuple[Any, str]] | None = None):
        if name not in BACKENDS:
            raise BackendUnavailable(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
        self.name, self.artifacts = name, artifacts
        self.say = progress or (lambda line: None)
        self._build = build or self._select
        self._backends: dict[tuple[int, str], Any] = {}
        self.entries: dict[tuple[int, str], dict[str, Any]] = {}  # what each built backend is (see `summary`)

    def _select(self, name: str, anim: Any, knot: bool, steps: int | None, model_path: Any) -> tuple[Any, str]:
        from knotanim.engines.select import select_backend

        return select_backend(name, anim, knot=knot, steps=steps, model_path=model_path, artifacts=self.artifacts,
                              progress=self.say)

    @staticmethod
    def variant_tag(anim: Any, knot: bool, steps: int | None) -> str:
        """The static ChunkStep variant a stream runs (e.g. "chunk_step-knot1-steps2-b1"): the reuse key."""
        from knotanim.engines.descriptors import chunk_step_descriptor

        return chunk_step_descriptor(anim.config, knot=knot, steps=steps).tag

    def prepare(self, mname: str, anim: Any, knot: bool, steps: int | None, model_path: Any = None) -> Any:
        """Build and warm up the backend for this variant unless it exists; -> it (None: eager torch)."""
        key = (id(anim), self.variant_tag(anim, knot, steps))
        if key in self.entries:
            return self._backends[key]
        entry = {"model": mname, "variant": key[1], "knot": "knot1" in key[1],
                 "steps": int(steps or anim.config.sampler.steps), "requested": self.name, "name": "torch",
                 "reason": "eager torch (default)", "prepare_s": 0.0}
        backend = None
        if self.name != "torch":
            t0 = time.perf_counter()
            backend, entry["reason"] = self._build(self.name, anim, knot, steps, model_path)
            try:
                _warm_up(anim, backend, knot, steps)
            except Exception as e:  # noqa: BLE001 - e.g. CUDA-graph capture failing after the compile succeeded
                fall_back = getattr(backend, "_fall_back", None)  # CompiledTorchBackend: eager, said out loud
                if fall_back is None or backend.name != "compiled":
                    raise
                fall_back(e)
                _warm_up(anim, backend, knot, steps)
            entry["prepare_s"] = round(time.perf_counter() - t0, 2)
            entry["name"] = str(getattr(backend, "name", self.name))
            fallback = getattr(backend, "fallback_reason", None)
            if fallback:
                entry["reason"] = fallback
            self.say(f"backend for {mname} ({key[1]}): {entry['name']}, ready in {entry['prepare_s']:.1f} s "
                     f"({entry['reason']})")
        self._backends[key], self.entries[key] = backend, entry
        return backend

    def get(self, mname: str, anim: Any, knot: bool, steps: int | None) -> Any:
        """The backend a stream of this variant runs on (prepared on first use; None: eager torch)."""
        return self.prepare(mname, anim, knot, steps)

    @staticmethod
    def used_name(backend: Any) -> str:
        """The name of what a stream actually ran on (after its run: a fallback shows, "compiled->torch")."""
        return "torch" if backend is None else str(getattr(backend, "name", "?"))

    def summary(self) -> str:
        """One line naming the backend(s) actually used: "torch", "compiled", "compiled->torch" (compilation
        failed: eager), "onnxruntime[CPU]", "torch (requested auto)", or "name (model variant)" for each
        variant when they differ."""
        for key, entry in self.entries.items():  # refreshed: a backend may fall back after it was prepared
            entry["name"] = self.used_name(self._backends[key])
        names = list(dict.fromkeys(e["name"] for e in self.entries.values())) or [self.name]
        if len(names) == 1:
            text = names[0]
        else:
            text = "; ".join(f"{e['name']} ({e['model']} {e['variant']})" for e in self.entries.values())
        return text if all(n.startswith(self.name) for n in names) else f"{text} (requested {self.name})"

    def info(self) -> dict[str, Any]:
        return {"backend": self.summary(), "backend_requested": self.name,
                "backend_prepare_s": round(sum(e["prepare_s"] for e in self.entries.values()), 2),
                "backends": [dict(e) for e in self.entries.values()]}


def _warm_up(anim: Any, backend: Any, knot: bool, steps: int | None) -> None:
    """Run WARMUP_CHUNKS chunks of silence on a grey portrait through `backend` (compiles it, captures CUDA
    graphs) with exactly the tensors a real stream passes (dtypes, shapes), then wait for the device."""
    cfg = anim.config
    size = cfg.frame_size
    stream = anim.stream(np.full((size, size, 3), 128, np.uint8), seed=0, head_motion=0.5, knot=knot, steps=steps,
                         backend=backend)
    n = WARMUP_CHUNKS * cfg.stream.chunk
    stream.push_audio(np.zeros(n * cfg.samples_per_frame, np.float32))
    stream.finish(total_frames=n)
    from knotanim.engines.base import synchronize

    synchronize(anim.device)


def score_in_thread(anim: Any) -> bool:
    """Score in a worker thread while generating? Where the model runs on CUDA: there the CPU is free
    while the GPU generates, and scoring (numpy, ~10 ms a frame at 256 px, SSIM mostly) would otherwise
    add to every frame of a fast backend. On a CPU, scoring and generation share the cores: in line."""
    return getattr(getattr(anim, "device", None), "type", "cpu") == "cuda"


def _stream_video(anim: Any, clip_truth: ClipTruth, audio: np.ndarray, scorer: ClipScorer, seed: int,
                  knot: bool, run_ahead: bool, steps: int | None, backend: Any = None) -> float:
    """Stream `audio` (float32 [n_frames * spf] at 16 kHz) through a new stream of `anim`, scoring
    frames in blocks of BLOCK_FRAMES as they come; -> seconds spent generating (push_audio + finish
    only). A still-head clip streams with head_motion=0.0 (its PSNR/SSIM assume a still head).
    backend: a ChunkBackend built for this knot/steps variant (see EvalBackends), None: eager torch.
    Where `score_in_thread(anim)`, a worker thread scores the blocks in order while the stream
    generates the next ones (at most SCORE_AHEAD behind): the same scores, less wall time."""
    spec, n = clip_truth.spec, clip_truth.n_frames
    head_motion = 0.0 if spec.still else float(spec.head_motion)
    stream = anim.stream(clip_truth.reference, seed=seed, head_motion=head_motion, knot=knot,
                         run_ahead=run_ahead, steps=steps, backend=backend)
    spf = len(audio) // n
    pending: list[np.ndarray] = []
    spent = 0.0
    worker = ThreadPoolExecutor(1, thread_name_prefix="knotbench-score") if score_in_thread(anim) else None
    queued: deque[Future] = deque()

    def score(block: np.ndarray) -> None:
        if worker is None:
            scorer.update(block)
            return
        queued.append(worker.submit(scorer.update, block))  # one worker: blocks are scored in order
        while len(queued) > SCORE_AHEAD:
            queued.popleft().result()  # re-raises a scoring error here

    def take(frames) -> None:
        pending.extend(np.asarray(f.image) for f in frames)
        while len(pending) >= BLOCK_FRAMES:
            score(np.stack(pending[:BLOCK_FRAMES]))
            del pending[:BLOCK_FRAMES]

    try:
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
            score(np.stack(pending))
        while queued:
            queued.popleft().result()
    finally:
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)
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
    backend: str | EvalBackends = "torch",
    engine_dir: str | Path | None = None,
    reference_rows: str | Sequence[str] = REFERENCE_ROWS,
) -> dict[str, Any]:
    """Evaluate models on `spec`; write report.json, report.md and PNG plots to `out_dir` (if given).

    animators_or_paths: a KnotAnimator / checkpoint folder / None (default model) / (name, either)
    pair, or a list of them.
    variants: names from `VARIANTS` (a comma-separated string or a list). progress: called with
    one line of text per clip and per scored (clip, row). device/dtype: for models given as paths
    ("auto": CUDA if present; dtype None: bf16 on CUDA, fp32 on CPU). seed: stream seed. steps:
    sampler steps (None: the config's). corpus: eval-split speech corpus (.npz path or SpeechCorpus,
    built by `knotanim data build-speech --split eval`; None: synthesise held-out speech with
    espeak-ng; InputError at once when neither is available). backend: a `knotanim.engines` name
    ("torch": eager, the default; "compiled", "onnxruntime", "tensorrt", "aoti", "auto") or an
    EvalBackends; one backend per (model, knot/steps variant) is built, warmed up before the first
    clip (its time is not in frames/s) and reused by every stream of that variant; engine_dir: where
    exported graphs/engines live (default: the knotanim cache). reference_rows: which of REFERENCE_ROWS
    to score (all by default; fewer splits a long run over processes, each scoring some rows).
    Returns the report dict (see `report.aggregate`; info["backend"] names the backend actually used).
    """
    say = progress or (lambda line: None)
    if not isinstance(animators_or_paths, (list, tuple)):
        animators_or_paths = [animators_or_paths]
    variant_names = parse_variants(variants)
    refs = parse_reference_rows(reference_rows)
    backends = (backend if isinstance(backend, EvalBackends)
                else EvalBackends(backend, artifacts=engine_dir, progress=say))
    models = load_animators(animators_or_paths, device, dtype)
    cfgs = [a.config for _, a in models]
    if len({(c.frame_size, c.fps, c.audio.sample_rate) for c in cfgs}) != 1:
        raise ConfigError("models compared in one run must share frame_size, fps and audio.sample_rate")
    cfg = cfgs[0]
    speech = EvalSpeech(corpus)  # fails here, before any work, without a corpus or espeak-ng
    # Every backend the run needs, built and warmed up now: errors before any clip, compile time outside frames/s.
    zeroed = [VARIANTS["default"][0]] if "audio-zeroed" in refs else []
    knots = dict.fromkeys([VARIANTS[v][0] for v in variant_names] + zeroed)
    for (mname, anim), source in zip(models, animators_or_paths):
        for knot in knots:
            backends.prepare(mname, anim, knot, steps, _model_path(source))
    scratch = tempfile.TemporaryDirectory(prefix="knotbench-")  # ground truth of long clips (memmap)
    rows: dict[str, dict[str, Any]] = {}
    clips: dict[str, dict[str, ClipScore]] = {}
    meta: dict[str, dict[str, Any]] = {}
    try:
        _run_clips(spec, cfg, models, variant_names, speech, Path(scratch.name), seed, steps, say, rows, clips, meta,
                   backends, refs)
    finally:
        scratch.cleanup()
    report = aggregate(spec, list(rows.values()), clips, meta,
                       {"frame_size": cfg.frame_size, "fps": cfg.fps, "chunk": cfg.stream.chunk,
                        "device": str(getattr(models[0][1], "device", device)), "seed": seed,
                        "variants": list(variant_names), "reference_rows": list(refs),
                        "models": [n for n, _ in models], "speech": speech.describe(), **backends.info()})
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


def _model_path(source: Any) -> Path | None:
    """The checkpoint folder a model was given as (for the backends' artifact cache keys), else None."""
    if isinstance(source, tuple):
        source = source[1]
    if source is None:
        from knotanim.animator import default_model_path

        return default_model_path()
    return Path(source) if isinstance(source, (str, Path)) else None


def _run_clips(spec, cfg, models, variant_names, speech, scratch: Path, seed, steps, say, rows, clips, meta,
               backends: EvalBackends | None = None, refs: Sequence[str] = REFERENCE_ROWS) -> None:
    """Generate, stream and score every clip of `spec`, filling rows / clips / meta (see run_knotbench)."""
    from knotanim.data import make_clip

    backends = backends or EvalBackends("torch")

    def add_row(name: str, kind: str, model: str | None = None, variant: str | None = None) -> None:
        rows.setdefault(name, {"name": name, "kind": kind, "model": model, "variant": variant, "backend": None})

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
        if "ground-truth" in refs:
            add_row("ground-truth", "ground-truth")
            scores["ground-truth"] = _score_array(truth, truth.frames, True, spec.strip_frames)
            _say_row(say, cs.name, "ground-truth", scores["ground-truth"])
        if "copy-reference" in refs:
            add_row("copy-reference", "copy-reference")
            copied = np.broadcast_to(truth.reference, truth.frames.shape)
            scores["copy-reference"] = _score_array(truth, copied, False, spec.strip_frames)
            _say_row(say, cs.name, "copy-reference", scores["copy-reference"])
        for mname, anim in models:
            chunk = anim.config.stream.chunk
            t_model = truth if chunk == truth.chunk else ClipTruth(**{**truth.__dict__, "chunk": chunk})
            runs = [(f"{mname}:{v}", "model", v, clip.audio, *VARIANTS[v]) for v in variant_names]
            if "audio-zeroed" in refs:
                runs.append((f"{mname}:audio-zeroed", "audio-zeroed", "default", np.zeros_like(clip.audio),
                             *VARIANTS["default"]))
            for rname, kind, variant, audio, knot, run_ahead in runs:
                add_row(rname, kind, mname, variant)
                scorer = ClipScorer(t_model, strip_frames=spec.strip_frames)
                backend = backends.get(mname, anim, knot, steps)
                spent = _stream_video(anim, t_model, audio, scorer, seed, knot, run_ahead, steps, backend=backend)
                rows[rname]["backend"] = backends.used_name(backend)
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
