"""The Knot Forcing DiT: a transformer over per-frame latent tokens.

Read top to bottom: conditioning embeddings, attention, block, model. Shapes use
  B batch, F frames, P tokens per frame, d width, H heads, Dh head dim,
  c latent channels, h = w latent side, p patch.

Every frame carries its own conditioning vector (flow-matching time + audio window + head-motion
intensity) that modulates all of its tokens (adaLN). With `audio_attention`, each block also lets
every image token of a frame attend to that frame's audio window as W tokens (one per mel column),
so the mouth tokens can read the sound directly instead of through a frame-wide modulation; it is
per frame, so it adds nothing across time. Self-attention is over tokens of several frames at
once; keys that come from elsewhere (the reference cache, the history ring, or the reference
copies of a training sequence) arrive as `ExtraKeys`, already rotated spatially but not in time,
with the temporal position to rotate them to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from knotanim.config import KnotAnimConfig
from knotanim.model.attention import BlockMaskAttention
from knotanim.model.rope import Rope3D


@dataclass
class ExtraKeys:
    """Keys/values from outside the current tokens, one entry per layer.

    k, v: [B, H, Ne, Dh] (k spatially rotated, temporally un-rotated); pos: [Ne] frame positions.
    pos None: k is rotated in time already (a caller that runs several passes over the same keys, like
    the stream's ChunkStep, rotates them once instead of once per pass).
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    pos: torch.Tensor | None


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow-matching time t in [0, 1]. t: [...] -> [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().unsqueeze(-1) * 1000.0 * freqs
    return torch.cat((args.cos(), args.sin()), dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: [B, F, P, d]; shift, scale: [B, F, d]."""
    return x * (1 + scale.unsqueeze(2)) + shift.unsqueeze(2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * self.weight


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: bool):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(self, x, rope: Rope3D, q_pos, extra_k=None, extra_v=None, extra_pos=None, mask=None):
        """x: [B, N, d]; q_pos: [N] token time positions; mask: [N, Ne + N] bool (True = attend), float (added to
        the scores: 0 or -inf) or None. extra_pos None: extra_k is rotated in time already.

        Returns (out [B, N, d], k [B, H, N, Dh] spatially rotated only, v [B, H, N, Dh]).
        """
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        keys, values = rope.spatial_temporal(k, q_pos), v
        k = rope.spatial(k)  # what a cache stores: rotated in space, not in time
        if extra_k is not None:
            keys = torch.cat((rope.temporal(extra_k, extra_pos) if extra_pos is not None else extra_k, keys), dim=2)
            values = torch.cat((extra_v, v), dim=2)
        q = rope.spatial_temporal(q, q_pos)
        if isinstance(mask, BlockMaskAttention):  # FlexAttention: only the visible blocks are computed
            out = mask(q, keys.to(q.dtype), values.to(q.dtype))
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(B, N, -1)), k, v


class AudioCrossAttention(nn.Module):
    """Each frame's image tokens attend to that frame's audio tokens (no mixing across frames).

    Narrower than the transformer (`inner` wide, heads of 32): it reads a few dozen audio tokens, so
    it needs little width. The output projection starts at zero, so adding this to a trained model
    changes nothing until it is trained.
    """

    def __init__(self, width: int, inner: int):
        super().__init__()
        self.heads, self.head_dim = inner // 32, 32
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(width, inner)
        self.kv = nn.Linear(inner, 2 * inner)
        self.proj = nn.Linear(inner, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        """x: [B, F, P, d]; audio_tokens: [B, F, W, inner] -> [B, F, P, d] (to add to x)."""
        B, Fr, P, _ = x.shape
        W, H, Dh = audio_tokens.shape[2], self.heads, self.head_dim
        q = self.q(self.norm(x)).view(B * Fr, P, H, Dh).transpose(1, 2)
        k, v = self.kv(audio_tokens).view(B * Fr, W, 2, H, Dh).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(B, Fr, P, H * Dh))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, qk_norm: bool, audio_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads, qk_norm)
        self.audio_attn = AudioCrossAttention(width, audio_dim) if audio_dim else None
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        # adaLN-single: the model computes one 6*d modulation per frame; each block adds its own table.
        self.modulation = nn.Parameter(torch.zeros(6, width))

    def forward(self, x, mod, rope, q_pos, extra_k=None, extra_v=None, extra_pos=None, mask=None, audio_tokens=None):
        """x: [B, F, P, d]; mod: [B, F, 6, d]; audio_tokens: [B, F, W, d] or None (the reference).
        Returns (x, k, v) as Attention does."""
        B, Fr, P, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = (mod + self.modulation).unbind(2)
        h = modulate(self.norm1(x), sh1, sc1).reshape(B, Fr * P, d)
        a, k, v = self.attn(h, rope, q_pos, extra_k, extra_v, extra_pos, mask)
        x = x + g1.unsqueeze(2) * a.view(B, Fr, P, d)
        if self.audio_attn is not None and audio_tokens is not None:
            x = x + self.audio_attn(x, audio_tokens)
        x = x + g2.unsqueeze(2) * self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x, k, v


class KnotDiT(nn.Module):
    """Predicts the flow-matching velocity of each frame's latent.

    Input per frame: noisy latent (c), knot conditioning latent (c) and its mask (1), stacked to
    2c + 1 channels.
    """

    def __init__(self, cfg: KnotAnimConfig):
        super().__init__()
        m, c, p = cfg.model, cfg.autoencoder.latent_channels, cfg.model.patch
        d = m.width
        self.cfg, self.patch, self.latent_channels = cfg, p, c
        self.grid = cfg.latent_size // p
        audio_in = cfg.audio.n_mels * cfg.audio_window

        self.x_embed = nn.Linear((2 * c + 1) * p * p, d)
        self.ref_embed = nn.Linear(c * p * p, d)
        self.pos_embed = nn.Parameter(torch.randn(self.grid * self.grid, d) * 0.02)
        self.ref_cond = nn.Parameter(torch.zeros(d))
        self.t_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.audio_embed = nn.Sequential(
            nn.LayerNorm(audio_in), nn.Linear(audio_in, m.audio_hidden), nn.GELU(), nn.Linear(m.audio_hidden, d)
        )
        self.motion_embed = nn.Sequential(nn.Linear(1, d), nn.SiLU(), nn.Linear(d, d))
        a = m.audio_attention_dim if m.audio_attention else 0
        if a:  # one token per mel column of the frame's window, with its place in it
            self.audio_tokens = nn.Sequential(nn.LayerNorm(cfg.audio.n_mels), nn.Linear(cfg.audio.n_mels, a),
                                              nn.GELU(), nn.Linear(a, a))
            self.audio_token_pos = nn.Parameter(torch.randn(cfg.audio_window, a) * 0.02)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(Block(d, m.heads, m.mlp_ratio, m.qk_norm, a) for _ in range(m.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, c * p * p)
        self.rope = Rope3D(m.rope_dims, m.rope_theta, self.grid)
        self.grad_checkpointing = False  # set by training; trades compute for activation memory
        for layer in (self.ada[1], self.final_ada[1], self.out):  # start as identity blocks, zero output
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def randomize_zero_init(self, std: float = 0.2, seed: int = 0) -> "KnotDiT":
        """Give the zero-initialised layers (modulation, output head) random values.

        A freshly initialised DiT ignores its conditioning and outputs zeros by design (adaLN-Zero);
        tests and benchmarks that need a random model whose output depends on every input call this.
        """
        g = torch.Generator().manual_seed(seed)
        for p in self.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        return self

    # --- tokens ------------------------------------------------------------------------------
    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        """[B, F, ch, h, w] -> [B, F, P, ch*p*p]."""
        B, Fr, ch, h, w = z.shape
        p, g = self.patch, self.grid
        z = z.reshape(B, Fr, ch, g, p, g, p).permute(0, 1, 3, 5, 2, 4, 6)
        return z.reshape(B, Fr, g * g, ch * p * p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, F, P, c*p*p] -> [B, F, c, h, w]."""
        B, Fr = tokens.shape[:2]
        p, g, c = self.patch, self.grid, self.latent_channels
        z = tokens.reshape(B, Fr, g, g, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return z.reshape(B, Fr, c, g * p, g * p)

    def frame_conditions(self, t: torch.Tensor, audio: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """t: [B, F] in [0, 1]; audio: [B, F, n_mels, W]; motion: [B] in [0, 1] -> [B, F, d]."""
        dtype = self.x_embed.weight.dtype
        c = self.t_embed(timestep_embedding(t, 256).to(dtype))
        c = c + self.audio_embed(audio.flatten(2).to(dtype))
        return c + self.motion_embed(motion.to(dtype).view(-1, 1, 1))

    def audio_token_sequence(self, audio: torch.Tensor) -> torch.Tensor | None:
        """audio: [B, F, n_mels, W] -> [B, F, W, audio_attention_dim] tokens for the blocks (or None)."""
        if not self.cfg.model.audio_attention:
            return None
        columns = audio.transpose(2, 3).to(self.x_embed.weight.dtype)  # [B, F, W, n_mels]
        return self.audio_tokens(columns) + self.audio_token_pos

    # --- the two entry points -------------------------------------------------------------------
    def reference_kv(self, ref_latent: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The reference cache: per-layer K/V of the reference frame's tokens.

        ref_latent: [B, c, h, w]. Reference tokens attend only to themselves, so this is computed
        once per reference and reused by every chunk. Returns (ks, vs), each a list of [B, H, P, Dh].
        """
        B = ref_latent.shape[0]
        x = self.ref_embed(self.patchify(ref_latent.unsqueeze(1).to(self.ref_embed.weight.dtype))) + self.pos_embed
        mod = self.ada(self.ref_cond.expand(B, 1, -1)).view(B, 1, 6, -1)
        q_pos = torch.zeros(x.shape[2], device=x.device)
        ks, vs = [], []
        for block in self.blocks:
            x, k, v = block(x, mod, self.rope, q_pos)
            ks.append(k)
            vs.append(v)
        return ks, vs

    def forward(self, x_in, t, audio, motion, positions, extra: ExtraKeys | None = None, mask=None):
        """Velocity for every input frame.

        x_in: [B, F, 2c+1, h, w]; t: [B, F]; audio: [B, F, n_mels, W]; motion: [B];
        positions: [F] frame time positions; mask: [F*P, Ne + F*P] bool or None (all visible).
        Returns (velocity [B, F, c, h, w], ks, vs) where ks/vs are this call's per-layer K/V.
        """
        B, Fr = x_in.shape[:2]
        x = self.x_embed(self.patchify(x_in.to(self.x_embed.weight.dtype))) + self.pos_embed
        cond = self.frame_conditions(t, audio, motion)
        mod = self.ada(cond).view(B, Fr, 6, -1)
        audio_tokens = self.audio_token_sequence(audio)
        q_pos = positions.to(x.device).float().repeat_interleave(x.shape[2])
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            ek, ev = (extra.k[i], extra.v[i]) if extra is not None else (None, None)
            args = (x, mod, self.rope, q_pos, ek, ev, extra.pos if extra is not None else None, mask, audio_tokens)
            if self.grad_checkpointing and self.training:
                x, k, v = torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
            else:
                x, k, v = block(*args)
            ks.append(k)
            vs.append(v)
        shift, scale = self.final_ada(cond).chunk(2, dim=-1)
        out = self.out(modulate(self.final_norm(x), shift, scale))
        return self.unpatchify(out), ks, vs
