"""The warp codec: per-frame motion latents, and frames made by moving the reference's own pixels.

Encoding sees one frame and squeezes it into a small latent (c channels at 1/factor of the frame
side: 8 x 16 x 16 for a 256^2 frame, 2,048 numbers), too small to hold a face's texture but enough
for where its parts are: head pose, jaw and lips, eyes, brows. Rendering sees the frame's latent,
the reference's latent and the reference image, and makes the frame in three parts:

  flow        [N, 2, H/f4, W/f4]  where each output pixel samples the reference, as an offset from
                                  the identity grid in grid_sample's [-1, 1] coordinates
  visibility  [N, 1, H/f4, W/f4]  in [0, 1]: 1 where the warped reference shows the output pixel
  fill        [N, 3, H, W]        what the reference lacks (mouth interior, teeth, uncovered background)

  frame = visibility * warp(reference, flow) + (1 - visibility) * fill

Flow and visibility are smooth, so `composite` applies them to the reference at any resolution (the
photo's own), with the fill upsampled: pixels of the photo stay the photo's pixels. Only 2-D
`grid_sample` is used (it exports to ONNX and TensorRT).

The DiT generates the latents; the reference's latent is the encoding of the reference itself, so
"copy the reference" is the latent the DiT starts from, as with the frame autoencoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from knotanim.config import AutoencoderConfig
from knotanim.model.autoencoder import ResBlock


@dataclass
class WarpReference:
    """What rendering needs of one reference, computed once per reference (a swap recomputes it).

    image [1, 3, H, W] in [-1, 1] at the model's frame size; latent [1, c, h, w] (normalised, as the
    DiT sees it); features [1, F, H/f4, W/f4] (the reference's appearance features for the fill)."""

    image: torch.Tensor
    latent: torch.Tensor
    features: torch.Tensor


@dataclass
class WarpParts:
    """One batch of rendered frames before compositing (shapes in the module docstring)."""

    flow: torch.Tensor
    visibility: torch.Tensor
    fill: torch.Tensor


@dataclass
class FrameMotion:
    """One frame's parts on the CPU, for compositing at the photo's own resolution
    (knotanim.frontends.native_paste): flow float32 [2, h, w] in model-frame pixels (x, y offsets of the
    sample point), visibility float32 [h, w] in [0, 1], fill uint8 [S, S, 3] RGB at the frame size S."""

    flow: np.ndarray
    visibility: np.ndarray
    fill: np.ndarray


def frame_motions(parts: WarpParts) -> list[FrameMotion]:
    """WarpParts of N frames -> N FrameMotion (flow converted from grid_sample units to pixels)."""
    size = parts.fill.shape[-1]
    flow = (parts.flow.float() * (size / 2)).cpu().numpy()
    vis = parts.visibility.float()[:, 0].cpu().numpy()
    fill = ((parts.fill.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [FrameMotion(np.ascontiguousarray(f), np.ascontiguousarray(v), np.ascontiguousarray(c))
            for f, v, c in zip(flow, vis, fill)]


def identity_grid(n: int, height: int, width: int, device, dtype) -> torch.Tensor:
    """grid_sample's identity grid [n, height, width, 2] (x, y in [-1, 1], align_corners=False)."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * (2.0 / width) - 1.0
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
    return grid.unsqueeze(0).expand(n, -1, -1, -1)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` [N, C, H, W] at identity + flow, the flow [N, 2, h, w] upsampled to H x W."""
    n, _, h, w = image.shape
    if flow.shape[-2:] != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    grid = identity_grid(n, h, w, image.device, image.dtype) + flow.to(image.dtype).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def composite(parts: WarpParts, image: torch.Tensor) -> torch.Tensor:
    """The frame at `image`'s resolution: image [N or 1, 3, H, W] in [-1, 1] is the reference at any
    size (the model's, or the photo's own); flow and visibility are upsampled to it, the fill too."""
    n = parts.flow.shape[0]
    image = image.expand(n, -1, -1, -1)
    size = image.shape[-2:]
    warped = warp(image, parts.flow)
    vis = F.interpolate(parts.visibility, size=size, mode="bilinear", align_corners=False).to(image.dtype)
    fill = parts.fill if parts.fill.shape[-2:] == size else F.interpolate(parts.fill, size=size, mode="bilinear",
                                                                         align_corners=False)
    return vis * warped + (1 - vis) * fill.to(image.dtype)


def feature_channels(cfg: AutoencoderConfig) -> int:
    """Channels of WarpReference.features for a warp codec config."""
    return min(cfg.base_channels * cfg.flow_factor, 4 * cfg.base_channels)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), ResBlock(cout, cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(cin, cout, 3, padding=1), ResBlock(cout, cout))


class WarpCodec(nn.Module):
    """encode(frames) -> latents; render(latents, reference) -> WarpParts; decode -> frames.

    Config (AutoencoderConfig, kind "warp"): factor (latent cell side in pixels, a power of 2 >= 8),
    latent_channels, base_channels (width of the first stage), flow_factor (flow and visibility cell
    side in pixels, a power of 2 between 2 and factor)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        n_down = cfg.factor.bit_length() - 1
        n_flow = cfg.flow_factor.bit_length() - 1
        if 2**n_down != cfg.factor or 2**n_flow != cfg.flow_factor or not 1 <= n_flow < n_down:
            raise ValueError("warp codec needs factor and flow_factor powers of 2 with 2 <= flow_factor < factor")
        b, c = cfg.base_channels, cfg.latent_channels
        widths = [min(b * 2**i, 4 * b) for i in range(n_down + 1)]  # per resolution level: 1, 1/2, ..., 1/factor
        assert widths[n_flow] == feature_channels(cfg)
        self.n_down, self.n_flow = n_down, n_flow
        # Encoder: frame -> latent (the DiT's space), downsampling all the way.
        enc: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        enc += [_down(widths[i], widths[i + 1]) for i in range(n_down)]
        enc += [nn.GroupNorm(min(32, widths[-1] // 4), widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], c, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        # Reference appearance features at the flow's resolution.
        ref: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        ref += [_down(widths[i], widths[i + 1]) for i in range(n_flow)]
        self.reference_encoder = nn.Sequential(*ref)
        fw = widths[n_flow]
        # Motion: (frame latent, reference latent) at 1/factor, up to the flow's resolution.
        mot: list[nn.Module] = [nn.Conv2d(2 * c, widths[-1], 3, padding=1), ResBlock(widths[-1], widths[-1])]
        mot += [_up(widths[i + 1], widths[i]) for i in reversed(range(n_flow, n_down))]
        self.motion = nn.Sequential(*mot)
        self.joint = nn.Sequential(ResBlock(2 * fw, fw), ResBlock(fw, fw))
        self.flow_head = nn.Conv2d(fw, 2, 3, padding=1)
        self.visibility_head = nn.Conv2d(fw, 1, 3, padding=1)
        # Fill: joint features + the reference's features warped by the flow, up to the frame size.
        self.fill_in = ResBlock(2 * fw, fw)
        self.fill_up = nn.Sequential(*[_up(widths[i + 1], widths[i]) for i in reversed(range(n_flow))])
        self.fill_out = nn.Sequential(nn.GroupNorm(min(32, widths[0] // 4) or 1, widths[0]), nn.SiLU(),
                                      nn.Conv2d(widths[0], 3, 3, padding=1))
        # Start as "copy the reference": no flow, fully visible.
        nn.init.zeros_(self.flow_head.weight)
        nn.init.zeros_(self.flow_head.bias)
        nn.init.zeros_(self.visibility_head.weight)
        nn.init.constant_(self.visibility_head.bias, 3.0)
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))

    # --- latents ----------------------------------------------------------------------------------
    def encode_raw(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [N, 3, H, W] in [-1, 1] -> raw latents [N, c, H/factor, W/factor]."""
        return self.encoder(frames)

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean.view(1, -1, 1, 1)) / self.latent_std.view(1, -1, 1, 1)

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latent_std.view(1, -1, 1, 1) + self.latent_mean.view(1, -1, 1, 1)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [N, 3, H, W] in [-1, 1] -> normalised latents [N, c, h, w] (what the DiT generates)."""
        return self.normalise(self.encode_raw(frames))

    # --- rendering --------------------------------------------------------------------------------
    def prepare_reference(self, image: torch.Tensor) -> WarpReference:
        """image [1, 3, H, W] in [-1, 1] at the frame size -> WarpReference (once per reference)."""
        return WarpReference(image=image, latent=self.encode(image), features=self.reference_encoder(image))

    def render_raw(self, z: torch.Tensor, z_ref: torch.Tensor, features: torch.Tensor) -> WarpParts:
        """Raw latents z [N, c, h, w] of the frames and z_ref [N or 1, c, h, w] of the reference, and the
        reference's features [N or 1, F, H/f4, W/f4] -> WarpParts (the image itself comes in at `composite`)."""
        n = z.shape[0]
        z_ref, features = (t.expand(n, *t.shape[1:]) for t in (z_ref, features))
        motion = self.motion(torch.cat((z, z_ref), 1))
        joint = self.joint(torch.cat((motion, features), 1))
        flow = self.flow_head(joint).float()
        visibility = torch.sigmoid(self.visibility_head(joint).float())
        warped_features = warp(features, flow)
        fill = torch.tanh(self.fill_out(self.fill_up(self.fill_in(torch.cat((joint, warped_features), 1)))).float())
        return WarpParts(flow=flow, visibility=visibility, fill=fill)

    def render(self, latents: torch.Tensor, reference: WarpReference) -> WarpParts:
        """Normalised latents [N, c, h, w] -> WarpParts for `reference`."""
        return self.render_raw(self.denormalise(latents), self.denormalise(reference.latent), reference.features)

    def reconstruct(self, frames: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, WarpParts, torch.Tensor]:
        """Training: frames and their references [N, 3, H, W] -> (frames made from the frames' latents,
        their parts, the raw latents). Gradients reach every part of the codec."""
        z = self.encode_raw(frames)
        parts = self.render_raw(z, self.encode_raw(reference), self.reference_encoder(reference))
        return composite(parts, reference), parts, z

    def render_parts(self, latents: torch.Tensor, reference: WarpReference,
                     dtype: torch.dtype | None = None) -> WarpParts:
        """`render` for inference: dtype bfloat16 runs the convolutions in bf16 (autocast); flow,
        visibility and fill come out float32."""
        if dtype == torch.bfloat16:
            with torch.autocast(latents.device.type, dtype=torch.bfloat16):
                parts = self.render(latents.float(), reference)
            return WarpParts(parts.flow.float(), parts.visibility.float(), parts.fill.float())
        return self.render(latents.float(), reference)

    def decode(self, latents: torch.Tensor, dtype: torch.dtype | None = None,
               reference: WarpReference | None = None) -> torch.Tensor:
        """Normalised latents [N, c, h, w] -> float frames [N, 3, H, W] in [-1, 1], at the frame size."""
        if reference is None:
            raise ValueError("the warp codec renders from a reference: pass reference=codec.prepare_reference(image)")
        return composite(self.render_parts(latents, reference, dtype), reference.image.float()).clamp(-1, 1)


class WarpRenderStep(nn.Module):
    """`WarpCodec.render` with plain tensors in and out: the unit an exported renderer runs.

    latents [N, c, h, w] (normalised); ref_latent [1, c, h, w] (normalised); features [1, F, H/f4, W/f4]
    ->  flow [N, 2, H/f4, W/f4], visibility [N, 1, H/f4, W/f4], fill [N, 3, H, W]."""

    def __init__(self, codec: WarpCodec):
        super().__init__()
        self.codec = codec

    def forward(self, latents, ref_latent, features):
        parts = self.codec.render(latents, WarpReference(image=None, latent=ref_latent, features=features))
        return parts.flow, parts.visibility, parts.fill
