"""The package works from a source checkout that was never installed (PYTHONPATH=<repository>, as
on the accelerator machine), where pyproject.toml's folder mapping (engines/ -> knotanim.engines,
app/ -> knotanim.app, assets/ -> knotanim.assets) does not apply."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_uninstalled_source_checkout_finds_the_mapped_folders():
    # -S: no site module, so no .pth file and no editable-install finder can supply the mapping;
    # the interpreter's site-packages come in as plain paths for torch and numpy.
    site_dirs = [p for p in sys.path if p.rstrip(os.sep).endswith(("site-packages", "dist-packages"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *site_dirs])}
    code = ("import knotanim.engines, knotanim.app, knotanim.assets\n"
            "from knotanim.animator import default_model_path\n"
            "print(knotanim.engines.__file__, knotanim.app.__file__, default_model_path(), sep='|')")
    out = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    engines, app, model = out.stdout.strip().split("|")
    assert Path(engines) == REPO / "engines" / "__init__.py"
    assert Path(app) == REPO / "app" / "__init__.py"
    assert Path(model) == REPO / "assets" / "default"
    assert (Path(model) / "config.json").is_file()
