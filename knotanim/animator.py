"""KnotAnimator: owns a config, the DiT and the frame autoencoder; loads, saves and makes streams."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from knotanim.checkpoint import load_checkpoint, save_checkpoint
from knotanim.config import KnotAnimConfig
from knotanim.errors import BackendUnavailable, CheckpointError, InputError
from knotanim.frontends.image import to_rgb8
from knotanim.model.autoencoder import frames_to_tensor
from knotanim.model.codec import build_autoencoder
from knotanim.model.dit import KnotDiT
from knotanim.stream.caches import ReferenceCache
from knotanim.stream.step import ChunkStep
from knotanim.stream.stream import KnotStream


def default_model_path() -> Path:
    """The model embedded in the package (assets/default, installed as knotanim.assets)."""
    from importlib.resources import files

    return Path(str(files("knotanim.assets"))) / "default"


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("CUDA was requested but no CUDA GPU is available (use --device cpu)")
    return dev


def prepare_reference(image: np.ndarray, size: int) -> np.ndarray:
    """Validate a face crop and resize it to size x size: uint8 [H, W, 3] RGB.

    Gray, gray+alpha, RGBA (over white), 16-bit and float inputs are converted by the frontend's
    documented rules (`knotanim.frontends.image.to_rgb8`).
    """
    a = to_rgb8(image)
    if min(a.shape[:2]) < 32:
        raise InputError(f"reference image is too small to animate ({a.shape[1]}x{a.shape[0]}; need at least 32x32)")
    if a.shape[0] != size or a.shape[1] != size:
        interp = cv2.INTER_AREA if min(a.shape[:2]) > size else cv2.INTER_CUBIC
        a = cv2.resize(a, (size, size), interpolation=interp)
    return a


class KnotAnimator:
    def __init__(self, config: KnotAnimConfig, model: KnotDiT, autoencoder: torch.nn.Module,
                 device: torch.device, dtype: torch.dtype):
        self.config, self.model, self.autoencoder = config, model.eval(), autoencoder.eval()
        self.device, self.dtype = device, dtype
        self._steps: dict[int, ChunkStep] = {}

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: KnotAnimConfig, device="cpu", dtype=torch.float32, seed: int = 0) -> "KnotAnimator":
        """Random weights (deterministic for `seed`): tests, smoke runs, the start of training."""
        config.validate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, ae = KnotDiT(config), build_autoencoder(config.autoencoder)
        dev = resolve_device(device)
        return cls(config, model.to(dev, dtype), ae.to(dev), dev, dtype)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device="auto", dtype: torch.dtype | None = None) -> "KnotAnimator":
        """Load a checkpoint folder (None: the embedded default). dtype default: bf16 on CUDA, fp32 on CPU."""
        folder = Path(path) if path is not None else default_model_path()
        config, tensors, _ = load_checkpoint(folder)
        dev = resolve_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        model, ae = KnotDiT(config), build_autoencoder(config.autoencoder)
        for prefix, module in (("dit.", model), ("autoencoder.", ae)):
            state = {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
            missing, unexpected = module.load_state_dict(state, strict=False)
            missing = [m for m in missing if not m.startswith("rope.")]
            if missing or unexpected:
                raise CheckpointError(f"{folder}: weights do not match the config "
                                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return cls(config, model.to(dev, dtype), ae.to(dev), dev, dtype)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"dit.{k}": v for k, v in self.model.state_dict().items()}
        out.update({f"autoencoder.{k}": v for k, v in self.autoencoder.state_dict().items()})
        return out

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None, extra: dict | None = None) -> Path:
        return save_checkpoint(folder, self.config, self.state_tensors(), dtype=dtype, extra=extra)

    # --- pieces the stream uses -------------------------------------------------------------------
    def chunk_step(self, steps: int | None = None) -> ChunkStep:
        steps = steps or self.config.sampler.steps
        if steps not in self._steps:
            self._steps[steps] = ChunkStep(self.model, self.config.stream.chunk, steps, self.config.sampler.shift)
        return self._steps[steps]

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] at frame_size -> latents [N, c, h, w] (float32)."""
        x = frames_to_tensor(frames, self.device)
        return self.autoencoder.encode(x).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, reference: ReferenceCache | None = None) -> torch.Tensor:
        """[N, c, h, w] -> float frames [N, 3, H, W] in [-1, 1]; the decoder computes in bf16 when the
        animator does (ConvAutoencoder.decode). A warp codec renders from `reference` (its `render` part)."""
        render = reference.render if reference is not None else None
        return self.autoencoder.decode(latents.float(), dtype=self.dtype, reference=render)

    @torch.no_grad()
    def render_parts(self, latents: torch.Tensor, reference: ReferenceCache):
        """A warp codec's WarpParts (flow, visibility, fill) for latents [N, c, h, w] and a reference cache."""
        return self.autoencoder.render_parts(latents.float(), reference.render, dtype=self.dtype)

    @property
    def renders_from_reference(self) -> bool:
        """Whether frames are made by moving the reference's pixels (the warp codec)."""
        return self.config.autoencoder.kind == "warp"

    @torch.no_grad()
    def reference_cache(self, reference: np.ndarray) -> ReferenceCache:
        """The reference's K/V for the DiT and, for a warp codec, what rendering needs of it."""
        img = prepare_reference(reference, self.config.frame_size)
        x = frames_to_tensor(img[None], self.device)
        latent = self.autoencoder.encode(x).float()
        ks, vs = self.model.reference_kv(latent)
        return ReferenceCache(k=torch.stack(ks), v=torch.stack(vs), render=self.autoencoder.prepare_reference(x))

    def stream(self, reference: np.ndarray, *, seed: int = 0, head_motion: float = 0.5, knot: bool = True,
               run_ahead: bool = True, steps: int | None = None, backend=None, backend_factory=None) -> KnotStream:
        """A new stream animating `reference` (uint8 H x W x 3 face crop, resized to frame_size).

        backend: None (eager torch), a knotanim.engines.ChunkBackend built for the same knot/steps
        variant, or a name for knotanim.engines.select_backend ("torch", "compiled", "onnxruntime", ...).
        backend_factory: steps -> ChunkBackend (knotanim.engines.select.StepBackends), which
        `set_steps` uses on any backend; a name gets one of its kind (built on demand).
        """
        if isinstance(backend, str):
            from knotanim.engines.select import StepBackends, select_backend

            if backend == "auto":
                backend, _ = select_backend("auto", self, knot=knot, steps=steps)
                if backend_factory is None:
                    backend_factory = StepBackends.around(backend, self, knot=knot, steps=steps)
            else:
                backend_factory = backend_factory or StepBackends(backend, self, knot=knot)
                backend = backend_factory(steps)
        return KnotStream(self, reference, seed=seed, head_motion=head_motion, knot=knot, run_ahead=run_ahead,
                          steps=steps, backend=backend, backend_factory=backend_factory)

    def parameter_count(self) -> dict[str, int]:
        return {"dit": sum(p.numel() for p in self.model.parameters()),
                "autoencoder": sum(p.numel() for p in self.autoencoder.parameters())}
