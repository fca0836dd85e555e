"""The contract between the stream and whatever runs its chunks, and the eager backend.

A backend runs one ChunkStep: the same twelve tensors in, the same four out (see
`knotanim.stream.step.ChunkStep` for every shape). `KnotStream` calls `backend.run(...)` once per
chunk and never looks inside. Two optional attributes let a backend take over making frames:
`decode` (latents -> frames, as `StreamModel.decode`; the compiled backend's torch.compile of the frame
decoder) and `render_parts` (a warp codec's renderer, as `StreamModel.render_parts`; the ONNX Runtime
backend's exported renderer). Absent or None: the stream asks its model. The backends beyond eager torch
live in knotanim.engines, which builds on this module.
"""
from __future__ import annotations

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
