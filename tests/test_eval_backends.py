"""KnotBench on a chosen backend (`knotanim eval --backend`): one backend per model and knot/steps
variant, built and warmed up before the first clip and reused by every stream of that variant; the
report names the backend actually used; a compiled (Inductor, CPU) run scores as eager (to pixel rounding).

Speech comes from a small eval corpus: espeak-ng's output depends on what the same process
synthesised before, so two runs in one process only see the same clips with a corpus."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import knotanim.eval.runner as runner
from knotanim.engines.base import TorchBackend
from knotanim.errors import BackendUnavailable
from knotanim.eval.spec import BenchSpec, ClipSpec


class CountingBackend:
    """Eager torch under another name, refusing chunks of another variant's shape; counts its chunks."""

    def __init__(self, anim, knot: bool, steps, name: str):
        self.inner = TorchBackend(anim.chunk_step(steps), anim.device)
        self.name, self.device = name, anim.device
        self.span = anim.config.stream.chunk + (anim.config.stream.knot if knot else 0)
        self.runs = 0

    def run(self, *inputs):
        assert inputs[10].shape[1] == self.span, "a stream of another knot variant got this backend"
        self.runs += 1
        return self.inner.run(*inputs)


def outcome(report):
    """Every score of every clip and row except frames/s (the only thing a backend may change)."""
    return {(c, r, k): v for c, cd in report["clips"].items() for r, s in cd["rows"].items()
            for k, v in s.items() if k != "fps"}


def assert_same_scores(a, b, tol=0.0):
    oa, ob = outcome(a), outcome(b)
    assert oa.keys() == ob.keys()
    for key, v in oa.items():
        w = ob[key]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            assert w is None or math.isnan(w), key
        else:
            assert w == pytest.approx(v, rel=tol, abs=tol), key


def test_one_backend_per_variant_reused_by_every_clip_and_row(anim, eval_corpus, monkeypatch):
    built: list[CountingBackend] = []

    def build(name, anim, knot, steps, model_path):
        # the no-knot variant "fails to compile", as CompiledTorchBackend says when it runs eagerly
        b = CountingBackend(anim, knot, steps, "compiled" if knot else "compiled->torch")
        built.append(b)
        return b, f"{name}: requested"

    streams: list[tuple[bool, object]] = []  # (knot, backend) of every scored stream
    real = runner._stream_video

    def spy(anim, truth, audio, scorer, seed, knot, run_ahead, steps, backend=None):
        assert backend is not None and backend.runs >= runner.WARMUP_CHUNKS  # warmed up before any clip
        streams.append((knot, backend))
        return real(anim, truth, audio, scorer, seed, knot, run_ahead, steps, backend=backend)

    monkeypatch.setattr(runner, "_stream_video", spy)
    spec = BenchSpec("t", clips=(ClipSpec("s", 1, 8), ClipSpec("p", 3, 8, source="photo"))).with_long(minutes=24 / 25 / 60)
    variants = "default,no-knot,no-run-ahead"
    lines: list[str] = []
    report = runner.run_knotbench([("a", anim)], spec, None, variants=variants, corpus=eval_corpus,
                                  backend=runner.EvalBackends("compiled", build=build, progress=lines.append),
                                  progress=lines.append)
    # two builds (knot on / off); no-run-ahead and audio-zeroed share the default's
    assert [b.span for b in built] == [3, 2]
    assert len(streams) == 3 * 4  # 3 clips (incl. the long stream) x (3 variants + audio-zeroed)
    assert {id(b) for k, b in streams if k} == {id(built[0])} and {id(b) for k, b in streams if not k} == {id(built[1])}
    ready = [i for i, ln in enumerate(lines) if "ready in" in ln]
    first_clip = next(i for i, ln in enumerate(lines) if ln.startswith("[1/"))
    assert len(ready) == 2 and max(ready) < first_clip  # both prepared before the first clip
    rows = {r["name"]: r for r in report["rows"]}
    assert {rows[f"a:{v}"]["backend"] for v in ("default", "no-run-ahead", "audio-zeroed")} == {"compiled"}
    assert rows["a:no-knot"]["backend"] == "compiled->torch" and rows["ground-truth"]["backend"] is None
    info = report["info"]
    assert info["backend_requested"] == "compiled" and "compiled->torch (a chunk_step-knot0" in info["backend"]
    assert [e["variant"] for e in info["backends"]] == ["chunk_step-knot1-steps2-b1", "chunk_step-knot0-steps2-b1"]
    assert info["backend"] in report["metrics"]["fps"]
    # the same scores as eager torch (the counting backend is eager torch): nothing leaked between streams
    monkeypatch.setattr(runner, "_stream_video", real)
    eager = runner.run_knotbench([("a", anim)], spec, None, variants=variants, corpus=eval_corpus)
    assert_same_scores(eager, report)
    assert eager["info"]["backend"] == "torch" and {r["backend"] for r in eager["rows"] if r["model"]} == {"torch"}


def test_scoring_in_a_worker_thread_gives_the_same_scores(anim, eval_corpus, monkeypatch):
    """On CUDA each block is scored in a worker thread while the next is generated; forced here on the CPU."""
    import threading

    from knotanim.eval.scoring import ClipScorer

    spec = BenchSpec("t", clips=(ClipSpec("s", 1, 60), ClipSpec("p", 3, 30, source="photo")))
    assert not runner.score_in_thread(anim)  # the CPU default: score in line
    plain = runner.run_knotbench([("a", anim)], spec, None, variants="default,no-knot", corpus=eval_corpus)
    threads: set[str] = set()
    update = ClipScorer.update

    def spy(self, block):
        threads.add(threading.current_thread().name)
        return update(self, block)

    monkeypatch.setattr(ClipScorer, "update", spy)
    monkeypatch.setattr(runner, "score_in_thread", lambda anim: True)
    monkeypatch.setattr(runner, "SCORE_AHEAD", 1)
    threaded = runner.run_knotbench([("a", anim)], spec, None, variants="default,no-knot", corpus=eval_corpus)
    assert any(t.startswith("knotbench-score") for t in threads)  # model rows were scored in the worker
    assert_same_scores(plain, threaded)


def test_backend_names_are_checked_and_match_the_engines():
    from knotanim.cli.main import build_parser
    from knotanim.engines.select import BACKENDS

    assert runner.BACKENDS is BACKENDS  # one list, in knotanim.config, for the engines, the runner and the CLIs
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        runner.EvalBackends("tensorrt-ish")
    parser = build_parser()
    args = parser.parse_args(["eval", "--backend", "compiled", "--quick"])
    assert args.backend == "compiled" and parser.parse_args(["eval"]).backend == "torch"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--backend", "bogus"])


def test_compiled_quick_bench_scores_as_eager(tmp_path, eval_corpus):
    """`knotanim eval --quick --backend compiled` (Inductor on the CPU) against `--backend torch`: the same
    scores (to 1e-3: the compiled decoder rounds a few pixels the other way), one compile of the step and one of
    the decoder for the whole run (3 clips x 2 rows), and the report names the backend.
    The smallest model that still has every part (one block, one sampler step): a cold compile takes ~25 s."""
    from torch._dynamo.utils import counters

    from knotanim import KnotAnimator, tiny_config
    from knotanim.cli.main import main

    cfg = tiny_config(model=dataclasses.replace(tiny_config().model, depth=1))
    model = tmp_path / "model"
    KnotAnimator.from_config(cfg, device="cpu", seed=0).save_pretrained(model)
    reports = {}
    for backend in ("torch", "compiled"):
        graphs = counters["stats"]["unique_graphs"]
        out = tmp_path / backend
        assert main(["eval", "--model", str(model), "--quick", "--corpus", str(eval_corpus), "--steps", "1",
                     "--backend", backend, "--device", "cpu", "--no-plots", "--quiet", "--out", str(out)]) == 0
        # the step and the frame decoder
        assert counters["stats"]["unique_graphs"] - graphs <= (2 if backend == "compiled" else 0)
        reports[backend] = json.loads((out / "report.json").read_text())
        md = (out / "report.md").read_text()
        assert f"backend {backend}" in md.splitlines()[2] and f"on cpu with the {backend} backend" in md
    torch_r, comp = reports["torch"], reports["compiled"]
    assert comp["info"]["backend"] == "compiled" and comp["info"]["backend_requested"] == "compiled"
    assert [e["variant"] for e in comp["info"]["backends"]] == ["chunk_step-knot1-steps1-b1"]
    assert comp["info"]["backend_prepare_s"] > 0 and "is not included" in comp["metrics"]["fps"]
    assert {r["backend"] for r in comp["rows"] if r["kind"] in ("model", "audio-zeroed")} == {"compiled"}
    assert torch_r["info"]["backend"] == "torch" and torch_r["info"]["backend_prepare_s"] == 0
    # The compiled decoder's float rounding (~3e-6) moves a few pixels to the next uint8 level: scores differ
    # by up to ~5e-4 (near-zero correlations of a random model by more, relatively), not more.
    assert_same_scores(torch_r, comp, tol=1e-3)
    assert all(np.isfinite(r["overall"]["fps"]) for r in comp["rows"] if r["kind"] == "model")
