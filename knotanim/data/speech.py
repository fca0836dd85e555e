"""Speech with phoneme timing, synthesised by espeak-ng through ctypes.

`synthesize_speech(text, voice=...)` returns an `Utterance`: 16 kHz float32 samples and the
phoneme events espeak-ng reported while synthesising them (onset in seconds, index into
`visemes.PHONEMES`). espeak-ng is only needed to *make* speech; a built corpus (corpus.py) loads
without it, which is how the accelerator machine gets speech.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, field

import numpy as np

from knotanim.data.visemes import is_modifier, phoneme_id
from knotanim.errors import InputError

SAMPLE_RATE = 16000  # Hz, every Utterance

# espeak-ng constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 1
_EVENT_PHONEME = 7
_EVENT_LIST_TERMINATED = 0
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


@dataclass
class Utterance:
    """Mono speech and its phoneme timing.

    audio: float32 [N] samples at 16 kHz in -1..1.
    times: float32 [E] phoneme onsets in seconds from the first sample, ascending.
    phonemes: int16 [E] indices into visemes.PHONEMES (0 = pause/silence).
    speech_end: seconds where the last phoneme ends (trailing silence starts).
    """

    audio: np.ndarray
    times: np.ndarray
    phonemes: np.ndarray
    speech_end: float
    voice: str = ""
    lang: str = ""
    text: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.audio) / SAMPLE_RATE


class _Event(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def espeak_available() -> bool:
    """Whether libespeak-ng can be loaded on this machine."""
    try:
        Espeak._load()
        return True
    except InputError:
        return False


def version_of(lib: ctypes.CDLL) -> str:
    """espeak-ng's version string from a loaded library ("unknown" where it does not say)."""
    try:
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        return (lib.espeak_Info(None) or b"unknown").decode("ascii", "replace").split()[0]
    except (AttributeError, IndexError):
        return "unknown"


class Espeak:
    """One espeak-ng engine (the C library is process-global: keep one instance per process)."""

    def __init__(self) -> None:
        self._lib = self._load()
        self.native_rate = int(self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS))
        if self.native_rate <= 0:
            raise InputError("espeak-ng failed to initialise (espeak-ng-data missing?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._cb = _CALLBACK(self._on_synth)  # keep a reference: the library calls it later
        self._lib.espeak_SetSynthCallback(self._cb)

    @property
    def version(self) -> str:
        """The library's version (espeak_Info), e.g. "1.51": its speech differs between versions, so corpora and
        KnotBench reports record it."""
        return version_of(self._lib)

    @staticmethod
    def _load() -> ctypes.CDLL:
        for name in ("libespeak-ng.so.1", ctypes.util.find_library("espeak-ng") or "", "libespeak-ng.so"):
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                         ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            return lib
        raise InputError("espeak-ng is not installed (libespeak-ng.so.1 not found): apt-get install espeak-ng")

    def _on_synth(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = bytes(ev.id.string).split(b"\0")[0].decode("ascii", "replace")
                if not is_modifier(name):
                    self._events.append((ev.audio_position, name))
            i += 1
        return 0

    def synth(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> Utterance:
        """Speak `text` with `voice` ("lang" or "lang+variant"), rate in words/min, pitch/range 0..100."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise InputError(f"espeak-ng has no voice {voice!r}")
        for p, v in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, 100)):
            self._lib.espeak_SetParameter(p, int(v), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        raw = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        audio = resample(raw.astype(np.float32) / 32768.0, self.native_rate, SAMPLE_RATE)
        times = np.array([e[0] / 1000.0 for e in self._events], np.float32)
        ids = np.array([phoneme_id(e[1]) for e in self._events], np.int16)
        order = np.argsort(times, kind="stable")
        times, ids = times[order], ids[order]
        end = speech_end(audio, times)
        lang = voice.split("+")[0]
        return Utterance(audio, times, ids, end, voice, lang, text,
                         {"rate": rate, "pitch": pitch, "range": pitch_range,
                          "mnemonics": [e[1] for e in self._events]})


def synthesize_speech(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                      pitch_range: int = 50, engine: Espeak | None = None) -> Utterance:
    """Synthesize one utterance with espeak-ng (needs libespeak-ng.so.1)."""
    return (engine or Espeak()).synth(text, voice, rate, pitch, pitch_range)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of float32 [N] by FFT (exact for a periodic signal; padded against wrap)."""
    if rate_in == rate_out or len(x) == 0:
        return x.astype(np.float32)
    pad = 256
    xp = np.pad(x, (pad, pad))
    n_out = int(round(len(xp) * rate_out / rate_in))
    spec = np.fft.rfft(xp)
    keep = min(len(spec), n_out // 2 + 1)
    out = np.fft.irfft(spec[:keep], n_out) * (n_out / len(xp))
    p = int(round(pad * rate_out / rate_in))
    m = int(round(len(x) * rate_out / rate_in))
    return out[p:p + m].astype(np.float32)


def speech_end(audio: np.ndarray, times: np.ndarray, threshold: float = 0.01) -> float:
    """Seconds where speech ends: the last 10 ms block above `threshold` RMS (>= last event onset)."""
    block = SAMPLE_RATE // 100
    n = len(audio) // block
    if n == 0:
        return float(times[-1]) if len(times) else 0.0
    rms = np.sqrt((audio[: n * block].reshape(n, block) ** 2).mean(1))
    loud = np.nonzero(rms > threshold)[0]
    end = (loud[-1] + 1) / 100.0 if len(loud) else 0.0
    last = float(times[-1]) if len(times) else 0.0
    return min(max(end, last + 0.03 if len(times) else 0.0), len(audio) / SAMPLE_RATE)
