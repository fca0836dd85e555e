"""The backends beyond eager torch start here: the compiled torch backend, and timing helpers.

The contract every backend keeps (`ChunkBackend`) and the eager `TorchBackend` belong to the stream
(knotanim.stream.backend); they are re-exported here so `knotanim.engines` names every backend.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import torch

from knotanim.model.warp import WarpCodec
from knotanim.stream.backend import ChunkBackend, StepOutputs, TorchBackend
from knotanim.stream.step import ChunkStep

__all__ = ["ChunkBackend", "CompiledTorchBackend", "StepOutputs", "TorchBackend", "measure", "synchronize"]


class CompiledTorchBackend:
    """torch.compile of the ChunkStep with static shapes, and of the frame decoder when given one.

    On CUDA mode "reduce-overhead" (CUDA graphs: outputs are cloned, because the graph's output
    buffers are reused by the next replay); on CPU a plain Inductor compile. Compilation happens
    on the first `run`; if it fails, the backend says why on stderr and runs eagerly from then on
    (`fallback_reason` keeps the message, `name` becomes "compiled->torch").

    autoencoder: the animator's frame autoencoder. Given one (and `compile_decoder`), `decode`
    is torch.compile of `latents -> autoencoder.decode(latents.float(), dtype=decode_dtype)` (decode_dtype:
    the animator's dtype, as KnotAnimator.decode passes it) in the same mode, compiled
    at its first call for that call's shape (a stream's chunk of frames); latents of any other
    shape are decoded eagerly (no recompilation, no stall mid-stream). If the compiled decoder
    fails (compiling, or capturing its CUDA graph at a later call), it says why once on stderr and
    decodes eagerly from then on (`decode_fallback_reason`; `name` is unchanged: it names the step).
    Without an autoencoder, or with compile_decoder=False, `decode` is None: the stream decodes
    eagerly with the animator, as before.
    """

    decode: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __init__(self, step: ChunkStep, device: torch.device | str = "cpu", mode: str | None = None, *,
                 autoencoder: torch.nn.Module | None = None, compile_decoder: bool = True,
                 decode_dtype: torch.dtype | None = None):
        self.step, self.device = step, torch.device(device)
        self.cuda_graphs = self.device.type == "cuda"
        self.mode = mode if mode is not None else ("reduce-overhead" if self.cuda_graphs else "default")
        self.name = "compiled"
        self.fallback_reason: str | None = None
        self._compiled = None
        self.autoencoder, self.decode_dtype = autoencoder, decode_dtype
        self.decode_fallback_reason: str | None = None
        self._compiled_decode = None
        self._decode_shape: tuple[int, ...] | None = None  # the shape the decoder was compiled for
        if autoencoder is not None and compile_decoder and not _renders_from_reference(autoencoder):
            self.decode = self._decode

    @staticmethod
    def _reason(error: BaseException) -> str:
        return f"torch.compile failed ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]})"

    def _fall_back(self, error: BaseException) -> None:
        self.fallback_reason = f"{self._reason(error)}; running eagerly"
        print(f"knotanim: compiled backend: {self.fallback_reason}", file=sys.stderr)
        self.name, self._compiled = "compiled->torch", self.step

    def run(self, *inputs: torch.Tensor) -> StepOutputs:
        if self._compiled is None:
            try:
                self._compiled = torch.compile(self.step, mode=self.mode, dynamic=False, fullgraph=False)
                out = self._call(inputs)
            except Exception as e:  # noqa: BLE001 - any compiler error means "use eager", said out loud
                self._fall_back(e)
                return self.step(*inputs)
            return out
        return self._call(inputs)

    def _call(self, inputs) -> StepOutputs:
        if self.cuda_graphs and self._compiled is not self.step:
            torch.compiler.cudagraph_mark_step_begin()
            return tuple(t.clone() for t in self._compiled(*inputs))
        return self._compiled(*inputs)

    # --- the frame decoder ------------------------------------------------------------------------
    def _eager_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents.float(), dtype=self.decode_dtype)

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [N, c, h, w] -> float frames [N, 3, H, W], as KnotAnimator.decode."""
        if self.decode_fallback_reason is not None:
            return self._eager_decode(latents)
        if self._decode_shape is None:
            self._decode_shape = tuple(latents.shape)
        if tuple(latents.shape) != self._decode_shape:  # e.g. a shorter last batch: not worth a compile
            return self._eager_decode(latents)
        try:
            if self._compiled_decode is None:
                self._compiled_decode = torch.compile(self._eager_decode, mode=self.mode, dynamic=False,
                                                      fullgraph=False)
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
                return self._compiled_decode(latents).clone()
            return self._compiled_decode(latents)
        except Exception as e:  # noqa: BLE001 - any compiler/capture error means "decode eagerly", said once
            self.decode_fallback_reason = f"{self._reason(e)}; decoding eagerly"
            print(f"knotanim: compiled backend: decoder: {self.decode_fallback_reason}", file=sys.stderr)
            self._compiled_decode = None
            return self._eager_decode(latents)


def _renders_from_reference(autoencoder: torch.nn.Module) -> bool:
    """A warp codec decodes with the stream's reference: the stream decodes it with the animator."""
    return isinstance(autoencoder, WarpCodec)


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
