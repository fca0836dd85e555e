"""The live pipeline (GUI-free): microphone -> animated portrait -> preview, recording, virtual camera.

Used by the desktop app (knotanim.app) and by `knotanim live`.
"""
from knotanim.live.compose import Composer, letterbox, parse_colour
from knotanim.ladder import Rung, build_ladder
from knotanim.live.degrade import DegradeController
from knotanim.live.pipeline import LiveFrame, LiveOptions, LivePipeline, LiveStats
from knotanim.live.ring import AudioRing
from knotanim.live.sources import ArraySource, AudioDevice, MicrophoneSource, list_devices
from knotanim.live.timing import DropOldestQueue, LatencyMeter, Pacer, RateMeter

__all__ = [
    "ArraySource", "AudioDevice", "AudioRing", "Composer", "DegradeController", "DropOldestQueue",
    "LatencyMeter", "LiveFrame", "LiveOptions", "LivePipeline", "LiveStats", "MicrophoneSource", "Pacer",
    "RateMeter", "Rung", "build_ladder", "letterbox", "list_devices", "parse_colour",
]
