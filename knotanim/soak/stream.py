"""The stream soak: a KnotStream driven as fast as the hardware allows, sampled every --sample-seconds of stream."""
from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch

from knotanim.animator import KnotAnimator, prepare_reference
from knotanim.profiles import load_average_1min
from knotanim.soak import report as rep
from knotanim.soak.common import StopRequest, load_animator, load_reference, meta, say, sync


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
        return select_backend("auto", anim, model_path=args.model, artifacts=args.engine_dir, progress=say)
    backend = StepBackends(args.backend, anim, model_path=args.model, artifacts=args.engine_dir, progress=say)()
    return backend, f"{backend.name}: requested"



STREAM_FIELDS = ["stream_s", "stream_h", "wall_s", "realtime_x", "frames", "chunks", "rss_mb", "cuda_alloc_mb",
                 "cuda_max_mb", "cuda_reserved_mb", "gpu_used_mb", "chunk_ms_median", "chunk_ms_mean", "chunk_ms_p10",
                 "chunk_ms_p95", "chunk_ms_max", "chunk_cpu_ms", "load1", "feature_frames",
                 "audio_buffer_samples", "ring_valid_slots", "ring_mb", "ref_pos", "ref_drift", "frame_diff", "gc_objects"]


def run_stream(args, out: Path, stop: StopRequest, t0: float) -> dict:
    """The stream soak. Per chunk it measures the wall time of `push_audio` (audio features, the backend's chunk,
    the ring update, the decode and the copy of the uint8 frames to the host) and its process CPU time. The
    frames come back as numpy arrays, so the stream itself waits for the GPU once per chunk; the soak's
    `sync` after it finds nothing left to wait for and adds no stall. Per frame it computes the drift numbers
    on a <= 64x64 grid (host numpy); per sample (every --sample-seconds of stream) it reads memory and buffer
    sizes (every --gc-every samples also Python's gc objects), none of which wait for the GPU. The time spent
    outside `push_audio` is reported in the summary (soak_overhead_pct, time_in_sampling_s)."""
    anim = load_animator(args)
    cfg, dev = anim.config, anim.device
    backend, backend_reason = build_backend(args, anim)
    sync(dev)
    ref = load_reference(cfg.frame_size)
    sub = max(1, cfg.frame_size // 64)  # drift on a 64x64 pixel grid: cheap next to a GPU chunk
    ref_img = prepare_reference(ref, cfg.frame_size)[::sub, ::sub].astype(np.float32)
    spf, fps = cfg.samples_per_frame, cfg.fps
    feed = rep.SpeechFeed(cfg.audio.sample_rate, seed=args.seed)
    stream = anim.stream(ref, seed=args.seed, head_motion=0.5, backend=backend)
    print(f"soak: {stream.backend.name} backend on {dev}; setup {time.monotonic() - t0:.1f} s since the command's start",
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
    setup_s = time.monotonic() - t0
    t_start = time.perf_counter()
    while frames < target_frames and stop.reason is None:
        if args.max_wall_s and time.monotonic() - t0 > args.max_wall_s:
            stop.reason = f"--max-wall-s {args.max_wall_s:g}"
            break
        block = feed.take(push)
        c0, p0 = time.perf_counter(), time.process_time()
        out_frames = stream.push_audio(block)
        sync(dev)  # nothing left in flight: push_audio returned host frames (see the docstring)
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
