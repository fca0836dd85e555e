"""AOTInductor: the ChunkStep compiled ahead of time into a package (.pt2), the compiled path
that needs neither TensorRT nor a compile at start-up.

`torch.export` captures the step with the descriptor's static shapes, then
`torch._inductor.aoti_compile_and_package` compiles it for the device it was exported on (CPU:
C++ with a system compiler; CUDA: Triton kernels). The package only runs on that kind of device.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from knotanim.engines.descriptors import NetworkDescriptor
from knotanim.errors import BackendUnavailable, KnotAnimError


@torch.no_grad()
def export_aoti(module: torch.nn.Module, desc: NetworkDescriptor, path: str | Path, device: torch.device | str = "cpu",
                progress: Callable[[str], None] = print) -> Path:
    """torch.export + AOTInductor compile of `module` on `device`; writes the package at `path`."""
    device = torch.device(device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = desc.sample_inputs(0, device)
    t0 = time.perf_counter()
    progress(f"aoti: torch.export of {desc.tag} on {device}")
    try:
        program = torch.export.export(module, inputs, strict=False)
        progress(f"aoti: compiling with AOTInductor (minutes for large models) [{time.perf_counter() - t0:.0f} s]")
        out = torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as e:  # noqa: BLE001 - report any compiler failure as one clear line
        raise KnotAnimError(f"AOTInductor export failed ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from e
    progress(f"aoti: wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f} s")
    return Path(out)


class AotiBackend:
    """Runs an AOTInductor package of the ChunkStep (same I/O as the ChunkStep, in order)."""

    def __init__(self, package: str | Path, desc: NetworkDescriptor, device: torch.device | str = "cpu"):
        self.desc, self.device = desc, torch.device(device)
        if not Path(package).is_file():
            raise BackendUnavailable(f"no AOTInductor package at {package} (run knotanim export --format aoti)")
        self.runner = torch._inductor.aoti_load_package(str(package))
        self.name = "aoti"

    def run(self, *inputs: torch.Tensor):
        self.desc.check(inputs)
        return tuple(self.runner(*inputs))
