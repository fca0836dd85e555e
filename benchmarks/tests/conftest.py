"""benchmarks/ is no package and is not installed: its tests import its modules (bench_wan_shape,
triton_attention, ...) with the folder on sys.path, as `python benchmarks/<script>.py` has it."""
import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[1])
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
