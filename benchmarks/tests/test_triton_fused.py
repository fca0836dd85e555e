"""triton_fused in Triton's CPU interpreter where Triton is installed (not in CI's CPU torch; on the GPU
they run inside benchmarks/bench_wan_shape.py's fp8s-triton-f variant, whose error against eager is in its table)."""
from triton_interpreter import needs_triton, run_interpreted


@needs_triton
def test_rms_norm_rope_matches_the_norm_then_the_rotation():
    run_interpreted("""
        import torch
        from triton_fused import rms_norm_rope
        g = torch.Generator().manual_seed(0)
        n, width, half = 11, 48, 4  # 6 heads of 8 channels; 24 pairs: the kernel pads them to 32
        qkv = torch.randn(n, 3 * width, generator=g) * 3
        wq, wk = (torch.rand(width, generator=g) + 0.5 for _ in range(2))
        angle = torch.rand(n, half, generator=g) * 6
        cos, sin = angle.cos(), angle.sin()
        out = rms_norm_rope(qkv, (wq, wk), cos, sin, rows_per_program=4)  # 11 rows: a part-full last program
        for part, w in ((0, wq), (1, wk)):
            x = qkv[:, part * width:(part + 1) * width]
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
            a, b = x.view(n, 6, half, 2).unbind(-1)
            c, s = cos[:, None], sin[:, None]
            ref = torch.stack((a * c - b * s, a * s + b * c), -1).view(n, width)
            torch.testing.assert_close(out[part], ref, rtol=1e-5, atol=1e-5)
        print("ok")
    """)


@needs_triton
def test_gelu_tanh_fp8_is_the_tanh_gelu_at_the_scale_saturated():
    run_interpreted("""
        import torch
        import torch.nn.functional as F
        from triton_fused import gelu_tanh_fp8
        g = torch.Generator().manual_seed(1)
        x = torch.cat([torch.randn(5000, generator=g) * 4, torch.tensor([-1e4, -30.0, 0.0, 30.0, 1e4])])
        scale = torch.tensor(0.05)
        # the values before the cast (a float32 out): the interpreter's float8 casts are not the GPU's (they round
        # toward zero, and 127.9 came out as 64), so the cast itself is checked on the GPU (the bench's error)
        y = gelu_tanh_fp8(x, scale, block=1024, out=torch.empty_like(x))  # 5005 values: a part-full last block
        ref = (F.gelu(x, approximate="tanh") / scale).clamp(-448, 448)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        assert y[-5:].tolist() == [0.0, 0.0, 0.0, 448.0, 448.0]  # finite at the extremes, saturated
        y8 = gelu_tanh_fp8(x, scale, block=1024)
        assert y8.dtype == torch.float8_e4m3fn and y8.shape == x.shape and torch.isfinite(y8.float()).all()
        print("ok")
    """)
