"""scripts/profile_chunk.py: the five stages of a stream chunk timed on the tiny model (CPU, eager torch), run as on
the accelerator machine (an uninstalled checkout: python -S, PYTHONPATH=<repository>, no PyAV) and in-process."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import profile_chunk  # scripts/ is on sys.path (conftest.py)
from device_like import device_like

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "profile_chunk.py"
STAGES = ("features", "noise_h2d", "backend", "decode", "to_frames")
ARGS = ["--tiny", "--backend", "torch", "--device", "cpu", "--chunks", "6", "--warmup", "2"]


def _check(result: dict, chunks: int = 6) -> None:
    assert list(result["stages"]) == list(STAGES)
    for name in STAGES:
        st = result["stages"][name]
        for key in ("wall_ms", "cpu_ms"):
            assert {"median", "p95"} <= set(st[key]), (name, st)
        assert math.isfinite(st["wall_ms"]["median"]) and st["wall_ms"]["median"] > 0, (name, st)
        assert st["wall_ms"]["p95"] >= st["wall_ms"]["median"]
    assert result["backend_requested"] == "torch" and result["backend_used"] == "torch"
    assert result["backend_fallback"] is None and result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["torch"] and result["device_name"] and result["torch_threads"] >= 1
    assert "--tiny" in result["command"] and result["chunks"] == chunks
    un = result["uninstrumented"]
    assert un["chunks"] == chunks and result["chunk_ms"] == un["chunk_ms"]["median"] > 0
    # On the CPU nothing is asynchronous: the stages add up to about the whole chunk (a loose factor on a busy machine).
    stage_sum = sum(result["stages"][n]["wall_ms"]["median"] for n in STAGES)
    assert 0.3 < stage_sum / result["chunk_ms"] < 3, (stage_sum, result["chunk_ms"])
    assert result["details"]["backend_run"]["wall_ms"]["median"] <= result["stages"]["backend"]["wall_ms"]["median"] * 1.01
    # frames/s = frames per chunk / mean chunk time
    per_chunk = result["frames_per_chunk"]
    assert result["frames_per_s"] == un["frames_per_s"]
    assert math.isclose(result["frames_per_s"], per_chunk * 1000 / un["chunk_ms"]["mean"], rel_tol=1e-6)
    assert math.isclose(un["frames_per_s"], un["frames"] / un["wall_s"], rel_tol=1e-9)


def test_profile_chunk_from_an_uninstalled_checkout_without_pyav(tmp_path):
    python, env = device_like(tmp_path, str(SCRIPT))
    out = tmp_path / "out" / "profile.json"
    r = subprocess.run([*python, *ARGS, "--json", str(out)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    _check(result)
    assert result["torch_threads"] == 1  # OMP_NUM_THREADS=1
    table = r.stdout
    for name in STAGES:
        assert f"| {STAGES.index(name) + 1} {name} |" in table
    assert "| un-instrumented |" in table and "frames/s" in table and "torch.get_num_threads() = 1" in table


def test_profile_chunk_in_process_leaves_the_stream_classes_unwrapped(tmp_path, capsys):
    import torch

    from knotanim.animator import KnotAnimator
    from knotanim.engines.base import TorchBackend
    from knotanim.frontends.audio_features import StreamingAudioFeatures
    from knotanim.stream.rollout import ChunkLoop
    from knotanim.stream.stream import KnotStream

    originals = (KnotStream._run_chunk, ChunkLoop.advance, StreamingAudioFeatures.pop, TorchBackend.run,
                 KnotAnimator.decode)
    threads = torch.get_num_threads()
    mod = profile_chunk
    out = tmp_path / "p.json"
    try:
        assert mod.main([*ARGS, "--threads", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    _check(result)
    assert result["torch_threads"] == 1 and "--threads 1" in result["command"]
    assert "| 3 backend |" in capsys.readouterr().out
    assert (KnotStream._run_chunk, ChunkLoop.advance, StreamingAudioFeatures.pop, TorchBackend.run,
            KnotAnimator.decode) == originals


def test_profile_chunk_errors_are_one_line_and_exit_1(tmp_path, capsys):
    mod = profile_chunk
    assert mod.main(["--model", str(tmp_path / "missing"), "--backend", "torch", "--device", "cpu",
                     "--chunks", "1", "--warmup", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("profile_chunk: error: ") and "\n" not in err and "Traceback" not in err


def test_instrument_changes_no_frame_and_removes_its_wrappers(anim, ref):
    """The timing wrappers sit on one stream's instances: the frames are those of a stream without them, every
    chunk gets its five stages, and afterwards no instance keeps a wrapper."""
    import numpy as np

    mod = profile_chunk
    audio = (np.random.default_rng(1).standard_normal(anim.config.samples_per_frame * 12) * 0.1).astype(np.float32)
    plain = anim.stream(ref, seed=3).push_audio(audio)
    stream = anim.stream(ref, seed=3)
    inst = mod.Instrument(stream, lambda: None).install()
    try:
        timed = stream.push_audio(audio)
    finally:
        inst.remove()
    assert len(timed) == len(plain) > 0
    for a, b in zip(plain, timed):
        assert a.index == b.index and np.array_equal(a.image, b.image)
    assert len(inst.records) == len(timed) // anim.config.stream.chunk
    for rec in inst.records:
        assert set(STAGES) <= set(rec) and all(rec[n][0] >= 0 for n in STAGES)
    for obj, attr in ((stream, "_run_chunk"), (stream.loop, "advance"), (stream.audio, "pop"),
                      (stream.backend, "run"), (anim, "decode")):
        assert attr not in vars(obj), (obj, attr)


def test_profile_chunk_times_the_compiled_decoder_or_not(tmp_path, capsys):
    """--backend compiled (Inductor on the CPU): the decode stage times the backend's compiled decoder, and the
    JSON and the table say so; --no-compiled-decode times animator.decode instead. The wrappers come off."""
    import torch

    mod = profile_chunk
    threads = torch.get_num_threads()
    args = ["--tiny", "--backend", "compiled", "--device", "cpu", "--chunks", "2", "--warmup", "1", "--threads", "1"]
    results = {}
    try:
        for flag, label in (([], "compiled"), (["--no-compiled-decode"], "eager")):
            out = tmp_path / f"{label}.json"
            assert mod.main([*args, *flag, "--json", str(out)]) == 0
            results[label] = json.loads(out.read_text()), capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
    (on, on_md), (off, off_md) = results["compiled"], results["eager"]
    assert on["backend_used"] == off["backend_used"] == "compiled"
    assert on["compile_mode"] == "default" and "(torch.compile mode default)" in on_md  # the CPU's mode
    assert (on["compiled_decode"], on["decode_used"], on["decode_fallback"]) == (True, "compiled", None)
    assert (off["compiled_decode"], off["decode_used"]) == (False, "eager (animator.decode)")
    assert "Decode: compiled\n" in on_md and "Decode: eager (animator.decode) (--no-compiled-decode)" in off_md
    for r in (on, off):
        assert r["stages"]["decode"]["wall_ms"]["median"] > 0 and r["chunks"] == 2


def test_instrument_wraps_the_backends_decoder_and_puts_it_back(anim, ref):
    """With a backend that decodes (CompiledTorchBackend.decode, an instance attribute), the decode stage
    wraps it, not animator.decode, and `remove` restores it (here the step and decoder fall back to eager:
    no compile needed to check the wiring)."""
    import numpy as np

    from knotanim.engines.base import CompiledTorchBackend

    mod = profile_chunk
    backend = CompiledTorchBackend(anim.chunk_step(), "cpu", autoencoder=anim.autoencoder)
    backend.fallback_reason = backend.decode_fallback_reason = "test: eager"
    backend._compiled, backend.name = backend.step, "compiled->torch"
    decode = backend.decode
    stream = anim.stream(ref, seed=3, backend=backend)
    audio = (np.random.default_rng(1).standard_normal(anim.config.samples_per_frame * 6) * 0.1).astype(np.float32)
    inst = mod.Instrument(stream, lambda: None).install()
    try:
        assert backend.decode is not decode and "decode" not in vars(anim)
        frames = stream.push_audio(audio)
    finally:
        inst.remove()
    assert frames and len(inst.records) == len(frames) // anim.config.stream.chunk
    assert all(rec["decode"][0] >= 0 for rec in inst.records)
    assert backend.decode == decode and "run" not in vars(backend)
    assert mod.decoder_used(backend) == ("compiled->eager", "test: eager")


TRACE_KEYS = {"chunks", "pushes", "wall_s", "chunk_ms", "cuda_activity", "kernel_launches", "graph_launches",
              "gpu_kernels", "kernel_launches_per_chunk", "graph_launches_per_chunk", "gpu_kernel_ms_per_chunk",
              "gpu_busy_ms_per_chunk", "gpu_busy_fraction", "runtime_calls_per_chunk", "per_push", "top_cpu_ops", "note"}
COMPILE_KEYS = {"available", "unique_graphs", "graph_breaks", "graph_break_reasons", "cudagraph_skips",
                "cudagraph_skip_messages", "cudagraph_log", "inductor_counters", "loggers_watched"}


def test_profile_chunk_trace_on_the_cpu(tmp_path, capsys):
    """--trace 3: three more chunks under torch.profiler; on the CPU no CUDA activity (every GPU count 0), the
    top CPU ops, one range per push; the compile diagnostics (eager torch: nothing compiled) in the JSON and
    the Markdown."""
    import torch

    mod = profile_chunk
    threads = torch.get_num_threads()
    out = tmp_path / "trace.json"
    try:
        assert mod.main([*ARGS, "--threads", "1", "--trace", "3", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    md = capsys.readouterr().out
    result = json.loads(out.read_text())
    _check(result)
    t = result["trace"]
    assert TRACE_KEYS <= set(t) and "error" not in t, t
    assert t["chunks"] == 3 and t["cuda_activity"] is False and "no CUDA activity" in t["note"]
    for key in ("kernel_launches", "graph_launches", "gpu_kernels", "gpu_memcpy_memset", "gpu_events", "pushes"):
        assert isinstance(t[key], int) and t[key] >= 0, (key, t[key])
    assert (t["kernel_launches"], t["graph_launches"], t["gpu_kernels"]) == (0, 0, 0)
    assert t["gpu_busy_fraction"] == 0.0 and t["gpu_kernel_ms_per_chunk"] == 0.0
    assert [p["chunks"] for p in t["per_push"]] == [1, 1, 1]
    assert all(isinstance(p["kernel_launches"], int) and p["kernel_launches"] >= 0 for p in t["per_push"])
    assert 1 <= len(t["top_cpu_ops"]) <= 10 and t["chunk_ms"] > 0
    ops = t["top_cpu_ops"]
    assert all(o["self_cpu_ms_per_chunk"] >= 0 and o["calls"] >= 1 for o in ops)
    assert [o["self_cpu_ms_per_chunk"] for o in ops] == sorted((o["self_cpu_ms_per_chunk"] for o in ops), reverse=True)
    assert any(o["op"].startswith("aten::") for o in ops)
    c = result["compile"]
    assert COMPILE_KEYS <= set(c) and c["available"] is True
    for key in ("unique_graphs", "graph_breaks", "cudagraph_skips", "frames_total", "frames_ok"):
        assert isinstance(c[key], int) and c[key] >= 0, (key, c[key])
    assert c["unique_graphs"] == c["graph_breaks"] == c["cudagraph_skips"] == 0  # eager torch compiles nothing
    assert "**Trace** (torch.profiler, 3 un-instrumented chunks" in md and "| top CPU op (self time) |" in md
    assert "no CUDA activity (CPU device)" in md and "**Compile diagnostics**" in md


def test_compile_watch_counts_graphs_breaks_and_cudagraph_skips():
    """CompileWatch reports what the Dynamo counters gained while it watched (not what was there before) and
    the "skipping cudagraphs" messages of Inductor's cudagraphs artifact logger (off by default: no console)."""
    import collections
    import logging

    from torch._dynamo.utils import counters

    mod = profile_chunk
    saved = {g: collections.Counter(counters[g]) for g in ("stats", "graph_break", "inductor")}
    log = logging.getLogger("torch._inductor.cudagraph_utils.__cudagraphs")
    try:
        counters["stats"]["unique_graphs"] += 5  # before the watch: not counted
        watch = mod.CompileWatch().start()
        counters["stats"]["unique_graphs"] += 2
        counters["graph_break"]["test: a data-dependent branch"] += 1
        counters["inductor"]["cudagraph_skips"] += 1
        log.warning("skipping cudagraphs due to %s", "cpu device (test)")
        c = watch.stop()
        log.warning("skipping cudagraphs due to a later graph")  # the handler is off by now
    finally:
        for g, before in saved.items():
            counters[g] = before
    assert (c["unique_graphs"], c["graph_breaks"], c["cudagraph_skips"]) == (2, 1, 1)
    assert c["graph_break_reasons"] == [{"reason": "test: a data-dependent branch", "count": 1}]
    assert c["cudagraph_skip_messages"] == ["skipping cudagraphs due to cpu device (test)"]
    assert "torch._inductor.cudagraph_utils.__cudagraphs" in c["loggers_watched"]
    assert watch.stop() is c and not any(isinstance(h, mod._Collect) for h in log.handlers)
    md = "\n".join(mod.compile_markdown(c))
    assert "2 graph(s) compiled, 1 graph break(s)" in md and "1 CUDA-graph skip(s)" in md
    assert "- skipping cudagraphs due to cpu device (test)" in md


def test_interval_union():
    mod = profile_chunk
    assert mod.interval_union_us([]) == 0
    assert mod.interval_union_us([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
    assert mod.LAUNCH.match("cudaLaunchKernel") and mod.LAUNCH.match("cuLaunchKernelEx")
    assert mod.LAUNCH.match("cudaLaunchKernelExC") and not mod.LAUNCH.match("cudaGraphLaunch")
    assert mod.GRAPH_LAUNCH.match("cudaGraphLaunch") and not mod.GRAPH_LAUNCH.match("cudaLaunchKernel")


def test_compile_mode_reaches_the_compiled_backend_before_it_compiles(anim):
    """--compile-mode sets the mode the compiled backend compiles with at its first chunk; without it the
    backend keeps its own (default on the CPU)."""
    mod = profile_chunk
    for flag, mode in (([], "default"), (["--compile-mode", "max-autotune"], "max-autotune")):
        args = mod.parse_args(["--backend", "compiled", "--device", "cpu", *flag])
        backend, _ = mod.build(args, anim, None)
        assert backend.mode == mode and backend._compiled is None  # nothing compiled yet
