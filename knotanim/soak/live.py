"""The live soak: the real LivePipeline fed by a fake microphone in real time, recording to a file."""
from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import numpy as np

from knotanim.animator import KnotAnimator
from knotanim.soak import report as rep
from knotanim.soak.common import StopRequest, load_animator, load_reference, meta


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
    from knotanim.profiles import backend_for_model

    bc = backend_for_model(anim, args.backend, model=args.model, tiny=args.tiny, remeasure=True,
                           progress=lambda m: print(m, flush=True))
    return None if bc is None else bc.backends


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
                     "segments": len(pipe.pushes), "frames_generated": generated.read(pipe),
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
