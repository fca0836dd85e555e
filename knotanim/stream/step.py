"""One streaming chunk as a pure function of explicit tensors: the unit every backend runs.

Everything the stream carries between chunks goes in and out as tensors (reference K/V, the
history ring, the knot, positions, audio features, noise), so the same step can be run eagerly,
compiled, or exported to ONNX/TensorRT with static shapes.
"""
from __future__ import annotations

import torch
from torch import nn

from knotanim.model.dit import ExtraKeys, KnotDiT
from knotanim.stream.sampler import sampling_times


class ChunkStep(nn.Module):
    """Denoise one chunk, fuse the knot, and compute the committed frames' K/V (the cache pass).

    Shapes (Lyr layers, B batch, H heads, P tokens per frame, L window, F = C + k frames):
      ref_k, ref_v      [Lyr, B, H, P, Dh]     reference cache
      hist_k, hist_v    [Lyr, B, H, L*P, Dh]   history ring (slot order is irrelevant)
      hist_pos          [L] float              slot frame positions relative to the chunk start
      hist_valid        [L] bool               slots that hold a committed frame
      knot              [B, c, h, w]           the previous chunk's last frame (clean latent)
      knot_mask         [B] float              1 where a knot conditions position 0, else 0
      ref_pos           [] float               reference position relative to the chunk start
      audio             [B, F, n_mels, W]      per-frame audio windows
      noise             [B, F, c, h, w]        initial noise
      motion            [B] float              head-motion intensity
    Returns committed [B, C, c, h, w], next_knot [B, c, h, w], new_k, new_v [Lyr, B, H, C*P, Dh].
    """

    def __init__(self, model: KnotDiT, chunk: int, steps: int, shift: float):
        super().__init__()
        self.model, self.chunk = model, chunk
        self.times = sampling_times(steps, shift)

    def forward(self, ref_k, ref_v, hist_k, hist_v, hist_pos, hist_valid, knot, knot_mask, ref_pos, audio, noise, motion):
        B, Fr = noise.shape[:2]
        C, P = self.chunk, self.model.grid**2
        device = noise.device
        positions = torch.arange(Fr, device=device, dtype=torch.float32)
        extra_pos = torch.cat((ref_pos.reshape(1).float().expand(P), hist_pos.float().repeat_interleave(P)))
        key_valid = torch.cat((torch.ones(P, dtype=torch.bool, device=device), hist_valid.repeat_interleave(P),
                               torch.ones(Fr * P, dtype=torch.bool, device=device)))
        # The key mask as the additive float mask attention makes of a boolean one (0 where a key is
        # visible, -inf elsewhere), made once here rather than in each of the 3 x depth attention calls;
        # the same for every query row (a broadcast view). Same scores, bit for bit.
        bias = torch.zeros(key_valid.shape, dtype=self.model.x_embed.weight.dtype, device=device)
        mask = bias.masked_fill(~key_valid, float("-inf")).unsqueeze(0).expand(Fr * P, -1)
        # Every pass reads the same cached keys at the same positions: rotate them in time once, not once per pass.
        rope = self.model.rope
        extra = ExtraKeys(k=[rope.temporal(torch.cat((rk, hk), 2), extra_pos) for rk, hk in zip(ref_k, hist_k)],
                          v=[torch.cat((rv, hv), 2) for rv, hv in zip(ref_v, hist_v)], pos=None)

        # Image-to-video conditioning: the knot latent and a mask channel at position 0.
        first = (positions == 0).to(noise.dtype)  # 1 at position 0 (no item assignment: a host copy in a CUDA graph)
        mask_ch = first.view(1, Fr, 1, 1, 1) * knot_mask.view(B, 1, 1, 1, 1)
        cond = mask_ch * knot.unsqueeze(1)
        mask_ch = mask_ch.expand(B, Fr, 1, *noise.shape[-2:])

        x = noise
        for t_now, t_next in zip(self.times[:-1], self.times[1:]):
            t = torch.full((B, Fr), t_now, device=device)
            v, _, _ = self.model(torch.cat((x, cond, mask_ch), 2), t, audio, motion, positions, extra, mask)
            x = x + (t_next - t_now) * v.float()

        # Fuse the overlapping frame: (knot + new prediction) / 2 where a knot exists.
        w = 0.5 * knot_mask.view(B, 1, 1, 1)
        fused_first = (1 - w) * x[:, 0] + w * knot
        committed = torch.cat((fused_first.unsqueeze(1), x[:, 1:C]), 1)
        next_knot = x[:, C] if Fr > C else torch.zeros_like(knot)

        # Cache pass: the clean committed frames at t = 0 write their K/V.
        zeros = torch.zeros_like(committed)
        t0 = torch.zeros(B, C, device=device)
        _, ks, vs = self.model(torch.cat((committed, zeros, zeros[:, :, :1]), 2), t0, audio[:, :C], motion,
                               positions[:C], extra, mask[: C * P, : extra_pos.numel() + C * P])
        return committed, next_knot, torch.stack(ks), torch.stack(vs)
