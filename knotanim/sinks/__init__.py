"""Frame sinks: file writers (mp4 / webm via PyAV, PNG sequences) behind one FrameSink protocol."""
from knotanim.sinks.base import FrameSink, SinkBase, check_output_file, check_output_folder, output_error
from knotanim.sinks.png import PngSequenceSink
from knotanim.sinks.video import VideoFileSink

__all__ = [
    "FrameSink", "SinkBase", "VideoFileSink", "PngSequenceSink",
    "check_output_file", "check_output_folder", "output_error",
]
