"""scripts/device_train.sh, scripts/device_ddp_scaling.sh and scripts/device_benchmarks.sh rehearsed on the CPU
before they cost a GPU
lease: a tiny carried model, a tiny speech corpus, the script run from a plain source checkout that was never
installed (PYTHONPATH=<repository>, no editable-install finder), as on the accelerator machine; then run again
over the same runs/, as a second call on a warm machine does (stages 2, 3 and 4 resume their own state).
Two ranks (NPROC=2, the scaling script's DDP and FSDP arms) go through torchrun as on the two-GPU machine,
over gloo instead of NCCL, each rank started with the same uninstalled interpreter. The benchmarks script runs
its three parts at tiny sizes, once as it should and once with a part that hangs and one that fails."""
import json
import os
import re
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


BENCH = REPO / "scripts" / "device_benchmarks.sh"
# The benchmarks at the smallest sizes each offers: the tiny model (one backend, 1 s of audio), a
# 4-point tiny scaling sweep with a 3-chunk long stream, the lite profile on one thread for 6 frames, a
# one-layer Wan-like shape timed once.
TINY_BENCH = dict(
    DEVICE="cpu", BACKENDS="torch", BACKENDS_ARGS="--tiny --seconds 1",
    SCALING_ARGS="--tiny --quick --warmup 1 --chunks 2 --long-chunks 3 --windows 0,3 --chunk-lengths 2 "
                 "--frame-sizes 64 --no-count",
    WAN_ARGS="--layers 1 --width 64 --heads 2 --ffn 128 --text-tokens 8 --tokens-per-frame 16 --window 6 --steps 2",
    LITE_THREADS="1", LITE_BACKENDS="torch", LITE_FRAMES="6",
    WAN_ITERS="1", WAN_WARMUP="0", WAN_VARIANTS="eager,graphs")


def _nproc() -> int:
    """What `nproc` says: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _bench(tmp_path: Path, **knobs) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """scripts/device_benchmarks.sh from an uninstalled checkout on the CPU; its result, $OUT and the
    summary's part table ({part: (exit status, outcome, outputs, load1_at_start, gpu_procs_at_start)}, in the
    order the parts ran; outputs ends with the CONTENDED note where there is one)."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=str(_uninstalled_python(tmp_path)), OUT=str(out), OMP_NUM_THREADS="1", **{**TINY_BENCH, **knobs})
    r = subprocess.run(["bash", str(BENCH)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    summary = (out / "summary.txt").read_text()
    header, table = summary.split("outputs\n", 1)
    assert header.splitlines()[-1].split()[-2:] == ["load1_at_start", "gpu_procs_at_start"], summary
    parts = {}
    for line in table.split("\n\n", 1)[0].splitlines():
        name, rc, outcome, _wall, _limit, load, gprocs, *outputs = line.split()
        parts[name] = (int(rc), outcome, " ".join(outputs), load, gprocs)
    return r, out, parts


def test_device_benchmarks_script_runs_every_part(tmp_path):
    r, out, parts = _bench(tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert list(parts) == ["backends", "scaling", "lite", "wan"], parts
    assert all(rc == 0 and outcome == "ok" and "missing" not in files for rc, outcome, files, *_ in parts.values()), parts
    cores = _nproc()
    for _rc, _outcome, files, load, gprocs in parts.values():  # /proc/loadavg's; no nvidia-smi here, or a count
        assert float(load) >= 0 and (gprocs == "n/a" or gprocs.isdigit()), parts
        assert ("CONTENDED: load" in files) == (float(load) > cores / 2), (parts, cores)
    assert sorted(p.name for p in out.iterdir()) == ["backends.json", "bench_logs.tar.gz", "scaling.json", "scaling.png",
                                                     "summary.txt", "wan.json"]  # + the caller's bench.txt: 7 <= 8
    backends = json.loads((out / "backends.json").read_text())["results"]
    assert [(b["name"], b["status"]) for b in backends] == [("torch", "ok")] and backends[0]["fps"] > 0
    scaling = json.loads((out / "scaling.json").read_text())
    assert [p["status"] for p in scaling["points"]] == ["ok"] * 4 and scaling["long"]["status"] == "ok"
    assert scaling["settings"]["timing"]["long_budget_s"] == 35  # SCALING_LONG_BUDGET_S's default, passed on
    assert (out / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    wan = json.loads((out / "wan.json").read_text())
    assert [(w["variant"], w["workload"]) for w in wan["runs"]] == [("eager", "clip"), ("eager", "steady")]
    assert [s["variant"] for s in wan["skipped"]] == ["graphs"] and wan["shape"]["layers"] == 1
    summary = (out / "summary.txt").read_text()
    assert "backends: torch: " in summary and "scaling: 4 sweep points: 4 ok" in summary
    assert "scaling: backend torch" in summary and scaling["settings"]["backend"] == "torch"  # SCALING_BACKEND on cpu
    assert backends[0]["seconds"] == 1  # BACKENDS_SECONDS_FOR names onnxruntime only: torch keeps --seconds (here 1)
    assert "wan: eager/clip: " in summary and "wan: graphs/all: skipped" in summary
    lite = summary.split("lite (scripts/lite_speed.py, CPU):\n", 1)[1]
    assert "--threads 1" in lite and "configs/models/lite.yaml | torch | " in lite  # lite_speed's own table
    with tarfile.open(out / "bench_logs.tar.gz") as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
        assert {"env.txt", "parts.tsv", "backends.log", "scaling.log", "lite.log", "wan.log"} <= names
        assert "bench_scaling: " in tar.extractfile("./scaling.log").read().decode()
    for part in parts:  # every part's output went to the console (bench.txt) as well
        assert f"== {part}: exit 0 (ok)" in r.stdout


def test_device_benchmarks_script_reports_failed_parts_and_goes_on(tmp_path):
    """A part that hangs past its budget (wan: endless iterations, 2 s) and one that fails at once (scaling:
    an unknown option) are reported; the part after them (backends) still runs; the script exits 1."""
    r, out, parts = _bench(tmp_path, PARTS="wan scaling backends", WAN_S="2", WAN_ITERS="100000",
                           SCALING_ARGS="--no-such-option")
    assert r.returncode == 1, (r.stdout[-3000:], r.stderr[-3000:])
    assert list(parts) == ["wan", "scaling", "backends"], parts
    assert parts["wan"][:2] == (124, "timed-out") and "wan.json (missing)" in parts["wan"][2]
    assert parts["scaling"][:2] == (2, "failed")
    assert parts["backends"][:2] == (0, "ok")
    assert json.loads((out / "backends.json").read_text())["results"][0]["status"] == "ok"
    assert "no-such-option" in r.stdout  # argparse's complaint, in the console output


def test_device_benchmarks_script_marks_a_contended_part(tmp_path):
    """A load average above half the cores at a part's start (a fake LOADAVG_FILE) puts CONTENDED on the part's
    line, a warning under the table, and on the wan runs' digest lines; the cuDNN wan variants are skipped on
    the CPU with their reason, and the part still succeeds."""
    fake = tmp_path / "loadavg"
    fake.write_text("999.50 500.00 100.00 40/900 4242\n")
    r, out, parts = _bench(tmp_path, PARTS="lite wan", LOADAVG_FILE=str(fake), WAN_VARIANTS="eager,cudnn,fp8-cudnn")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert list(parts) == ["lite", "wan"], parts
    cores = _nproc()
    for rc, outcome, files, load, _gprocs in parts.values():
        assert (rc, outcome, load) == (0, "ok", "999.50") and files.endswith(f"CONTENDED: load 999.50 on {cores} cores at start")
    summary = (out / "summary.txt").read_text()
    assert "WARNING: 2 part(s) started on a contended machine" in summary
    wan = json.loads((out / "wan.json").read_text())
    assert [s["variant"] for s in wan["skipped"]] == ["cudnn", "fp8-cudnn"] and all(s["reason"] for s in wan["skipped"])
    assert all(w["load1_at_start"] == 999.5 for w in wan["runs"]) and wan["runs"]
    assert "wan: eager/clip: " in summary and "load1 999.50 at start  CONTENDED: load 999.50 on" in summary
    assert "wan: cudnn/all: skipped: " in summary and "wan: fp8-cudnn/all: skipped: " in summary
    assert "== wan: load1 999.50 on" in r.stdout and ": CONTENDED" in r.stdout


def test_device_benchmarks_script_defaults():
    """The default budgets fit the call (at most 560 s) and the cuDNN wan variants run last."""
    text = BENCH.read_text()
    budgets = {k: int(v) for k, v in re.findall(r"(BACKENDS_S|SCALING_S|LITE_S|WAN_S)=\$\{\1:-(\d+)\}", text)}
    assert budgets == {"BACKENDS_S": 200, "SCALING_S": 110, "LITE_S": 40, "WAN_S": 170} and sum(budgets.values()) <= 560
    assert "WAN_VARIANTS=${WAN_VARIANTS:-eager,compile,graphs,fp8,cudnn,fp8-cudnn}" in text
    # the GPU sweep measures compute (CUDA graphs), the CPU rehearsal stays eager; ONNX Runtime gets 1 s of audio
    assert 'if [ "$DEVICE" = cuda ]; then SCALING_BACKEND=${SCALING_BACKEND:-graphs}; else ' \
           'SCALING_BACKEND=${SCALING_BACKEND:-torch}; fi' in text
    assert "BACKENDS_SECONDS_FOR=${BACKENDS_SECONDS_FOR-onnxruntime=1}" in text
    assert '--backend "$SCALING_BACKEND"' in text and '--seconds-for "$BACKENDS_SECONDS_FOR"' in text


def test_device_benchmarks_script_refuses_an_unknown_part(tmp_path):
    r = subprocess.run(["bash", str(BENCH)], cwd=tmp_path, env={**os.environ, "PARTS": "backends bogus"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown part bogus" in r.stdout and not (tmp_path / "out").exists()


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


def test_stage3_ab_script_trains_two_arms_evaluates_both_and_fetches_one(tmp_path):
    """scripts/device_stage3_ab.sh on the CPU: two stage-3 arms from the same carried model, each in its own
    working directory (the carried model and corpora linked in), the second with rollout_knot_target=own; then
    KnotBench on each model; $OUT gets the summary and one archive per arm; `fetch B` brings that arm's model."""
    work, out, env = _machine(tmp_path, STAGE2_MIN="0")
    _speech_corpus(work / ".cache" / "data" / "speech_eval.npz", split="eval")
    ab = tmp_path / "ab"
    from knotanim.eval import tiny_spec

    tiny_spec(10).save(tmp_path / "tiny_spec.json")
    env.update(AB_DIR=str(ab), STAGE3_MIN="1", EVAL_DEVICE="cpu", STAGE3_BASE=f"{STAGE3_RUN} --set steps=1",
               ARM_A="--set lr=1e-4", ARM_B="--set lr=1e-4 --set rollout_knot_target=own",
               EVAL_SPECS=str(tmp_path / "tiny_spec.json"))
    script = REPO / "scripts" / "device_stage3_ab.sh"
    r = subprocess.run(["bash", str(script), "train"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:], (ab / "B" / "train.txt").read_text()[-2000:])
    summary = (out / "ab_summary.md").read_text()
    assert "## arm A: " in summary and "rollout_knot_target=own" in summary.split("## arm B")[1]
    assert summary.count("done at step 1") == 2 and summary.count("### kb_quick") == 2
    assert summary.count("### kb_spec1") == 2  # EVAL_SPECS: one report per spec and arm
    for arm, target in (("A", "truth"), ("B", "own")):
        with tarfile.open(out / f"ab_{arm}.tar.gz") as tar:
            names = tar.getnames()
            assert "train.txt" in names and "kb_quick/report.json" in names and "out/config.json" in names
            assert "kb_spec1/report.json" in names
        state = json.loads((ab / arm / "runs" / "stage3" / "state" / "state.json").read_text())
        assert state["train_config"]["rollout_knot_target"] == target
        assert state["train_config"]["init_from"] == ".cache/carry/model"
    fetched = tmp_path / "fetched"
    r = subprocess.run(["bash", str(script), "fetch", "B"], cwd=work, env={**env, "OUT": str(fetched)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (fetched / "config.json").exists() and list(fetched.glob("*.safetensors"))
    assert json.loads((fetched / "config.json").read_text())["trained_steps"] == {"rollout": 1}
    r = subprocess.run(["bash", str(script), "fetch", "C"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "arm 'C' has no model" in r.stderr
    # resume: both arms on from their states with the recipes train recorded (ARM_* not read), the exports replaced
    resumed = tmp_path / "resumed"
    r = subprocess.run(["bash", str(script), "resume"], cwd=work, capture_output=True, text=True, timeout=600,
                       env={**env, "OUT": str(resumed), "ARM_A": "--set lr=bogus", "RESUME_SET": "--set steps=2"})
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:], (ab / "A" / "resume.txt").read_text()[-2000:])
    summary = (resumed / "ab_summary.md").read_text()
    assert "device_stage3_ab.sh resume" in summary and summary.count("resumed from runs/stage3/state at step 1") == 2
    assert summary.count("done at step 2") == 2 and "rollout_knot_target=own" in summary.split("## arm B")[1]
    r = subprocess.run(["bash", str(script), "fetch", "A"], cwd=work, env={**env, "OUT": str(tmp_path / "fA")},
                       capture_output=True, text=True, timeout=60)
    assert json.loads((tmp_path / "fA" / "config.json").read_text())["trained_steps"] == {"rollout": 2}
    r = subprocess.run(["bash", str(script), "resume"], cwd=work, env={**env, "AB_DIR": str(tmp_path / "none")},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no stage-3 state" in r.stderr
