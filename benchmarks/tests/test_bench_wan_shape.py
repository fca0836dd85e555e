"""benchmarks/bench_wan_shape.py on the CPU: FLOP formula, cache behaviour of both workloads, the CLI path."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from triton_interpreter import needs_triton, run_interpreted

import bench_wan_shape as bw  # benchmarks/ is on sys.path (conftest.py)

TINY = dict(layers=2, width=64, heads=2, ffn=128, text_tokens=8, tokens_per_frame=16, chunk=3, steps=4)


def counted_chunk_flops(s, cache_frames: int) -> int:
    """Brute force: run one chunk on meta tensors under FlopCounterMode."""
    dev = torch.device("meta")
    st = bw.Stream(s, bw.make_params(s, dev, torch.float32), dev, torch.float32)
    st.set_slot(cache_frames)
    with FlopCounterMode(display=False) as fc:
        st.chunk((cache_frames + s.chunk) * s.tokens_per_frame)
    return fc.get_total_flops()


@pytest.mark.parametrize("shape", [TINY, dict(layers=2)])  # tiny, and two layers of the Wan shape
@pytest.mark.parametrize("cache_frames", [0, 9, 18])
def test_flop_formula_matches_flop_counter(shape, cache_frames):
    s = bw.Shape(**shape)
    formula = bw.chunk_flops(s, cache_frames)["total"]
    counted = counted_chunk_flops(s, cache_frames)
    assert counted > 0
    assert abs(formula - counted) / counted < 0.05, (formula, counted)


def test_wan_shape_floor_numbers():
    s = bw.Shape()
    assert bw.plan(s, "clip") == {"caches": [0, 3, 6, 9, 12, 15, 18], "video_frames": 81}
    assert bw.plan(s, "steady") == {"caches": [18], "video_frames": 12}
    # 4 steps and the cache write, whose last layer stops at its q, k, v (202.03 and 990.35 with a whole pass)
    assert math.isclose(bw.workload_flops(s, "steady") / 1e12, 200.75, rel_tol=1e-3)
    assert math.isclose(bw.workload_flops(s, "clip") / 1e12, 984.21, rel_tol=1e-3)


def test_clip_cache_grows_and_reads_only_what_it_wrote():
    s = bw.Shape(**TINY)
    st = bw.Stream(s, bw.make_params(s, "cpu", torch.float32), torch.device("cpu"), torch.float32)
    P, C = s.tokens_per_frame, s.chunk
    shape, ptr = st.k_cache.shape, st.k_cache.data_ptr()
    assert torch.isnan(st.k_cache).all()  # poisoned
    for j, run in enumerate(bw.runners(st, "clip", graphs=False)):
        run()
        assert st.trace[-1] == {"slot": C * j, "kv": (j + 1) * C * P}
        written = (j + 1) * C * P
        assert torch.isfinite(st.out).all()  # never read an unwritten (NaN) slot
        for cache in (st.k_cache, st.v_cache):
            assert torch.isfinite(cache[:, :, :, :written]).all()
            assert torch.isnan(cache[:, :, :, written:]).all()
    assert len(st.trace) == s.window // C and st.trace[-1]["kv"] == s.window * P
    assert st.k_cache.shape == shape and st.k_cache.data_ptr() == ptr


def dequantized_attention(q, fp8_keys):
    """The FP8 cache's keys and values back in float32, through SDPA: the Triton kernel's arithmetic minus its
    FP8 q and p (which need the GPU), to check what fp8-triton's stream writes and reads on the CPU."""
    k, v = dequantized(fp8_keys)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def dequantized(c):
    """An FP8 cache's keys and values in float32 ([..., N, D] both), scales per key or per head."""
    ks, vs = (x[..., None] if c.per_key else x[..., None, None] for x in (c.k_scale, c.v_scale))
    return c.k.float() * ks, c.v_t.float().transpose(-1, -2) * vs


@pytest.mark.parametrize("per_key", [True, False])
def test_fp8_cache_stream_writes_each_chunk_once_and_matches_the_bf16_cache(per_key):
    s = bw.Shape(**TINY)
    params = bw.make_params(s, "cpu", torch.float32)
    plain = bw.Stream(s, params, torch.device("cpu"), torch.float32)
    fp8 = bw.Stream(s, params, torch.device("cpu"), torch.float32)
    fp8.use_fp8_cache(per_key)
    fp8.attend = dequantized_attention
    fp8.poison_cache()
    P, C = s.tokens_per_frame, s.chunk
    for j, (a, b) in enumerate(zip(bw.runners(plain, "clip", graphs=False), bw.runners(fp8, "clip", graphs=False))):
        a()
        b()
        written = (j + 1) * C * P
        c = fp8.fp8_cache
        for codes in (c.k.float(), c.v_t.float().transpose(-1, -2)):  # NaN codes where this clip has not written yet
            assert torch.isfinite(codes[..., :written, :]).all() and torch.isnan(codes[..., written:, :]).all()
        assert torch.isfinite(fp8.out).all()  # never read an unwritten slot
        err = float((fp8.out - plain.out).norm() / plain.out.norm())
        assert err < 0.1, (j, err)  # e4m3's 3 mantissa bits on k and v
    # the cache holds the same keys and values (up to FP8 and the streams' small divergence), in its own layouts
    for got, want in zip(dequantized(c), (plain.k_cache, plain.v_cache)):
        assert float((got - want).norm() / want.norm()) < 0.1


def test_steady_cache_fixed_size_ring():
    s = bw.Shape(**TINY)
    st = bw.Stream(s, bw.make_params(s, "cpu", torch.float32), torch.device("cpu"), torch.float32)
    st.randomize_cache()
    P, C, slots = s.tokens_per_frame, s.chunk, s.window // s.chunk
    shape, ptr = st.k_cache.shape, st.k_cache.data_ptr()
    (run,) = bw.runners(st, "steady", graphs=False)
    for i in range(slots + 2):
        before = st.k_cache.clone()
        run()
        start = C * (i % slots)
        assert st.trace[-1] == {"slot": start, "kv": s.window * P}
        changed = (st.k_cache != before).any(dim=(0, 1, 2, 4)).nonzero().flatten()
        assert changed.min() >= start * P and changed.max() < (start + C) * P  # only the oldest chunk replaced
        assert st.k_cache.shape == shape and st.k_cache.data_ptr() == ptr
        assert torch.isfinite(st.out).all()


def test_cli_eager_tiny(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_MULTI_KERNEL", "1")  # Inductor's settings are recorded with the results
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    out = tmp_path / "wan.json"
    res = bw.main(args + ["--variants", "eager,graphs", "--iters", "2", "--warmup", "1", "--device", "cpu",
                          "--out", str(out)])
    saved = json.loads(out.read_text())
    assert {(r["variant"], r["workload"]) for r in saved["runs"]} == {("eager", "clip"), ("eager", "steady")}
    assert saved["skipped"][0]["variant"] == "graphs"
    assert saved["inductor_env"]["TORCHINDUCTOR_MULTI_KERNEL"] == "1"
    for r in res["runs"]:
        assert r["finite"] and r["fps"] > 0 and r["ms_per_chunk"] > 0
    assert res["runs"][0]["rel_err_vs_eager"] == 0.0
    assert "| variant | workload | FPS |" in capsys.readouterr().out


def test_variant_parsing_default_order_and_new_variants():
    assert bw.VARIANTS == ("eager", "compile", "graphs", "fp8", "cudnn", "fp8-cudnn", "fp8-flex", "fp8-flex16",
                           "triton", "fp8-triton", "fp8-triton-h", "fp8s", "fp8s-triton-h", "fp8s-triton-f")  # new last
    assert bw.parse_variants(",".join(bw.VARIANTS)) == list(bw.VARIANTS)
    assert bw.parse_variants("fp8-cudnn,cudnn") == ["fp8-cudnn", "cudnn"]  # the given order is kept
    with pytest.raises(Exception, match="unknown variant"):
        bw.parse_variants("eager,cudnnn")
    with pytest.raises(SystemExit):  # through the command line: argparse's usage error, no benchmark run
        bw.main(["--variants", "bogus", "--device", "cpu"])


def test_cudnn_attention_probe_on_the_cpu():
    why = bw.cudnn_attention_problem(torch.device("cpu"), torch.float32, 32)
    assert why and "CUDA" in why and "\n" not in why


def test_load1_reads_loadavg_file(tmp_path, monkeypatch):
    fake = tmp_path / "loadavg"
    fake.write_text("37.25 30.00 20.00 5/900 1234\n")
    monkeypatch.setenv("LOADAVG_FILE", str(fake))
    assert bw.load1() == 37.25
    monkeypatch.setenv("LOADAVG_FILE", str(tmp_path / "absent"))
    assert bw.load1() is None


def test_cli_cudnn_variants_skipped_on_the_cpu(tmp_path, capsys):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    out = tmp_path / "wan.json"
    res = bw.main(args + ["--variants", "eager,cudnn,fp8-cudnn", "--workloads", "clip", "--iters", "1",
                          "--warmup", "0", "--device", "cpu", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [(r["variant"], r["workload"], r["attention"]) for r in saved["runs"]] == [("eager", "clip", "default")]
    skipped = {s["variant"]: s["reason"] for s in saved["skipped"]}
    assert list(skipped) == ["cudnn", "fp8-cudnn"], saved["skipped"]
    for reason in skipped.values():
        assert reason and "\n" not in reason and "CUDA" in reason
    assert "cuDNN attention needs a CUDA device" in saved["cudnn_attention"]
    assert "load1_at_start" in res["runs"][0] and saved["cpu_count"] >= 1
    printed = capsys.readouterr().out
    assert "| cudnn | all | skipped: " in printed and "| fp8-cudnn | all | skipped: " in printed


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_quantized_flex_attention_scales_back_to_sdpa(dtype, tolerance):
    """The fp8-flex variant's attention with the storage dtype swapped for one a CPU computes: the per-tensor
    scales on q, k (scores) and v (output) undo themselves, so it matches SDPA up to the storage's rounding.
    Inputs far from 1 in size (x 30, x 0.01) make a wrong or missing scale show."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 16, 8, generator=g) * 30
    k = torch.randn(1, 2, 48, 8, generator=g) * 0.01
    v = torch.randn(1, 2, 48, 8, generator=g) * 30
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    got = bw.quantized_flex_attention(q, k, v, dtype=dtype)
    assert got.dtype == q.dtype
    assert float((got - want).norm() / want.norm()) < tolerance


def test_fp8_flex_compiles_the_cast_and_the_attention_apart(monkeypatch):
    """Compiled as one function, the cast fused into FlexAttention's inputs and torch 2.11's CUDA lowering
    rejected it; the variant compiles quantize_qkv and flex_attention separately, each with the run's mode,
    and the pieces still compute the same attention (float32 storage, so a CPU can check it)."""
    from torch.nn.attention.flex_attention import flex_attention

    compiled = []

    def fake_compile(fn, **kwargs):
        compiled.append((fn, kwargs.get("mode")))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    attention = bw.compiled_quantized_flex_attention("max-autotune-no-cudagraphs", torch.float32)
    assert compiled == [(bw.quantize_qkv, "max-autotune-no-cudagraphs"), (flex_attention, "max-autotune-no-cudagraphs")]
    assert bw.FLEX_VARIANTS == {"fp8-flex": torch.float8_e4m3fn, "fp8-flex16": torch.bfloat16}
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, n, 8, generator=g) * 20 for n in (16, 32, 32))
    got = attention(q, k, v)  # the storage dtype given when it was made
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert float((got - want).norm() / want.norm()) < 1e-5


def test_cli_fp8_flex_skipped_on_the_cpu(tmp_path):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    out = tmp_path / "wan.json"
    bw.main(args + ["--variants", "fp8-flex,fp8-flex16", "--workloads", "clip", "--iters", "1", "--warmup", "0",
                    "--device", "cpu", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["runs"] == [] and [s["variant"] for s in saved["skipped"]] == ["fp8-flex", "fp8-flex16"]
    assert "CUDA" in saved["skipped"][0]["reason"]


def test_compile_mode_reaches_every_compiled_function(tmp_path, monkeypatch):
    """--compile-mode is passed to each torch.compile of the compiled variants and recorded in the JSON;
    without it torch's default (mode None) is used."""
    modes = []

    def fake_compile(fn, **kwargs):
        modes.append(kwargs.get("mode"))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    common = ["--variants", "compile", "--workloads", "clip", "--iters", "1", "--warmup", "0", "--device", "cpu"]
    for flag, want in (([], None), (["--compile-mode", "max-autotune-no-cudagraphs"], "max-autotune-no-cudagraphs")):
        modes.clear()
        out = tmp_path / "wan.json"
        bw.main(args + common + flag + ["--out", str(out)])
        assert modes and set(modes) == {want}
        assert json.loads(out.read_text())["compile_mode"] == (want or "default")


def test_kernels_sort_into_attention_matmul_and_the_rest():
    assert bw.kernel_kind("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7") == "attention"
    assert bw.kernel_kind("_attention_forward") == "attention"
    assert bw.kernel_kind("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x256x128") == "matmul"
    assert bw.kernel_kind("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT") == "matmul"
    assert bw.kernel_kind("triton_per_fused__to_copy_abs_amax_clamp_div_0") == "other"
    # Inductor's kernels are named after what they fuse, the op they feed included: still not a matmul
    assert bw.kernel_kind("triton_poi_fused__scaled_mm__to_copy_clamp_div_gelu_t_5") == "other"


def test_triton_variants_take_the_kernel_config_and_key_splits_given():
    import triton_attention as ta
    attend = bw.triton_attend("per head", "64x128w4s3a", "2")
    assert attend.func is ta.attention
    assert attend.keywords == {"blocks": ta.parse_blocks("64x128w4s3a"), "key_splits": 2}
    assert bw.triton_attend("per head").keywords == {"blocks": None, "key_splits": 1}  # the kernel's defaults
    assert bw.triton_attend(None).keywords["key_splits"] == "auto"
    assert bw.triton_attend("per key", None, "auto").keywords["key_splits"] == "auto"
    with pytest.raises(ValueError, match="BLOCK_M"):
        bw.triton_attend("per head", "64-128")


def test_the_cache_write_pass_writes_every_layer_as_a_whole_pass_does():
    s = bw.Shape(**TINY)
    st = bw.Stream(s, bw.make_params(s, "cpu", torch.float32), torch.device("cpu"), torch.float32)
    st.randomize_cache()
    before = st.k_cache.clone(), st.v_cache.clone()
    st.set_slot(s.chunk)  # the second chunk's slot, after a chunk of history
    kv = 2 * s.chunk * s.tokens_per_frame
    x = torch.randn_like(st.x_in)
    assert st.forward(x, st.t[-1], kv) is not None
    whole = st.k_cache.clone(), st.v_cache.clone()
    st.k_cache.copy_(before[0])
    st.v_cache.copy_(before[1])
    assert st.forward(x, st.t[-1], kv, cache_only=True) is None
    assert not torch.equal(whole[0], before[0])  # the pass wrote something
    torch.testing.assert_close(st.k_cache[:, :, :, :kv], whole[0][:, :, :, :kv])
    torch.testing.assert_close(st.v_cache[:, :, :, :kv], whole[1][:, :, :, :kv])


def test_calibrated_activation_scales_are_fixed_and_agree_with_the_dynamic_ones():
    s = bw.Shape(**TINY)
    params = bw.make_params(s, "cpu", torch.float32)
    dynamic = bw.Stream(s, bw.to_fp8(params), torch.device("cpu"), torch.float32)
    static = bw.Stream(s, bw.to_fp8(params), torch.device("cpu"), torch.float32)
    bw.calibrate_activation_scales(static)
    for lp in static.p["layers"]:
        for k in bw.FP8_KEYS:
            w8, ws, xs = lp[k]
            assert isinstance(xs, torch.Tensor) and xs.dim() == 0 and 0 < float(xs) < 1  # a fixed, finite scale
    assert all(len(lp[k]) == 2 for lp in dynamic.p["layers"] for k in bw.FP8_KEYS)  # the other copy untouched
    for st in (dynamic, static):
        st.randomize_cache()
        st.k_cache.copy_(dynamic.k_cache)
        st.v_cache.copy_(dynamic.v_cache)
        st.set_slot(0)
        st.chunk(s.window * s.tokens_per_frame)
    err = float((static.out - dynamic.out).norm() / dynamic.out.norm())
    assert err < 0.05, err  # the same inputs' scales, fixed: within FP8's own error of each other


def test_each_variant_says_how_its_attention_runs():
    assert bw.attention_kind("eager") == bw.attention_kind("fp8s") == "default"
    assert bw.attention_kind("fp8-cudnn") == "cudnn" and bw.attention_kind("fp8-flex16") == "bf16 flex"
    assert bw.attention_kind("fp8s-triton-h") == "triton fp8, a scale per head"
    assert bw.attention_kind("fp8-triton") == "triton fp8, a scale per key"
    assert bw.attention_kind("triton") == "triton bf16"


@needs_triton
def test_the_fused_variant_computes_what_the_unfused_step_does():
    # in Triton's CPU interpreter: the fused q/k norms + RoPE exactly; the FFN within FP8's rounding of its input (the
    # interpreter's float8 casts differ from torch's: triton_fused's tests check the kernel's values)
    run_interpreted(f"""
        import torch
        import bench_wan_shape as bw
        s = bw.Shape(**{TINY!r})
        st = bw.Stream(s, bw.to_fp8(bw.make_params(s, "cpu", torch.float32)), torch.device("cpu"), torch.float32)
        bw.calibrate_activation_scales(st)
        lp = st.p["layers"][0]
        x = torch.randn(s.chunk * s.tokens_per_frame, s.width, generator=torch.Generator().manual_seed(0))
        mod = bw.time_mod(st.p, st.t[1], s)[1]
        pre = zip(bw.pre_attn(x, mod, lp, st.cos, st.sin, s), bw.fused_pre_attn()(x, mod, lp, st.cos, st.sin, s))
        for ref, got in pre:
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        a = torch.randn(1, s.heads, x.shape[0], s.width // s.heads, generator=torch.Generator().manual_seed(1))
        ref = bw.post_attn(x, a, mod, lp, st.tk[0], st.tv[0], s)
        got = bw.fused_post_attn()(x, a, mod, lp, st.tk[0], st.tv[0], s)
        err = float((got - ref).norm() / (ref - x).norm())
        assert err < 0.08, err
        print("ok")
    """)
    assert "fp8s-triton-f" in bw.FUSED_VARIANTS and bw.attention_kind("fp8s-triton-f") == "triton fp8, a scale per head"
