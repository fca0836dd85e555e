"""The typed configuration: the single source of every size and default.

A model is fully described by one `KnotAnimConfig`. It round-trips through JSON/YAML
(`to_dict` / `from_dict`), is stored inside every checkpoint's `config.json`, and is what the
CLI, the app and training read their defaults from. Each field's comment is its documentation.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knotanim.errors import ConfigError

# The chunk backends of knotanim.engines, by name ("auto": the fastest available). Here, not in engines/,
# so that the CLIs and the app can offer them without importing torch.
BACKENDS = ("torch", "compiled", "onnxruntime", "tensorrt", "aoti", "auto")


@dataclass(frozen=True)
class AutoencoderConfig:
    kind: str = "conv"  # "conv" (learned), "pixel" (space-to-depth, no weights) or "warp" (motion latents; frames
    # made by warping the reference: knotanim.model.warp)
    factor: int = 8  # spatial downsampling, pixels per latent cell
    latent_channels: int = 8  # channels of a latent frame
    base_channels: int = 48  # width of the first conv stage ("conv", "warp")
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # width multipliers per stage ("conv" only)
    flow_factor: int = 4  # pixels per flow / visibility cell ("warp" only)


@dataclass(frozen=True)
class CropConfig:
    """How a face sits in a model frame; shared by the face cropper and the data generator."""

    face_scale: float = 2.2  # crop side = detected face box side * face_scale
    face_center_y: float = 0.48  # face box centre, as a fraction of the crop height from the top
    min_face_pixels: int = 48  # smaller detected faces are refused as too small to animate


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000  # Hz; every input is resampled to this
    n_fft: int = 400  # STFT window, samples (25 ms)
    hop: int = 160  # STFT hop, samples (10 ms)
    n_mels: int = 40  # mel bands
    context_frames: int = 16  # mel frames before the video frame's centre (160 ms of context)
    lookahead_frames: int = 4  # mel frames after the centre: the audio look-ahead (40 ms)


@dataclass(frozen=True)
class ModelConfig:
    width: int = 384  # transformer width d
    depth: int = 10  # transformer blocks
    heads: int = 6  # attention heads (head dim = width / heads)
    mlp_ratio: float = 4.0  # FFN hidden = width * mlp_ratio
    patch: int = 2  # latent cells per token side
    rope_dims: tuple[int, int, int] = (16, 24, 24)  # head-dim split (time, height, width); sums to head dim
    rope_theta: float = 10000.0  # RoPE base
    audio_hidden: int = 256  # width of the per-frame audio encoder
    qk_norm: bool = True  # RMS-normalise queries and keys (stable bf16 training)
    audio_attention: bool = True  # per-frame cross-attention from image tokens to the frame's audio window
    audio_attention_dim: int = 128  # width of that cross-attention and of the audio tokens (heads of 32)


@dataclass(frozen=True)
class StreamConfig:
    chunk: int = 3  # C: frames committed per chunk
    knot: int = 1  # k: frames of overlap carried to the next chunk (0 disables the knot)
    window: int = 6  # L: committed frames kept in the sliding-window history
    run_ahead_start: int = 8  # initial temporal RoPE index of the reference (frames)
    run_ahead_stride: int = 4  # s: how far the reference jumps when the rollout catches up (frames)
    reference_fixed_position: int = -1  # reference index when running ahead is off (absolute frames)


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 4  # flow-matching Euler steps per chunk
    shift: float = 3.0  # timestep shift (>1 spends more steps at high noise)
    # Share of each chunk's starting noise common to its frames outside the mouth area: noise = sqrt(1 - c) *
    # own + sqrt(c) * shared, so every frame's noise is still N(0, I) (knotanim.stream.sampler.share_noise).
    # Training draws its noise (and stage 3 its rollouts) the same way for the model it trains
    # (`--set model.sampler.noise_correlation=0.6`). 0: independent per frame.
    noise_correlation: float = 0.0


@dataclass(frozen=True)
class KnotAnimConfig:
    name: str = "knotanim"
    frame_size: int = 256  # output frame side, pixels (square face crop)
    fps: int = 25  # frames per second of the generated video
    crop: CropConfig = field(default_factory=CropConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    # Derived sizes, computed here so no other module repeats the arithmetic.
    @property
    def latent_size(self) -> int:
        """Latent frame side in cells."""
        return self.frame_size // self.autoencoder.factor

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_size // self.model.patch) ** 2

    @property
    def samples_per_frame(self) -> int:
        return self.audio.sample_rate // self.fps

    @property
    def audio_window(self) -> int:
        """Mel frames in one video frame's audio feature window."""
        return self.audio.context_frames + 1 + self.audio.lookahead_frames

    @property
    def audio_lookahead_seconds(self) -> float:
        """How far past the end of a video frame's interval its audio window reaches (seconds).

        This is the audio part of the algorithmic latency: a frame cannot be generated before
        this much audio after it has arrived.
        """
        a = self.audio
        centre = self.samples_per_frame / 2  # samples from frame start to frame centre
        last_sample = centre + a.lookahead_frames * a.hop + a.n_fft / 2
        return max(0.0, (last_sample - self.samples_per_frame) / a.sample_rate)

    def validate(self) -> "KnotAnimConfig":
        m, s, ae, a = self.model, self.stream, self.autoencoder, self.audio
        problems = []
        positive = {"frame_size": self.frame_size, "fps": self.fps, "autoencoder.factor": ae.factor,
                    "autoencoder.latent_channels": ae.latent_channels, "model.width": m.width, "model.depth": m.depth,
                    "model.heads": m.heads, "model.patch": m.patch, "audio.sample_rate": a.sample_rate,
                    "audio.hop": a.hop, "audio.n_fft": a.n_fft, "audio.n_mels": a.n_mels}
        bad = [k for k, v in positive.items() if v <= 0]
        if bad or a.context_frames < 0 or a.lookahead_frames < 0 or m.mlp_ratio <= 0:
            raise ConfigError("invalid config: these must be positive: " + ", ".join(
                bad + [k for k, v in (("audio.context_frames", a.context_frames + 1), ("audio.lookahead_frames", a.lookahead_frames + 1),
                                     ("model.mlp_ratio", m.mlp_ratio)) if v <= 0]))
        limits = {"frame_size": (self.frame_size, 4096), "model.width": (m.width, 16384), "model.depth": (m.depth, 512),
                  "autoencoder.latent_channels": (ae.latent_channels, 4096), "audio.n_mels": (a.n_mels, 1024)}
        problems += [f"{k} {v} is above the supported maximum {hi}" for k, (v, hi) in limits.items() if v > hi]
        if m.audio_attention and (m.audio_attention_dim < 32 or m.audio_attention_dim % 32):
            problems.append(f"model.audio_attention_dim {m.audio_attention_dim} must be a positive multiple of 32")
        if m.width % m.heads:
            problems.append(f"model.width {m.width} is not divisible by model.heads {m.heads}")
        head_dim = m.width // max(m.heads, 1)
        if sum(m.rope_dims) != head_dim or any(d % 2 for d in m.rope_dims):
            problems.append(f"model.rope_dims {m.rope_dims} must be even and sum to the head dim {head_dim}")
        if self.frame_size % ae.factor:
            problems.append(f"frame_size {self.frame_size} is not divisible by autoencoder.factor {ae.factor}")
        elif self.latent_size % m.patch:
            problems.append(f"latent size {self.latent_size} is not divisible by model.patch {m.patch}")
        if a.sample_rate % self.fps:
            problems.append(f"audio.sample_rate {a.sample_rate} is not a multiple of fps {self.fps}")
        elif self.samples_per_frame % (2 * a.hop):
            problems.append(f"samples per frame {self.samples_per_frame} is not a multiple of 2 * audio.hop ({2 * a.hop})")
        if s.chunk < 1 or s.knot < 0 or s.window < 0:
            problems.append("stream.chunk must be >= 1, stream.knot and stream.window >= 0")
        if s.knot > 1:
            problems.append("stream.knot > 1 is not supported (k = 1 is the Knot Forcing default)")
        if s.run_ahead_stride < 1:
            problems.append("stream.run_ahead_stride must be >= 1")
        if self.sampler.steps < 1:
            problems.append("sampler.steps must be >= 1")
        if not 0.0 <= self.sampler.noise_correlation < 1.0:
            problems.append("sampler.noise_correlation must be in [0, 1)")
        if ae.kind not in ("conv", "pixel", "warp"):
            problems.append(f"autoencoder.kind must be 'conv', 'pixel' or 'warp', not {ae.kind!r}")
        elif ae.kind == "warp" and not (_power_of_two(ae.factor) and _power_of_two(ae.flow_factor)
                                        and 2 <= ae.flow_factor < ae.factor):
            problems.append(f"a warp codec needs autoencoder.factor ({ae.factor}) and autoencoder.flow_factor "
                            f"({ae.flow_factor}) powers of 2 with 2 <= flow_factor < factor")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))
        return self

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KnotAnimConfig":
        return _build(cls, data, "config").validate()

    @classmethod
    def load(cls, path: str | Path) -> "KnotAnimConfig":
        """Load from a .json or .yaml file (a checkpoint's config.json holds it under "config")."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as e:  # yaml/json syntax errors of every kind
            raise ConfigError(f"cannot parse config {path}: {str(e).splitlines()[0]}") from None
        if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
            data = data["config"]
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must hold a mapping")
        return cls.from_dict(data)

    def replace(self, **sections: Any) -> "KnotAnimConfig":
        """Copy with some top-level fields or sections replaced; sections may be dicts of changes."""
        changes = {}
        for key, value in sections.items():
            current = getattr(self, key)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                value = dataclasses.replace(current, **value)
            changes[key] = value
        return dataclasses.replace(self, **changes).validate()


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys and coercing tuples."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}.{name} must be a list")
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 20 for v in value):
                raise ConfigError(f"{where}.{name} must be a list of positive whole numbers")
            kwargs[name] = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{name} must be true or false")
            kwargs[name] = value
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}.{name} must be a number")
            if not math.isfinite(value) or abs(value) > 1 << 40:
                raise ConfigError(f"{where}.{name} must be a finite number of sensible size")
            if isinstance(default, int) and not isinstance(default, bool) and value != int(value):
                raise ConfigError(f"{where}.{name} must be a whole number")
            kwargs[name] = type(default)(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{name} must be a string")
            kwargs[name] = value
        else:
            kwargs[name] = value
    return cls(**kwargs)


def tiny_config(**overrides: Any) -> KnotAnimConfig:
    """A tiny random-weights config for tests and CPU smoke runs (64x64 frames, 2 blocks)."""
    cfg = KnotAnimConfig(
        name="tiny",
        frame_size=64,
        autoencoder=AutoencoderConfig(kind="conv", factor=8, latent_channels=4, base_channels=8, channel_mult=(1, 2, 2, 2)),
        model=ModelConfig(width=48, depth=2, heads=2, patch=2, rope_dims=(8, 8, 8), audio_hidden=32, audio_attention_dim=32),
        audio=AudioConfig(n_mels=16),
        stream=StreamConfig(chunk=2, knot=1, window=3, run_ahead_start=4, run_ahead_stride=2),
        sampler=SamplerConfig(steps=2),
    )
    return cfg.replace(**overrides) if overrides else cfg.validate()
