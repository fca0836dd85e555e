"""Video file sink (PyAV): H.264 + AAC in (fragmented) MP4, or VP9 + Opus in WebM.

* MP4 is written fragmented (`frag_keyframe+delay_moov+default_base_moof`, a keyframe every
  `gop_seconds`): a render that stops early, even without close(), leaves a playable file of
  every completed fragment, and close() (also on Ctrl-C) finalises the rest.
* Timing: frame k is presented at exactly k / fps s and the audio's first sample with frame 0.
  The AAC encoder's priming (its first packet starts 1024 samples before 0) is cut by an edit
  list, which `delay_moov` lets the muxer write (the moov goes out with the first fragment, once
  the start times are known); `empty_moov` cannot carry one, so the muxer would shift both streams
  by the priming and stretch the first frame instead. WebM carries Opus's pre-skip itself.
* H.264 and VP9 in yuv420p need even sizes: an odd width or height is cropped by one pixel on the
  right / bottom (`VideoFileSink.width/height` are the written, even, sizes).
* Audio: float32 samples at `audio_rate`, (n,) mono or (channels, n), are encoded as they come
  (AAC 160 kb/s or Opus 128 kb/s; Opus always runs at 48 kHz, AAC at 44.1 kHz or more: sources
  below 44.1 kHz are upsampled to 48 kHz so the encoder's 1024-sample priming stays under 25 ms).
* H.264 is encoded without B-frames: each frame's packet leaves the encoder as the frame goes in,
  with its decode time equal to its presentation time.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from knotanim.sinks.base import SinkBase, check_output_file, frame_image, output_error

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
DEFAULT_CRF = {"mp4": 18, "webm": 32}  # H.264 (0-51, 18 ~ visually lossless) / VP9 (0-63)


def output_audio_rate(container_format: str, source_rate: int) -> int:
    """The audio rate (Hz) the file will carry for a source at `source_rate`."""
    if container_format == "webm":
        return 48000
    return source_rate if source_rate in AAC_RATES and source_rate >= 44100 else 48000


def as_fps(fps: float | Fraction) -> Fraction:
    """A frame rate as an exact fraction (29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


class VideoFileSink(SinkBase):
    """Writes frames (uint8 HxWx3 RGB, constant size) and optional audio to an .mp4 or .webm file.

    width, height: frame size in pixels (odd sizes are cropped to even). fps: frames per second.
    crf: quality (None: DEFAULT_CRF). audio_rate: Hz of the audio passed to write_audio, or None for
    no audio track. audio_channels: 1 or 2.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float | Fraction,
                 container_format: str = "mp4", crf: int | None = None, audio_rate: int | None = None,
                 audio_channels: int = 1, preset: str = "medium", gop_seconds: float = 2.0,
                 fragmented: bool = True):
        if container_format not in DEFAULT_CRF:
            raise ValueError("container_format must be 'mp4' or 'webm'")
        self.path = Path(path)
        self.format = container_format
        self.source_width, self.source_height = int(width), int(height)
        self.width, self.height = self.source_width // 2 * 2, self.source_height // 2 * 2
        if self.width < 2 or self.height < 2:
            raise ValueError(f"frame size {width}x{height} is too small for video")
        self.fps = as_fps(fps)
        self.crf = DEFAULT_CRF[container_format] if crf is None else int(crf)
        self.audio_rate = audio_rate
        self.audio_channels = int(audio_channels)
        self.preset, self.gop_seconds, self.fragmented = preset, gop_seconds, fragmented
        self.frames_written = 0
        self.audio_samples_written = 0
        self._container: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._closed = False
        self._broken = False  # a write failed: close() must not flush the encoders (PyAV crashes)

    @property
    def video_seconds(self) -> float:
        return float(self.frames_written / self.fps)

    @property
    def audio_seconds(self) -> float:
        return self.audio_samples_written / self.audio_rate if self.audio_rate else 0.0

    def open(self) -> None:
        import av

        if self.path.as_posix() != os.devnull and not self.path.as_posix().startswith("/dev/"):
            check_output_file(self.path)
        options = {}
        if self.format == "mp4" and self.fragmented:
            options["movflags"] = "frag_keyframe+delay_moov+default_base_moof"
            options["flush_packets"] = "1"  # whole fragments reach the disk as they complete
        try:
            self._container = av.open(self._target(), mode="w", format=self.format, options=options)
        except OSError as e:
            raise output_error(e, self.path) from None
        gop = max(1, round(float(self.fps) * self.gop_seconds))
        if self.format == "mp4":
            v = self._container.add_stream("libx264", rate=self.fps,
                                           options={"crf": str(self.crf), "preset": self.preset, "bf": "0"})
        else:
            v = self._container.add_stream("libvpx-vp9", rate=self.fps,
                                           options={"crf": str(self.crf), "b": "0", "row-mt": "1",
                                                    "deadline": "good", "cpu-used": "4"})
        v.width, v.height, v.pix_fmt = self.width, self.height, "yuv420p"
        v.codec_context.gop_size = gop
        v.codec_context.time_base = 1 / self.fps
        self._video = v
        if self.audio_rate:
            layout = "mono" if self.audio_channels == 1 else "stereo"
            if self.format == "mp4":
                a = self._container.add_stream("aac", rate=self.audio_rate, layout=layout)
                a.bit_rate = 160_000
            else:
                a = self._container.add_stream("libopus", rate=self.audio_rate, layout=layout)
                a.bit_rate = 128_000
            self._audio = a

    def _target(self) -> Any:
        """What av.open writes to: the path (a subclass may return a binary file object instead, e.g.
        one that fails like a full disk in the fault tests)."""
        return str(self.path)

    def write(self, frame: Any) -> None:
        """Encode one frame (uint8 (H, W, 3) RGB of the size given at construction)."""
        import av

        image = frame_image(frame)
        if image.shape[:2] != (self.source_height, self.source_width) and image.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, the video is {self.source_width}x{self.source_height}")
        image = np.ascontiguousarray(image[: self.height, : self.width])
        vf = av.VideoFrame.from_ndarray(image, format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        self._mux(self._video.encode(vf))
        self.frames_written += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Encode float32 audio at audio_rate: (n,) mono or (channels, n); NaN/Inf must be cleaned."""
        import av

        if self._audio is None:
            return
        x = np.asarray(samples, dtype=np.float32)
        x = x[None, :] if x.ndim == 1 else x
        if x.shape[0] != self.audio_channels:
            x = np.repeat(x.mean(axis=0, keepdims=True), self.audio_channels, axis=0)
        if x.shape[1] == 0:
            return
        layout = "mono" if self.audio_channels == 1 else "stereo"
        if self.format == "mp4":  # AAC takes planar float
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=layout)
        else:  # libopus takes packed (interleaved) float
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T.reshape(1, -1)), format="flt", layout=layout)
        af.sample_rate = self.audio_rate
        af.pts = self.audio_samples_written
        af.time_base = Fraction(1, self.audio_rate)
        self._mux(self._audio.encode(af))
        self.audio_samples_written += x.shape[1]

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except OSError as e:
            self._broken = True
            raise output_error(e, self.path) from None

    def close(self) -> None:
        """Flush the encoders and finalise the file (idempotent; safe after errors)."""
        if self._closed or self._container is None:
            self._closed = True
            return
        self._closed = True
        container, self._container = self._container, None
        try:
            try:
                for stream in (self._video, self._audio):
                    if stream is not None and not self._broken:
                        container.mux(stream.encode(None))
            except OSError:
                self._broken = True
                raise
            finally:
                container.close()
        except OSError as e:
            raise output_error(e, self.path) from None
