"""scripts/decode_parity.py on a tiny saved model: the table, and one line for a bad model folder."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from knotanim import tiny_config
from knotanim.animator import KnotAnimator

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("decode_parity", ROOT / "scripts" / "decode_parity.py")
dp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dp)


def test_decode_parity_table_on_a_tiny_model(tmp_path, capsys):
    model = KnotAnimator.from_config(tiny_config(), seed=0).save_pretrained(tmp_path / "model")
    rows = dp.parity(str(model), str(ROOT / "assets" / "examples" / "avatar.png"), "cpu", [0.0, 0.3])
    assert [r["noise"] for r in rows] == [0.0, 0.3]
    for r in rows:  # bf16 changes the frames a little, never a lot
        assert 0 < r["mean_levels"] < 1 and r["max_levels"] <= 8 and 35 < r["psnr_db"] < 90
    assert dp.main(["--model", str(model), "--noise", "0"]) == 0
    assert "| latent noise | max levels |" in capsys.readouterr().out
    assert dp.main(["--model", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("decode_parity: ") and err.count("\n") == 1
