"""The lite profile's CPU path (issue #10): the stream's caches stay in place across chunks; the int8
ONNX graph (a measurement path, not a backend name) streams within a stated tolerance of float32
torch; ONNX Runtime CPU sessions follow torch's threads and do not spin. No timings here: speed
lives in scripts/lite_speed.py and docs/lite.md."""
import json

import numpy as np
import pytest
import torch

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.engines import TorchBackend, build_backend
from knotanim.errors import BackendUnavailable

# int8 stream vs float32 torch: max abs error of the committed latents, as a fraction of their largest
# value, over a stream that fills and wraps the history ring (measured on this tiny model: about 0.02).
INT8_STREAM_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def random_tiny():
    """A tiny animator whose zero-initialised layers are random, so every input moves the output."""
    anim = KnotAnimator.from_config(tiny_config(), seed=0)
    anim.model.randomize_zero_init(std=0.2, seed=1)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (anim.config.frame_size,) * 2 + (3,), dtype=np.uint8)
    samples = (rng.standard_normal(anim.config.samples_per_frame * 20) * 0.3).astype(np.float32)
    return anim, ref, samples


class CacheWatcher:
    """A ChunkBackend wrapper that records, per chunk, the storage of the cache tensors it is handed
    and what it returned."""

    def __init__(self, inner):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.pointers: list[dict[str, int]] = []
        self.outputs: list[tuple[torch.Tensor, ...]] = []

    def run(self, *inputs):
        ref_k, ref_v, hist_k, hist_v, knot = inputs[0], inputs[1], inputs[2], inputs[3], inputs[6]
        self.pointers.append({"ref_k": ref_k.data_ptr(), "ref_v": ref_v.data_ptr(), "hist_k": hist_k.data_ptr(),
                              "hist_v": hist_v.data_ptr(), "knot": knot.data_ptr()})
        out = self.inner.run(*inputs)
        self.outputs.append(tuple(t.clone() for t in out))
        return out


def test_stream_caches_are_updated_in_place_across_chunks(random_tiny):
    anim, ref, samples = random_tiny
    watcher = CacheWatcher(TorchBackend(anim.chunk_step(), anim.device))
    stream = anim.stream(ref, seed=1, backend=watcher)
    expected = {"ref_k": stream.reference.k.data_ptr(), "ref_v": stream.reference.v.data_ptr(),
                "hist_k": stream.ring.k.data_ptr(), "hist_v": stream.ring.v.data_ptr(),
                "knot": stream.knot.latent.data_ptr()}
    spf, cfg = anim.config.samples_per_frame, anim.config
    ring_after_chunk = []
    for start in range(0, samples.size, spf):  # one frame of audio per push, as a microphone would
        before = len(watcher.outputs)
        stream.push_audio(samples[start : start + spf])
        if len(watcher.outputs) > before:
            ring_after_chunk.append(stream.ring.k.clone())
    chunks = len(watcher.outputs)
    assert chunks * cfg.stream.chunk > 2 * cfg.stream.window  # the ring filled and wrapped around
    assert all(p == expected for p in watcher.pointers), "a cache tensor was reallocated between chunks"
    assert (stream.ring.k.data_ptr(), stream.ring.v.data_ptr(), stream.knot.latent.data_ptr()) == (
        expected["hist_k"], expected["hist_v"], expected["knot"])
    # The same storage holds new values each chunk: the committed frames' K/V, in their ring slots.
    assert all(not torch.equal(a, b) for a, b in zip(ring_after_chunk, ring_after_chunk[1:]))
    P, C, L = cfg.tokens_per_frame, cfg.stream.chunk, cfg.stream.window
    last_start = (chunks - 1) * C
    _, next_knot, new_k, new_v = watcher.outputs[-1]
    for i in range(C):
        slot = (last_start + i) % L
        torch.testing.assert_close(stream.ring.k[:, :, :, slot * P : (slot + 1) * P], new_k[:, :, :, i * P : (i + 1) * P])
        torch.testing.assert_close(stream.ring.v[:, :, :, slot * P : (slot + 1) * P], new_v[:, :, :, i * P : (i + 1) * P])
    torch.testing.assert_close(stream.knot.latent, next_knot)
    stream.reset()  # clearing keeps the storage too
    assert (stream.ring.k.data_ptr(), stream.knot.latent.data_ptr()) == (expected["hist_k"], expected["knot"])
    assert not stream.ring.k.any()


class LatentRecorder:
    def __init__(self, inner):
        self.inner, self.name, self.device = inner, inner.name, inner.device
        self.committed: list[torch.Tensor] = []

    def run(self, *inputs):
        out = self.inner.run(*inputs)
        self.committed.append(out[0].clone())
        return out


def _stream(anim, backend, ref, samples):
    recorder = LatentRecorder(backend)
    stream = anim.stream(ref, seed=3, head_motion=0.3, backend=recorder)
    frames = stream.push_audio(samples) + stream.finish()
    return torch.cat(recorder.committed, 1), frames


@pytest.fixture(scope="module")
def int8_backend(random_tiny, tmp_path_factory):
    pytest.importorskip("onnxruntime.quantization")
    pytest.importorskip("onnx")
    from knotanim.engines.export import ensure_onnx_int8
    from knotanim.engines.onnxrt import OnnxRuntimeBackend

    anim = random_tiny[0]
    result = ensure_onnx_int8(anim, tmp_path_factory.mktemp("artifacts"), progress=lambda _: None)
    return OnnxRuntimeBackend(result.path, result.descriptor, "cpu", threads=1, precision="int8")


def test_int8_stream_runs_and_stays_within_tolerance_of_fp32(random_tiny, int8_backend):
    import onnx

    from knotanim.engines.onnxrt import weight_matmuls

    anim, ref, samples = random_tiny
    int8 = int8_backend
    assert int8.name == "onnxruntime-int8[CPU]" and int8.path.name.endswith("-int8.onnx")
    # Every weight MatMul of the three DiT calls (two sampler steps, the cache pass) runs in int8.
    counts = weight_matmuls(onnx.load(str(int8.path)))
    assert counts["float32"] == 0 and counts["int8"] >= 3 * 4 * anim.config.model.depth
    report = json.loads(int8.path.with_suffix(".json").read_text())["parity"]  # the export's one-step check
    assert report["relative"] and set(report["max_abs"]) == {"committed", "next_knot", "new_k", "new_v"}
    assert all(0 < report["max_abs"][k] <= report["tolerance"] * report["scale"][k] for k in report["max_abs"])

    fp32_latents, fp32_frames = _stream(anim, TorchBackend(anim.chunk_step(), anim.device), ref, samples)
    int8_latents, int8_frames = _stream(anim, int8, ref, samples)
    assert [f.index for f in int8_frames] == [f.index for f in fp32_frames] and len(int8_frames) >= 20
    error = (int8_latents - fp32_latents).abs().max().item()
    scale = fp32_latents.abs().max().item()
    assert error <= INT8_STREAM_TOLERANCE * scale, f"int8 error {error:.3g} of latent scale {scale:.3g}"
    assert error > 1e-4 * scale  # it really ran quantized: float32 ONNX Runtime matches torch to ~1e-6


def test_int8_is_not_a_backend_name_and_is_cpu_only(random_tiny, int8_backend, tmp_path):
    from knotanim.engines.onnxrt import OnnxRuntimeBackend

    with pytest.raises(BackendUnavailable, match="unknown backend"):
        build_backend("onnxruntime-int8", random_tiny[0], artifacts=tmp_path)
    with pytest.raises(BackendUnavailable, match="CPU path"):
        OnnxRuntimeBackend(int8_backend.path, int8_backend.desc, "cuda", precision="int8")


def test_onnxruntime_cpu_session_follows_torch_threads_and_does_not_spin(random_tiny, int8_backend):
    anim = random_tiny[0]
    folder = int8_backend.path.parent  # the float32 graph is there too
    backend = build_backend("onnxruntime", anim, artifacts=folder, export=False)
    options = backend.session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads() == 1  # conftest: one torch thread
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _lite_speed_tiny(tmp_path, capsys, backends: str, *more: str):
    """scripts/lite_speed.py on the tiny config, one thread, 8 frames: (its output, the config path, its table rows)."""
    import lite_speed  # scripts/ is on sys.path (conftest.py)

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config().to_dict()), encoding="utf-8")
    assert lite_speed.main(["--config", str(config), "--threads", "1", "--frames", "8", "--backends", backends,
                            *more]) == 0
    r = capsys.readouterr()
    return r, config, [line for line in r.out.splitlines() if line.startswith(f"| {config} |")]


def test_lite_speed_script_times_a_config_through_measure_stream(tmp_path, capsys):
    r, config, rows = _lite_speed_tiny(tmp_path, capsys, "torch,no-such-backend")
    assert len(rows) == 2, r.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "torch" and float(cells[2]) > 0 and float(cells[3]) >= float(cells[2]) and int(cells[4]) >= 8
    assert "no-such-backend" in rows[1] and "unavailable: unknown backend" in rows[1]
    assert "load average" in r.out and "torch " in r.out


def test_lite_speed_script_compiles_before_timing_and_reports_the_compile_seconds(tmp_path, capsys):
    """--backends compiled: torch.compile of the step and the decoder happens in the build (its seconds in the
    "export s" column), not in the timed stream; the row names "compiled" (not "compiled->torch": no fallback)."""
    torch._dynamo.reset()  # another test of this process may have compiled the same tiny step already
    r, _, rows = _lite_speed_tiny(tmp_path, capsys, "compiled")
    assert len(rows) == 1, r.out
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "compiled" and float(cells[2]) > 0 and float(cells[6]) > 0, rows[0]
    assert "preparing the compiled backend" in r.err and "torch.compile failed" not in r.err


def test_attention_float_key_mask_and_keys_rotated_ahead_are_bit_identical():
    """ChunkStep hands attention a float key mask (0 / -inf, one broadcast row) and cached keys already rotated
    in time (ExtraKeys.pos None), made once per chunk: the same outputs, bit for bit, as a boolean mask and
    keys rotated inside each attention call."""
    from knotanim.model.dit import Attention
    from knotanim.model.rope import Rope3D

    torch.manual_seed(0)
    attn, rope = Attention(32, 2, qk_norm=True), Rope3D((4, 6, 6), 10000.0, grid=2)  # head dim 16, 4 tokens a frame
    x = torch.randn(1, 8, 32)  # 2 frames
    q_pos = torch.arange(2.0).repeat_interleave(4)
    extra_k, extra_v = torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 16)  # reference + 2 ring slots
    extra_pos = torch.tensor([5.0, -2.0, -1.0]).repeat_interleave(4)
    valid = torch.cat((torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool), torch.ones(12, dtype=torch.bool)))
    bool_mask = valid.unsqueeze(0).expand(8, -1)
    float_mask = torch.zeros(20).masked_fill(~valid, float("-inf")).unsqueeze(0).expand(8, -1)
    with torch.no_grad():
        a = attn(x, rope, q_pos, extra_k, extra_v, extra_pos, bool_mask)
        b = attn(x, rope, q_pos, rope.temporal(extra_k, extra_pos), extra_v, None, float_mask)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_lite_speed_script_times_a_bfloat16_dit(tmp_path, capsys):
    r, config, rows = _lite_speed_tiny(tmp_path, capsys, "torch", "--dtype", "bfloat16")
    assert len(rows) == 1 and rows[0].startswith(f"| {config} | torch |") and "DiT bfloat16" in r.out, r.out


def test_cpu_decode_runs_channels_last_with_the_same_frames():
    """ConvAutoencoder.decode on a CPU feeds the decoder NHWC (faster oneDNN convolutions): the same frames as the
    NCHW decoder within float rounding, and the same uint8 frames."""
    from knotanim.config import AutoencoderConfig
    from knotanim.model.autoencoder import ConvAutoencoder, tensor_to_frames

    torch.manual_seed(0)
    ae = ConvAutoencoder(AutoencoderConfig(base_channels=8, channel_mult=(1, 2, 4, 4))).eval()
    latents = torch.randn(3, ae.latent_mean.numel(), 8, 8)
    with torch.no_grad():
        got = ae.decode(latents)
        want = ae.decode_raw(latents * ae.latent_std.view(1, -1, 1, 1) + ae.latent_mean.view(1, -1, 1, 1))
    assert got.is_contiguous(memory_format=torch.channels_last) and want.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(tensor_to_frames(got).astype(int) - tensor_to_frames(want).astype(int)).max() <= 1


def test_lite_ab_script_interleaves_variants_and_reports_medians(tmp_path, capsys):
    import lite_ab  # scripts/ is on sys.path (conftest.py)

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config().to_dict()), encoding="utf-8")
    assert lite_ab.main(["--config", str(config), "--threads", "1", "--frames", "6", "--rounds", "2",
                         "--variants", "torch,torch@bfloat16"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| torch")}
    assert set(rows) == {"torch", "torch@bfloat16"}, out
    assert all(float(row.split("|")[3]) > 0 and len(row.split("|")[4].split()) == 2 for row in rows.values())
    assert "round 2:" in out and "load average" in out
