"""benchmarks/bench_attention.py on the CPU: rows for what runs here, a reason for what cannot, the JSON and table."""
import json

import torch

import bench_attention as ba  # benchmarks/ is on sys.path (conftest.py)


def test_flops_count_both_products():
    assert ba.attention_flops(12, 4680, 32760, 128) == 4 * 12 * 4680 * 32760 * 128


def test_reference_is_softmax_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 3, n, 8, generator=g) for n in (5, 9, 9))
    torch.testing.assert_close(ba.reference(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_cli_on_the_cpu_times_sdpa_and_skips_the_gpu_kernel(tmp_path, capsys):
    out = tmp_path / "att.json"
    res = ba.main(["--device", "cpu", "--heads", "2", "--head-dim", "16", "--queries", "24", "--keys", "8,40",
                   "--cache", "64", "--impls", "sdpa,triton", "--iters", "2", "--warmup", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [(r["impl"], r["keys"]) for r in saved["runs"]] == [("sdpa", 8), ("sdpa", 40)]
    assert all(r["rel_err"] < 1e-5 and r["ms"] > 0 for r in res["runs"])
    assert saved["skipped"][0]["impl"] == "triton" and "CUDA" in saved["skipped"][0]["reason"]
    assert "| implementation | keys | ms |" in capsys.readouterr().out


def test_compiled_kernels_are_read_from_tritons_caches_or_none(monkeypatch):
    import triton_attention as ta

    class Compiled:  # what Triton keeps per compiled specialization, once launched
        n_regs, n_spills = 168, 0

    class Jit:  # Triton's JITFunction keeps (kernel cache, ...) per device
        device_caches = {0: ({"key a": Compiled()}, "target")}

    monkeypatch.setattr(ta, "_attention_forward", Jit(), raising=False)
    found = ba.compiled_triton_kernels()
    assert list(found) == ["key a"] and found["key a"].n_regs == 168
    monkeypatch.setattr(ta, "_attention_forward", object())  # another Triton's layout: nothing, no crash
    assert ba.compiled_triton_kernels() == {}
