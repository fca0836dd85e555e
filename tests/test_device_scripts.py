"""scripts/device_train.sh, scripts/device_ddp_scaling.sh, scripts/device_tree.sh and
scripts/device_long_ablation.sh rehearsed on the CPU
before they cost a GPU
lease: a tiny carried model, a tiny speech corpus, the script run from a plain source checkout that was never
installed (PYTHONPATH=<repository>, no editable-install finder), as on the accelerator machine; then run again
over the same runs/, as a second call on a warm machine does (stages 2, 3 and 4 resume their own state).
Two ranks (NPROC=2, the scaling script's DDP and FSDP arms) go through torchrun as on the two-GPU machine,
over gloo instead of NCCL, each rank started with the same uninstalled interpreter."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from knotanim import tiny_config
from knotanim.animator import KnotAnimator
from knotanim.data.corpus import _mulaw_encode
from knotanim.data.visemes import PHONEMES

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "device_train.sh"
SCALING = REPO / "scripts" / "device_ddp_scaling.sh"
# The smallest run that still goes through every step of a stage: data with speech, optimiser steps,
# a checkpoint on the way (save_every) and at the end, the export and the sample strip.
TINY_RUN = "--set batch_size=2 --set chunks=2 --set data.workers=0 --set log_every=1 --set save_every=2 --set warmup=1"


def _speech_corpus(path: Path, n: int = 3, seconds: float = 1.0, sr: int = 16000, split: str = "train") -> None:
    """A corpus in the .npz layout `knotanim data build-speech` writes (no espeak-ng needed): tones
    with phoneme events every 0.1 s."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    audio = [(0.5 * np.sin(2 * np.pi * (120 + 40 * i) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
             for i in range(n)]
    times = [np.arange(0, seconds - 0.1, 0.1, dtype=np.float32) for _ in range(n)]
    ids = [rng.integers(2, len(PHONEMES), len(ts)).astype(np.int16) for ts in times]
    np.savez_compressed(
        path, audio_mulaw=_mulaw_encode(np.concatenate(audio)), offsets=np.cumsum([0] + [len(a) for a in audio]),
        ev_offsets=np.cumsum([0] + [len(ts) for ts in times]), ev_times=np.concatenate(times),
        ev_ids=np.concatenate(ids), speech_end=np.full(n, seconds - 0.1, np.float32), vocab=np.array(PHONEMES),
        voices=np.array(["test"] * n), langs=np.array(["en"] * n), texts=np.array(["tone"] * n),
        meta=np.array(json.dumps({"split": split, "sample_rate": sr, "format": 1})))


def _uninstalled_python(tmp_path: Path) -> Path:
    """An interpreter that sees the package only through the script's PYTHONPATH: `python -S` (no site
    module, so no .pth file and no editable-install finder) with this interpreter's site-packages
    appended as plain paths for torch and numpy."""
    site_dirs = [p for p in sys.path if p.rstrip(os.sep).endswith(("site-packages", "dist-packages"))]
    wrapper = tmp_path / "python-uninstalled"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="$PYTHONPATH:{os.pathsep.join(site_dirs)}" '
                       f'exec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _run(work: Path, env: dict, script: Path = SCRIPT, **stages) -> str:
    r = subprocess.run(["bash", str(script)], cwd=work, env={**env, **stages}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return r.stdout + r.stderr


def _state(work: Path, stage: str) -> dict:
    return json.loads((work / "runs" / stage / "state" / "state.json").read_text())


def _machine(tmp_path: Path, **stages) -> tuple[Path, Path, dict]:
    """The device's working directory (runs/, .cache/ with the carried model and the speech corpus), its
    $OUT, and the script's environment: the CPU, an uninstalled checkout, the given STAGE*_MIN."""
    work = tmp_path / "work"
    (work / ".cache" / "data").mkdir(parents=True)
    KnotAnimator.from_config(tiny_config(), device="cpu", seed=0).save_pretrained(work / ".cache" / "carry" / "model")
    _speech_corpus(work / ".cache" / "data" / "speech_train.npz")  # the stage configs' data.speech_corpus
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(DEVICE="cpu", PYTHON=str(_uninstalled_python(tmp_path)), OUT=str(out), OMP_NUM_THREADS="1",
               STAGE1_MIN="0", **stages)
    return work, out, env


STAGE3_RUN = f"{TINY_RUN} --set rollout_steps=1 --set reuse=1"


def test_device_train_script_runs_and_resumes_on_a_warm_machine(tmp_path):
    work, out, env = _machine(tmp_path, STAGE2_MIN="1", STAGE3_MIN="1")

    # First call (a fresh machine): stage 2 from the carried model, stage 3 from this call's stage 2.
    log = _run(work, env, STAGE2_SET=f"{TINY_RUN} --set steps=2", STAGE3_SET=f"{STAGE3_RUN} --set steps=1")
    assert "resumed from" not in log
    assert _state(work, "stage2")["step"] == 2 and _state(work, "stage3")["step"] == 1
    assert _state(work, "stage2")["train_config"]["init_from"] == ".cache/carry/model"
    assert _state(work, "stage3")["train_config"]["init_from"] == "runs/stage2/model"
    exported = json.loads((out / "config.json").read_text())
    assert exported["trained_steps"] == {"dit": 2, "rollout": 1}  # stage 3's model went out last
    assert any(p.suffix == ".safetensors" for p in out.iterdir())
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"runs/stage{s}/{f}" for s in (2, 3) for f in ("log.csv", "loss.png", "samples.png")} <= names
    (out / "config.json").unlink()

    # Second call (the machine still warm): both stages resume their own state and train further.
    log = _run(work, env, STAGE2_SET=f"{TINY_RUN} --set steps=3", STAGE3_SET=f"{STAGE3_RUN} --set steps=2")
    assert "resumed from runs/stage2/state at step 2" in log and "resumed from runs/stage3/state at step 1" in log
    assert _state(work, "stage2")["step"] == 3 and _state(work, "stage3")["step"] == 2
    assert (out / "config.json").is_file() and (out / "logs.tar.gz").is_file()


def _lone_stage_twice(tmp_path: Path, stage: int, stage_set: str, before: str) -> dict:
    """Stage `stage` alone (STAGE2_MIN=0, STAGE<stage>_MIN=1) on a machine with no `before` run: it starts
    from the carried model; called again on the warm machine it resumes its own state and keeps that base
    (the config's init_from does not exist there). -> the exported config.json."""
    work, out, env = _machine(tmp_path, STAGE2_MIN="0", **{f"STAGE{stage}_MIN": "1"})
    _run(work, env, **{f"STAGE{stage}_SET": f"{stage_set} --set steps=1"})
    assert not (work / "runs" / before).exists()
    log = _run(work, env, **{f"STAGE{stage}_SET": f"{stage_set} --set steps=2"})
    assert f"resumed from runs/stage{stage}/state at step 1" in log
    state = _state(work, f"stage{stage}")
    assert state["step"] == 2 and state["train_config"]["init_from"] == ".cache/carry/model"
    return json.loads((out / "config.json").read_text())


def test_device_train_script_resumes_a_stage3_that_started_from_the_carried_model(tmp_path):
    """Stage 3 alone starts from the carried model; resumed on the warm machine, it keeps that base (the
    config's runs/stage2/model does not exist there)."""
    assert _lone_stage_twice(tmp_path, 3, STAGE3_RUN, "stage2")["trained_steps"] == {"rollout": 2}


def test_device_train_script_runs_and_resumes_stage4_from_the_carried_model(tmp_path):
    """Stage 4 alone (STAGE4_MIN) distils the carried model (no stage-3 model on the machine); resumed on the
    warm machine it keeps that base (its teacher), and the export samples in student_steps."""
    stage4 = f"{TINY_RUN} --set teacher_steps=2 --set student_steps=1 --set reuse=1"
    exported = _lone_stage_twice(tmp_path, 4, stage4, "stage3")
    assert exported["trained_steps"] == {"distill": 2} and exported["config"]["sampler"]["steps"] == 1, exported


def _resume_on_two_ranks_on_the_clock(work: Path, out: Path, env: dict, stage: int, stage_set: str) -> None:
    """The warm machine's second NPROC=2 call of stage `stage` (its state at step 2): a time budget of ~1 s
    and no step limit. Rank 0 lags rank 1 by its listening-gap forwards at every (logged) step, so each
    rank's own clock would stop them at different steps; both must stop together and export."""
    log = _run(work, env, **{f"STAGE{stage}_MIN": "0.02",
                             f"STAGE{stage}_SET": f"{stage_set} --set steps=100000 --set save_every=100000"})
    assert f"resumed from runs/stage{stage}/state at step 2" in log
    state = _state(work, f"stage{stage}")
    assert 2 < state["step"] < 100000 and state["world"] == 2
    assert (out / "config.json").is_file()


def test_device_train_script_on_two_ranks_resumes_and_stops_on_time(tmp_path):
    """NPROC=2: stage 2 through torchrun (DDP over gloo here, NCCL on the machine); rank 0 writes the state
    and the export. The second call resumes and runs on the clock (STAGE2_MIN), as the lease's calls do:
    both ranks must stop at the same step, or the one still going hangs in its next all-reduce."""
    work, out, env = _machine(tmp_path, STAGE2_MIN="1", NPROC="2")
    _run(work, env, STAGE2_SET=f"{TINY_RUN} --set steps=2")
    state = _state(work, "stage2")
    assert state["step"] == 2 and state["world"] == 2 and state["train_config"]["init_from"] == ".cache/carry/model"
    assert json.loads((out / "config.json").read_text())["trained_steps"] == {"dit": 2}
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert {f"runs/stage2/{f}" for f in ("log.csv", "loss.png", "samples.png")} <= set(tar.getnames())
    (out / "config.json").unlink()

    _resume_on_two_ranks_on_the_clock(work, out, env, 2, TINY_RUN)


def test_device_train_script_stage3_alone_on_two_ranks(tmp_path):
    """The next lease's training call: NPROC=2 stage 3 alone (the still clips rolled out, DDP over gloo
    here) from the carried model; the warm machine's second call resumes on the clock and both ranks stop
    together."""
    work, out, env = _machine(tmp_path, STAGE2_MIN="0", STAGE3_MIN="1", NPROC="2")
    _run(work, env, STAGE3_SET=f"{STAGE3_RUN} --set steps=2")
    state = _state(work, "stage3")
    assert state["step"] == 2 and state["world"] == 2 and state["train_config"]["init_from"] == ".cache/carry/model"
    assert state["train_config"]["rollout_clips"] == "still"
    assert json.loads((out / "config.json").read_text())["trained_steps"] == {"rollout": 2}
    (out / "config.json").unlink()
    _resume_on_two_ranks_on_the_clock(work, out, env, 3, STAGE3_RUN)


def test_ddp_scaling_script_three_arms(tmp_path):
    """scripts/device_ddp_scaling.sh with tiny settings: the 1-process arm, DDP and FSDP2 on two ranks, one
    summary table with a row per arm, the loss plot, and no more than 8 files in $OUT."""
    work, out, env = _machine(tmp_path)
    _run(work, env, SCALING, STEPS="4", GLOBAL_BATCH="2", WORKERS="0", WARM_STEPS="1",
           EXTRA_SET="--set chunks=2 --set log_every=1 --set warmup=1")
    summary = (out / "ddp_summary.md").read_text()
    rates, losses = summary.split("Loss against 1 GPU")  # the rate table, then the loss comparison
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in rates.splitlines() if line.startswith("| ") and "GPU" in line.split("|")[1]}
    assert list(rows) == ["1 GPU", "2 GPUs, DDP", "2 GPUs, FSDP2"], summary
    for name, cells in rows.items():  # steps/s: 3 intervals after step 1, marked (n=3) or fewer
        assert "failed" not in cells[2] and float(cells[2].split()[0]) > 0 and "(n=" in cells[2], (name, summary)
    assert rows["1 GPU"][9] == "1.000" and rows["2 GPUs, DDP"][1] == "1"  # efficiency; batch per rank
    compared = [line.split("|")[1].strip() for line in losses.splitlines() if line.startswith("| 2 GPUs")]
    assert compared == ["2 GPUs, DDP", "2 GPUs, FSDP2"], summary
    assert (out / "ddp_loss.png").read_bytes()[:4] == b"\x89PNG"
    files = sorted(p.name for p in out.iterdir())
    assert files == ["ddp1_log.csv", "ddp2_log.csv", "ddp_loss.png", "ddp_summary.md", "fsdp2_log.csv",
                     "scaling_logs.tar.gz"]
    for arm, world, parallel in (("ddp1", 1, "ddp"), ("ddp2", 2, "ddp"), ("fsdp2", 2, "fsdp")):
        state = _state(work, arm)
        assert (state["step"], state["world"], state["train_config"]["parallel"]) == (4, world, parallel)
        assert state["train_config"]["batch_size"] == 2 // world
    with tarfile.open(out / "scaling_logs.tar.gz") as tar:
        assert "done at step 4" in tar.extractfile("runs/scaling_fsdp2.txt").read().decode()


def test_device_tree_slims_and_restores_what_travels(tmp_path):
    """scripts/device_tree.sh: the bytes that would travel, a slim detached tree without a model
    folder, refusals, and a restore that brings back the branch and every file."""
    script = REPO / "scripts" / "device_tree.sh"
    repo = tmp_path / "repo"
    (repo / "assets" / "lite").mkdir(parents=True)
    (repo / "assets" / "default").mkdir(parents=True)
    (repo / "assets" / "lite" / "model.safetensors").write_bytes(os.urandom(300_000))
    (repo / "assets" / "default" / "model.safetensors").write_bytes(os.urandom(500_000))
    (repo / "README.md").write_text("hello\n")
    (repo / ".gitignore").write_text(".cache/\n")
    (repo / ".cache").mkdir()
    (repo / ".cache" / "corpus.npz").write_bytes(b"x" * 100_000)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout

    def tree(*args, limit=10**6):
        env = {**os.environ, "DEVICE_TREE_LIMIT": str(limit), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
        return subprocess.run(["bash", str(script), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60)

    tracked = 300_000 + 500_000 + 6 + len(".cache/\n")
    out = tree("size")
    assert out.returncode == 0 and f"travels: {tracked / 2**20:.1f} MiB" in out.stdout, out.stdout + out.stderr
    out = tree("size", ".cache/corpus.npz", limit=tracked + 50_000)  # the carried file tips it over
    assert out.returncode == 1 and "OVER THE LIMIT" in out.stdout

    (repo / "README.md").write_text("changed\n")
    out = tree("slim")
    assert out.returncode == 2 and "commit or stash" in out.stderr
    subprocess.run([*git, "checkout", "-q", "README.md"], check=True)

    out = tree("slim")
    assert out.returncode == 0, out.stderr
    files = subprocess.run([*git, "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    assert "assets/lite/model.safetensors" not in files and "assets/default/model.safetensors" in files
    assert not (repo / "assets" / "lite").exists()
    assert f"travels: {(tracked - 300_000) / 2**20:.1f} MiB" in out.stdout
    assert tree("slim").returncode == 2  # already slim

    out = tree("restore")
    assert out.returncode == 0 and "on main" in out.stdout, out.stderr
    assert (repo / "assets" / "lite" / "model.safetensors").stat().st_size == 300_000
    assert subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout == head
    assert subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout == ""
    assert tree("restore").returncode == 2  # not slim


def test_long_ablation_script_splits_the_rows_over_three_processes(tmp_path):
    """scripts/device_long_ablation.sh at a 1.2-s stream on the CPU: three processes, every row once, merged."""
    work, out, env = _machine(tmp_path)
    _speech_corpus(work / ".cache" / "data" / "speech_eval.npz", seconds=2.0, split="eval")
    env.update(MODEL=str(work / ".cache" / "carry" / "model"), MINUTES="0.02", BACKEND="torch", DEVICE="cpu",
               WORK=str(tmp_path / "abl"), LIMIT_S="200")
    text = _run(work, env, script=REPO / "scripts" / "device_long_ablation.sh")
    for part in ("default", "no-knot", "no-run-ahead"):
        assert f"{part}: exit 0" in text
    with tarfile.open(out / "long_ablation.tar.gz") as tar:
        names = tar.getnames()
    assert "abl/table.md" in names and "abl/no-knot/report.json" in names
    table = (tmp_path / "abl" / "table.md").read_text()
    rows = {"ground-truth", "copy-reference", "model:audio-zeroed", "model:default", "model:no-knot", "model:no-run-ahead"}
    drift = table.split("first window -> last window")[1]
    for row in rows:
        assert f"| {row} " in table.split("first window")[0], row  # whole-stream table
        assert f"| {row} " in drift, row
