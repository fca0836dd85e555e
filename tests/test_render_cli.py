"""`knotanim render` through the CLI: messages, exit codes, progress, batch mode, SIGTERM."""
import csv
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from faults_helpers import sigterm_when_ready
from knotanim.cli.main import main
from knotanim.frontends.audio_io import write_wav


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from knotanim import KnotAnimator, tiny_config

    folder = tmp_path_factory.mktemp("model") / "tiny"
    KnotAnimator.from_config(tiny_config(), device="cpu", seed=0).save_pretrained(folder)
    return folder


def _image(path, size=(90, 72)):
    y, x = np.mgrid[0:size[1], 0:size[0]]
    Image.fromarray(np.stack([x * 2, y * 3, x + y], axis=2).clip(0, 255).astype(np.uint8)).save(path)
    return path


def _audio(path, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    write_wav(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate)
    return path


def _base(model_dir):
    return ["render", "--model", str(model_dir), "--device", "cpu", "--no-face-detect"]


def test_render_summary_and_progress(model_dir, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    rc = main(_base(model_dir) + ["-i", str(_image(tmp_path / "f.png")), "-a", str(_audio(tmp_path / "s.wav")),
                                  "-o", str(out), "--progress", "--seed", "3", "--head-motion", "0.2", "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 0 and out.exists()
    assert "render: " in err and "25/25 frames" in err  # periodic progress lines (stderr is not a TTY)
    assert err.strip().splitlines()[-1].startswith("rendered 1.00 s: 25 frames") and str(out) in err


def test_quiet_and_ablation_switches(model_dir, tmp_path, capsys):
    out = tmp_path / "q.mp4"
    rc = main(_base(model_dir) + ["-i", str(_image(tmp_path / "f.png")), "-a", str(_audio(tmp_path / "s.wav", 0.5)),
                                  "-o", str(out), "--quiet", "--no-knot", "--no-run-ahead", "--crf", "30"])
    assert rc == 0 and capsys.readouterr().err == ""
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 13


@pytest.mark.parametrize("make, pattern", [
    (lambda d: ["-i", str(d / "missing.png"), "-a", str(_audio(d / "s.wav")), "-o", str(d / "o.mp4")], "does not exist"),
    (lambda d: ["-i", str(_image(d / "f.png")), "-a", str(d / "f.png"), "-o", str(d / "o.mp4")], "audio"),
    (lambda d: ["-i", str(_image(d / "f.png")), "-a", str(_audio(d / "s.wav")), "-o", str(d / "no" / "o.mp4")], "does not exist"),
    (lambda d: ["-i", str(_image(d / "f.png")), "-a", str(_audio(d / "s.wav"))], "--output"),
])
def test_user_errors_are_one_line(model_dir, tmp_path, capsys, make, pattern):
    rc = main(_base(model_dir) + make(tmp_path))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("knotanim render: error:") and pattern in lines[0]


def test_no_face_found_suggests_no_face_detect(model_dir, tmp_path, capsys):
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("this OpenCV has no Haar cascades (OpenCV 5 removed them)")
    rc = main(["render", "--model", str(model_dir), "--device", "cpu", "-i", str(_image(tmp_path / "f.png", (200, 160))),
               "-a", str(_audio(tmp_path / "s.wav")), "-o", str(tmp_path / "o.mp4")])
    assert rc == 2 and "--no-face-detect" in capsys.readouterr().err


def test_batch_folder_reports_failures(model_dir, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for stem in ("alice", "bob"):
        _image(src / f"{stem}.png")
        _audio(src / f"{stem}.wav", 0.4)
    _image(src / "carol.jpg")
    (src / "carol.mp3").write_text("not audio")
    _image(src / "dave.png")  # no audio
    rc = main(_base(model_dir) + ["--batch", str(src), "--out-dir", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert (out / "alice.mp4").exists() and (out / "bob.mp4").exists() and not (out / "carol.mp4").exists()
    assert "batch: 2 of 4 rendered, 2 failed" in err and "carol" in err and "dave.png" in err


def test_batch_csv_list(model_dir, tmp_path, capsys):
    _image(tmp_path / "a.png")
    _audio(tmp_path / "a.wav", 0.4)
    with open(tmp_path / "jobs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "audio", "output"])
        w.writerow(["a.png", "a.wav", "first.webm"])
        w.writerow(["a.png", "a.wav", ""])
    rc = main(_base(model_dir) + ["--batch", str(tmp_path / "jobs.csv"), "--out-dir", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "first.webm").exists() and (tmp_path / "o" / "a.mp4").exists()


def test_sigterm_leaves_a_playable_file(model_dir, tmp_path):
    out = tmp_path / "long.mp4"
    cmd = [sys.executable, "-m", "knotanim.cli.main"] + _base(model_dir) + [
        "-i", str(_image(tmp_path / "f.png")), "-a", str(_audio(tmp_path / "long.wav", 120.0)), "-o", str(out), "--progress"]
    # the first progress line: frames are being written
    returncode, err = sigterm_when_ready(cmd, lambda lines: len(lines) >= 1, settle_s=1.0)
    assert err.startswith("render: "), err
    assert returncode == 130, err
    assert "interrupted" in err and "playable" in err
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) > 0


def test_a_stop_signal_whose_interrupt_was_lost_still_stops_the_render(model_dir, tmp_path):
    """The KeyboardInterrupt a signal handler raises can be discarded by C code that called the Python
    function the handler ran in; the render then stops at its next output frame all the same."""
    import signal

    from knotanim import KnotAnimator
    from knotanim.cli.main import build_parser
    from knotanim.cli.render import _options, stop_signals_interrupt
    from knotanim.render import RenderInterrupted, render_to_file

    out = tmp_path / "lost.mp4"
    args = build_parser().parse_args(_base(model_dir) + ["-i", str(_image(tmp_path / "f.png")), "-a",
                                                         str(_audio(tmp_path / "s.wav", 4.0)), "-o", str(out), "--quiet"])
    anim = KnotAnimator.from_pretrained(model_dir, device="cpu")
    before = signal.getsignal(signal.SIGTERM)
    with stop_signals_interrupt() as interrupts:
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pass  # lost
        assert interrupts.received == signal.SIGTERM
        with pytest.raises(RenderInterrupted) as e:
            render_to_file(anim, args.image, args.audio, out, options=_options(args, None, interrupts))
    assert signal.getsignal(signal.SIGTERM) is before  # put back on the way out
    assert 0 < e.value.summary.frames < 100  # stopped at once, not after the 4 s of audio
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == e.value.summary.frames


def test_the_live_status_loop_stops_on_a_lost_stop_signal():
    from knotanim.cli.live import _status_loop
    from knotanim.cli.render import Interrupts

    interrupts = Interrupts()
    interrupts.received = 15
    with pytest.raises(KeyboardInterrupt):
        _status_loop(None, None, interrupts)  # raises before it asks the pipeline anything


def test_collect_jsonl_jobs(tmp_path):
    from knotanim.cli.render import collect_batch_jobs

    (tmp_path / "jobs.jsonl").write_text(
        '{"image": "a.png", "audio": "a.wav"}\n\nnot json\n{"image": "/abs/b.png", "audio": "b.wav", "output": "x.mp4"}\n'
        '{"image": "c.png"}\n')
    jobs, problems = collect_batch_jobs(tmp_path / "jobs.jsonl", tmp_path / "out")
    assert [(j.image, j.output) for j in jobs] == [(tmp_path / "a.png", tmp_path / "out" / "a.mp4"),
                                                   (Path("/abs/b.png"), tmp_path / "out" / "x.mp4")]
    assert [p[0] for p in problems] == ["line 3", "line 5"]
