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


def test_self_rollout_stage_trains_on_its_own_history(tmp_path):
    cfg = TrainConfig.load(_write(tmp_path, "ro.yaml", stage="rollout", steps=2, rollout_steps=2))
    res = train(cfg, tmp_path / "ro", device="cpu", progress=lambda s: None)
    assert res.step == 2
    rows = (tmp_path / "ro" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and all("nan" not in r for r in rows)


def test_rollout_matches_the_stream(tmp_path):
    """The batched training rollout produces the latents the stream commits, chunk for chunk."""
    import numpy as np

    from knotanim.frontends.audio_features import AudioFeatures
    from knotanim.model.layout import RunAhead
    from knotanim.stream.rollout import rollout_latents

    anim = KnotAnimator.from_config(tiny_config(), seed=0)
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
                          RunAhead.from_config(cfg.stream, True, True), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(gen.committed, from_stream, atol=1e-5, rtol=1e-5)


def test_overrides_and_bad_config(tmp_path):
    path = _write(tmp_path, "c.yaml", stage="dit")
    cfg = TrainConfig.load(path, ["steps=7", "data.workers=3"])
    assert cfg.steps == 7 and cfg.data.workers == 3
    from knotanim.errors import ConfigError

    with pytest.raises(ConfigError):
        TrainConfig.load(path, ["nonsense"])
    with pytest.raises(ConfigError):
        TrainConfig.load(path, ["bogus_key=1"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
                f"save_file({{k: v.contiguous() for k, v in r.module.state_dict().items()}}, {str(tmp_path / f'w{rank}.safetensors')!r})")
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=e, stderr=subprocess.PIPE, text=True))
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
