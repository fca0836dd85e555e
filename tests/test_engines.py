"""Backends and export: ONNX Runtime matches eager torch over a whole stream; selection and cache keys."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.engines import (BACKENDS, CompiledTorchBackend, TorchBackend, build_backend, chunk_step_descriptor,
                              select_backend)
from knotanim.engines.cache import EngineKey, check_engine, checkpoint_hash, resolve_precision
from knotanim.engines.select import auto_candidates, live_candidates
from knotanim.errors import BackendUnavailable

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _anim(seed=0):
    anim = KnotAnimator.from_config(tiny_config(), seed=seed)
    torch.manual_seed(seed + 1)  # random (non-zero) output layers: a real signal, not zeros
    for p in anim.model.parameters():
        if torch.count_nonzero(p) == 0:
            p.data.normal_(0, 0.2)
    return anim


class Recording:
    """A ChunkBackend wrapper that keeps every chunk's outputs."""

    def __init__(self, inner):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.outputs = []

    def run(self, *inputs):
        out = self.inner.run(*inputs)
        self.outputs.append(tuple(t.clone() for t in out))
        return out


def _drive(anim, backend, ref, samples, knot=True):
    stream = anim.stream(ref, seed=3, head_motion=0.3, knot=knot, run_ahead=True, backend=backend)
    frames = stream.push_audio(samples) + stream.finish()
    return frames, stream


@pytest.fixture(scope="module")
def tiny():
    anim = _anim()
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (anim.config.frame_size,) * 2 + (3,), dtype=np.uint8)
    samples = (rng.standard_normal(anim.config.samples_per_frame * 15) * 0.3).astype(np.float32)
    return anim, ref, samples


@pytest.mark.parametrize("knot", [True, False])
def test_onnxruntime_stream_matches_torch(tiny, tmp_path, knot):
    anim, ref, samples = tiny
    eager = Recording(TorchBackend(anim.chunk_step(), anim.device))
    frames_t, _ = _drive(anim, eager, ref, samples, knot)
    ort_backend, reason = select_backend("onnxruntime", anim, knot=knot, artifacts=tmp_path)
    assert ort_backend.name == "onnxruntime[CPU]" and "requested" in reason
    ort = Recording(ort_backend)
    frames_o, stream = _drive(anim, ort, ref, samples, knot)
    n_chunks = len(eager.outputs)
    assert n_chunks >= 7 and len(ort.outputs) == n_chunks  # well past the window of 3 frames
    assert stream.ring.valid.all()  # the ring filled and wrapped: its caches took part
    for j, (a, b) in enumerate(zip(eager.outputs, ort.outputs)):
        for name, x, y in zip(("committed", "next_knot", "new_k", "new_v"), a, b):
            if name == "next_knot" and not knot:
                continue
            assert x.abs().mean() > 1e-2, (j, name)  # not trivially zeros
            torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-4, msg=lambda m: f"chunk {j} {name}: {m}")
    assert [f.index for f in frames_o] == [f.index for f in frames_t]
    diff = max(int(np.abs(a.image.astype(int) - b.image.astype(int)).max()) for a, b in zip(frames_t, frames_o))
    assert diff <= 1  # uint8 frames: at most one level of rounding


def _drive_with_step_change(anim, ref, samples, backend, factory, at_frames, steps=(2, 1)):
    """Stream `samples` with steps[0], switching to steps[1] once `at_frames` frames of audio went in."""
    stream = anim.stream(ref, seed=3, head_motion=0.3, steps=steps[0], backend=backend, backend_factory=factory)
    cut = anim.config.samples_per_frame * at_frames
    frames = stream.push_audio(samples[:cut])
    chunks_before = stream.chunk_index
    stream.set_steps(steps[1])
    frames += stream.push_audio(samples[cut:]) + stream.finish()
    return frames, stream, chunks_before


def test_onnxruntime_stream_changes_steps_mid_stream_like_torch(tiny, tmp_path):
    """set_steps on an exported backend swaps in the graph built for the new step count; the stream's
    caches (ring, knot, reference) carry over, so it matches eager torch making the same change."""
    from knotanim.engines.select import StepBackends

    anim, ref, samples = tiny
    samples = np.concatenate([samples, samples[::-1]])  # 30 frames: many chunks on each side of the change
    eager = Recording(TorchBackend(anim.chunk_step(2), anim.device))
    eager_steps = []

    def torch_factory(steps):  # eager torch through the same factory path, recording each chunk
        eager_steps.append(steps)
        eager.inner = TorchBackend(anim.chunk_step(steps), anim.device)
        return eager

    frames_t, stream_t, before_t = _drive_with_step_change(anim, ref, samples, eager, torch_factory, 12)
    backends = StepBackends("onnxruntime", anim, artifacts=tmp_path).prepare([2, 1])
    assert backends.prepared == (2, 1)
    assert {p.name.split("-")[1] for p in tmp_path.glob("*.onnx")} == {"knot1"}
    assert sorted(p.name.split("-")[2] for p in tmp_path.glob("*.onnx")) == ["steps1", "steps2"]
    ort = Recording(backends(2))
    swaps = []

    def ort_factory(steps):
        swaps.append(steps)
        ort.inner = backends(steps, build=False)
        return ort

    frames_o, stream_o, before_o = _drive_with_step_change(anim, ref, samples, ort, ort_factory, 12)
    assert swaps == eager_steps == [1] and before_o == before_t >= 3
    assert stream_o.step is anim.chunk_step(1) and ort.inner is backends(1) and ort.inner is not backends(2)
    n = len(eager.outputs)
    assert n >= before_t + 5 and len(ort.outputs) == n and stream_o.ring.valid.all()
    # After the change the committed latents differ from a stream that kept 2 steps (the change is real) ...
    kept, _ = _drive(anim, Recording(backends(2)), ref, samples)
    after = (before_t + 1) * anim.config.stream.chunk
    assert max(int(np.abs(a.image.astype(int) - b.image.astype(int)).max())
               for a, b in zip(kept[after:], frames_o[after:])) > 1
    # ... and every chunk, before and after it, matches eager torch within the ONNX parity tolerance.
    for j, (a, b) in enumerate(zip(eager.outputs, ort.outputs)):
        for name, x, y in zip(("committed", "next_knot", "new_k", "new_v"), a, b):
            torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-4, msg=lambda m: f"chunk {j} {name}: {m}")
    assert [f.index for f in frames_o] == [f.index for f in frames_t]
    diff = max(int(np.abs(a.image.astype(int) - b.image.astype(int)).max()) for a, b in zip(frames_t, frames_o))
    assert diff <= 1
    with pytest.raises(BackendUnavailable, match="not prepared for 4 sampler steps"):
        backends(4, build=False)


def test_set_steps_without_a_factory_on_an_exported_backend_is_clear(tiny, tmp_path):
    anim, ref, samples = tiny
    stream = anim.stream(ref, backend=build_backend("onnxruntime", anim, artifacts=tmp_path))
    with pytest.raises(BackendUnavailable, match="no backend factory"):
        stream.set_steps(1)
    named = anim.stream(ref, backend="torch")  # a name gets a factory of its kind
    named.set_steps(1)
    assert named.step is anim.chunk_step(1) and isinstance(named.backend, TorchBackend)


def test_default_backend_is_eager_torch(tiny):
    anim, ref, _ = tiny
    stream = anim.stream(ref)
    assert isinstance(stream.backend, TorchBackend) and stream.backend.step is stream.step


def test_graph_variant_mismatch_is_clear(tiny, tmp_path):
    anim, ref, samples = tiny
    backend, _ = select_backend("onnxruntime", anim, knot=True, artifacts=tmp_path)
    stream = anim.stream(ref, knot=False, backend=backend)
    with pytest.raises(BackendUnavailable, match="knot1.*audio.*expects"):
        stream.push_audio(samples)


def test_auto_measures_ready_backends(tiny, tmp_path):
    anim, _, _ = tiny
    backend, reason = select_backend("auto", anim, artifacts=tmp_path)
    assert backend.name == "torch" and "only backend ready" in reason and "onnxruntime" in reason
    build_backend("onnxruntime", anim, artifacts=tmp_path)  # exports: now it is ready
    backend, reason = select_backend("auto", anim, artifacts=tmp_path, runs=1)
    assert "fastest per chunk" in reason and "onnxruntime[CPU]" in reason and "torch" in reason
    assert backend.name in reason.split(":")[0]


def test_auto_candidates_and_names():
    assert set(BACKENDS) == {"torch", "compiled", "onnxruntime", "tensorrt", "aoti", "auto"}
    assert "compiled" not in auto_candidates(torch.device("cpu"))
    assert auto_candidates(torch.device("cuda"))[:1] == ["tensorrt"] and "compiled" in auto_candidates(torch.device("cuda"))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert live_candidates(cpu) == [("onnxruntime", False), ("torch", True)]  # a CPU builds nothing at start
    assert ("compiled", True) in live_candidates(cuda)
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        build_backend("tensorflow", _anim())


def test_compiled_backend_falls_back_clearly(tiny, monkeypatch, capsys):
    anim, _, _ = tiny

    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    backend = CompiledTorchBackend(anim.chunk_step(), "cpu")
    inputs = chunk_step_descriptor(anim.config).sample_inputs(0)
    with torch.no_grad():
        out = backend.run(*inputs)
        ref = anim.chunk_step()(*inputs)
    assert backend.name == "compiled->torch" and "no compiler here" in backend.fallback_reason
    assert "running eagerly" in capsys.readouterr().err
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)


def test_descriptor_shapes_match_the_step(tiny):
    anim, _, _ = tiny
    for knot in (True, False):
        desc = chunk_step_descriptor(anim.config, knot=knot)
        inputs = desc.sample_inputs(1)
        desc.check(inputs)
        with torch.no_grad():
            out = anim.chunk_step()(*inputs)
        desc.check(out, "output")
        assert desc.meta["frames"] == anim.config.stream.chunk + int(knot)


# --- TensorRT engine cache keys (no GPU needed: fake device properties) -----------------------------
def _props(major, minor, name="Fake GPU"):
    return SimpleNamespace(major=major, minor=minor, name=name)


def test_engine_key_and_mismatch(tmp_path):
    key = EngineKey.for_device(_props(9, 0, "H200"), "10.9.0", "ab" * 32, "bf16", "chunk_step-knot1-steps4-b1")
    assert key.stem == "chunk_step-knot1-steps4-b1-abababababab-bf16-sm90-trt10.9.0"
    engine = tmp_path / f"{key.stem}.engine"
    engine.write_bytes(b"x")
    key.write(engine)
    check_engine(engine, EngineKey.for_device(_props(9, 0, "Other H200 name"), "10.9.0", "ab" * 32, "bf16",
                                              key.tag))  # the name is informative only
    with pytest.raises(BackendUnavailable, match=r"another setup.*compute_capability: 9.0 != 8.9"):
        check_engine(engine, EngineKey.for_device(_props(8, 9, "L40S"), "10.9.0", "ab" * 32, "bf16", key.tag))
    with pytest.raises(BackendUnavailable, match="tensorrt: 10.9.0 != 10.13.0"):
        check_engine(engine, EngineKey.for_device(_props(9, 0), "10.13.0", "ab" * 32, "bf16", key.tag))
    with pytest.raises(BackendUnavailable, match="no key file"):
        (tmp_path / "lonely.engine").write_bytes(b"x")
        check_engine(tmp_path / "lonely.engine", key)


def test_precision_by_capability():
    assert resolve_precision("auto", _props(9, 0)) == "bf16"
    assert resolve_precision("auto", _props(7, 5)) == "fp16"
    assert resolve_precision("fp8", _props(8, 9)) == "fp8"
    with pytest.raises(BackendUnavailable, match="FP8 needs compute capability >= 8.9"):
        resolve_precision("fp8", _props(8, 0))
    with pytest.raises(BackendUnavailable, match="BF16"):
        resolve_precision("bf16", _props(7, 5))


def test_checkpoint_hash_follows_shard_checksums(tmp_path):
    anim = _anim()
    a = checkpoint_hash(anim.save_pretrained(tmp_path / "a"))
    assert a == checkpoint_hash(anim.save_pretrained(tmp_path / "b"))
    with torch.no_grad():
        anim.model.out.bias.add_(1.0)
    assert a != checkpoint_hash(anim.save_pretrained(tmp_path / "c"))


def test_tensorrt_backend_or_clear_reason(tiny, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        anim, _, _ = tiny
        with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
            build_backend("tensorrt", anim, artifacts=tmp_path)
        pytest.skip("tensorrt is not installed here (its PyPI wheels only download from NVIDIA's index)")
    if not torch.cuda.is_available():
        pytest.skip("tensorrt is installed but there is no CUDA GPU")
    anim = KnotAnimator.from_config(tiny_config(), device="cuda", dtype=torch.float32)
    backend, _ = select_backend("tensorrt", anim, artifacts=tmp_path, precision="fp32")
    desc = chunk_step_descriptor(anim.config)
    inputs = desc.sample_inputs(0, "cuda")
    with torch.no_grad():
        ref = anim.chunk_step()(*inputs)
    for a, b in zip(backend.run(*inputs), ref):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


# --- the export CLI -----------------------------------------------------------------------------------
def test_export_cli_writes_onnx_and_reports_parity(tmp_path, capsys):
    from knotanim.cli.main import main

    model = _anim().save_pretrained(tmp_path / "model")
    rc = main(["export", "--format", "onnx", "--model", str(model), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    onnx_files = list((tmp_path / "out").glob("chunk_step-knot1-steps2-b1-*.onnx"))
    assert len(onnx_files) == 1 and onnx_files[0].with_suffix(".json").is_file()
    assert "parity onnxruntime[CPU] vs torch: max abs error" in out and "tolerance" in out
    worst = float(out.split("max abs error ")[1].split()[0])
    assert worst < 1e-4
    assert "tracing" in err and "parity check" in err  # stages are printed as they start
    rc = main(["export", "--model", str(model), "--out", str(tmp_path / "out")])
    assert rc == 0 and "(reused)" in capsys.readouterr().out


def test_export_cli_tensorrt_absent_is_one_line(tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed")
    except ImportError:
        pass
    from knotanim.cli.main import main

    model = _anim().save_pretrained(tmp_path / "model")
    rc = main(["export", "--format", "tensorrt", "--model", str(model), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "TensorRT is not installed" in err and "Traceback" not in err


# --- the compiled backend's decoder (Inductor on the CPU) --------------------------------------------
def _latents(anim, n, seed=0):
    cfg = anim.config
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, cfg.autoencoder.latent_channels, cfg.latent_size, cfg.latent_size), generator=g)


def test_compiled_decode_matches_eager_and_takes_any_length(tiny):
    """build_backend("compiled") compiles the frame decoder (StepBackends.prepare warms it up for a chunk):
    it decodes as animator.decode; latents of another length (a last, shorter batch) decode eagerly."""
    from knotanim.engines.select import StepBackends

    anim, _, _ = tiny
    chunk = anim.config.stream.chunk
    backend = StepBackends("compiled", anim).prepare([None])()
    assert backend.decode is not None and backend._decode_shape == tuple(_latents(anim, chunk).shape)
    for seed in (1, 2):
        z = _latents(anim, chunk, seed)
        torch.testing.assert_close(backend.decode(z), anim.decode(z), atol=1e-5, rtol=1e-5)
    for n in (1, chunk + 1):
        z = _latents(anim, n, 3)
        assert torch.equal(backend.decode(z), anim.decode(z))  # eager: exactly the animator's
    assert backend.decode_fallback_reason is None and backend._decode_shape[0] == chunk
    # no autoencoder (the old constructor) or compile_decoder=False: no decoder, the stream decodes eagerly
    assert CompiledTorchBackend(anim.chunk_step(), "cpu").decode is None
    assert build_backend("compiled", anim, compile_decoder=False).decode is None
    assert TorchBackend(anim.chunk_step()).__dict__.get("decode") is None


@pytest.mark.parametrize("compile_decoder", [True, False])
def test_compiled_stream_matches_torch_with_decode_compiled_or_not(tiny, monkeypatch, compile_decoder):
    anim, ref, samples = tiny
    eager, _ = _drive(anim, TorchBackend(anim.chunk_step(), anim.device), ref, samples)
    calls = []
    animator_decode = anim.decode
    monkeypatch.setattr(anim, "decode", lambda z: calls.append(z.shape) or animator_decode(z))
    backend = CompiledTorchBackend(anim.chunk_step(), anim.device, autoencoder=anim.autoencoder,
                                   compile_decoder=compile_decoder)
    frames, stream = _drive(anim, backend, ref, samples)
    assert backend.name == "compiled" and backend.decode_fallback_reason is None
    assert len(calls) == (0 if compile_decoder else stream.chunk_index)  # who decoded
    assert [f.index for f in frames] == [f.index for f in eager] and len(frames) > 2 * anim.config.stream.chunk
    diff = np.stack([np.abs(a.image.astype(int) - b.image.astype(int)) for a, b in zip(frames, eager)])
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())  # float rounding, then uint8


def _raises(message):
    def fail(*args, **kwargs):
        raise RuntimeError(message)
    return fail


def test_compiled_decode_falls_back_clearly(tiny, monkeypatch, capsys):
    anim, ref, samples = tiny
    z = _latents(anim, anim.config.stream.chunk)
    # a compile that fails: eager decode, one message, the step's name unchanged
    backend = CompiledTorchBackend(anim.chunk_step(), "cpu", autoencoder=anim.autoencoder)
    with monkeypatch.context() as m:
        m.setattr(torch, "compile", _raises("no compiler here"))
        assert torch.equal(backend.decode(z), anim.decode(z)) and torch.equal(backend.decode(z), anim.decode(z))
        assert "no compiler here" in backend.decode_fallback_reason and backend.name == "compiled"
        err = capsys.readouterr().err
        assert err.count("decoder: torch.compile failed") == 1 and "decoding eagerly" in err
        # a whole stream with torch.compile broken: step and decoder eager, the torch backend's frames exactly
        broken = CompiledTorchBackend(anim.chunk_step(), "cpu", autoencoder=anim.autoencoder)
        frames, _ = _drive(anim, broken, ref, samples)
    eager, _ = _drive(anim, TorchBackend(anim.chunk_step(), anim.device), ref, samples)
    assert broken.name == "compiled->torch" and broken.decode_fallback_reason is not None
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, eager)) and len(frames) == len(eager)
    assert capsys.readouterr().err.count("decoding eagerly") == 1

    # a failure at a later call (as a CUDA-graph capture can fail after the compile): eager from then on
    late = CompiledTorchBackend(anim.chunk_step(), "cpu", autoencoder=anim.autoencoder)
    late._decode_shape = tuple(z.shape)
    late._compiled_decode = _raises("capture failed")
    assert torch.equal(late.decode(z), anim.decode(z)) and "capture failed" in late.decode_fallback_reason
    assert late._compiled_decode is None and "decoder: torch.compile failed" in capsys.readouterr().err


def test_a_bf16_animator_decodes_in_bf16_everywhere_within_a_few_levels():
    """A bf16 animator's decoder runs its convolutions in bf16 (autocast), the eager path (animator.decode) and
    the compiled backend's alike (build_backend passes the animator's dtype); the uint8 frames stay within a
    few levels of float32's, and a float32 animator decodes in float32 exactly as before."""
    from knotanim.model.autoencoder import tensor_to_frames

    fp32 = _anim()
    bf16 = KnotAnimator.from_config(fp32.config, dtype=torch.bfloat16, seed=0)
    bf16.autoencoder.load_state_dict(fp32.autoencoder.state_dict())
    z = _latents(fp32, fp32.config.stream.chunk)
    want = fp32.decode(z)
    assert torch.equal(want, fp32.autoencoder.decode(z))  # float32: no autocast, as before
    got = bf16.decode(z)
    assert got.dtype == torch.float32 and not torch.equal(got, want)  # computed in bf16, returned as float
    levels = np.abs(tensor_to_frames(got).astype(int) - tensor_to_frames(want).astype(int))
    # a random tiny decoder is rougher than a trained one (the shipped default: at most 1 level, docs/benchmarks.md)
    assert levels.max() <= 6 and levels.mean() < 0.5, (levels.max(), levels.mean())
    assert build_backend("compiled", bf16).decode_dtype == torch.bfloat16
    assert build_backend("compiled", fp32).decode_dtype == torch.float32
