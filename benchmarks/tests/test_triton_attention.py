"""triton_attention: the torch-side pieces on the CPU always; the kernel itself in Triton's CPU interpreter
where Triton is installed (not in CI's CPU torch; the GPU figures and errors are bench_attention.py's)."""
import pytest
import torch
from triton_interpreter import needs_triton, run_interpreted

import triton_attention as ta


def attention_fp32(q, k, v):
    return torch.softmax(q.float() @ k.float().transpose(-1, -2) * q.shape[-1] ** -0.5, -1) @ v.float()


def test_merging_key_slices_gives_the_attention_over_all_keys():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 16, generator=g) for n in (20, 50, 50))
    cuts = [0, 7, 30, 50]  # uneven slices, as the kernel's last one is
    outs, maxes, sums = [], [], []
    for lo, hi in zip(cuts, cuts[1:]):
        s = (q @ k[:, :, lo:hi].transpose(-1, -2)) * 16 ** -0.5 * ta.LOG2E  # base-2 scores, as the kernel's
        m = s.amax(-1)
        p = torch.exp2(s - m[..., None])
        outs.append(p @ v[:, :, lo:hi])
        maxes.append(m)
        sums.append(p.sum(-1))
    merged = ta.merge_splits(torch.stack(outs), torch.stack(maxes), torch.stack(sums))
    torch.testing.assert_close(merged, attention_fp32(q, k, v), rtol=1e-5, atol=1e-5)


def test_rows_quantize_to_e4m3_with_their_absolute_maximum_at_448():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 32, generator=g) * torch.logspace(-3, 2, 6)[:, None]  # rows of very different sizes
    x8, scale = ta.quantize_rows(x)
    assert x8.dtype == torch.float8_e4m3fn and scale.shape == (4, 6)
    torch.testing.assert_close(x8.float().abs().amax(-1), torch.full((4, 6), 448.0))
    back = x8.float() * scale[..., None]
    # e4m3 keeps 3 mantissa bits: each value within half a step (1/16 relative) of itself, or of the row's
    # subnormal step near zero
    assert ((back - x).abs() <= x.abs() / 16 + scale[..., None] * 2.0 ** -9 + 1e-12).all()


def test_fp8_keys_store_v_transposed_and_narrow_to_a_prefix_without_copying():
    g = torch.Generator().manual_seed(2)
    k, v = (torch.randn(1, 2, 40, 16, generator=g) for _ in range(2))
    keys = ta.quantize_keys(k, v)
    assert keys.k.shape == (1, 2, 40, 16) and keys.v_t.shape == (1, 2, 16, 40)
    assert keys.v_t.stride(-1) == 1  # the keys contiguous: what FP8 p @ v needs
    torch.testing.assert_close(keys.v_t.float().transpose(-1, -2) * keys.v_scale[..., None], v, rtol=0.07, atol=1e-3)
    short = keys.narrow(25)
    assert short.k.shape[2] == short.v_t.shape[3] == short.k_scale.shape[2] == short.v_scale.shape[2] == 25
    assert short.k.data_ptr() == keys.k.data_ptr() and short.v_t.data_ptr() == keys.v_t.data_ptr()


def test_key_splits_fill_whole_waves_and_keep_slices_long():
    # the Wan chunk: 37 query blocks x 12 heads on 132 multiprocessors is 3.4 waves unsplit; 2 slices make 6.7
    assert ta.auto_key_splits(444, 132, 256) == 2
    assert ta.auto_key_splits(132, 132, 256) == 1  # already whole waves
    assert ta.auto_key_splits(444, 132, 12) == 1  # too few key blocks to split (each slice keeps >= 8)
    assert 1 <= ta.auto_key_splits(7, 132, 1000) <= 4


def test_kernel_configs_parse_and_bad_ones_say_the_format():
    assert ta.parse_blocks("128x64w4s3") == {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3,
                                             "QK_AHEAD": False, "EXP16": False, "SUM16": False}
    assert ta.parse_blocks("64x128w4s3ah") == {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3,
                                               "QK_AHEAD": True, "EXP16": True, "SUM16": False}
    assert ta.parse_blocks("64x128w4s3hf")["SUM16"]
    with pytest.raises(ValueError, match="BLOCK_MxBLOCK_NwWARPSsSTAGES"):
        ta.parse_blocks("128-64")


def test_without_a_gpu_the_kernel_says_why_it_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "CUDA" in ta.unavailable("cpu") or "not installed" in ta.unavailable("cpu")


@needs_triton
def test_the_kernel_matches_float32_attention_in_tritons_interpreter():
    # float32 inputs: the interpreter's bf16 and float8 dot products are not what the GPU computes
    run_interpreted("""
        import torch
        import triton_attention as ta
        g = torch.Generator().manual_seed(3)
        small = dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
        # (the loop with each block's q k^T issued one block ahead, too: one block, two, a tail, slices of each)
        for m, n, splits in ((40, 200, 1), (70, 300, 3), (16, 16, 1), (33, 96, 2), (20, 64, 1), (20, 40, 2)):
            q = torch.randn(1, 2, m, 32, generator=g)
            kc, vc = (torch.randn(1, 2, n + 50, 32, generator=g) for _ in range(2))
            k, v = kc[:, :, :n], vc[:, :, :n]  # a slice of a longer cache, as the stream reads it
            ref = torch.softmax(q @ k.transpose(-1, -2) * 32 ** -0.5, -1) @ v
            for ahead in (False, True):
                blocks = dict(small, QK_AHEAD=ahead)
                out = ta.attention(q, k, v, key_splits=splits, blocks=blocks)
                err = float((out - ref).abs().max())
                assert err < 1e-5, (m, n, splits, ahead, err)
                # the heads side by side in memory ([B, M, H, D]) when the keys are not split
                assert out.transpose(1, 2).is_contiguous() or ta.math.ceil(n / 32) > 1 and splits > 1
                # FP8 (the interpreter's casts round toward zero, the GPU's to nearest: a loose bound here; the GPU's
                # error is bench_attention.py's), with a scale per key and per head, split or not
                for scales in (True, "per-head"):
                    fp8 = ta.attention(q, k, v, fp8=scales, key_splits=splits, blocks=blocks)
                    assert float((fp8 - ref).norm() / ref.norm()) < 0.15, (m, n, splits, scales, ahead)
        # the fused cache write: the new keys at the slot, the rest untouched
        cache = ta.new_fp8_keys((1, 2), 100, 32, "cpu", per_key=False)
        cache.k_scale.fill_(2.0 ** -6)  # powers of two: x * scale / scale is x exactly
        cache.v_scale.fill_(2.0 ** -5)
        # values that are e4m3 numbers times the scale: exact whatever the rounding (the interpreter's float8 casts
        # round differently from the GPU's), so the test sees where each value lands
        codes = [torch.randint(0, 0x7F, (1, 2, 40, 32), generator=g, dtype=torch.uint8) for _ in range(2)]
        k, v = (c.view(torch.float8_e4m3fn).float() * scale for c, scale in zip(codes, (2.0 ** -6, 2.0 ** -5)))
        k, v = (x[0].transpose(0, 1).contiguous().transpose(0, 1)[None] for x in (k, v))  # [1, H, n, D] views of
        assert not k.is_contiguous()  # [n, H, D] memory, as a stream's projection leaves them
        ta.write_fp8_keys(cache, k, v, torch.tensor([30]), block=16)
        assert torch.equal(cache.k[:, :, 30:70].view(torch.uint8), codes[0])
        assert torch.equal(cache.v_t[..., 30:70].transpose(-1, -2).view(torch.uint8), codes[1])
        assert cache.k[:, :, :30].float().abs().max() == 0 and cache.v_t[..., 70:].float().abs().max() == 0
        print("ok")
    """)
