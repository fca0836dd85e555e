"""Soak test (issue #5): memory, per-chunk time, output drift and queue depths over a long stream.

  --mode stream  drives a KnotStream directly, as fast as the hardware allows, for --stream-hours
                 of stream time (default 2.0) with an endless speech-like signal (the bundled
                 speech.wav looped with random gaps and gain, seeded), sampling every
                 --sample-seconds of stream time. --backend picks the chunk backend by name, as
                 `knotanim render/live --backend` do (default auto; compiled: torch.compile with
                 CUDA graphs on a GPU); it is built, and compiled, before the stream's clock starts.
  --mode live    runs the real LivePipeline (fake microphone looping the same signal in real time,
                 recording to a fragmented mp4 in a temp dir) for --minutes, sampling every second.

Outputs in --out: soak_<mode>.csv (one row per sample), soak_<mode>.json (pass/fail checks and the
command), PNG plots. --max-wall-s (counted from the script's start: imports, model load and the
backend's compile included) or SIGTERM / Ctrl-C ends a run early; the summary then says
complete: false and the stream time reached. Examples:

  python scripts/soak.py --mode stream --tiny --stream-hours 2 --backend torch --out docs/soak/cpu_tiny
  PYTHONPATH=. python3 scripts/soak.py --mode stream --backend compiled --stream-hours 2 --device cuda \
      --max-wall-s 540 --out $OUT/soak
  python scripts/soak.py --mode live --tiny --minutes 3 --out docs/soak/cpu_tiny_live
"""
from __future__ import annotations

import argparse
import gc
import platform
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

T0 = time.monotonic()  # the script's start: --max-wall-s counts from here (torch's import, model load, compile)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soak_report as rep  # noqa: E402

from knotanim import tiny_config  # noqa: E402
from knotanim.animator import KnotAnimator, prepare_reference, resolve_device  # noqa: E402
from knotanim.config import BACKENDS  # noqa: E402
from knotanim.profiles import DTYPES, cpu_name, load_average_1min, parse_dtype  # noqa: E402


class StopRequest:
    """Why the soak was asked to stop early (a signal's name, or the wall-clock limit); None: it was not."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def on_signal(self, signum, _frame) -> None:
        self.reason = signal.Signals(signum).name


def load_animator(args) -> KnotAnimator:
    dev = resolve_device(args.device)
    if args.tiny:
        anim = KnotAnimator.from_config(tiny_config(), device=dev, seed=0)
        anim.model.randomize_zero_init(seed=1)  # outputs then depend on the inputs
        return anim
    return KnotAnimator.from_pretrained(args.model, device=dev, dtype=parse_dtype(args.dtype))


def load_reference(size: int) -> np.ndarray:
    from knotanim.frontends.image import load_image

    img = load_image(rep.ROOT / "assets" / "examples" / "avatar.png")
    h, w = img.shape[:2]
    s = min(h, w)
    return np.ascontiguousarray(img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _say(msg: str) -> None:
    print(f"backend: {msg}", file=sys.stderr, flush=True)


def build_backend(args, anim: KnotAnimator):
    """(ChunkBackend, or None for eager torch; the reason) for --backend, chosen as `knotanim render --backend`
    chooses: "auto" measures the backends that are ready (knotanim.engines.select_backend: on CUDA torch.compile
    too, compiled while it is measured); another name is built through StepBackends, which exports a missing
    artifact into --engine-dir and runs a compiled backend once on sample inputs, so torch.compile and the CUDA
    graph capture happen here, before the stream's clock starts, not in its first chunk."""
    if args.backend == "torch":
        return None, "torch: requested"
    from knotanim.engines.select import StepBackends, select_backend

    if args.backend == "auto":
        return select_backend("auto", anim, model_path=args.model, artifacts=args.engine_dir, progress=_say)
    backend = StepBackends(args.backend, anim, model_path=args.model, artifacts=args.engine_dir, progress=_say)()
    return backend, f"{backend.name}: requested"


def meta(args, anim: KnotAnimator) -> dict:
    cpu = cpu_name()
    info = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "mode": args.mode,
            "model": "tiny (random, randomize_zero_init)" if args.tiny else str(args.model or "embedded default"),
            "device": str(anim.device), "dtype": str(anim.dtype).replace("torch.", ""), "torch": torch.__version__,
            "python": platform.python_version(), "machine": f"{platform.system()} {cpu}, {torch.get_num_threads()} torch threads",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if anim.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(anim.device)
    return info


# --- stream mode ---------------------------------------------------------------------------------
STREAM_FIELDS = ["stream_s", "stream_h", "wall_s", "realtime_x", "frames", "chunks", "rss_mb", "cuda_alloc_mb",
                 "cuda_max_mb", "cuda_reserved_mb", "gpu_used_mb", "chunk_ms_median", "chunk_ms_mean", "chunk_ms_p10",
                 "chunk_ms_p95", "chunk_ms_max", "chunk_cpu_ms", "load1", "feature_frames",
                 "audio_buffer_samples", "ring_valid_slots", "ring_mb", "ref_pos", "ref_drift", "frame_diff", "gc_objects"]


def run_stream(args, out: Path, stop: StopRequest) -> dict:
    """The stream soak. Per chunk it measures the wall time of `push_audio` (audio features, the backend's chunk,
    the ring update, the decode and the copy of the uint8 frames to the host) and its process CPU time. The
    frames come back as numpy arrays, so the stream itself waits for the GPU once per chunk; the soak's
    `_sync` after it finds nothing left to wait for and adds no stall. Per frame it computes the drift numbers
    on a <= 64x64 grid (host numpy); per sample (every --sample-seconds of stream) it reads memory and buffer
    sizes (every --gc-every samples also Python's gc objects), none of which wait for the GPU. The time spent
    outside `push_audio` is reported in the summary (soak_overhead_pct, time_in_sampling_s)."""
    anim = load_animator(args)
    cfg, dev = anim.config, anim.device
    backend, backend_reason = build_backend(args, anim)
    _sync(dev)
    ref = load_reference(cfg.frame_size)
    sub = max(1, cfg.frame_size // 64)  # drift on a 64x64 pixel grid: cheap next to a GPU chunk
    ref_img = prepare_reference(ref, cfg.frame_size)[::sub, ::sub].astype(np.float32)
    spf, fps = cfg.samples_per_frame, cfg.fps
    feed = rep.SpeechFeed(cfg.audio.sample_rate, seed=args.seed)
    stream = anim.stream(ref, seed=args.seed, head_motion=0.5, backend=backend)
    print(f"soak: {stream.backend.name} backend on {dev}; setup {time.monotonic() - T0:.1f} s since the script's start",
          file=sys.stderr, flush=True)
    push = cfg.stream.chunk * spf  # one chunk of audio per push
    target_frames = int(round(args.stream_hours * 3600 * fps))
    every = max(1, int(round(args.sample_seconds * fps)))  # frames between samples
    log = rep.CsvLog(out / "soak_stream.csv", STREAM_FIELDS)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, drifts, diffs, cpu = [], [], [], []
    prev = None
    frames = chunks = 0
    gc_objects = 0
    in_push = in_samples = 0.0  # seconds inside push_audio, and in the per-sample bookkeeping
    next_sample = every
    setup_s = time.monotonic() - T0
    t_start = time.perf_counter()
    while frames < target_frames and stop.reason is None:
        if args.max_wall_s and time.monotonic() - T0 > args.max_wall_s:
            stop.reason = f"--max-wall-s {args.max_wall_s:g}"
            break
        block = feed.take(push)
        c0, p0 = time.perf_counter(), time.process_time()
        out_frames = stream.push_audio(block)
        _sync(dev)  # nothing left in flight: push_audio returned host frames (see the docstring)
        dt = time.perf_counter() - c0
        in_push += dt
        if not out_frames:
            continue
        n_chunks = max(1, len(out_frames) // cfg.stream.chunk)
        times.append(dt * 1000 / n_chunks)
        cpu.append((time.process_time() - p0) * 1000 / n_chunks)
        chunks += n_chunks
        for f in out_frames:
            img = f.image[::sub, ::sub].astype(np.float32)
            drifts.append(float(np.abs(img - ref_img).mean()))
            if prev is not None:
                diffs.append(float(np.square((img - prev) / 255.0).mean()))
            prev = img
        frames += len(out_frames)
        if frames >= next_sample:
            s0 = time.perf_counter()
            next_sample += every
            wall = s0 - t_start
            alloc, peak = rep.cuda_mb(dev)
            reserved, used = rep.cuda_extra_mb(dev)
            t = np.array(times)
            if log.count % args.gc_every == 0:  # len(gc.get_objects()) walks every object: ~40 ms at 400k
                gc_objects = len(gc.get_objects())
            log.add({"stream_s": frames / fps, "stream_h": frames / fps / 3600, "wall_s": wall,
                     "realtime_x": frames / fps / wall, "frames": frames, "chunks": chunks, "rss_mb": rep.rss_mb(),
                     "cuda_alloc_mb": alloc, "cuda_max_mb": peak, "cuda_reserved_mb": reserved, "gpu_used_mb": used,
                     "chunk_ms_median": float(np.median(t)),
                     "chunk_ms_mean": float(t.mean()), "chunk_ms_p10": float(np.percentile(t, 10)),
                     "chunk_ms_p95": float(np.percentile(t, 95)), "chunk_ms_max": float(t.max()),
                     "chunk_cpu_ms": float(np.median(cpu)), "load1": load_average_1min(), "feature_frames": len(stream._features),
                     "audio_buffer_samples": int(stream.audio._buffer.size),
                     "ring_valid_slots": int(stream.ring.valid.sum()), "ring_mb": stream.ring.nbytes() / 2**20,
                     "ref_pos": stream.loop.run_ahead.relative(stream.chunk_start),
                     "ref_drift": float(np.mean(drifts)), "frame_diff": float(np.mean(diffs)) if diffs else 0.0,
                     "gc_objects": gc_objects})
            times, drifts, diffs, cpu = [], [], [], []
            if args.progress and log.count % args.progress == 0:
                r = log.last
                print(f"stream {r['stream_s'] / 60:7.1f} min  wall {wall:7.1f} s  x{r['realtime_x']:.1f}  "
                      f"{frames / wall:.0f} frames/s  rss {r['rss_mb']:.1f} MB  chunk {r['chunk_ms_median']:.2f} ms", flush=True)
            in_samples += time.perf_counter() - s0
    log.close()
    wall = time.perf_counter() - t_start
    backend_used = str(stream.backend.name)
    run_meta = {
        **meta(args, anim), "backend": args.backend, "backend_used": backend_used, "backend_reason": backend_reason,
        "backend_fallback": getattr(stream.backend, "fallback_reason", None),
        "complete": frames >= target_frames, "stopped_by": stop.reason, "max_wall_s": args.max_wall_s,
        "setup_s": round(setup_s, 1), "stream_hours_target": args.stream_hours,
        "stream_hours_reached": round(frames / fps / 3600, 4), "frames": frames, "chunks": chunks,
        "wall_s": round(wall, 1), "frames_per_s": round(frames / wall, 1) if wall > 0 else 0.0,
        "realtime_x": round(frames / fps / wall, 2) if wall > 0 else 0.0,
        "time_in_push_audio_s": round(in_push, 2), "time_in_sampling_s": round(in_samples, 2),
        "soak_overhead_pct": round(100 * (wall - in_push) / wall, 2) if wall > 0 else 0.0,
        "samples": log.count, "sample_every_stream_s": every / fps,
        "warmup": "first 10% of the samples", "frame_size": cfg.frame_size, "chunk_frames": cfg.stream.chunk}
    if log.count < 5:  # stopped before the curves mean anything: say so in the JSON, draw nothing
        summary = rep.write_summary(out / "soak_stream.json", run_meta, [
            {"check": "enough samples for the checks (>= 5)", "samples": log.count, "pass": False}])
        print(f"only {log.count} samples: run longer or lower --sample-seconds", file=sys.stderr)
        return summary
    h = log.col("stream_h")
    checks = [rep.memory_check("process RSS", h, log.col("rss_mb"))]
    if dev.type == "cuda":
        checks.append(rep.memory_check("CUDA memory_allocated", h, log.col("cuda_alloc_mb")))
        checks.append(rep.memory_check("CUDA memory_reserved", h, log.col("cuda_reserved_mb")))
        checks.append(rep.memory_check("GPU memory in use (cudaMemGetInfo)", h, log.col("gpu_used_mb")))
    checks.append(rep.slope_check("per-chunk time (interval median)", h, log.col("chunk_ms_median")))
    # Not gating: the lower envelope (interval 10th percentile) resists other processes sharing the machine.
    checks.append({**rep.slope_check("per-chunk time, 10th percentile (information)", h, log.col("chunk_ms_p10")),
                   "pass": True, "gating": False})
    for name in ("feature_frames", "audio_buffer_samples", "ring_valid_slots", "ring_mb", "ref_pos", "gc_objects"):
        hard = float(cfg.stream.window) if name == "ring_valid_slots" else None
        if name == "gc_objects":  # Python objects: allow 1% noise around the steady maximum
            y = log.col(name)
            k = int(y.size * 0.1)
            mx, steady = float(y[k:].max()), float(y[k:k + max(1, (y.size - k) // 2)].max())
            checks.append({"check": "Python gc objects bounded", "max": mx, "steady_max": steady,
                           "limit": "max <= 1.01 x steady max", "pass": mx <= 1.01 * steady})
        else:
            checks.append(rep.bounded_check(name, log.col(name), hard_max=hard))
    checks.append(rep.drift_check("output vs reference (mean abs, 0-255)", log.col("ref_drift"), args.drift_factor))
    checks.append(rep.drift_check("frame-to-frame difference energy", log.col("frame_diff"), args.drift_factor))
    summary = rep.write_summary(out / "soak_stream.json", run_meta, checks)
    hours_label = "stream time (hours)"
    tag = f"{backend_used} backend, {dev.type}"  # in every title: which backend made the curves
    fit = next(c for c in checks if c["check"].startswith("per-chunk"))
    rep.plot(out / "soak_stream_memory.png", h, [("process RSS (MB)", log.col("rss_mb"))], hours_label, "RSS (MB)",
             f"Memory over stream time ({tag})",
             secondary=[("CUDA allocated (MB)", log.col("cuda_alloc_mb")),
                        ("CUDA max allocated (MB)", log.col("cuda_max_mb")),
                        ("CUDA reserved (MB)", log.col("cuda_reserved_mb")),
                        ("GPU in use, cudaMemGetInfo (MB)", log.col("gpu_used_mb"))]
             if dev.type == "cuda" else None)
    rep.plot(out / "soak_stream_chunk_time.png", h, [("per-chunk compute (ms, interval median)", log.col("chunk_ms_median")),
                                                     ("interval 10th percentile", log.col("chunk_ms_p10"))],
             hours_label, "ms per chunk",
             f"Per-chunk time ({tag}): slope {fit.get('slope_pct_per_hour', float('nan')):+.3f}% per hour",
             fit=(fit.get("slope_ms_per_hour", 0.0), fit.get("intercept_ms", 0.0)), fit_unit="ms per hour", roll=15,
             ylim=(0.0, 3.0 * float(np.median(log.col("chunk_ms_median")))))  # spikes from other processes clipped
    rep.plot(out / "soak_stream_drift.png", h, [("|frame - reference| (0-255)", log.col("ref_drift"))], hours_label,
             "mean abs difference", f"Output drift ({tag})", secondary=[("frame-to-frame diff energy", log.col("frame_diff"))])
    rep.plot(out / "soak_stream_buffers.png", h, [("feature buffer (frames)", log.col("feature_frames")),
                                                  ("ring valid slots", log.col("ring_valid_slots")),
                                                  ("reference run-ahead (frames)", log.col("ref_pos"))],
             hours_label, "size", f"Stream buffers ({tag})",
             secondary=[("audio buffer (samples)", log.col("audio_buffer_samples"))])
    return summary


# --- live mode -----------------------------------------------------------------------------------
class GeneratedFrames:
    """Frames the live pipeline's streams generated so far, across GPU out-of-memory fallbacks.

    A fallback drops `pipe.stream` (None for a moment) and makes a new stream that counts from 0, so
    the count is kept per stream: the frames of the streams before the current one, plus the current
    one's `frames_emitted`. Frames a failed stream made after the last reading are not counted."""

    def __init__(self):
        self.earlier = 0  # frames of the streams before `self.stream`
        self.stream = None
        self.current = 0  # self.stream.frames_emitted at the last reading

    def read(self, pipe) -> int:
        stream = pipe.stream  # read once: the inference thread may replace it meanwhile
        if stream is not None and stream is not self.stream:
            self.earlier += self.current
            self.stream, self.current = stream, 0
        if stream is not None:
            self.current = stream.frames_emitted
        return self.earlier + self.current


LIVE_FIELDS = ["wall_s", "rss_mb", "cuda_alloc_mb", "cuda_max_mb", "queue_depth", "recorder_queue", "segments",
               "frames_generated", "ticks", "dropped", "drained", "repeated", "latency_s", "fps_shown", "fps_generated", "rtf",
               "recorded_frames", "camera_queue",
               "camera_frames", "gc_objects"]


def live_backends(args, anim: KnotAnimator):
    """Live mode's StepBackends for --backend (None: eager torch), chosen as `knotanim live --model` chooses:
    measured at start, auto with --tiny and torch eager. The ladder's step counts are built here, before
    the pipeline starts."""
    from knotanim.cli.live import backends_for_model

    return backends_for_model(argparse.Namespace(backend=args.backend, tiny=args.tiny, model=args.model,
                                                 remeasure=True, steps=None), anim)


def run_live(args, out: Path, stop: StopRequest) -> dict:
    from knotanim.live import ArraySource, LiveOptions, LivePipeline
    from knotanim.live.outputs import FrameSlot, RecorderOutput, VirtualCameraOutput

    class NullCamera:  # the pyvirtualcam interface, discarding frames
        device = "null"

        def send(self, image):
            pass

        def close(self):
            pass

    class NullCameraOutput(VirtualCameraOutput):  # the real output's thread, queue and letterboxing
        def __init__(self):
            self.width, self.height, self.camera, self.device, self.frames = 1280, 720, NullCamera(), "null", 0
            super(VirtualCameraOutput, self).__init__(queue_items=2)

    anim = load_animator(args)
    cfg, dev = anim.config, anim.device
    feed = rep.SpeechFeed(cfg.audio.sample_rate, seed=args.seed)
    loop_audio = feed.take(int(60 * cfg.audio.sample_rate))  # one minute of varied speech, looped
    source = ArraySource(loop_audio, cfg.audio.sample_rate, loop=True, name="soak fake microphone")
    backends = live_backends(args, anim)
    pipe = LivePipeline(anim, load_reference(cfg.frame_size), source, LiveOptions(seed=args.seed, backend=backends))
    tmp = tempfile.TemporaryDirectory(prefix="knotanim-soak-")
    rec = RecorderOutput(Path(tmp.name) / "soak.mp4", pipe.ring, pipe.fps, pipe.spf)
    ticks = {"n": 0}
    slot = FrameSlot()
    pipe.add_output(slot)
    pipe.add_output(rec)
    cam = {"none": None, "null": NullCameraOutput, "real": VirtualCameraOutput}[args.vcam]
    cam = cam() if cam else None
    if cam is not None:
        pipe.add_output(cam)
    log = rep.CsvLog(out / "soak_live.csv", LIVE_FIELDS)
    generated = GeneratedFrames()
    t0 = time.monotonic()
    pipe.start()
    end = t0 + args.minutes * 60
    error = None
    backend_used = None  # the running stream's backend, read while it runs (a GPU fallback may change it)
    samples_per_rung: dict[str, int] = {}  # the quality ladder's rung at each sample (LiveStats.profile)
    try:
        while time.monotonic() < end and stop.reason is None:
            time.sleep(args.sample_seconds)
            s = pipe.stats()
            backend_used = pipe.backend_name
            samples_per_rung[s.profile] = samples_per_rung.get(s.profile, 0) + 1
            ticks["n"] = slot.received
            alloc, peak = rep.cuda_mb(dev)
            log.add({"wall_s": time.monotonic() - t0, "rss_mb": rep.rss_mb(), "cuda_alloc_mb": alloc, "cuda_max_mb": peak,
                     "queue_depth": len(pipe.queue), "recorder_queue": len(rec.queue),
                     "segments": len(getattr(pipe, "_segments", ())), "frames_generated": generated.read(pipe),
                     "ticks": slot.received, "dropped": s.dropped,
                     "drained": getattr(pipe, "drained", 0), "repeated": s.repeated,
                     "latency_s": s.latency if s.latency is not None else float("nan"), "fps_shown": s.fps_shown,
                     "fps_generated": s.fps_generated, "rtf": s.rtf if s.rtf is not None else float("nan"),
                     "recorded_frames": rec.frames,
                     "camera_queue": len(cam.queue) if cam else 0, "camera_frames": cam.frames if cam else 0, "gc_objects": len(gc.get_objects())})
            if s.error:
                error = s.error
                break
            if args.progress and log.count % (args.progress * 6) == 0:
                r = log.last
                print(f"live {r['wall_s']:6.0f} s  q {r['queue_depth']}  lat {r['latency_s']:.3f} s  "
                      f"fps {r['fps_shown']:.1f}  drop {r['dropped']}  rep {r['repeated']}  rss {r['rss_mb']:.1f}", flush=True)
    finally:
        pipe.stop()
        log.close()
    recording = probe(Path(tmp.name) / "soak.mp4")
    tmp.cleanup()
    w = log.col("wall_s") / 60
    k = int(w.size * 0.1)
    shown = log.col("fps_shown")[k:]
    checks = [rep.memory_check("process RSS", w, log.col("rss_mb"))]
    if dev.type == "cuda":
        checks.append(rep.memory_check("CUDA memory_allocated", w, log.col("cuda_alloc_mb")))
    checks += [rep.bounded_check("frame queue depth", log.col("queue_depth"), hard_max=float(pipe.queue.maxsize), slack=2),
               rep.bounded_check("recorder queue depth", log.col("recorder_queue"), hard_max=float(rec.queue.maxsize), slack=5),
               rep.bounded_check("camera queue depth", log.col("camera_queue"), hard_max=2.0, slack=2),
               rep.bounded_check("push segments", log.col("segments"), slack=2),
               rep.drift_check("latency", log.col("latency_s"), args.drift_factor, upper_only=True),
               {"check": "frames shown at the model's fps", "mean_fps_after_warmup": round(float(shown.mean()), 3),
                "limit": f">= {0.96 * pipe.fps:g}", "pass": bool(shown.mean() >= 0.96 * pipe.fps)},
               {"check": "no pipeline error", "error": error, "pass": error is None},
               {"check": "recording decodes, audio/video within 0.2 s", **recording,
                "pass": bool(recording.get("video_s") and abs(recording["video_s"] - recording["audio_s"]) < 0.2)}]
    last = log.last
    summary = rep.write_summary(out / "soak_live.json", {
        **meta(args, anim), "complete": stop.reason is None and error is None, "stopped_by": stop.reason,
        "backend": args.backend, "backend_used": backend_used, "samples_per_rung": samples_per_rung,
        # every rung change, also those too short for a sample to see (the controller at the end: a GPU
        # memory fallback starts a new one)
        "ladder_steps_down": pipe.controller.steps_down, "ladder_steps_up": pipe.controller.steps_up,
        "minutes_target": args.minutes,
        "minutes_reached": round(float(w[-1]), 3), "samples": log.count,
        "frames_generated": last["frames_generated"], "frames_shown": last["ticks"], "dropped": last["dropped"],
        "repeated": last["repeated"], "median_latency_s": round(float(np.nanmedian(log.col("latency_s"))), 4),
        "virtual_camera": args.vcam, "camera_frames": last["camera_frames"], "recorded_frames": last["recorded_frames"],
        "gpu_memory_fallbacks": list(pipe.memory_fallbacks), "device_at_end": str(pipe.animator.device),
        "warmup": "first 10% of the samples"}, checks)
    rep.plot(out / "soak_live_memory.png", w, [("process RSS (MB)", log.col("rss_mb"))], "wall time (minutes)", "RSS (MB)",
             "Live pipeline memory")
    rep.plot(out / "soak_live_queues.png", w, [("frame queue", log.col("queue_depth")),
                                               ("recorder queue", log.col("recorder_queue")),
                                               ("camera queue", log.col("camera_queue")),
                                               ("push segments", log.col("segments"))], "wall time (minutes)", "items",
             "Live queue depths", secondary=[("dropped (cumulative)", log.col("dropped")),
                                            ("repeated (cumulative)", log.col("repeated"))])
    rep.plot(out / "soak_live_latency.png", w, [("latency audio->frame sent (s)", log.col("latency_s"))],
             "wall time (minutes)", "seconds", "Live latency and rate", roll=15,
             secondary=[("fps shown", log.col("fps_shown"))])
    return summary


def probe(path: Path) -> dict:
    """Durations of the recording's video and audio streams (seconds), decoded with PyAV."""
    import av

    if not path.is_file():
        return {"error": "no recording"}
    out = {"bytes": path.stat().st_size}
    with av.open(str(path)) as c:
        for kind in ("video", "audio"):
            st = [s for s in c.streams if s.type == kind]
            if st:
                n = sum(1 for _ in c.decode(st[0])) if kind == "video" else None
                out[f"{kind}_frames"] = n
                c.seek(0)
        v = [s for s in c.streams if s.type == "video"][0]
        out["video_s"] = out["video_frames"] / float(v.average_rate or 25)
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(a))
        out["audio_s"] = samples / a.rate
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("stream", "live"), default="stream")
    p.add_argument("--stream-hours", type=float, default=2.0, help="stream mode: hours of stream time")
    p.add_argument("--minutes", type=float, default=3.0, help="live mode: minutes of real time")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the embedded default model)")
    p.add_argument("--tiny", action="store_true", help="tiny random model (tiny_config + randomize_zero_init)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="the model's dtype (auto: bf16 on CUDA, float32 on a CPU, as knotanim loads a model it was "
                        "not told to measure; bfloat16: lite on a CPU with native bf16, as the start-up choice picks it)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="chunk backend, as in `knotanim render/live` (auto: the fastest of those ready, "
                        "torch.compile included on CUDA; torch: eager; compiled: torch.compile, CUDA graphs on a GPU; "
                        "onnxruntime/tensorrt/aoti: exported first when missing). Built before the stream starts")
    p.add_argument("--engine-dir", default=None,
                   help="stream mode: where exported backends are kept (default: knotanim's cache folder)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-seconds", type=float, default=None,
                   help="stream: stream seconds between samples (default 10); live: wall seconds (default 1)")
    p.add_argument("--max-wall-s", type=float, default=None,
                   help="stream mode: stop once this many wall seconds have passed since the script started "
                        "(imports, model load and the backend's build/compile count), then write every output")
    p.add_argument("--vcam", choices=("none", "null", "real"), default="null",
                   help="live mode: virtual camera output (null: the real output class with a discarding camera)")
    p.add_argument("--drift-factor", type=float, default=1.5)
    p.add_argument("--gc-every", type=int, default=6,
                   help="stream mode: count Python's gc objects every N samples (rows between repeat the last "
                        "count); the count walks every object, tens of ms with torch.compile loaded")
    p.add_argument("--progress", type=int, default=30, help="print every N samples (0: quiet)")
    args = p.parse_args(argv)
    args.gc_every = max(1, args.gc_every)
    if args.sample_seconds is None:
        args.sample_seconds = 10.0 if args.mode == "stream" else 1.0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGINT, stop.on_signal)
    torch.manual_seed(args.seed)
    summary = run_stream(args, out, stop) if args.mode == "stream" else run_live(args, out, stop)
    for c in summary["checks"]:
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['check']}")
    print(f"{'complete' if summary['complete'] else 'PARTIAL'}; all checks pass: {summary['all_pass']}; outputs in {out}")
    return 0 if summary["all_pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
