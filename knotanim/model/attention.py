"""Block-sparse attention for full-sequence training through FlexAttention.

A training sequence's mask is block-structured at frame granularity (SequenceLayout.frame_mask):
most query frames see only a few key frames. Dense SDPA with a boolean mask computes (and, on
the math path, materialises) every pair; FlexAttention skips the masked blocks. Same function:
`tests/test_attention.py` checks it against SDPA.
"""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=2)
def _flex(compiled: bool):
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if compiled else flex_attention


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


class BlockMaskAttention:
    """Callable attention for one frame mask: (q, k, v) -> out, all [B, H, N, Dh]."""

    def __init__(self, frame_mask: torch.Tensor, tokens_per_frame: int, device, compiled: bool):
        from torch.nn.attention.flex_attention import create_block_mask

        fm = frame_mask.to(device)
        p = tokens_per_frame

        def mask_mod(b, h, q_idx, kv_idx):
            return fm[q_idx // p, kv_idx // p]

        n_q, n_k = fm.shape[0] * p, fm.shape[1] * p
        self.block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=n_q, KV_LEN=n_k, device=device)
        self.compiled = compiled

    def __call__(self, q, k, v):
        return _flex(self.compiled)(q, k, v, block_mask=self.block_mask)
