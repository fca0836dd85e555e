"""PNG-sequence sink: one lossless RGB PNG per frame (frame_000000.png, ...) plus audio.wav.

For people who edit: frames keep the exact size given (no even-size cropping), and the audio
(if any) is written beside them as 16-bit PCM WAV at the rate given.
"""
from __future__ import annotations

import os
import wave
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from knotanim.sinks.base import SinkBase, check_output_folder, frame_image, output_error

FRAME_PATTERN = "frame_{:06d}.png"  # file name of frame i (0-based)
AUDIO_NAME = "audio.wav"


class PngSequenceSink(SinkBase):
    """Writes frames to `folder` (created if its parent exists) and optional audio to audio.wav.

    audio_rate: Hz of the audio given to write_audio (None: no audio file). compression: PNG
    zlib level 0-9 (3 is a fast default).
    """

    def __init__(self, folder: str | os.PathLike, audio_rate: int | None = None, audio_channels: int = 1,
                 compression: int = 3, pattern: str = FRAME_PATTERN):
        self.folder = Path(folder)
        self.audio_rate = audio_rate
        self.audio_channels = int(audio_channels)
        self.compression = int(compression)
        self.pattern = pattern
        self.frames_written = 0
        self.audio_samples_written = 0
        self._wav: Any = None
        self._opened = False

    @property
    def path(self) -> Path:
        return self.folder

    def frame_path(self, index: int) -> Path:
        return self.folder / self.pattern.format(index)

    def open(self) -> None:
        check_output_folder(self.folder)
        try:
            self.folder.mkdir(exist_ok=True)
            if self.audio_rate:
                self._wav = wave.open(str(self.folder / AUDIO_NAME), "wb")
                self._wav.setnchannels(self.audio_channels)
                self._wav.setsampwidth(2)
                self._wav.setframerate(int(self.audio_rate))
        except OSError as e:
            raise output_error(e, self.folder) from None
        self._opened = True

    def write(self, frame: Any) -> None:
        """Write one uint8 (H, W, 3) RGB frame as the next PNG."""
        image = frame_image(frame)
        ok, data = cv2.imencode(".png", image[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, self.compression])
        if not ok:
            raise ValueError("PNG encoding failed")
        path = self.frame_path(self.frames_written)
        try:
            with open(path, "wb") as f:
                f.write(data.tobytes())
        except OSError as e:
            raise output_error(e, path) from None
        self.frames_written += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Append float32 audio ((n,) mono or (channels, n), values in [-1, 1]) to audio.wav."""
        if self._wav is None:
            return
        x = np.asarray(samples, dtype=np.float32)
        x = x[None, :] if x.ndim == 1 else x
        if x.shape[0] != self.audio_channels:
            x = np.repeat(x.mean(axis=0, keepdims=True), self.audio_channels, axis=0)
        pcm = np.rint(np.clip(x, -1.0, 1.0).T * 32767.0).astype("<i2")
        try:
            self._wav.writeframes(pcm.tobytes())
        except OSError as e:
            raise output_error(e, self.folder / AUDIO_NAME) from None
        self.audio_samples_written += x.shape[1]

    def close(self) -> None:
        wav, self._wav = self._wav, None
        if wav is not None:
            try:
                wav.close()
            except OSError as e:
                raise output_error(e, self.folder / AUDIO_NAME) from None
