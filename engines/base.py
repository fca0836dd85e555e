"""The one backend interface the stream uses, and the two torch backends (eager, compiled).

A backend runs one ChunkStep: the same twelve tensors in, the same four out (see
`knotanim.stream.step.ChunkStep` for every shape). `KnotStream` calls `backend.run(...)` once per
chunk and never looks inside.
"""
from __future__ import annotations

import sys
import time
from typing import Protocol, runtime_checkable

import torch

from knotanim.stream.step import ChunkStep

StepOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@runtime_checkable
class ChunkBackend(Protocol):
    """Runs one chunk. Returns (committed [B, C, c, h, w], next_knot [B, c, h, w],
    new_k [Lyr, B, H, C*P, Dh], new_v [Lyr, B, H, C*P, Dh]) on `device`."""

    name: str
    device: torch.device

    def run(self, ref_k, ref_v, hist_k, hist_v, hist_pos, hist_valid, knot, knot_mask, ref_pos, audio, noise,
            motion) -> StepOutputs: ...


class TorchBackend:
    """Eager PyTorch: calls the ChunkStep directly (the reference every other backend is checked against)."""

    name = "torch"

    def __init__(self, step: ChunkStep, device: torch.device | str = "cpu"):
        self.step, self.device = step, torch.device(device)

    def run(self, *inputs: torch.Tensor) -> StepOutputs:
        return self.step(*inputs)


class CompiledTorchBackend:
    """torch.compile of the ChunkStep with static shapes.

    On CUDA mode "reduce-overhead" (CUDA graphs: outputs are cloned, because the graph's output
    buffers are reused by the next replay); on CPU a plain Inductor compile. Compilation happens
    on the first `run`; if it fails, the backend says why on stderr and runs eagerly from then on
    (`fallback_reason` keeps the message, `name` becomes "compiled->torch").
    """

    def __init__(self, step: ChunkStep, device: torch.device | str = "cpu", mode: str | None = None):
        self.step, self.device = step, torch.device(device)
        self.cuda_graphs = self.device.type == "cuda"
        self.mode = mode if mode is not None else ("reduce-overhead" if self.cuda_graphs else "default")
        self.name = "compiled"
        self.fallback_reason: str | None = None
        self._compiled = None

    def _fall_back(self, error: BaseException) -> None:
        self.fallback_reason = f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); running eagerly"
        print(f"knotanim: compiled backend: {self.fallback_reason}", file=sys.stderr)
        self.name, self._compiled = "compiled->torch", self.step

    def run(self, *inputs: torch.Tensor) -> StepOutputs:
        if self._compiled is None:
            try:
                self._compiled = torch.compile(self.step, mode=self.mode, dynamic=False, fullgraph=False)
                out = self._call(inputs)
            except Exception as e:  # noqa: BLE001: any compiler error means "use eager", said out loud
                self._fall_back(e)
                return self.step(*inputs)
            return out
        return self._call(inputs)

    def _call(self, inputs) -> StepOutputs:
        if self.cuda_graphs and self._compiled is not self.step:
            torch.compiler.cudagraph_mark_step_begin()
            return tuple(t.clone() for t in self._compiled(*inputs))
        return self._compiled(*inputs)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure(backend: ChunkBackend, inputs: tuple[torch.Tensor, ...], runs: int = 2, warmup: int = 1) -> float:
    """Median seconds per `run` after `warmup` calls (compilation, allocation, graph capture)."""
    for _ in range(warmup):
        backend.run(*inputs)
    synchronize(backend.device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.run(*inputs)
        synchronize(backend.device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
