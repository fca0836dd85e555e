"""Pieces every training stage shares: distributed setup, EMA, logging, training-state files."""
from __future__ import annotations

import csv
import gc
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh | None = None  # FSDP's (shard_module): cleanup_distributed releases the group it holds

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # Imported before the group exists: its collectives take `group=group.WORLD` as a default argument,
        # evaluated at import. Imported later (torch._dynamo imports it, and DDP and FSDP import
        # torch._dynamo), those defaults would hold the world group for the life of the process, out of
        # destroy_process_group's reach (see cleanup_distributed).
        from torch.distributed.nn import functional  # noqa: F401

        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, dev)


def shard_module(module: nn.Module, d: Dist, forward_methods: tuple[str, ...] = ()) -> nn.Module:
    """FSDP2 (`fully_shard`): shard `module`'s parameters over the ranks, each transformer block
    (`module.blocks`, when it has them) as its own unit, then the root with the rest.

    In place: parameters become DTensor shards (dim 0), names stay as they were, so state files are
    interchangeable with DDP and one-process runs. Rank 0's weights are broadcast first, as DDP does.
    forward_methods: methods other than forward that use the root's parameters (e.g. the DiT's
    reference_kv); FSDP gathers the root's shards only around the calls it knows of. Every rank
    must then run every forward of the module (the shards are gathered by collectives). Compute
    precision stays with the caller's autocast (bf16 on CUDA); shards and gradients stay float32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)
    mesh = d.mesh = init_device_mesh(d.device.type, (d.world,))
    for block in getattr(module, "blocks", ()):
        fully_shard(block, mesh=mesh)
    fully_shard(module, mesh=mesh)
    for name in forward_methods:
        register_fsdp_forward_method(module, name)
    return module


def _is_sharded(t: torch.Tensor) -> bool:
    """A DTensor (FSDP's shards). Imported here, as torch.distributed.tensor is slow to import."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor (an FSDP shard) is all-gathered, which is a collective, so every
    rank must call this for the same tensors in the same order; other tensors come back as they are."""
    return t.full_tensor() if _is_sharded(t) else t


def _placed_like(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A full tensor read from a state file, held the way `target` is: sharded like it when it is a
    DTensor (each rank slices its own shard from the same file; no communication), else on its device."""
    if _is_sharded(target):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(value.to(target.to_local().device), target.device_mesh, target.placements,
                                 src_data_rank=None)
    return value.to(target.device)


def any_rank(flag: bool, d: Dist) -> bool:
    """`flag` or'ed over the ranks, the same answer on every rank: a collective, so every rank calls it
    at the same point. A decision each rank takes from its own clock (the max_minutes budget) must go
    through it: ranks that stop at different steps leave the others blocked in the next step's collective."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup_distributed(d: Dist) -> None:
    """Take the process group down while the interpreter is fully alive, so that no backend thread (gloo's
    workers and TCP loop, the TCPStore server) is still running when the process exits. The caller drops
    its DDP wrapper first: that holds the group too.

    destroy_process_group only unregisters the group; gloo has no shutdown, its threads stop when the last
    reference to the group goes. Torch itself kept such references, so in every multi-rank run the threads
    ran on into interpreter shutdown. There a gloo worker that releases a tensor made in Python takes the
    GIL and the process aborts (SIGABRT, "terminate called without an active exception"): shown with an
    all-reduce still in flight at exit; the flaky two-rank gloo tests died with that message after
    training had finished, though which tensor it was there is not known. The references are never made
    (setup_distributed) or dropped here: FSDP's device mesh holds the group in its registry and DTensor's
    caches keep the mesh for the life of the process; garbage cycles through the DDP wrapper are
    collected. Under FSDP the returned module's shards still hold the group until the caller drops them
    (and they are collected: `knotanim train` does that). The barrier lets every rank finish its
    collectives (rank 0 may still be writing the final checkpoint) before any rank's group goes; it does
    not prevent the abort.
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if d.mesh is not None:
        # Private, but the only way in: the mesh's references to its groups (torch 2.11-2.14). Guarded: a
        # torch without it keeps its threads until exit, the behaviour before this fix, rather than failing.
        registry = getattr(d.mesh, "_pg_registry", None)
        if hasattr(registry, "clear"):
            registry.clear()
        d.mesh = None
    gc.collect()


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of base over `total` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers.

    Under FSDP the module's state_dict holds DTensor shards, so the shadow copies are DTensor shards
    too, placed like the parameters they follow: each rank averages only its own shard (pointwise,
    no communication, 1/world of the memory) and the full average is gathered only when it is saved
    (gather_state). copy_to is for unsharded modules (the export under FSDP loads gathered tensors
    into an unsharded copy instead).
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # short warm-up of the average
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: torch.nn.Module) -> None:
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in self.shadow.items()})


class TrainLog:
    """CSV of scalars per logged step, plus a loss-curve PNG on request.

    tensorboard=True: the same scalars (elapsed_s and every logged value) also go to
    FOLDER/tensorboard/ through torch.utils.tensorboard; without the tensorboard package that is one
    note through `progress` and the CSV alone.
    """

    def __init__(self, folder: Path, tensorboard: bool = False, progress=print, fresh: bool = False):
        """fresh: the run starts at step 0, so an earlier run's log.csv is moved to log.previous.csv
        instead of being continued."""
        self.folder = folder
        self.path = folder / "log.csv"
        self.start = time.time()
        self.writer = _tensorboard_writer(folder / "tensorboard", progress) if tensorboard else None
        self._header_checked = False
        if fresh and self.path.exists():
            self.path.replace(folder / "log.previous.csv")

    def write(self, step: int, **values: float) -> None:
        if not self._header_checked and self.path.exists():  # a resumed run logging other columns: start anew
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), [])
            if header != ["step", "elapsed_s", *values]:
                self.path.replace(self.folder / "log.previous.csv")
        self._header_checked = True
        new = not self.path.exists()
        elapsed = time.time() - self.start
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "elapsed_s", *values])
            w.writerow([step, f"{elapsed:.1f}", *(f"{v:.6g}" for v in values.values())])
        if self.writer is not None:
            for key, value in {"elapsed_s": elapsed, **values}.items():
                self.writer.add_scalar(key, float(value), step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def plot(self, name: str = "loss.png") -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        if not self.path.exists():
            return
        rows = list(csv.DictReader(open(self.path)))
        if not rows:
            return
        steps = [int(r["step"]) for r in rows]
        listen = "listen_gap" in rows[0]
        fig, axes = plt.subplots(1, 2 if listen else 1, figsize=(11 if listen else 7, 4), squeeze=False)
        ax = axes[0, 0]
        for key in rows[0]:
            if key.startswith("loss"):
                ax.plot(steps, [float(r[key]) for r in rows], label=key)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
        if listen:  # how much another clip's audio worsens the mouth (0: not listening)
            ax = axes[0, 1]
            ax.plot(steps, [float(r["listen_gap"]) for r in rows], color="tab:green")
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("step")
            ax.set_title("listen_gap: mouth error with another clip's audio, relative", fontsize=9)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.folder / name, dpi=90)
        plt.close(fig)


def _tensorboard_writer(folder: Path, progress):
    """A SummaryWriter on `folder`, or None (with one note) when the tensorboard package is missing."""
    import importlib

    try:
        tb = importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        progress("note: tensorboard is not installed (pip install tensorboard); scalars go to log.csv only")
        return None
    return tb.SummaryWriter(log_dir=str(folder))


def gather_state(modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer, ema: EMA | None,
                 keep: bool = True) -> dict[str, torch.Tensor]:
    """Training state (weights, EMA, optimiser moments) as full float32 CPU tensors, keyed as in the
    state file. Sharded (FSDP) tensors are gathered one at a time, a collective: then every rank calls
    this, and only ranks with keep=True hold the result (the others get {})."""
    tensors = {}

    def put(key: str, value: torch.Tensor) -> None:
        value = full_tensor(value.detach())
        if keep:
            tensors[key] = value.float().cpu().contiguous()

    for name, m in modules.items():
        for k, v in m.state_dict().items():
            put(f"{name}.{k}", v)
    if ema is not None:
        for k, v in ema.shadow.items():
            put(f"ema.{k}", v)
    names = {id(p): n for n, p in modules["model"].named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.numel() > 1:
                    put(f"opt.{names[id(p)]}.{key}", value)
    return tensors


def save_state(folder: Path, step: int, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               ema: EMA | None, extra: dict, write: bool = True) -> dict[str, torch.Tensor]:
    """Training state (weights, EMA, optimiser moments) as safetensors + state.json; never pickle.

    Unsharded tensors are saved as they are; FSDP shards are gathered into full tensors first, so
    under FSDP every rank calls this and only the one with write=True (rank 0) writes. The file is
    the same whichever way the run was parallel. Returns the tensors written ({} where not writing).
    """
    from safetensors.torch import save_file

    tensors = gather_state(modules, optimizer, ema, keep=write)
    if not write:
        return tensors
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(folder / "state.safetensors")
    (folder / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
    return tensors


def load_state(folder: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               ema: EMA | None) -> int:
    """Restore what save_state wrote; returns the step to continue from. Under FSDP every rank reads
    the same files (OUT must be shared by the ranks) and keeps its own shard of each tensor."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "state.safetensors"))
    step = int(json.loads((folder / "state.json").read_text())["step"])
    for name, m in modules.items():
        prefix = f"{name}."
        targets = m.state_dict()
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        m.load_state_dict({k: _placed_like(v, targets[k]) if k in targets else v for k, v in state.items()})
    if ema is not None:
        for k in ema.shadow:
            if f"ema.{k}" in tensors:
                ema.shadow[k].copy_(_placed_like(tensors[f"ema.{k}"], ema.shadow[k]))
    # The optimiser state goes in through torch's own load_state_dict, which places each value where
    # this optimiser needs it: the step count stays on the CPU for the default AdamW and moves to the
    # parameter's device for the fused one (the GPU trainer's), which refuses a CPU step.
    index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    saved = optimizer.state_dict()
    saved["state"] = {}
    for name, p in modules["model"].named_parameters():
        st = {key.rsplit(".", 1)[1]: _placed_like(v, p) for key, v in tensors.items()
              if key.startswith(f"opt.{name}.") and key.count(".") == name.count(".") + 2}
        if st and id(p) in index:
            st["step"] = torch.tensor(float(step))
            saved["state"][index[id(p)]] = st
    optimizer.load_state_dict(saved)
    return step
