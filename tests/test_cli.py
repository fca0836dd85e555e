import subprocess
import sys

from knotanim.cli.main import build_parser, main


def test_help_lists_the_commands(capsys):
    text = build_parser().format_help()
    for cmd in ("render", "eval", "train", "bench", "data"):
        assert cmd in text


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_bench_tiny_reports_and_appends(tmp_path, capsys):
    md = tmp_path / "bench.md"
    assert main(["bench", "--tiny", "--seconds", "1", "--threads", "1", "--append", str(md)]) == 0
    out = capsys.readouterr().out
    assert "frames/s" in out and "chunk latency" in out and "time to first frame" in out
    row = md.read_text()
    assert row.startswith("| ") and "knotanim bench" in row and "--tiny" in row


def test_user_error_is_one_line_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "knotanim.cli.main", "bench", "--model", str(tmp_path / "missing")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "not found" in r.stderr


def test_info_lists_versions_profiles_and_optional_parts(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "profiles installed:" in out and "assets/default" in out
    assert "optional parts:" in out and "TensorRT backend" in out
