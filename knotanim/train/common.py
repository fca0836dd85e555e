"""Pieces every training stage shares: distributed setup, EMA, logging, training-state files."""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

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
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of base over `total` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

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
    """CSV of scalars per logged step, plus a loss-curve PNG on request."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "log.csv"
        self.start = time.time()

    def write(self, step: int, **values: float) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "elapsed_s", *values])
            w.writerow([step, f"{time.time() - self.start:.1f}", *(f"{v:.6g}" for v in values.values())])

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


def save_state(folder: Path, step: int, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               ema: EMA | None, extra: dict) -> None:
    """Training state (weights, EMA, optimiser moments) as safetensors + state.json; never pickle."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, m in modules.items():
        tensors.update({f"{name}.{k}": v.detach().float().cpu().contiguous() for k, v in m.state_dict().items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v.cpu().contiguous() for k, v in ema.shadow.items()})
    names = {id(p): n for n, p in modules["model"].named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.numel() > 1:
                    tensors[f"opt.{names[id(p)]}.{key}"] = value.detach().float().cpu().contiguous()
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(folder / "state.safetensors")
    (folder / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))


def load_state(folder: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               ema: EMA | None) -> int:
    """Restore what save_state wrote; returns the step to continue from."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "state.safetensors"))
    step = int(json.loads((folder / "state.json").read_text())["step"])
    for name, m in modules.items():
        prefix = f"{name}."
        m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if ema is not None:
        for k in ema.shadow:
            if f"ema.{k}" in tensors:
                ema.shadow[k].copy_(tensors[f"ema.{k}"])
    params = dict(modules["model"].named_parameters())
    for name, p in params.items():
        st = {key.rsplit(".", 1)[1]: v.to(p.device) for key, v in tensors.items()
              if key.startswith(f"opt.{name}.") and key.count(".") == name.count(".") + 2}
        if st:
            st["step"] = torch.tensor(float(step))
            optimizer.state[p] = st
    return step
