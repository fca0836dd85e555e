"""Full-sequence (training) mode: every chunk of a clip in one forward pass with a block mask.

The sequence holds the clean committed frames (playing the history, as the stream's cache pass
writes it) followed by each chunk's noisy frames; `SequenceLayout.frame_mask` gives each chunk
exactly what the stream shows it: its reference copy (at that chunk's running-ahead index), the
last L clean frames before it, and itself. So this computes the same function as the stream's
`ChunkStep`, chunk by chunk, which `tests/test_equivalence.py` checks.
"""
from __future__ import annotations

import torch

from knotanim.model.dit import ExtraKeys, KnotDiT
from knotanim.model.layout import SequenceLayout, expand_frame_mask


def knot_conditioning(knots: torch.Tensor | None, n_chunks: int, span: int, shape, device=None) -> torch.Tensor:
    """Conditioning channels [B, n_chunks, F, c + 1, h, w] for each chunk's frames.

    knots: [B, n_chunks, c, h, w] latents placed at position 0 of each chunk, or None (no knot);
    chunk 0 never has one (first chunk of a stream). The last channel is the mask.
    """
    B, c, h, w = shape
    cond = torch.zeros(B, n_chunks, span, c + 1, h, w, device=knots.device if knots is not None else device)
    if knots is not None:
        cond[:, 1:, 0, :c] = knots[:, 1:]
        cond[:, 1:, 0, c] = 1.0
    return cond


def teacher_forced_forward(model: KnotDiT, layout: SequenceLayout, ref_latent: torch.Tensor, clean: torch.Tensor,
                           noisy: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, audio: torch.Tensor,
                           motion: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """Velocity predictions for every chunk's noisy frames.

    ref_latent [B, c, h, w]; clean [B, n_clean, c, h, w] (committed frames 0..n_clean-1);
    noisy [B, n_chunks, F, c, h, w]; cond [B, n_chunks, F, c+1, h, w] (see knot_conditioning);
    t [B, n_chunks] flow time per chunk; audio [B, layout.n_frames, n_mels, W]; motion [B].
    attention_mask: a prebuilt token mask (else built from the layout).
    Returns [B, n_chunks, F, c, h, w].
    """
    B, n, Fr = noisy.shape[:3]
    P = model.grid**2
    ks, vs = model.reference_kv(ref_latent)
    copies = layout.ref_copies
    extra = ExtraKeys(k=[k.repeat(1, 1, len(copies), 1) for k in ks], v=[v.repeat(1, 1, len(copies), 1) for v in vs],
                      pos=torch.tensor(copies, dtype=torch.float32, device=noisy.device).repeat_interleave(P))

    clean_in = torch.cat((clean, torch.zeros_like(clean), torch.zeros_like(clean[:, :, :1])), 2)
    noisy_in = torch.cat((noisy, cond), 3).flatten(1, 2)
    x_in = torch.cat((clean_in, noisy_in), 1)
    t_all = torch.cat((torch.zeros(B, layout.n_clean, device=t.device), t.repeat_interleave(Fr, dim=1)), 1)
    frame_index = torch.cat((torch.arange(layout.n_clean),
                             (torch.arange(n).unsqueeze(1) * layout.chunk + torch.arange(Fr)).flatten()))
    audio_all = audio[:, frame_index.to(audio.device)]
    if attention_mask is None:
        attention_mask = expand_frame_mask(layout.frame_mask(), P).to(noisy.device)
    v, _, _ = model(x_in, t_all, audio_all, motion, layout.query_positions().to(noisy.device), extra, attention_mask)
    return v[:, layout.n_clean :].reshape(B, n, Fr, *v.shape[2:]).float()
