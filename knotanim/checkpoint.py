"""Checkpoint folders: config.json + safetensors shards (each <= 16 MiB) with a SHA-256 per shard.

Loading never runs code (safetensors only), and every shard is verified against its checksum
before it is read, so a missing, truncated or altered file is named in a clear error.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from knotanim.config import KnotAnimConfig
from knotanim.errors import CheckpointError

FORMAT = "knotanim-checkpoint-1"
MAX_SHARD_BYTES = 16 * 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(folder: str | Path, config: KnotAnimConfig, tensors: dict[str, torch.Tensor],
                    dtype: torch.dtype | None = None, max_shard_bytes: int = MAX_SHARD_BYTES, extra: dict | None = None) -> Path:
    """Write `tensors` as shards of at most max_shard_bytes (a single larger tensor gets a shard of its own)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create checkpoint folder {folder}: {e.strerror or e}") from None
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes - 64 * 1024:  # leave room for the header
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    entries = []
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": FORMAT})
        entries.append({"file": fname, "sha256": sha256_file(folder / fname), "bytes": (folder / fname).stat().st_size,
                        "tensors": sorted(shard)})
    for stale in folder.glob("model-*.safetensors"):
        if stale.name not in {e["file"] for e in entries}:
            stale.unlink()
    meta = {"format": FORMAT, "config": config.to_dict(), "shards": entries, **(extra or {})}
    (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def read_manifest(folder: str | Path) -> tuple[KnotAnimConfig, dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    path = folder / "config.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder} is not a knotanim model: config.json is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} manifest")
    return KnotAnimConfig.from_dict(meta.get("config", {})), meta


def load_checkpoint(folder: str | Path, verify: bool = True) -> tuple[KnotAnimConfig, dict[str, torch.Tensor], dict]:
    """Returns (config, tensors, manifest). Raises CheckpointError naming the bad shard."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config, meta = read_manifest(folder)
    tensors: dict[str, torch.Tensor] = {}
    for entry in meta.get("shards", []):
        path = folder / str(entry.get("file", ""))
        if not path.is_file():
            raise CheckpointError(f"model shard missing: {path}")
        if verify:
            if path.stat().st_size != entry.get("bytes"):
                raise CheckpointError(f"model shard {path.name} has the wrong size (truncated or altered); re-install the model")
            if sha256_file(path) != entry.get("sha256"):
                raise CheckpointError(f"model shard {path.name} fails its checksum (altered or corrupted); re-install the model")
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read model shard {path.name}: {e}") from None
    return config, tensors, meta
