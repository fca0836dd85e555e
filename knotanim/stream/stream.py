"""KnotStream: push audio as it arrives, receive frames as soon as each chunk is ready.

Per chunk j (start s_j = j * C, F = C + k frames):
  1. wait until the audio for frames [s_j, s_j + F) (plus look-ahead) has arrived;
  2. run the ChunkStep with the reference cache, the history ring, the knot and the reference's
     running-ahead position, all relative to s_j;
  3. write the committed frames' K/V into the ring, keep the new knot, decode (with the backend's
     `decode` when it has one, else the animator's) and emit C frames.
Nothing grows with the length of the stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from knotanim.config import KnotAnimConfig
from knotanim.errors import BackendUnavailable, InputError
from knotanim.frontends.audio_features import StreamingAudioFeatures
from knotanim.frontends.audio_io import clean_samples
from knotanim.model.autoencoder import tensor_to_frames
from knotanim.model.layout import RunAhead
from knotanim.model.warp import FrameMotion, WarpParts, composite, frame_motions
from knotanim.stream.backend import TorchBackend
from knotanim.stream.caches import ReferenceCache
from knotanim.stream.rollout import ChunkLoop
from knotanim.stream.sampler import share_noise
from knotanim.stream.step import ChunkStep

class StreamModel(Protocol):
    """What a stream needs of its model (KnotAnimator is one): the stream is handed these parts and
    never reaches past them.

    config, device, dtype: the model's. chunk_step(steps) -> ChunkStep. reference_cache(image uint8
    [H, W, 3]) -> ReferenceCache. decode(latents [N, c, h, w]) -> float frames [N, 3, H, W] in [-1, 1]
    (codecs that decode from latents alone). render_parts(latents, ReferenceCache) -> WarpParts (a warp
    codec, whose ReferenceCache.render is not None)."""

    config: KnotAnimConfig
    device: torch.device
    dtype: torch.dtype

    def chunk_step(self, steps: int | None = None) -> ChunkStep: ...

    def reference_cache(self, reference: np.ndarray) -> ReferenceCache: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def render_parts(self, latents: torch.Tensor, reference: ReferenceCache) -> WarpParts: ...


@dataclass
class Frame:
    index: int  # frame number from the start of the stream
    timestamp: float  # seconds: index / fps
    image: np.ndarray  # uint8 [H, W, 3] RGB
    motion: FrameMotion | None = None  # a warp codec's parts, to composite at the photo's own resolution


def clean_audio(samples: np.ndarray) -> np.ndarray:
    """Any array of samples -> float32 mono [N]; NaN/Inf become 0 and values are clipped to [-1, 1].

    A 2-D array is taken as [N, channels] (or [channels, N] when it has more rows than columns
    would make sense for) and averaged to mono.
    """
    a = np.asarray(samples)
    if a.dtype.kind not in "fiu":
        raise InputError(f"audio samples must be numbers, got dtype {a.dtype}")
    if a.dtype.kind in "iu":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        a = a.mean(axis=1 if a.shape[0] >= a.shape[1] else 0)
    elif a.ndim != 1:
        raise InputError(f"audio samples must be 1-D (mono) or 2-D (channels), got shape {a.shape}")
    return clean_samples(a)


def chunk_noise(generator: torch.Generator, frames: int, channels: int, size: int,
                correlation: float | torch.Tensor = 0.0) -> torch.Tensor:
    """A chunk's starting noise [1, frames, channels, size, size], N(0, I) per frame, with `share_noise`'s common
    part at `correlation` (one more draw from `generator`, after the frames' own; c = 0 everywhere draws exactly
    what it always drew)."""
    return share_noise(torch.randn((1, frames, channels, size, size), generator=generator), correlation, 1, generator)


def noise_correlation_map(config: KnotAnimConfig) -> torch.Tensor:
    """float32 [latent_size, latent_size]: config.sampler.noise_correlation on every latent cell except the
    mouth's (cells whose centre lies in the crop geometry's mouth area, `mouth_area_box`), which keep their
    own noise per frame: shared there, the noise held the mouth still (KnotBench moving6 lip-sync 0.60 ->
    0.31 with the whole frame shared at 0.6; docs/knotbench.md)."""
    from knotanim.frontends.face import mouth_area_box, mouth_cells

    box = torch.from_numpy(mouth_area_box(config.frame_size, config.crop.face_scale, config.crop.face_center_y))
    mouth = mouth_cells(box.view(1, 1, 4), config.frame_size, config.latent_size)[0, 0, 0] > 0
    return torch.where(mouth, 0.0, float(config.sampler.noise_correlation))


class KnotStream:
    """A live stream for one portrait. Between pushes, `head_motion` (0..1) may be set and
    `set_reference` / `set_steps` called; each takes effect from the next chunk."""

    def __init__(self, animator: StreamModel, reference: np.ndarray, *, seed: int = 0, head_motion: float = 0.5,
                 knot: bool = True, run_ahead: bool = True, steps: int | None = None, backend=None,
                 backend_factory=None):
        cfg = animator.config
        self.animator, self.config = animator, cfg
        self.device, self.dtype = animator.device, animator.dtype
        self.seed = seed
        self.head_motion = float(np.clip(head_motion, 0.0, 1.0))
        self.knot_enabled = knot and cfg.stream.knot > 0
        self.step = animator.chunk_step(steps)
        # backend_factory: steps -> ChunkBackend built for that step count (and this stream's knot
        # variant), e.g. knotanim.engines.select.StepBackends; set_steps swaps in its backend.
        self.backend_factory = backend_factory
        if backend is None and backend_factory is not None:
            backend = backend_factory(steps)
        if backend is None:  # eager torch; any ChunkBackend (knotanim.stream.backend) runs the same step
            backend = TorchBackend(self.step, self.device)
        self.backend = backend
        schedule = RunAhead.from_config(cfg.stream, self.knot_enabled, enabled=run_ahead)
        self.loop = ChunkLoop(cfg, 1, self.knot_enabled, schedule, self.device, self.dtype)
        self.audio = StreamingAudioFeatures(cfg)
        self._noise_correlation = noise_correlation_map(cfg)  # all zeros when off: chunk_noise draws nothing more
        self.reference: ReferenceCache | None = None
        self.set_reference(reference)
        self.reset()

    # --- control ---------------------------------------------------------------------------------
    def set_reference(self, reference: np.ndarray) -> None:
        """Swap the portrait; only the reference cache is recomputed, the motion carries on."""
        self.reference = self.animator.reference_cache(reference)

    def set_steps(self, steps: int) -> None:
        """Change the sampler steps mid-stream; the caches, the knot and the motion carry on.

        They are the stream's own tensors, handed to the backend at every chunk, so any backend can
        take over between chunks: eager torch makes the step at once; another backend needs the
        stream's `backend_factory` (a compiled or exported backend has its step count built in).
        Raises BackendUnavailable (and changes nothing) when there is no backend for `steps`."""
        if self.backend_factory is not None:
            backend = self.backend_factory(steps)  # may raise BackendUnavailable: then nothing changed
        elif isinstance(self.backend, TorchBackend):
            backend = TorchBackend(self.animator.chunk_step(steps), self.device)
        else:
            raise BackendUnavailable(f"the {self.backend.name} backend has its step count built in and the stream has no "
                                     "backend factory; start a new stream")
        self.step, self.backend = self.animator.chunk_step(steps), backend

    def reset(self) -> None:
        """Back to frame 0 with the same reference and seed."""
        self.loop.clear()
        self.audio.reset()
        self.frames_emitted = 0
        self._features = np.zeros((0, self.config.audio.n_mels, self.config.audio_window), np.float32)
        self._features_start = 0  # frame index of _features[0]
        self._noise = torch.Generator().manual_seed(self.seed)

    @property
    def chunk_start(self) -> int:
        return self.loop.chunk_start

    # The loop's state, under the names the stream has always exposed.
    span = property(lambda self: self.loop.span)  # frames denoised per chunk: C + k (k = 0 without the knot)
    ring = property(lambda self: self.loop.ring)
    knot = property(lambda self: self.loop.knot)
    chunk_index = property(lambda self: self.loop.chunk_index)

    # --- audio in, frames out ----------------------------------------------------------------------
    def push_audio(self, samples: np.ndarray) -> list[Frame]:
        """Feed mono samples at config.audio.sample_rate; returns the frames that became ready."""
        self.audio.push(clean_audio(samples))
        frames: list[Frame] = []
        while self._gather_features(force=False):
            frames += self._run_chunk()
        return frames

    def finish(self, total_frames: int | None = None) -> list[Frame]:
        """End of input: pad with silence and return the remaining frames.

        total_frames: where the stream ends (default: every frame the received audio touches,
        ceil(samples / samples_per_frame)). Frames past it are dropped.
        """
        spf = self.config.samples_per_frame
        if total_frames is None:
            total_frames = -(-self.audio.samples_received // spf)
        frames: list[Frame] = []
        while self.frames_emitted < total_frames:
            self._gather_features(force=True)
            frames += self._run_chunk()
        return [f for f in frames if f.index < total_frames]

    # --- internals ------------------------------------------------------------------------------------
    def _gather_features(self, force: bool) -> bool:
        """Make sure features for frames [s_j, s_j + F) are buffered; False if audio is still missing."""
        need_until = self.chunk_start + self.span
        have_until = self._features_start + len(self._features)
        missing = need_until - have_until
        if missing > 0:
            if not force and self.audio.available() < missing:
                return False
            self._features = np.concatenate((self._features, self.audio.pop(missing)))
        return True

    @torch.no_grad()
    def _run_chunk(self) -> list[Frame]:
        cfg, dev = self.config, self.device
        s = self.chunk_start
        lo = s - self._features_start
        audio = torch.from_numpy(self._features[lo : lo + self.span]).unsqueeze(0).to(dev)
        c, size = cfg.autoencoder.latent_channels, cfg.latent_size
        noise = chunk_noise(self._noise, self.span, c, size, self._noise_correlation).to(dev)
        motion = torch.tensor([self.head_motion], device=dev)
        committed = self.loop.advance(self.backend.run, self.reference, audio, noise, motion)
        # Features before the next chunk's start are no longer needed.
        drop = self.chunk_start - self._features_start
        self._features, self._features_start = self._features[drop:], self._features_start + drop

        backend_decode = getattr(self.backend, "decode", None)  # a backend may decode (compiled)
        motions: list[FrameMotion | None] = [None] * committed.shape[1]
        if self.reference.render is not None:  # a warp codec: frames from the reference's pixels
            render = getattr(self.backend, "render_parts", None) or self.animator.render_parts  # an exported renderer
            parts = render(committed[0], self.reference)
            images = tensor_to_frames(composite(parts, self.reference.render.image.float()))
            motions = frame_motions(parts)
        elif backend_decode is not None:
            images = tensor_to_frames(backend_decode(committed[0]))
        else:
            images = tensor_to_frames(self.animator.decode(committed[0]))
        fps = cfg.fps
        frames = [Frame(index=s + i, timestamp=(s + i) / fps, image=img, motion=m)
                  for i, (img, m) in enumerate(zip(images, motions))]
        self.frames_emitted = s + len(frames)
        return frames
