#!/usr/bin/env python
"""Where a stream chunk's time goes: the five stages of KnotStream._run_chunk, timed one by one.

Streams --chunks chunks (after --warmup chunks) of one KnotStream, one chunk of random audio per
push_audio, on --backend (built through knotanim.engines, as `knotanim render --backend` builds it),
twice over the same stream:

  pass 1, un-instrumented: push_audio timed as a whole (wall and process CPU), nothing added, no
          synchronisation (push_audio returns host frames, so it has waited for the GPU already);
          plus the process CPU of each thread (Linux /proc), to see who burns the CPU.
  pass 2, instrumented: timing wrappers set on the stream's instances (its audio features' `pop`,
          its `_run_chunk`, its loop's `advance`, its backend's `run`, the decoder the stream uses: the
          backend's `decode` when it has one, else the animator's), each
          stage bracketed by torch.cuda.synchronize on CUDA; removed afterwards. knotanim is unchanged.
  pass 3, --trace N (default 0: off): N more un-instrumented chunks under torch.profiler (CPU activity, and
          CUDA activity on a GPU), each push in a record_function range. Per chunk: kernel launches (CPU-side
          cudaLaunchKernel* / cuLaunchKernel* calls; kernels replayed inside a CUDA graph are not launched one
          by one), cudaGraphLaunch calls, GPU kernels and their summed time, GPU busy time (the union of kernel
          and copy spans) as a fraction of the wall time, the CUDA API calls, and the top 10 CPU ops by self
          CPU time. On the CPU it reports the CPU ops and says there is no CUDA activity.

Compile diagnostics (always, in the table's footer and the JSON's "compile"): what torch._dynamo.utils.counters
gained over the run (graphs compiled = counters["stats"]["unique_graphs"], graph breaks with their reasons =
counters["graph_break"], CUDA-graph skips = counters["inductor"]["cudagraph_skips"]) and every message of the
CUDA-graph loggers (torch._inductor.cudagraph_utils.__cudagraphs and the like: Inductor's "skipping cudagraphs
due to ..." goes there, hidden from the console unless TORCH_LOGS=cudagraphs). With --backend torch all are 0.

Stages of a chunk: (1) features: StreamingAudioFeatures.pop (log-mel windows, numpy);
(2) noise_h2d: start of _run_chunk up to loop.advance: audio features and CPU noise (torch.randn)
to the device, the motion tensor; (3) backend: loop.advance (the DiT's denoising steps through the
backend's run, the history ring's write, the knot), with backend.run alone as a detail;
(4) decode: the frame autoencoder's decoder (in the animator's dtype: bf16 on a GPU): animator.decode
(eager) or, on the compiled backend, its torch.compile of it (`--no-compiled-decode`: eager there too;
the JSON's decode_used says which ran); (5) to_frames: tensor_to_frames (uint8 on the device, copy to
the host) and the Frame objects. "other" is the rest of push_audio (audio
push, available(), glue). The synchronisation serialises the stages, so on a GPU their sum is an
upper bound on the pipelined chunk time: compare it with pass 1.

  PYTHONPATH=. python3 scripts/profile_chunk.py --json $OUT/profile_chunk.json          # default model, compiled
  PYTHONPATH=. python3 scripts/profile_chunk.py --threads 1 --json $OUT/profile_1t.json  # one torch thread
  PYTHONPATH=. python3 scripts/profile_chunk.py --no-compiled-decode --json $OUT/profile_eager_decode.json
  PYTHONPATH=. python3 scripts/profile_chunk.py --chunks 100 --trace 20 --json $OUT/profile_trace.json  # + the trace
  python scripts/profile_chunk.py --tiny --backend torch --device cpu --chunks 50

Errors (a backend that cannot be built, no GPU, a bad model folder) print one line and exit 1; so does
a compiled backend (or its decoder) that fell back to eager (its measurements are still printed and written).
Runs from an uninstalled checkout (PYTHONPATH=<repository>); needs no PyAV.
"""
from __future__ import annotations

import argparse
import bisect
import collections
import json
import logging
import os
import re
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STAGES = ("features", "noise_h2d", "backend", "decode", "to_frames")
WHAT = {
    "features": "StreamingAudioFeatures.pop (numpy log-mel)",
    "noise_h2d": "audio + torch.randn noise -> device, motion",
    "backend": "loop.advance: DiT steps + ring/knot write",
    "decode": "frame decoder (autoencoder, the animator's dtype)",
    "to_frames": "tensor_to_frames: uint8 + copy to host",
    "backend_run": "  of which backend.run (DiT steps)",
    "advance_rest": "  of which the rest of advance (positions, ring write, knot)",
    "other": "rest of push_audio (audio push, glue)",
    "total": "instrumented push_audio per chunk",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", default=None, help="checkpoint folder (default: the embedded default model)")
    p.add_argument("--tiny", action="store_true", help="the tiny test config with random weights")
    p.add_argument("--backend", default="compiled", choices=("torch", "compiled", "onnxruntime", "auto"))
    p.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    p.add_argument("--chunks", type=int, default=300, help="chunks timed in each pass")
    p.add_argument("--warmup", type=int, default=20, help="chunks streamed first (compile, CUDA graphs, allocator)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) before anything else")
    p.add_argument("--no-compiled-decode", dest="compiled_decode", action="store_false",
                   help="the compiled backend decodes eagerly (animator.decode), as before it compiled its decoder")
    p.add_argument("--compile-mode", default=None,
                   choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                   help="torch.compile mode of the compiled backend (default: the backend's own, reduce-overhead "
                        "on a GPU: CUDA graphs; max-autotune also tunes the kernels: a much longer first compile)")
    p.add_argument("--engine-dir", default=None, help="where exported backends (ONNX) are kept (default: knotanim's cache)")
    p.add_argument("--trace", type=int, default=0, metavar="N",
                   help="after both passes, N more un-instrumented chunks under torch.profiler: kernel launches, "
                        "cudaGraphLaunch calls, GPU kernel time and the top CPU ops per chunk (default 0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the results here")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    if args.chunks < 1 or args.warmup < 0 or args.trace < 0:
        p.error("--chunks must be >= 1, --warmup and --trace >= 0")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


class ProfileError(Exception):
    """One line for the user, exit status 1."""


# --- measuring ------------------------------------------------------------------------------------
def thread_cpu() -> dict[int, tuple[str, float]]:
    """{thread id: (name, user + system CPU seconds)} of this process, from /proc; {} where there is none."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            text = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()  # fields[0] is the state (stat field 3)
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)  # utime, stime: fields 14, 15
    return out


def thread_cpu_per_chunk(before: dict, after: dict, chunks: int) -> list[dict]:
    """CPU ms per chunk by thread name (the main thread apart), busiest first."""
    main = os.getpid()
    groups: dict[str, list[float]] = {}
    for tid, (name, cpu) in after.items():
        used = cpu - before.get(tid, (name, 0.0))[1]
        groups.setdefault("main thread" if tid == main else name, []).append(used)
    rows = [{"name": name, "threads": len(v), "cpu_ms_per_chunk": round(sum(v) * 1000 / chunks, 3)}
            for name, v in groups.items()]
    return sorted(rows, key=lambda r: -r["cpu_ms_per_chunk"])


def summary(values) -> dict:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "mean": float(a.mean()),
            "min": float(a.min()), "max": float(a.max())}


_ABSENT = object()


class Instrument:
    """Timing wrappers on one stream's instances (nothing in knotanim changes; `remove` restores)."""

    def __init__(self, stream, sync):
        self.stream, self.sync = stream, sync
        self.clock, self.cpu = time.perf_counter, time.process_time
        self.records: list[dict] = []  # one per chunk: stage -> (wall s, cpu s)
        self._pending: dict = {}  # the current chunk's stages so far
        self._marks: dict = {}
        self._patched: list[tuple[object, str, object]] = []

    def _now(self) -> tuple[float, float]:
        self.sync()
        return self.clock(), self.cpu()

    def _add(self, name: str, t0, t1) -> None:
        w, c = self._pending.get(name, (0.0, 0.0))
        self._pending[name] = (w + t1[0] - t0[0], c + t1[1] - t0[1])

    def _patch(self, obj, attr: str, wrapper_of) -> None:
        original = getattr(obj, attr)  # the bound method (or a callable the instance holds)
        self._patched.append((obj, attr, vars(obj).get(attr, _ABSENT)))  # what the instance held, if anything
        setattr(obj, attr, wrapper_of(original))  # an instance attribute shadows the class's method

    def install(self) -> "Instrument":
        s = self.stream

        def pop(original):
            def timed(count):
                t0 = self._now()
                out = original(count)
                self._add("features", t0, self._now())
                return out
            return timed

        def run_chunk(original):
            def timed():
                self._marks["start"] = self._now()
                frames = original()
                end = self._now()
                self._add("to_frames", self._marks.pop("decoded"), end)
                self._pending["_end"] = end
                self.records.append(self._pending)
                self._pending = {}
                return frames
            return timed

        def advance(original):
            def timed(*a, **k):
                t0 = self._now()
                self._add("noise_h2d", self._marks.pop("start"), t0)
                out = original(*a, **k)
                self._add("backend", t0, self._now())
                return out
            return timed

        def backend_run(original):
            def timed(*a):
                t0 = self._now()
                out = original(*a)
                self._add("backend_run", t0, self._now())
                return out
            return timed

        def decode(original):
            def timed(latents):
                t0 = self._now()
                out = original(latents)
                self._marks["decoded"] = self._now()
                self._add("decode", t0, self._marks["decoded"])
                return out
            return timed

        self._patch(s.audio, "pop", pop)
        self._patch(s, "_run_chunk", run_chunk)
        self._patch(s.loop, "advance", advance)
        self._patch(s.backend, "run", backend_run)
        # the decoder KnotStream._run_chunk calls: the backend's when it has one, else the animator's
        self._patch(s.backend if getattr(s.backend, "decode", None) is not None else s.animator, "decode", decode)
        return self

    def remove(self) -> None:
        for obj, attr, before in reversed(self._patched):
            if before is _ABSENT:
                delattr(obj, attr)
            else:  # the instance held it already (e.g. CompiledTorchBackend.decode): put it back
                setattr(obj, attr, before)
        self._patched.clear()


def stream_chunks(stream, feed, chunks: int, push: int) -> tuple[list[float], list[float]]:
    """Push one chunk of audio at a time until `chunks` chunks came out. Per chunk: push_audio's wall and
    process CPU seconds (a push with n chunks counts 1/n each; a push with none carries over to the next)."""
    wall, cpu = [], []
    carry_w = carry_c = 0.0
    done = 0
    while done < chunks:
        block = feed(push)
        w0, c0 = time.perf_counter(), time.process_time()
        frames = stream.push_audio(block)
        dw, dc = time.perf_counter() - w0 + carry_w, time.process_time() - c0 + carry_c
        n = len(frames) // stream.config.stream.chunk
        if n == 0:
            carry_w, carry_c = dw, dc
            continue
        carry_w = carry_c = 0.0
        wall += [dw / n] * n
        cpu += [dc / n] * n
        done += n
    return wall[:chunks], cpu[:chunks]


# --- compile diagnostics and the profiler trace ---------------------------------------------------
# torch._dynamo.utils.counters (a defaultdict of Counters) as torch 2.11-2.13 fill them:
#   counters["stats"]["unique_graphs"]      one per FX graph Dynamo hands to the backend (output_graph.py)
#   counters["frames"]["total" / "ok"]      frames Dynamo tried / converted (convert_frame.py)
#   counters["graph_break"][reason]         one key per graph-break message (symbolic_convert.py)
#   counters["inductor"]["cudagraph_skips"] graphs Inductor did not wrap in a CUDA graph (cudagraph_utils.py,
#                                           output_code.py); the reason goes to the "cudagraphs" artifact
#                                           logger, torch._inductor.cudagraph_utils.__cudagraphs, as
#                                           "skipping cudagraphs due to ...": off by default (propagate=False),
#                                           so it never reaches the console without TORCH_LOGS=cudagraphs.
COUNTER_GROUPS = ("stats", "frames", "graph_break", "inductor")
CUDAGRAPH_MODULES = ("torch._inductor.cudagraph_utils", "torch._inductor.cudagraph_trees")


class _Collect(logging.Handler):
    def __init__(self, sink: list):
        super().__init__(logging.DEBUG)
        self.sink = sink

        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) in self._seen:  # one record reaches a logger and, propagated, its parent: keep it once
            return
        self._seen.add(id(record))
        try:
            self.sink.append((record.name, record.levelname, record.getMessage()))
        except Exception:  # noqa: BLE001 - a message that cannot be formatted is not worth an error
            pass


def cudagraph_logger_names() -> list[str]:
    """The loggers that say why Inductor skipped CUDA graphs: the "cudagraphs" artifact loggers of the modules
    that exist in this torch (imported first, so that their loggers exist), and any other logger under torch
    whose name says cudagraph or perf_hints (older versions logged the skips as performance hints)."""
    import importlib

    for module in CUDAGRAPH_MODULES:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a torch without it (or without CUDA support for it)
            pass
    names = {n for n in logging.root.manager.loggerDict
             if n.startswith("torch") and ("cudagraph" in n or n.endswith("__perf_hints"))}
    return sorted(names)


class CompileWatch:
    """Dynamo/Inductor diagnostics around a run: the growth of torch._dynamo.utils.counters (graphs, graph
    breaks with their reasons, CUDA-graph skips) and the messages of the CUDA-graph loggers (a handler of our
    own on each; levels and propagation are left as they are)."""

    def __init__(self):
        self.messages: list[tuple[str, str, str]] = []
        self._handler = _Collect(self.messages)
        self._loggers: list[logging.Logger] = []
        self._counters = None
        self._before: dict = {}
        self.error: str | None = None
        self._result: dict | None = None

    def start(self) -> "CompileWatch":
        try:
            from torch._dynamo.utils import counters

            self._counters = counters
            self._before = {g: collections.Counter(counters[g]) for g in COUNTER_GROUPS if g in counters}
        except Exception as e:  # noqa: BLE001 - no Dynamo here: the run goes on without the counters
            self.error = f"torch._dynamo.utils.counters: {type(e).__name__}: {e}"
        for name in cudagraph_logger_names():
            lg = logging.getLogger(name)
            lg.addHandler(self._handler)
            self._loggers.append(lg)
        return self

    def stop(self) -> dict:
        """The diagnostics since `start`; the handlers come off (a second call returns the same result)."""
        if self._result is not None:
            return self._result
        for lg in self._loggers:
            lg.removeHandler(self._handler)
        delta: dict[str, dict[str, int]] = {}
        if self._counters is not None:
            for g in COUNTER_GROUPS:
                now = collections.Counter(self._counters.get(g, {}))
                grown = {k: int(v - self._before.get(g, {}).get(k, 0)) for k, v in now.items()}
                delta[g] = {k: v for k, v in grown.items() if v}
        breaks = delta.get("graph_break", {})
        inductor = delta.get("inductor", {})
        skips = [m for _, _, m in self.messages if "skipping cudagraphs" in m]
        self._result = {
            "available": self._counters is not None, "error": self.error,
            "unique_graphs": int(delta.get("stats", {}).get("unique_graphs", 0)),
            "calls_captured": int(delta.get("stats", {}).get("calls_captured", 0)),
            "frames_total": int(delta.get("frames", {}).get("total", 0)),
            "frames_ok": int(delta.get("frames", {}).get("ok", 0)),
            "graph_breaks": int(sum(breaks.values())),
            "graph_break_reasons": [{"reason": k[:400], "count": v}
                                    for k, v in sorted(breaks.items(), key=lambda kv: -kv[1])[:20]],
            "cudagraph_skips": int(inductor.get("cudagraph_skips", 0)),
            "cudagraph_skip_messages": list(dict.fromkeys(m[:600] for m in skips)),
            "cudagraph_log": [{"logger": n, "level": lvl, "message": m[:600]} for n, lvl, m in self.messages
                              if "skipping cudagraphs" not in m][:30],
            "inductor_counters": dict(sorted(inductor.items())),
            "loggers_watched": [lg.name for lg in self._loggers],
        }
        return self._result


LAUNCH = re.compile(r"^cu(da)?Launch(Kernel|CooperativeKernel)")  # cudaLaunchKernel(ExC), cuLaunchKernel(Ex), ...
GRAPH_LAUNCH = re.compile(r"^cu(da)?GraphLaunch")
RUNTIME = re.compile(r"^cu(da)?[A-Z]")  # CUDA runtime / driver API calls, as Kineto names them
TRACE_RANGE = "profile_chunk.trace_push"


def interval_union_us(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end] intervals (overlapping kernels on several streams count once)."""
    total, end = 0.0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def trace_chunks(torch, stream, feed, chunks: int, push: int, dev, sync) -> dict:
    """`chunks` more un-instrumented chunks under torch.profiler (CPU activity; CUDA too on a GPU): per chunk,
    kernel launches, cudaGraphLaunch calls, GPU kernel time and busy fraction, and the top CPU ops by self time.
    Each push is one record_function range, so the launches are counted per push as well."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    cuda = dev.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    per_chunk = stream.config.stream.chunk
    pushes: list[int] = []  # chunks out of each push
    sync()
    with torch_profile(activities=activities) as prof:
        w0, c0 = time.perf_counter(), time.process_time()
        while sum(pushes) < chunks:
            with record_function(TRACE_RANGE):
                frames = stream.push_audio(feed(push))
            pushes.append(len(frames) // per_chunk)
        sync()
        wall_s, cpu_s = time.perf_counter() - w0, time.process_time() - c0
    done = sum(pushes)
    events = prof.events()
    cpu_events, gpu_events, gpu_spans, gpu_mem_spans, ranges = [], [], [], [], []
    runtime_calls: collections.Counter = collections.Counter()
    for e in events:
        if e.name == TRACE_RANGE:  # our ranges (a user annotation; on a GPU also a GPU-side copy of each)
            if e.device_type == DeviceType.CPU:
                ranges.append((e.time_range.start, e.time_range.end))
            continue
        if getattr(e, "is_user_annotation", False):
            continue
        if e.device_type == DeviceType.CPU:
            cpu_events.append(e)
            if RUNTIME.match(e.name):
                runtime_calls[e.name] += 1
        elif e.device_type == DeviceType.CUDA:
            gpu_events.append(e)
    cpu_names = {e.name for e in cpu_events} | {TRACE_RANGE}
    for e in gpu_events:  # kernels and copies; not the GPU-side spans of record_function ranges (CPU names)
        if e.name in cpu_names:
            continue
        span = (e.time_range.start, e.time_range.end)
        (gpu_mem_spans if e.name.startswith(("Memcpy", "Memset")) else gpu_spans).append(span)
    launches = sorted(e.time_range.start for e in cpu_events if LAUNCH.match(e.name))
    graph_launches = sorted(e.time_range.start for e in cpu_events if GRAPH_LAUNCH.match(e.name))

    def within(starts, a, b) -> int:
        return bisect.bisect_right(starts, b) - bisect.bisect_left(starts, a)

    ranges.sort()
    per_push = [{"chunks": n, "kernel_launches": within(launches, a, b), "graph_launches": within(graph_launches, a, b)}
                for n, (a, b) in zip(pushes, ranges)] if len(ranges) == len(pushes) else []
    kernel_us = sum(b - a for a, b in gpu_spans)
    busy_us = interval_union_us(gpu_spans + gpu_mem_spans)
    top = []
    for avg in sorted((a for a in prof.key_averages() if a.device_type == DeviceType.CPU and a.key != TRACE_RANGE),
                      key=lambda a: -a.self_cpu_time_total)[:10]:
        top.append({"op": avg.key, "calls": int(avg.count), "calls_per_chunk": avg.count / max(done, 1),
                    "self_cpu_ms_per_chunk": avg.self_cpu_time_total / 1000 / max(done, 1),
                    "cpu_total_ms_per_chunk": avg.cpu_time_total / 1000 / max(done, 1)})
    n = max(done, 1)
    return {
        "chunks": int(done), "pushes": len(pushes), "wall_s": wall_s, "cpu_s": cpu_s,
        "chunk_ms": wall_s * 1000 / n, "cpu_ms_per_chunk": cpu_s * 1000 / n,
        "cuda_activity": bool(cuda), "gpu_events": len(gpu_spans) + len(gpu_mem_spans),
        "kernel_launches": len(launches), "graph_launches": len(graph_launches),
        "gpu_kernels": len(gpu_spans), "gpu_memcpy_memset": len(gpu_mem_spans),
        "kernel_launches_per_chunk": len(launches) / n, "graph_launches_per_chunk": len(graph_launches) / n,
        "gpu_kernels_per_chunk": len(gpu_spans) / n,
        "gpu_kernel_ms_per_chunk": kernel_us / 1000 / n, "gpu_busy_ms_per_chunk": busy_us / 1000 / n,
        "gpu_busy_fraction": busy_us / 1e6 / wall_s if wall_s > 0 else 0.0,
        "runtime_calls_per_chunk": {k: v / n for k, v in runtime_calls.most_common(12)},
        "per_push": per_push, "top_cpu_ops": top,
        "note": ("CUDA + CPU activity (Kineto/CUPTI). kernel_launches: CPU-side cudaLaunchKernel* / cuLaunchKernel* "
                 "calls (kernels replayed inside a CUDA graph are not launches); graph_launches: cudaGraphLaunch "
                 "calls; GPU kernel time: the sum of kernel durations; busy: the union of kernel and memcpy/memset "
                 "spans over the traced wall time. The profiler adds CPU overhead per op."
                 if cuda else "no CUDA activity (CPU device): CPU ops only; kernel and graph launches are 0."),
    }


def load(args, torch):
    from knotanim import tiny_config
    from knotanim.animator import KnotAnimator, default_model_path, resolve_device

    dev = resolve_device(args.device or "auto")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # as KnotAnimator.from_pretrained chooses
    if args.tiny:
        return KnotAnimator.from_config(tiny_config(), device=dev, dtype=dtype, seed=args.seed), None, "tiny (random)"
    path = Path(args.model) if args.model else default_model_path()
    return KnotAnimator.from_pretrained(path, device=dev, dtype=dtype), path, str(args.model or "embedded default")


def decoder_used(backend) -> tuple[str, str | None]:
    """(which decoder the stream ran, its fall-back reason): "compiled" (the backend's torch.compile of the
    decoder), "compiled->eager" (it fell back), or "eager (animator.decode)" (the backend has none)."""
    if getattr(backend, "decode", None) is None:
        return "eager (animator.decode)", None
    reason = getattr(backend, "decode_fallback_reason", None)
    return ("compiled->eager" if reason else "compiled"), reason


def build(args, anim, model_path):
    """(ChunkBackend, reason) through knotanim.engines, as `knotanim render --backend` builds it."""
    from knotanim.engines.select import build_backend, select_backend

    say = lambda m: print(f"backend: {m}", file=sys.stderr, flush=True)  # noqa: E731
    if args.backend == "auto":
        return select_backend("auto", anim, model_path=model_path, artifacts=args.engine_dir, progress=say,
                              compile_decoder=args.compiled_decode)
    backend = build_backend(args.backend, anim, model_path=model_path, artifacts=args.engine_dir, progress=say,
                            compile_decoder=args.compiled_decode)
    if args.compile_mode is not None and hasattr(backend, "mode"):  # read at the first chunk, when it compiles
        backend.mode = args.compile_mode
    return backend, f"{backend.name}: requested"


def profile(args) -> dict:
    import torch  # after parse_args: --threads is set before anything else uses torch

    if args.threads:
        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    watch = CompileWatch().start()  # around everything: the compile happens at the first chunk
    try:
        return _profile(args, torch, watch, t_start)
    finally:
        watch.stop()


def _profile(args, torch, watch: CompileWatch, t_start: float) -> dict:
    import numpy as np

    anim, model_path, model_label = load(args, torch)
    cfg, dev = anim.config, anim.device
    backend, reason = build(args, anim, model_path)

    from knotanim.engines.base import synchronize

    def sync() -> None:
        synchronize(dev)

    rng = np.random.default_rng(args.seed)
    ref = rng.integers(0, 255, (cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    feed = lambda n: (rng.standard_normal(n) * 0.1).astype(np.float32)  # noqa: E731
    spf, chunk = cfg.samples_per_frame, cfg.stream.chunk
    stream = anim.stream(ref, seed=args.seed, backend=backend)

    w0 = time.perf_counter()
    if args.warmup:
        stream_chunks(stream, feed, args.warmup, chunk * spf)
    sync()
    warmup_s = time.perf_counter() - w0
    fallback = getattr(stream.backend, "fallback_reason", None)

    # pass 1: nothing added
    before = thread_cpu()
    wall1, cpu1 = stream_chunks(stream, feed, args.chunks, chunk * spf)
    threads = thread_cpu_per_chunk(before, thread_cpu(), len(wall1)) if before else []
    sync()

    # pass 2: every stage bracketed by synchronisation
    inst = Instrument(stream, sync).install()
    try:
        wall2, cpu2 = stream_chunks(stream, feed, args.chunks, chunk * spf)
    finally:
        inst.remove()
    records = inst.records[:args.chunks]

    trace = None
    if args.trace:  # pass 3: under torch.profiler, no wrappers
        try:
            trace = trace_chunks(torch, stream, feed, args.trace, chunk * spf, dev, sync)
        except Exception as e:  # noqa: BLE001 - a profiler that cannot start must not lose passes 1 and 2
            trace = {"error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}",
                     "chunks": 0, "cuda_activity": False}
    compile_info = watch.stop()

    def ms(names, i: int) -> list[float]:
        """Per chunk, the wall (i = 0) or CPU (i = 1) milliseconds of the named stages together."""
        return [sum(r.get(n, (0.0, 0.0))[i] for n in names) * 1000 for r in records]

    def stats(name, w, c) -> dict:
        return {"what": WHAT[name], "wall_ms": summary(w), "cpu_ms": summary(c)}

    stages = {name: stats(name, ms([name], 0), ms([name], 1)) for name in STAGES}
    stage_sum, stage_sum_cpu = ms(STAGES, 0), ms(STAGES, 1)
    n2 = min(len(records), len(wall2))
    total_w, total_c = [x * 1000 for x in wall2[:n2]], [x * 1000 for x in cpu2[:n2]]
    details = {
        "backend_run": stats("backend_run", ms(["backend_run"], 0), ms(["backend_run"], 1)),
        "advance_rest": stats("advance_rest", [b - r for b, r in zip(ms(["backend"], 0), ms(["backend_run"], 0))],
                              [b - r for b, r in zip(ms(["backend"], 1), ms(["backend_run"], 1))]),
        "other": stats("other", [t - s for t, s in zip(total_w, stage_sum)], [t - s for t, s in zip(total_c, stage_sum_cpu)]),
        "total": stats("total", total_w, total_c),
    }

    un = {"chunk_ms": summary([x * 1000 for x in wall1]), "cpu_ms": summary([x * 1000 for x in cpu1]),
          "chunks": len(wall1), "frames": len(wall1) * chunk, "wall_s": sum(wall1),
          "frames_per_s": len(wall1) * chunk / sum(wall1), "thread_cpu_ms_per_chunk": threads}
    if dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
    else:
        from knotanim.profiles import cpu_name

        device_name = f"{cpu_name()} CPU"
    params = anim.parameter_count()
    decode_used, decode_fallback = decoder_used(stream.backend)  # after both passes: a late fall-back counts
    return {
        "command": "python3 scripts/profile_chunk.py " + " ".join(shlex.quote(a) for a in args.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": str(dev), "device_name": device_name,
        "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "model": model_label, "dtype": str(anim.dtype).replace("torch.", ""),
        "backend_requested": args.backend, "backend_used": str(stream.backend.name), "backend_reason": reason,
        "backend_fallback": fallback, "compile_mode": getattr(stream.backend, "mode", None),
        "compiled_decode": args.compiled_decode,  # False: --no-compiled-decode
        "decode_used": decode_used, "decode_fallback": decode_fallback,
        "shape": {"frame_size": cfg.frame_size, "tokens_per_frame": cfg.tokens_per_frame, "chunk": chunk,
                  "knot": cfg.stream.knot, "window": cfg.stream.window, "steps": cfg.sampler.steps,
                  "dit_params": params["dit"], "autoencoder_params": params["autoencoder"]},
        "warmup_chunks": args.warmup, "warmup_s": warmup_s, "setup_s": w0 - t_start, "chunks": args.chunks,
        "frames_per_chunk": chunk,
        "uninstrumented": un, "chunk_ms": un["chunk_ms"]["median"], "frames_per_s": un["frames_per_s"],
        "stages": stages, "stage_sum_ms": summary(stage_sum), "stage_sum_cpu_ms": summary(stage_sum_cpu),
        "details": details, "trace": trace, "compile": compile_info,
        "note": ("instrumented pass: " + ("torch.cuda.synchronize before and after every stage serialises the stages "
                 "(no CPU/GPU overlap), so their sum is an upper bound on the pipelined chunk time; the un-instrumented "
                 "pass (no synchronisation) is the real per-chunk time" if dev.type == "cuda" else
                 "on the CPU nothing runs asynchronously, so the stage sum should match the un-instrumented time")
                 + ". Process CPU is the whole process (every thread: torch's intra-op pool, "
                 + ("the synchronisation's wait, " if dev.type == "cuda" else "") + "ONNX Runtime's)."),
    }


# --- output -----------------------------------------------------------------------------------------
def markdown(r: dict) -> str:
    un = r["uninstrumented"]
    mode = f" (torch.compile mode {r['compile_mode']})" if r.get("compile_mode") else ""
    lines = [f"## profile_chunk: {r['model']} on {r['device_name']} ({r['device']}), backend {r['backend_used']}{mode}, {r['dtype']}",
             "",
             f"`{r['command']}`",
             "",
             f"torch {r['torch']}, torch.get_num_threads() = {r['torch_threads']} (interop {r['torch_interop_threads']}), "
             f"{r['cpu_count']} CPUs, OMP_NUM_THREADS={r['omp_num_threads_env'] or 'unset'}; chunk = {r['frames_per_chunk']} "
             f"frames; {r['chunks']} chunks per pass after {r['warmup_chunks']} warm-up ({r['warmup_s']:.1f} s)"
             + (f"; backend fell back: {r['backend_fallback']}" if r["backend_fallback"] else ""),
             "",
             f"Decode: {r['decode_used']}" + ("" if r["compiled_decode"] else " (--no-compiled-decode)")
             + (f"; decoder fell back: {r['decode_fallback']}" if r["decode_fallback"] else ""),
             "",
             f"**Un-instrumented** (no synchronisation): chunk median {un['chunk_ms']['median']:.3f} ms, "
             f"p95 {un['chunk_ms']['p95']:.3f} ms, process CPU median {un['cpu_ms']['median']:.2f} ms per chunk; "
             f"**{un['frames_per_s']:.1f} frames/s**.",
             "",
             "| stage | what | wall median ms | wall p95 ms | CPU median ms | CPU p95 ms |",
             "|---|---|---:|---:|---:|---:|"]

    def row(label, d):
        return (f"| {label} | {d['what']} | {d['wall_ms']['median']:.3f} | {d['wall_ms']['p95']:.3f} | "
                f"{d['cpu_ms']['median']:.3f} | {d['cpu_ms']['p95']:.3f} |")

    for i, name in enumerate(STAGES, 1):
        lines.append(row(f"{i} {name}", r["stages"][name]))
        if name == "backend":
            lines += [row("", r["details"]["backend_run"]), row("", r["details"]["advance_rest"])]
    s, sc = r["stage_sum_ms"], r["stage_sum_cpu_ms"]
    lines.append(f"| sum 1-5 | per chunk | {s['median']:.3f} | {s['p95']:.3f} | {sc['median']:.3f} | {sc['p95']:.3f} |")
    lines += [row("other", r["details"]["other"]), row("total", r["details"]["total"])]
    un_row = (f"| un-instrumented | push_audio per chunk, no sync | {un['chunk_ms']['median']:.3f} | {un['chunk_ms']['p95']:.3f} "
              f"| {un['cpu_ms']['median']:.3f} | {un['cpu_ms']['p95']:.3f} |")
    lines += [un_row, "", r["note"]]
    if un["thread_cpu_ms_per_chunk"]:
        top = un["thread_cpu_ms_per_chunk"][:6]
        lines += ["", "CPU by thread, un-instrumented pass (ms per chunk): " + "; ".join(
            f"{t['name']} x{t['threads']}: {t['cpu_ms_per_chunk']:.2f}" for t in top)]
    lines += compile_markdown(r.get("compile"))
    if r.get("trace") is not None:
        lines += trace_markdown(r["trace"])
    return "\n".join(lines)


def compile_markdown(c: dict | None) -> list[str]:
    if not c:
        return []
    if not c["available"]:
        return ["", f"**Compile diagnostics**: unavailable ({c['error']})"]
    lines = ["", f"**Compile diagnostics** (torch._dynamo.utils.counters over the whole run): "
                 f"{c['unique_graphs']} graph(s) compiled, {c['graph_breaks']} graph break(s), "
                 f"frames {c['frames_ok']}/{c['frames_total']} converted, "
                 f"{c['cudagraph_skips']} CUDA-graph skip(s) (counters['inductor']['cudagraph_skips'])"]
    for b in c["graph_break_reasons"][:8]:
        lines.append(f"- graph break x{b['count']}: {b['reason'].splitlines()[0][:200] if b['reason'] else ''}")
    for m in c["cudagraph_skip_messages"][:8]:
        lines.append(f"- {m.splitlines()[0][:300]}")
    for m in c["cudagraph_log"][:5]:
        lines.append(f"- cudagraphs log ({m['level']}): {m['message'].splitlines()[0][:200]}")
    if c["cudagraph_skips"] and not c["cudagraph_skip_messages"]:
        lines.append("- (skips counted without a logged reason: a graph with no CUDA op, or cudagraph_policy)")
    return lines


def trace_markdown(t: dict) -> list[str]:
    if t.get("error"):
        return ["", f"**Trace** (torch.profiler): failed: {t['error']}"]
    lines = ["", f"**Trace** (torch.profiler, {t['chunks']} un-instrumented chunks, {t['chunk_ms']:.3f} ms and "
                 f"{t['cpu_ms_per_chunk']:.3f} ms process CPU per chunk under the profiler):"]
    if t["cuda_activity"]:
        lines.append(f"per chunk: {t['kernel_launches_per_chunk']:.1f} kernel launches, "
                     f"{t['graph_launches_per_chunk']:.1f} cudaGraphLaunch, {t['gpu_kernels_per_chunk']:.1f} GPU "
                     f"kernels, GPU kernel time {t['gpu_kernel_ms_per_chunk']:.3f} ms, GPU busy "
                     f"{t['gpu_busy_ms_per_chunk']:.3f} ms = {t['gpu_busy_fraction'] * 100:.1f}% of wall "
                     f"(totals: {t['kernel_launches']} launches, {t['graph_launches']} graph launches)")
        one = [p for p in t["per_push"] if p["chunks"] == 1]
        if one:
            lines.append(f"pushes of one chunk: {min(p['kernel_launches'] for p in one)}-"
                         f"{max(p['kernel_launches'] for p in one)} kernel launches, "
                         f"{min(p['graph_launches'] for p in one)}-{max(p['graph_launches'] for p in one)} graph launches each")
    else:
        lines.append(f"no CUDA activity (CPU device): {t['kernel_launches']} kernel launches, "
                     f"{t['graph_launches']} graph launches; CPU ops only")
    if t["runtime_calls_per_chunk"]:
        lines.append("CUDA API calls per chunk: " + ", ".join(f"{k} {v:.1f}" for k, v in t["runtime_calls_per_chunk"].items()))
    lines += ["", "| top CPU op (self time) | calls per chunk | self CPU ms per chunk | CPU total ms per chunk |",
              "|---|---:|---:|---:|"]
    lines += [f"| {o['op'][:80]} | {o['calls_per_chunk']:.1f} | {o['self_cpu_ms_per_chunk']:.3f} | "
              f"{o['cpu_total_ms_per_chunk']:.3f} |" for o in t["top_cpu_ops"]]
    lines += ["", t["note"]]
    return lines


def main(argv=None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    args.argv = raw
    try:
        import knotanim  # noqa: F401
    except ModuleNotFoundError:  # an uninstalled checkout without PYTHONPATH: use this one
        sys.path.insert(0, str(REPO))
    try:
        result = profile(args)
    except Exception as e:  # noqa: BLE001 - one line, not a traceback (--debug shows it)
        if args.debug:
            raise
        text = (str(e).strip().splitlines() or [""])[0]
        from knotanim.errors import KnotAnimError

        msg = text if isinstance(e, KnotAnimError) and text else f"{type(e).__name__}: {text}".rstrip(": ")
        print(f"profile_chunk: error: {msg}", file=sys.stderr)
        return 1
    print(markdown(result), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if result["backend_fallback"]:
        print(f"profile_chunk: error: the {args.backend} backend fell back ({result['backend_fallback']}); "
              "the numbers above are for eager torch", file=sys.stderr)
        return 1
    if result["decode_fallback"]:
        print(f"profile_chunk: error: the compiled decoder fell back ({result['decode_fallback']}); "
              "the decode numbers above are for eager decode", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
