"""Audio decoding: any file ffmpeg/PyAV decodes -> float32 samples at a chosen rate, streamed in blocks.

Works for wav, flac, mp3, m4a/aac, ogg/opus and the audio track of video files, at any sample rate
and channel count. Documented conversions:

* Resampling uses libswresample (PyAV's `AudioResampler`).
* Mono output is the MEAN of all source channels (computed here, not by swresample's matrix).
  Two-channel output comes from swresample's standard layout conversion (mono is duplicated).
* NaN samples become 0, +-Inf and anything beyond full scale are clipped to [-1, 1].
* A file that ends in the middle of a damaged packet keeps what decoded before the damage.

Blocks are produced while decoding, so an hour of audio never sits in memory at once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from knotanim.errors import InputError


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about its first audio track."""

    path: str
    duration: float | None  # seconds from the container metadata (approximate); None when unknown
    sample_rate: int  # Hz of the source
    channels: int  # source channel count
    codec: str  # decoder name, e.g. "pcm_s16le", "mp3", "aac"


def clean_samples(x: np.ndarray) -> np.ndarray:
    """float32 copy with NaN -> 0 and +-Inf / out-of-range values clipped to [-1, 1]; any shape."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0, out=x)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"audio {path} does not exist")
    if path.is_dir():
        raise InputError(f"audio {path} is a folder, not a file")
    if path.stat().st_size == 0:
        raise InputError(f"audio {path} is empty (0 bytes)")


def _open(path: Path):
    """Open with PyAV and return (container, first audio stream); InputError when impossible."""
    import av

    _check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read audio {path}: not an audio file ffmpeg can decode ({_first_line(e)})") from None
    if not container.streams.audio:
        container.close()
        raise InputError(f"{path} has no audio track")
    return container, container.streams.audio[0]


def _first_line(e: BaseException) -> str:
    """A short reason: FFmpeg errors' strerror without errno and path, else the first line."""
    text = getattr(e, "strerror", None) or str(e).strip() or type(e).__name__
    return str(text).splitlines()[0]


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Read the metadata of the first audio track without decoding samples."""
    path = Path(path)
    container, stream = _open(path)
    try:
        ctx = stream.codec_context
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return AudioInfo(
            path=str(path),
            duration=duration if duration is None or duration >= 0 else None,
            sample_rate=int(ctx.sample_rate or stream.rate or 0),
            channels=int(ctx.channels or 0),
            codec=ctx.name,
        )
    finally:
        container.close()


def _decoded_chunks(path: Path, sample_rate: int, channels: int) -> Iterator[np.ndarray]:
    """Yield float32 (channels, n) arrays at `sample_rate` as the file decodes (arbitrary n)."""
    import av

    container, stream = _open(path)
    resampler = None
    layout_name = None
    try:
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError, ValueError):
                break  # damaged tail: keep what decoded so far (see module docstring)
            src_layout = frame.layout.name
            if resampler is None or src_layout != layout_name:
                if resampler is not None:
                    yield from _convert(resampler.resample(None), channels)
                layout = ("mono" if channels == 1 else "stereo") if channels <= 2 else None
                keep = src_layout if channels == 1 else layout  # mono: mean over the source channels
                # Packed float: PyAV's planar to_ndarray crashes on 8-channel frames (found by fuzzing).
                resampler = av.AudioResampler(format="flt", layout=keep, rate=sample_rate)
                layout_name = src_layout
            yield from _convert(resampler.resample(frame), channels)
        if resampler is not None:
            yield from _convert(resampler.resample(None), channels)
    finally:
        container.close()


def _convert(frames, channels: int) -> Iterator[np.ndarray]:
    for f in frames or ():
        n_ch = len(f.layout.channels)
        x = f.to_ndarray().astype(np.float32, copy=False).reshape(-1, n_ch).T  # packed -> (channels, n)
        if channels == 1 and x.shape[0] > 1:
            x = x.mean(axis=0, keepdims=True)
        if x.shape[1]:
            yield clean_samples(x)


def iter_audio_blocks(
    path: str | os.PathLike, sample_rate: int, block_seconds: float = 0.5, channels: int = 1
) -> Iterator[np.ndarray]:
    """Decode `path` lazily into blocks of round(block_seconds * sample_rate) samples.

    Yields float32 arrays: shape (n,) when channels == 1, else (channels, n); every block is full
    except possibly the last. Raises InputError (on first use) when the file is not decodable audio
    or holds no samples at all. Silent audio is fine.
    """
    path = Path(path)
    if channels not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    block = max(1, int(round(block_seconds * sample_rate)))
    pending: list[np.ndarray] = []
    count = 0
    total = 0
    for chunk in _decoded_chunks(path, sample_rate, channels):
        pending.append(chunk)
        count += chunk.shape[1]
        while count >= block:
            data = np.concatenate(pending, axis=1)
            out, rest = data[:, :block], data[:, block:]
            pending, count = ([rest] if rest.shape[1] else []), rest.shape[1]
            total += block
            yield out[0].copy() if channels == 1 else np.ascontiguousarray(out)
    if count:
        data = np.concatenate(pending, axis=1)
        total += count
        yield data[0].copy() if channels == 1 else np.ascontiguousarray(data)
    if total == 0:
        raise InputError(f"audio {path} contains no samples (empty audio)")


def load_audio(
    path: str | os.PathLike, sample_rate: int, channels: int = 1, max_seconds: float | None = 3600.0
) -> np.ndarray:
    """Decode a whole (short) file: float32 (n,) for mono, (channels, n) otherwise.

    Refuses files longer than max_seconds (InputError); use iter_audio_blocks for long audio.
    """
    blocks = []
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    n = 0
    for b in iter_audio_blocks(path, sample_rate, block_seconds=10.0, channels=channels):
        blocks.append(b)
        n += b.shape[-1]
        if limit is not None and n > limit:
            raise InputError(f"audio {path} is longer than {max_seconds:g} s; stream it with iter_audio_blocks")
    return np.concatenate(blocks, axis=-1)


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write float32 samples ((n,) mono or (channels, n)) as 16-bit PCM WAV (tests, PNG-sequence audio)."""
    import wave

    x = clean_samples(samples)
    x = x[None, :] if x.ndim == 1 else x
    pcm = np.rint(x.T * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
