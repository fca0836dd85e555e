"""Training runs end to end on CPU with a tiny model: both stages, resume, export, and DDP over gloo."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.train.config import TrainConfig
from knotanim.train.trainer import train

TINY = tiny_config().to_dict()


def _write(tmp_path: Path, name: str, **cfg) -> Path:
    base = {"model": TINY, "batch_size": 2, "chunks": 3, "steps": 3, "warmup": 1, "log_every": 1, "save_every": 100,
            "data": {"workers": 0, "speech_corpus": ""}, "bf16": False}
    base.update(cfg)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base))
    return path


def test_autoencoder_then_dit_stage_then_resume(tmp_path):
    ae_cfg = TrainConfig.load(_write(tmp_path, "ae.yaml", stage="autoencoder", batch_size=4))
    ae_model = train(ae_cfg, tmp_path / "ae", device="cpu", progress=lambda s: None).model_dir
    anim = KnotAnimator.from_pretrained(ae_model, device="cpu")
    assert not torch.all(anim.autoencoder.latent_std == 1)  # latent statistics were measured

    dit_cfg = TrainConfig.load(_write(tmp_path, "dit.yaml", stage="dit", init_from=str(ae_model)))
    out = tmp_path / "dit"
    model_dir = train(dit_cfg, out, device="cpu", progress=lambda s: None).model_dir
    state = json.loads((out / "state" / "state.json").read_text())
    assert state["step"] == 3
    import cv2

    strip = cv2.imread(str(out / "samples.png"))  # ground truth row over the model's row
    assert strip.shape == (2 * 64, 8 * 64, 3)
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and all("nan" not in r for r in rows)
    assert rows[0].split(",")[-1] == "listen_gap"  # logged with every row of stage 2
    trained = KnotAnimator.from_pretrained(model_dir, device="cpu")
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["trained_steps"] == {"autoencoder": 3, "dit": 3}  # the history accumulates across stages
    # The autoencoder came through from stage 1 unchanged.
    assert torch.equal(trained.autoencoder.latent_std, anim.autoencoder.latent_std)

    resumed = TrainConfig.load(_write(tmp_path, "dit2.yaml", stage="dit", init_from=str(ae_model), steps=5))
    lines = []
    train(resumed, out, device="cpu", progress=lines.append)
    assert any("resumed" in line and "step 3" in line for line in lines)
    assert json.loads((out / "state" / "state.json").read_text())["step"] == 5


@pytest.mark.parametrize("noise_correlation", [0.0, 0.6])
def test_self_rollout_stage_trains_on_its_own_history(tmp_path, noise_correlation):
    model = dict(TINY, sampler=dict(TINY["sampler"], noise_correlation=noise_correlation))
    cfg = TrainConfig.load(_write(tmp_path, "ro.yaml", stage="rollout", steps=2, rollout_steps=2, model=model))
    res = train(cfg, tmp_path / "ro", device="cpu", progress=lambda s: None)
    assert res.step == 2
    rows = (tmp_path / "ro" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and all("nan" not in r for r in rows)
    exported = json.loads((tmp_path / "ro" / "model" / "config.json").read_text())
    assert exported["config"]["sampler"]["noise_correlation"] == noise_correlation  # its stream draws what it learnt


@pytest.mark.parametrize("noise_correlation", [0.0, 0.5])
def test_rollout_matches_the_stream(tmp_path, noise_correlation):
    """The batched training rollout produces the latents the stream commits, chunk for chunk (with the
    sampler's shared noise too: both draw it the same way)."""
    import numpy as np

    from knotanim.config import SamplerConfig
    from knotanim.frontends.audio_features import AudioFeatures
    from knotanim.model.layout import RunAhead
    from knotanim.stream.rollout import rollout_latents
    from knotanim.stream.stream import noise_correlation_map

    anim = KnotAnimator.from_config(tiny_config(sampler=SamplerConfig(steps=2, noise_correlation=noise_correlation)),
                                    seed=0)
    anim.model.randomize_zero_init(seed=1)
    cfg = anim.config
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    samples = np.clip(rng.standard_normal(cfg.samples_per_frame * 30) * 0.3, -1, 1).astype(np.float32)  # the stream clips
    stream = anim.stream(ref, seed=4, head_motion=0.4)
    committed = []
    hook = anim.model.register_forward_hook(
        lambda m, a, o: committed.append(a[0][:, :, : cfg.autoencoder.latent_channels].clone()) if torch.all(a[1] == 0) else None)
    stream.push_audio(samples)
    hook.remove()
    n = 5
    from_stream = torch.cat(committed[:n], 1)
    audio = torch.from_numpy(AudioFeatures(cfg).clip_features(samples, 30)).unsqueeze(0)
    gen = rollout_latents(stream.step, anim.encode_frames(ref[None]), audio, torch.tensor([0.4]), n, True,
                          RunAhead.from_config(cfg.stream, True, True), generator=torch.Generator().manual_seed(4),
                          noise_correlation=noise_correlation_map(cfg) if noise_correlation else 0.0)
    torch.testing.assert_close(gen.committed, from_stream, atol=1e-5, rtol=1e-5)


def test_overrides_and_bad_config(tmp_path):
    path = _write(tmp_path, "c.yaml", stage="dit")
    cfg = TrainConfig.load(path, ["steps=7", "data.workers=3"])
    assert cfg.steps == 7 and cfg.data.workers == 3
    # exponent notation without a dot, which YAML 1.1 reads as a string, is a number (session 7's --set lr=3e-5)
    for text, value in (("3e-5", 3e-5), ("1.0e-4", 1e-4), ("-2E3", -2000.0), (".5e1", 5.0), ("0.0003", 3e-4)):
        assert TrainConfig.load(path, [f"lr={text}"]).lr == value
    assert TrainConfig.load(path, ["init_from=runs/e5e3"]).init_from == "runs/e5e3"  # a string stays a string
    from knotanim.errors import ConfigError

    with pytest.raises(ConfigError):
        TrainConfig.load(path, ["nonsense"])
    with pytest.raises(ConfigError):
        TrainConfig.load(path, ["bogus_key=1"])
    assert TrainConfig.load(path, ["parallel=fsdp"]).parallel == "fsdp"
    with pytest.raises(ConfigError, match="parallel must be one of ddp, fsdp"):
        TrainConfig.load(path, ["parallel=zero3"])


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tensorboard_gets_the_csv_scalars(tmp_path, monkeypatch):
    """tensorboard: true sends every log.csv scalar (listen_gap too) to OUT/tensorboard/, step for step.
    A stand-in torch.utils.tensorboard records the calls, so this runs with or without the package."""
    import types

    writers = []

    class RecordingWriter:
        def __init__(self, log_dir):
            self.log_dir, self.scalars, self.closed = log_dir, [], False
            writers.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=RecordingWriter))
    cfg = TrainConfig.load(_write(tmp_path, "tb.yaml", stage="dit", steps=2, tensorboard=True))
    train(cfg, tmp_path / "run", device="cpu", progress=lambda s: None)
    (writer,) = writers
    assert Path(writer.log_dir) == tmp_path / "run" / "tensorboard" and writer.closed
    rows = _csv_rows(tmp_path / "run" / "log.csv")
    expected = [(tag, float(row[tag]), int(row["step"])) for row in rows for tag in row if tag != "step"]
    assert "listen_gap" in rows[0] and [(t, s) for t, _, s in writer.scalars] == [(t, s) for t, _, s in expected]
    for (tag, value, _), (_, written, _) in zip(writer.scalars, expected):
        assert value == pytest.approx(written, rel=1e-5, abs=0.051 if tag == "elapsed_s" else 1e-12), tag  # CSV rounds


def test_tensorboard_missing_is_one_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    cfg = TrainConfig.load(_write(tmp_path, "tb.yaml", stage="dit", steps=2, tensorboard=True))
    lines = []
    res = train(cfg, tmp_path / "run", device="cpu", progress=lines.append)
    assert res.step == 2 and len(_csv_rows(tmp_path / "run" / "log.csv")) == 2
    assert [line for line in lines if line.startswith("note:")] == [
        "note: tensorboard is not installed (pip install tensorboard); scalars go to log.csv only"]
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_tensorboard_event_files(tmp_path):
    """With the real package: event files readable by TensorBoard, with the CSV's tags and steps."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig.load(_write(tmp_path, "tb.yaml", stage="dit", steps=2, tensorboard=True))
    train(cfg, tmp_path / "run", device="cpu", progress=lambda s: None)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    rows = _csv_rows(tmp_path / "run" / "log.csv")
    assert set(events.Tags()["scalars"]) == set(rows[0]) - {"step"}
    assert [e.step for e in events.Scalars("listen_gap")] == [int(r["step"]) for r in rows]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Each rank's check after train(): no thread of the process group's backend is left (gloo's workers and TCP
# loop, the TCPStore server; Linux thread names). Left running into interpreter shutdown, a gloo worker
# releasing a tensor can abort the rank after training has finished (SIGABRT, "terminate called without an
# active exception"); they were left whenever anything still held the group (cleanup_distributed).
_NO_BACKEND_THREADS = """
def assert_no_backend_threads():
    import os
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    left = [n for n in names if n.startswith(("pt_gloo", "gloo_", "pt_tcpstore"))]
    assert not left, f"process-group threads outlive train(): {left}"
"""


@pytest.mark.slow
def test_ddp_gloo_two_processes_keep_identical_weights(tmp_path):
    cfg = _write(tmp_path, "ddp.yaml", stage="dit", steps=2)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = []
    for rank in range(2):
        out = tmp_path / f"rank{rank}"
        e = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        code = ("import sys, torch; from knotanim.train.config import TrainConfig; from knotanim.train.trainer import train;"
                "from safetensors.torch import save_file;"
                f"cfg = TrainConfig.load({str(cfg)!r}); r = train(cfg, {str(out)!r}, device='cpu', progress=lambda s: None);"
                f"save_file({{k: v.contiguous() for k, v in r.module.state_dict().items()}}, {str(tmp_path / f'w{rank}.safetensors')!r});"
                "assert_no_backend_threads()")  # with the result still held
        procs.append(subprocess.Popen([sys.executable, "-c", _NO_BACKEND_THREADS + code], env=e, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    from safetensors.torch import load_file

    w0, w1 = load_file(str(tmp_path / "w0.safetensors")), load_file(str(tmp_path / "w1.safetensors"))
    init = KnotAnimator.from_config(tiny_config(), seed=0).model.state_dict()
    # Different data on each rank, yet identical weights: the gradients were all-reduced.
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert any(not torch.equal(w0[k], init[k]) for k in w0)  # and they did train
    state = json.loads((tmp_path / "rank0" / "state" / "state.json").read_text())
    assert state["step"] == 2
    assert not (tmp_path / "rank1" / "state").exists()  # only rank 0 writes


_FAST_CLOCK_SCRIPT = """
import os, sys, time
import knotanim.train.trainer as trainer
from knotanim.train.config import TrainConfig

real, t0 = time.time, time.time()
factor = 4.0 if os.environ["RANK"] == "1" else 1.0

class Clock:  # the trainer's time.time(); rank 1's runs 4x fast
    time = staticmethod(lambda: t0 + (real() - t0) * factor)

trainer.time = Clock
cfg = TrainConfig.load(sys.argv[1], ["steps=100000", "max_minutes=0.05", "save_every=100000"])
print("stopped at", trainer.train(cfg, sys.argv[2], device="cpu", progress=lambda s: None).step)
assert_no_backend_threads()
"""


@pytest.mark.slow
def test_ranks_stop_at_the_same_step_on_the_clock(tmp_path):
    """max_minutes is read from each rank's own clock. Rank 1's runs 4x fast here, so its time is up after
    ~0.75 s, rank 0's after 3 s: they must still stop at the same step (the first one's), or the rank that
    goes on waits in the next step's all-reduce for a peer that has left (gloo: an error; NCCL: a hang)."""
    cfg = _write(tmp_path, "clock.yaml", stage="dit")
    script = tmp_path / "clock.py"
    script.write_text(_NO_BACKEND_THREADS + _FAST_CLOCK_SCRIPT)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(cfg), str(tmp_path / "run")],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    stops = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        stops.append(int(out.split("stopped at")[1]))
    assert stops[0] == stops[1] < 100000
    assert json.loads((tmp_path / "run" / "state" / "state.json").read_text())["step"] == stops[0]


_RANK_SCRIPT = """
import gc, json, os, shutil, sys
from knotanim.train.config import TrainConfig
from knotanim.train.trainer import train

config, phases = sys.argv[1], json.loads(sys.argv[2])
for phase in phases:  # one process group per phase, as separate torchrun launches would have
    os.environ["MASTER_PORT"] = str(phase["port"])
    cfg = TrainConfig.load(phase.get("config", config), [f"parallel={phase['parallel']}", f"steps={phase['steps']}"])
    train(cfg, phase["out"], device="cpu", progress=print)
    gc.collect()  # as `knotanim train` does: under FSDP the dropped result's shards hold the group until then
    assert_no_backend_threads()
    if os.environ["RANK"] == "0" and phase.get("keep"):
        shutil.copy(os.path.join(phase["out"], "state", "state.safetensors"), phase["keep"])
"""


def _run_ranks(tmp_path: Path, config: Path, phases: list[dict], world: int = 2) -> list[str]:
    """Run `phases` (train() calls, one after another) on `world` CPU processes over gloo, as torchrun
    would start them; returns each rank's stdout."""
    script = tmp_path / "rank.py"
    script.write_text(_NO_BACKEND_THREADS + _RANK_SCRIPT)
    for phase in phases:
        phase["port"] = _free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(config), json.dumps(phases)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outputs.append(out)
    return outputs


@pytest.mark.slow
def test_fsdp_gloo_two_processes_match_ddp_and_resume(tmp_path):
    """FSDP2 (sharded weights, EMA and AdamW moments) trains the same model as DDP from the same seed
    and data: the gathered state after 2 steps, after resuming to 4, and the exported model agree.
    Gradient checkpointing is on in both, so FSDP's re-gathering in the recomputation is covered too."""
    from safetensors.torch import load_file

    cfg = _write(tmp_path, "par.yaml", stage="dit", grad_checkpointing=True)
    phases = []
    for mode in ("ddp", "fsdp"):  # both ranks share OUT, as they do under torchrun on one host
        out = str(tmp_path / mode)
        phases += [{"parallel": mode, "steps": 2, "out": out, "keep": str(tmp_path / f"{mode}_step2.safetensors")},
                   {"parallel": mode, "steps": 4, "out": out}]
    logs = _run_ranks(tmp_path, cfg, phases)
    assert sum("resumed" in line and "step 2" in line for line in logs[0].splitlines()) == 2  # ddp, then fsdp
    assert "resumed" not in logs[1]  # only rank 0 reports

    init = KnotAnimator.from_config(tiny_config(), seed=0).model.state_dict()
    for name in ("{}_step2.safetensors", "{}/state/state.safetensors"):
        ddp, fsdp = (load_file(str(tmp_path / name.format(mode))) for mode in ("ddp", "fsdp"))
        assert set(ddp) == set(fsdp) and any(k.startswith("opt.") for k in ddp)  # same keys: full tensors, moments
        for k in ddp:
            # Same arithmetic except how the ranks' gradients are summed (all-reduce vs reduce-scatter) and
            # the clipping norm's summation order: float32 rounding, ~1e-7 relative, carried by 4 AdamW
            # steps of lr 3e-4. The tolerance is far below one step's change (the check below).
            torch.testing.assert_close(fsdp[k], ddp[k], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name} {k}: {m}")
        changed = max((ddp[f"model.{k}"] - init[k]).abs().max().item() for k in init)
        assert changed > 1e-4  # they did train, by more than the tolerance
    assert json.loads((tmp_path / "fsdp" / "state" / "state.json").read_text())["step"] == 4

    ddp_model, fsdp_model = (KnotAnimator.from_pretrained(tmp_path / mode / "model", device="cpu") for mode in ("ddp", "fsdp"))
    for (k, a), b in zip(ddp_model.state_tensors().items(), fsdp_model.state_tensors().values()):
        torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-5, msg=lambda m: f"model {k}: {m}")  # bf16 export: 8 bits
    rows = (tmp_path / "fsdp" / "log.csv").read_text().strip().splitlines()
    assert rows[0].split(",")[-1] == "listen_gap" and len(rows) == 1 + 2 + 2  # steps 1, 2, then 3, 4 (log_every 1)
    assert (tmp_path / "fsdp" / "samples.png").exists()


@pytest.mark.slow
def test_fsdp_gloo_autoencoder_and_rollout_stages(tmp_path):
    """The other stages under FSDP: the autoencoder (sharded through encode_raw/decode_raw, not forward)
    matches DDP as the DiT does; the self-rollout (no-grad forwards of the sharded DiT) runs and exports."""
    from safetensors.torch import load_file

    ae = _write(tmp_path, "ae.yaml", stage="autoencoder", batch_size=4)
    ro = _write(tmp_path, "ro.yaml", stage="rollout", rollout_steps=2)
    _run_ranks(tmp_path, ae, [{"parallel": "ddp", "steps": 2, "out": str(tmp_path / "ae_ddp")},
                              {"parallel": "fsdp", "steps": 2, "out": str(tmp_path / "ae_fsdp")},
                              {"parallel": "fsdp", "steps": 2, "out": str(tmp_path / "ro_fsdp"), "config": str(ro)}])
    ddp, fsdp = (load_file(str(tmp_path / f"ae_{mode}" / "state" / "state.safetensors")) for mode in ("ddp", "fsdp"))
    assert set(ddp) == set(fsdp)
    for k in ddp:  # tolerance as in the DiT test above
        torch.testing.assert_close(fsdp[k], ddp[k], rtol=1e-4, atol=1e-6, msg=lambda m: f"{k}: {m}")
    init = KnotAnimator.from_config(tiny_config(), seed=0).autoencoder.state_dict()
    assert max((ddp[f"model.{k}"] - init[k]).abs().max().item() for k in init) > 1e-4
    rollout = KnotAnimator.from_pretrained(tmp_path / "ro_fsdp" / "model", device="cpu")
    assert json.loads((tmp_path / "ro_fsdp" / "model" / "config.json").read_text())["trained_steps"] == {"rollout": 2}
    assert all(torch.isfinite(v).all() for v in rollout.state_tensors().values())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the fused AdamW on the GPU needs CUDA"))])
def test_resumed_fused_adamw_continues_exactly(tmp_path, device):
    """The GPU trainer's fused AdamW refuses a step count on the CPU (a resumed GPU run failed on its
    first step that way); the resumed optimiser must also take the same next step as the original."""
    from knotanim.train.common import load_state, save_state

    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 3)).to(device)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)

    x = torch.randn(5, 6, device=device)
    model, opt = fresh()
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    save_state(tmp_path / "state", 3, {"model": model}, opt, None, {})
    resumed, resumed_opt = fresh()
    assert load_state(tmp_path / "state", {"model": resumed}, resumed_opt, None) == 3
    for p in resumed.parameters():
        assert resumed_opt.state[p]["step"].device == p.device
        assert float(resumed_opt.state[p]["step"]) == 3.0
    for m, o in ((model, opt), (resumed, resumed_opt)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_stage3_rolls_out_only_the_still_clips_when_asked(tmp_path):
    """rollout_clips "still": clips with head motion keep stage 2's ground-truth history (and knots);
    the still ones condition on the model's own rollout. "all" rolls every clip out."""
    import dataclasses

    import numpy as np

    from knotanim.train.trainer import _dit_inputs, own_history_rows

    cfg = TrainConfig.load(_write(tmp_path, "ro.yaml", stage="rollout", rollout_steps=1, chunks=2, context_noise=0.0,
                                  knot_probability=1.0, knot_noise=0.0, rollout_clips="still"))
    motion = torch.tensor([0.0, 0.6, cfg.still_motion, 0.3])
    assert own_history_rows(cfg, motion).tolist() == [0, 2]
    assert own_history_rows(dataclasses.replace(cfg, rollout_clips="all"), motion).tolist() == [0, 1, 2, 3]
    assert own_history_rows(dataclasses.replace(cfg, stage="dit"), motion) is None

    anim = KnotAnimator.from_config(tiny_config(), seed=0)
    anim.model.randomize_zero_init(seed=1)  # a rollout that differs from the ground truth
    from knotanim.train.data import ClipRequest, clip_loader
    from knotanim.train.trainer import _encode_batch

    mc = anim.config
    T = cfg.chunks * mc.stream.chunk + mc.stream.knot
    enc = _encode_batch(anim, next(iter(clip_loader(mc, cfg.data, ClipRequest(T, 0, 1, 0), 4))))
    enc["motion"] = motion
    for clips, own in (("still", {0, 2}), ("all", {0, 1, 2, 3})):
        inputs, _ = _dit_inputs(anim, dataclasses.replace(cfg, rollout_clips=clips), enc, np.random.default_rng(0), {})
        layout, clean, knots = inputs[0], inputs[3], inputs[5]
        truth = enc["latents"][:, : layout.n_clean]
        for row in range(4):
            same = torch.equal(clean[row], truth[row])
            assert same == (row not in own), (clips, row)
            assert torch.equal(knots[row, 1], enc["latents"][row, layout.chunk]) == (row not in own)
    with pytest.raises(Exception, match="rollout_clips must be one of all, still"):
        TrainConfig.load(_write(tmp_path, "bad.yaml", stage="rollout", rollout_clips="moving"))


def test_stage3_rollout_batch_is_the_whole_batch_whatever_its_still_clips(tmp_path, monkeypatch):
    """The self-rollout always runs at the batch's size, however many of its clips keep the result: a size
    that follows the count of still clips recompiled the compiled blocks at nearly every step (session 7:
    68 stage-3 steps in 9.3 min on two H200s). A batch with no still clip rolls out too (FSDP ranks must
    run the same forwards) and keeps the ground truth everywhere."""
    import dataclasses

    import numpy as np

    import knotanim.train.trainer as trainer
    from knotanim.train.data import ClipRequest, clip_loader

    cfg = TrainConfig.load(_write(tmp_path, "ro.yaml", stage="rollout", rollout_steps=1, chunks=2, context_noise=0.0,
                                  knot_probability=1.0, knot_noise=0.0, rollout_clips="still"))
    anim = KnotAnimator.from_config(tiny_config(), seed=0)
    anim.model.randomize_zero_init(seed=1)
    mc = anim.config
    T = cfg.chunks * mc.stream.chunk + mc.stream.knot
    enc = trainer._encode_batch(anim, next(iter(clip_loader(mc, cfg.data, ClipRequest(T, 0, 1, 0), 4))))
    sizes = []
    real = trainer.rollout_latents

    def counting(step, ref, *args, **kwargs):
        sizes.append(ref.shape[0])
        return real(step, ref, *args, **kwargs)

    monkeypatch.setattr(trainer, "rollout_latents", counting)
    moving = 0.6
    for motion, own in (([0.0, moving, 0.0, moving], {0, 2}), ([moving] * 4, set()), ([0.0, 0.0, 0.0, moving], {0, 1, 2})):
        enc["motion"] = torch.tensor(motion)
        inputs, _ = trainer._dit_inputs(anim, dataclasses.replace(cfg), enc, np.random.default_rng(0), {})
        layout, clean = inputs[0], inputs[3]
        truth = enc["latents"][:, : layout.n_clean]
        assert {row for row in range(4) if not torch.equal(clean[row], truth[row])} == own
    assert sizes == [4, 4, 4]


def test_stage3_knot_target_own_makes_the_rolled_out_knot_the_target_at_the_knot_position(tmp_path):
    """rollout_knot_target "own": for the rolled-out clips, each chunk's knot position (but the first chunk's,
    which has no knot) is trained towards the knot the chunk is conditioned on; the other positions, and the
    teacher-forced clips, keep the ground truth. "truth" (the default) keeps the ground truth everywhere."""
    import dataclasses

    import numpy as np

    from knotanim.train.data import ClipRequest, clip_loader
    from knotanim.train.trainer import _dit_inputs, _encode_batch

    cfg = TrainConfig.load(_write(tmp_path, "ro.yaml", stage="rollout", rollout_steps=1, chunks=3, context_noise=0.0,
                                  knot_probability=1.0, knot_noise=0.0, rollout_clips="still",
                                  rollout_knot_target="own"))
    assert TrainConfig().rollout_knot_target == "truth"
    anim = KnotAnimator.from_config(tiny_config(), seed=0)
    anim.model.randomize_zero_init(seed=1)
    mc = anim.config
    T = cfg.chunks * mc.stream.chunk + mc.stream.knot
    enc = _encode_batch(anim, next(iter(clip_loader(mc, cfg.data, ClipRequest(T, 0, 1, 0), 4))))
    enc["motion"] = torch.tensor([0.0, 0.6, 0.0, 0.6])
    C, span = mc.stream.chunk, mc.stream.chunk + mc.stream.knot
    idx = torch.arange(cfg.chunks).unsqueeze(1) * C + torch.arange(span)
    truth = enc["latents"][:, idx]
    for target in ("own", "truth"):
        inputs, _ = _dit_inputs(anim, dataclasses.replace(cfg, rollout_knot_target=target), enc,
                                np.random.default_rng(0), {})
        x0, knots = inputs[4], inputs[5]
        for row in range(4):
            rolled = row in (0, 2)
            assert torch.equal(x0[row, 0], truth[row, 0])  # chunk 0: no knot, the truth
            assert torch.equal(x0[row, :, 1:], truth[row, :, 1:])  # every other position: the truth
            knot_target = x0[row, 1:, 0]
            if target == "own" and rolled:
                assert torch.equal(knot_target, knots[row, 1:]) and not torch.equal(knot_target, truth[row, 1:, 0])
            else:
                assert torch.equal(knot_target, truth[row, 1:, 0])
    with pytest.raises(Exception, match="rollout_knot_target must be one of truth, own"):
        TrainConfig.load(_write(tmp_path, "bad.yaml", stage="rollout", rollout_knot_target="mine"))


def test_cleanup_distributed_clears_the_mesh_registry_and_tolerates_a_torch_without_it():
    """cleanup_distributed empties the FSDP mesh's private `_pg_registry` (its references to the process
    groups), and on a torch whose DeviceMesh lacks that attribute it still drops the mesh without failing."""
    from knotanim.train.common import Dist, cleanup_distributed

    class Mesh:  # stands in for DeviceMesh; the process group itself is not initialised here
        pass

    with_registry, without = Mesh(), Mesh()
    registry = {"group": object()}
    with_registry._pg_registry = registry
    d = Dist(0, 1, 0, torch.device("cpu"), mesh=with_registry)
    cleanup_distributed(d)
    assert registry == {} and d.mesh is None
    d = Dist(0, 1, 0, torch.device("cpu"), mesh=without)
    cleanup_distributed(d)
    assert d.mesh is None
