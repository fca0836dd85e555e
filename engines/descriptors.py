"""Export descriptors: each exported network described as data (names, shapes, dtypes, sample inputs).

One `NetworkDescriptor` per exported graph. Export (ONNX, AOTInductor), the parity check, the
engine builder and the backends all read the same descriptor, so input order, names and static
shapes are written down in exactly one place.

Static shapes per stream configuration: the history ring always has its full size L*P (empty
slots are masked by `hist_valid`, so the first chunk needs no special graph), the knot tensor is
always present (`knot_mask` = 0 before the first knot exists). Only the number of frames per
chunk changes with the knot switch (F = C + 1 with the knot, F = C without), so a graph is made
per (knot on/off, sampler steps, batch); the default export is knot on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from knotanim.config import KnotAnimConfig
from knotanim.errors import BackendUnavailable
from knotanim.model.layout import RunAhead

CHUNK_STEP_INPUTS = ("ref_k", "ref_v", "hist_k", "hist_v", "hist_pos", "hist_valid", "knot", "knot_mask",
                     "ref_pos", "audio", "noise", "motion")
CHUNK_STEP_OUTPUTS = ("committed", "next_knot", "new_k", "new_v")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    def describe(self) -> str:
        return f"{self.name} {list(self.shape)} {str(self.dtype).replace('torch.', '')}"


@dataclass(frozen=True)
class NetworkDescriptor:
    """One exported network: its static I/O and a factory of realistic sample inputs.

    `sample_inputs(seed, device)` returns a tuple of tensors in `inputs` order.
    `tag` names the static variant in file names (e.g. "chunk_step-knot1-steps4-b1").
    """

    name: str
    tag: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sample_inputs: Callable[..., tuple[torch.Tensor, ...]] = field(compare=False, repr=False)
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def check(self, tensors, what: str = "input") -> None:
        """Raise BackendUnavailable naming the first tensor whose shape differs from the descriptor
        (e.g. a knot-on graph driven by a knot-off stream)."""
        specs = self.inputs if what == "input" else self.outputs
        for spec, t in zip(specs, tensors):
            if tuple(t.shape) != spec.shape:
                raise BackendUnavailable(f"{self.tag}: {what} {spec.name} has shape {list(t.shape)}, the exported "
                                         f"graph expects {list(spec.shape)} (export this variant, or use the torch backend)")


def chunk_step_descriptor(config: KnotAnimConfig, *, knot: bool = True, steps: int | None = None, batch: int = 1,
                          kv_dtype: torch.dtype = torch.float32) -> NetworkDescriptor:
    """The ChunkStep of `config` as a static-shape network (see ChunkStep for what each tensor means).

    Shapes: Lyr layers, B batch, H heads, P tokens per frame, L window, C chunk, F = C + knot,
    c latent channels, s latent side, M mel bands, W audio window, Dh head dim.
    """
    m, st = config.model, config.stream
    steps = steps or config.sampler.steps
    k = st.knot if knot else 0
    Lyr, B, H, Dh = m.depth, batch, m.heads, m.width // m.heads
    P, L, C, Fr = config.tokens_per_frame, st.window, st.chunk, st.chunk + k
    c, s = config.autoencoder.latent_channels, config.latent_size
    M, W = config.audio.n_mels, config.audio_window
    f32 = torch.float32
    inputs = (
        TensorSpec("ref_k", (Lyr, B, H, P, Dh), kv_dtype), TensorSpec("ref_v", (Lyr, B, H, P, Dh), kv_dtype),
        TensorSpec("hist_k", (Lyr, B, H, L * P, Dh), kv_dtype), TensorSpec("hist_v", (Lyr, B, H, L * P, Dh), kv_dtype),
        TensorSpec("hist_pos", (L,), f32), TensorSpec("hist_valid", (L,), torch.bool),
        TensorSpec("knot", (B, c, s, s), f32), TensorSpec("knot_mask", (B,), f32),
        TensorSpec("ref_pos", (), f32), TensorSpec("audio", (B, Fr, M, W), f32),
        TensorSpec("noise", (B, Fr, c, s, s), f32), TensorSpec("motion", (B,), f32),
    )
    outputs = (
        TensorSpec("committed", (B, C, c, s, s), f32), TensorSpec("next_knot", (B, c, s, s), f32),
        TensorSpec("new_k", (Lyr, B, H, C * P, Dh), kv_dtype), TensorSpec("new_v", (Lyr, B, H, C * P, Dh), kv_dtype),
    )
    run_ahead = RunAhead.from_config(st, knot and st.knot > 0, enabled=True)

    def sample_inputs(seed: int = 0, device="cpu") -> tuple[torch.Tensor, ...]:
        """A mid-stream chunk: part of the ring filled, a knot present, the reference ahead."""
        g = torch.Generator().manual_seed(seed)
        start = 2 * C  # the third chunk: the ring is partly filled
        out = []
        for spec in inputs:
            if spec.name == "hist_pos":
                t = torch.tensor([float(f - start) if f < start else 0.0 for f in range(L)])
            elif spec.name == "hist_valid":
                t = torch.tensor([f < start for f in range(L)])
            elif spec.name == "knot_mask":
                t = torch.ones(B)
            elif spec.name == "ref_pos":
                t = torch.tensor(float(run_ahead.relative(start)))
            elif spec.name == "motion":
                t = torch.full((B,), 0.5)
            else:
                t = torch.randn(spec.shape, generator=g)
            out.append(t.to(device=device, dtype=spec.dtype))
        return tuple(out)

    tag = f"chunk_step-knot{int(bool(k))}-steps{steps}-b{B}"
    return NetworkDescriptor("chunk_step", tag, inputs, outputs, sample_inputs,
                             meta={"knot": bool(k), "steps": steps, "batch": B, "frames": Fr, "chunk": C})


RENDERER_INPUTS = ("latents", "ref_latent", "features")
RENDERER_OUTPUTS = ("flow", "visibility", "fill")


def warp_renderer_descriptor(config: KnotAnimConfig, frames: int | None = None) -> NetworkDescriptor:
    """A warp codec's renderer (knotanim.model.warp.WarpRenderStep) for `frames` latents at a time
    (default: one chunk's committed frames, as the stream renders them)."""
    from knotanim.model.warp import feature_channels

    ae = config.autoencoder
    if ae.kind != "warp":
        raise BackendUnavailable(f"the model's codec is {ae.kind!r}: only a warp codec has a renderer to export")
    n = frames or config.stream.chunk
    c, s, S, g = ae.latent_channels, config.latent_size, config.frame_size, config.frame_size // ae.flow_factor
    f32 = torch.float32
    inputs = (TensorSpec("latents", (n, c, s, s), f32), TensorSpec("ref_latent", (1, c, s, s), f32),
              TensorSpec("features", (1, feature_channels(ae), g, g), f32))
    outputs = (TensorSpec("flow", (n, 2, g, g), f32), TensorSpec("visibility", (n, 1, g, g), f32),
               TensorSpec("fill", (n, 3, S, S), f32))

    def sample_inputs(seed: int = 0, device="cpu") -> tuple[torch.Tensor, ...]:
        g_ = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(spec.shape, generator=g_).to(device) for spec in inputs)

    return NetworkDescriptor("warp_renderer", f"warp_renderer-n{n}", inputs, outputs, sample_inputs, meta={"frames": n})
