"""Rope3D's rotation: the split/cat partner equals the index formulation it replaced, bit for bit,
forward and backward, and leaves no index op in the autograd graph (its backward, an accumulating
index_put, was the slowest CUDA kernel of an eager training step)."""
from __future__ import annotations

import pytest
import torch

from knotanim.model.rope import Rope3D


def _index_rotate(rope: Rope3D, dims, x: torch.Tensor, pair_angles: torch.Tensor) -> torch.Tensor:
    """The former Rope3D._rotate: gathers `x[..., partner]` and `pair_angles[..., pair]`."""
    partner, pair = [], []
    offset = pair_base = 0
    for seg in dims:
        half = seg // 2
        for i in range(seg):
            first = i < half
            partner.append(offset + i + half if first else offset + i - half)
            pair.append(pair_base + (i if first else i - half))
        offset, pair_base = offset + seg, pair_base + half
    partner, pair = torch.tensor(partner), torch.tensor(pair)
    if pair_angles.dim() == 3:
        pair_angles = pair_angles.unsqueeze(1)
    angles = pair_angles[..., pair]
    xf = x.float()
    return (xf * angles.cos() + xf[..., partner] * (angles.sin() * rope.sign)).to(x.dtype)


def _graph_ops(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


@pytest.mark.parametrize("dims", [(16, 24, 24), (8, 8, 8), (0, 16, 16), (4, 2, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batched_positions", [False, True])
def test_rotation_matches_index_formulation(dims, dtype, batched_positions):
    g = torch.Generator().manual_seed(sum(dims))
    grid, frames, B, H, Dh = 3, 4, 2, 3, sum(dims)
    rope = Rope3D(dims, 10000.0, grid)
    N = frames * grid * grid
    x = torch.randn(B, H, N, Dh, generator=g).to(dtype)
    pos = torch.arange(frames, dtype=torch.float32).repeat_interleave(grid * grid) - 2.5
    if batched_positions:
        pos = torch.stack((pos, pos + 7.0))
    upstream = torch.randn(B, H, N, Dh, generator=g).to(dtype)
    cases = {
        "spatial": (rope.spatial, rope._spatial_for(N)),
        "temporal": (lambda t: rope.temporal(t, pos), rope._temporal_angles(pos)),
        "spatial_temporal": (lambda t: rope.spatial_temporal(t, pos), rope._spatial_for(N) + rope._temporal_angles(pos)),
    }
    for name, (fn, pair_angles) in cases.items():
        a = x.clone().requires_grad_(True)
        b = x.clone().requires_grad_(True)
        out = fn(a)
        ref = _index_rotate(rope, dims, b, pair_angles)
        assert out.dtype == dtype and torch.equal(out, ref), name
        out.backward(upstream)
        ref.backward(upstream)
        assert torch.equal(a.grad, b.grad), name
        assert not any("Index" in op for op in _graph_ops(out)), (name, _graph_ops(out))


def test_no_index_buffers_in_state_dict():
    """The rotation tables are non-persistent: checkpoints never held them."""
    assert Rope3D((16, 24, 24), 10000.0, 4).state_dict() == {}
