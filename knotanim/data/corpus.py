"""A speech corpus built once with espeak-ng, stored in one compact .npz, loaded anywhere.

Building needs espeak-ng (this machine); loading needs only numpy (the accelerator machine).

File layout (np.savez_compressed):
- audio_mulaw: uint8 [S] all utterances' 16 kHz samples, concatenated, mu-law (255) encoded:
  1 byte a sample keeps ~20 minutes of speech near 15 MB after zlib, and mu-law's ~38 dB SNR
  is far above the noise the load-time augmentation adds.
- offsets: int64 [U+1] sample offsets of each utterance.
- ev_offsets: int64 [U+1] offsets into the event arrays; ev_times: float32 [E] onset seconds
  relative to the utterance start; ev_ids: int16 [E] indices into `vocab`.
- speech_end: float32 [U] seconds; vocab: str [P] the phoneme inventory (visemes.PHONEMES).
- voices, langs, texts: str [U]; rates, pitches: int16 [U]; meta: str (JSON: split, seed, ...).

Train and eval corpora use disjoint languages AND disjoint voice variants (EVAL_LANGS, EVAL_VARIANTS).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from knotanim.data.speech import SAMPLE_RATE, Espeak, Utterance
from knotanim.data.visemes import PHONEMES
from knotanim.errors import InputError, OutputError

TRAIN_LANGS = ("en-us", "en", "de", "fr", "es", "pt", "nl", "cs", "sv", "da", "hu", "tr", "ro", "id",
               "sw", "eo", "hr", "sk", "sl", "ca", "ru", "bg", "af", "cy", "lv", "et", "ms")
EVAL_LANGS = ("it", "pl", "fi", "uk", "pt-br")
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f5", "klatt", "klatt2",
                  "Andy", "Alex", "adam", "david", "linda", "max", "paul", "iven", "john", "edward", "belinda")
EVAL_VARIANTS = ("f4", "m7", "klatt3", "Annie", "Storm", "gustave")

_LATIN_C = "bcdfghjklmnprstvwz"
_LATIN_V = "aeiou"
_EXTRA = {"de": ("ß", "äöü"), "fr": ("ç", "éèàù"), "es": ("ñ", "áéó"), "pt": ("ç", "ãõé"), "pt-br": ("ç", "ãõé"),
          "pl": ("łśżć", "ąę"), "cs": ("čřš", "áěý"), "sk": ("čšž", "áä"), "hu": ("sz", "öüő"), "tr": ("çşğ", "ıöü"),
          "ro": ("șț", "ăâî"), "sv": ("", "åäö"), "da": ("", "æøå"), "fi": ("", "äö"), "it": ("", "èò"),
          "hr": ("čšž", ""), "sl": ("čšž", ""), "ca": ("ç", "àè"), "lv": ("šž", "āē"), "et": ("š", "õäöü")}
_CYR_C = "бвгдзклмнпрстфхцчшж"
_CYR_V = "аеиоуыя"


def random_text(lang: str, rng: np.random.Generator) -> str:
    """A random pseudo-sentence (1-3 clauses of 2-8 pseudo-words) written in `lang`'s alphabet."""
    if lang in ("ru", "uk", "bg"):
        cons, vows = _CYR_C, _CYR_V + ("і" if lang == "uk" else "")
    else:
        extra = _EXTRA.get(lang, ("", ""))
        cons, vows = _LATIN_C + extra[0], _LATIN_V + extra[1]
    clauses = []
    for _ in range(int(rng.integers(1, 4))):
        words = []
        for _ in range(int(rng.integers(2, 9))):
            if rng.random() < 0.06:
                words.append(str(int(rng.integers(1, 2000))))
                continue
            syl = []
            for _ in range(int(rng.integers(1, 4))):
                s = "" if rng.random() < 0.2 else cons[int(rng.integers(len(cons)))]
                s += vows[int(rng.integers(len(vows)))]
                if rng.random() < 0.3:
                    s += cons[int(rng.integers(len(cons)))]
                syl.append(s)
            words.append("".join(syl))
        clauses.append(" ".join(words))
    end = str(rng.choice([".", ".", "?", "!"]))
    text = ", ".join(clauses) + end
    return text[0].upper() + text[1:]


def _mulaw_encode(x: np.ndarray) -> np.ndarray:
    y = np.sign(x) * np.log1p(255 * np.abs(np.clip(x, -1, 1))) / np.log(256)
    return np.round((y + 1) * 127.5).astype(np.uint8)


def _mulaw_decode(q: np.ndarray) -> np.ndarray:
    y = q.astype(np.float32) / 127.5 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log(256)) / 255).astype(np.float32)


def build_corpus(out: str | Path, minutes: float, split: str = "train", seed: int = 0,
                 progress: bool = False) -> dict:
    """Synthesize about `minutes` of speech for `split` ("train" or "eval") into one .npz at `out`.

    Deterministic in (minutes, split, seed). Returns a summary dict (utterances, seconds, bytes).
    """
    if split not in ("train", "eval"):
        raise InputError(f"split must be 'train' or 'eval', not {split!r}")
    out = Path(out)
    if not out.parent.exists():
        raise OutputError(f"folder {out.parent} does not exist")
    langs, variants = (TRAIN_LANGS, TRAIN_VARIANTS) if split == "train" else (EVAL_LANGS, EVAL_VARIANTS)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 77])
    engine = Espeak()
    target = minutes * 60 * SAMPLE_RATE
    utts: list[Utterance] = []
    total = 0
    while total < target:
        lang = str(langs[int(rng.integers(len(langs)))])
        var = str(variants[int(rng.integers(len(variants)))])
        voice = lang + (f"+{var}" if var else "")
        rate = int(rng.integers(120, 260))
        pitch = int(rng.integers(20, 90))
        prange = int(rng.integers(20, 90))
        u = engine.synth(random_text(lang, rng), voice, rate, pitch, prange)
        # trim trailing silence beyond 0.15 s, keep leading (espeak adds little)
        keep = min(len(u.audio), int((u.speech_end + 0.15) * SAMPLE_RATE))
        if keep < SAMPLE_RATE // 4 or len(u.times) == 0:
            continue
        u.audio = u.audio[:keep]
        peak = float(np.abs(u.audio).max()) or 1.0
        u.audio = u.audio * (0.9 / peak)
        utts.append(u)
        total += keep
        if progress and len(utts) % 100 == 0:
            print(f"  {len(utts)} utterances, {total / SAMPLE_RATE / 60:.1f} min")
    offsets = np.cumsum([0] + [len(u.audio) for u in utts]).astype(np.int64)
    ev_offsets = np.cumsum([0] + [len(u.times) for u in utts]).astype(np.int64)
    meta = {"split": split, "seed": seed, "minutes": minutes, "sample_rate": SAMPLE_RATE, "format": 1,
            "espeak_ng": engine.version}  # another version speaks differently: another corpus
    np.savez_compressed(
        out, audio_mulaw=_mulaw_encode(np.concatenate([u.audio for u in utts])), offsets=offsets,
        ev_offsets=ev_offsets, ev_times=np.concatenate([u.times for u in utts]).astype(np.float32),
        ev_ids=np.concatenate([u.phonemes for u in utts]).astype(np.int16),
        speech_end=np.array([u.speech_end for u in utts], np.float32), vocab=np.array(PHONEMES),
        voices=np.array([u.voice for u in utts]), langs=np.array([u.lang for u in utts]),
        texts=np.array([u.text for u in utts]), rates=np.array([u.meta["rate"] for u in utts], np.int16),
        pitches=np.array([u.meta["pitch"] for u in utts], np.int16), meta=np.array(json.dumps(meta)))
    path = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
    return {"path": str(path), "utterances": len(utts), "seconds": total / SAMPLE_RATE, "bytes": path.stat().st_size}


class SpeechCorpus:
    """A built corpus, loaded whole into memory (no espeak-ng needed).

    corpus[i] -> Utterance; len(corpus); corpus.split; corpus.seconds (total speech length).
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read speech corpus {path}: {e}") from None
        need = {"audio_mulaw", "offsets", "ev_offsets", "ev_times", "ev_ids", "vocab", "speech_end"}
        if not need <= set(d):
            raise InputError(f"{path} is not a knotanim speech corpus (missing {sorted(need - set(d))})")
        self.meta = json.loads(str(d["meta"])) if "meta" in d else {}
        self.split = self.meta.get("split", "train")
        self._audio = _mulaw_decode(d["audio_mulaw"])
        self._off, self._evo = d["offsets"], d["ev_offsets"]
        # remap ids by name so a corpus stays valid if the inventory grows
        index = {p: i for i, p in enumerate(PHONEMES)}
        remap = np.array([index.get(str(p), 1) for p in d["vocab"]], np.int16)
        self._times, self._ids = d["ev_times"], remap[d["ev_ids"]]
        self._end = d["speech_end"]
        n = len(self._off) - 1
        self._voices = d.get("voices", np.array([""] * n))
        self._langs = d.get("langs", np.array([""] * n))
        self._texts = d.get("texts", np.array([""] * n))

    def __len__(self) -> int:
        return len(self._off) - 1

    @property
    def seconds(self) -> float:
        return len(self._audio) / SAMPLE_RATE

    @property
    def voices(self) -> list[str]:
        return sorted(set(map(str, self._voices)))

    @property
    def langs(self) -> list[str]:
        return sorted(set(map(str, self._langs)))

    def __getitem__(self, i: int) -> Utterance:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        a, b = self._off[i], self._off[i + 1]
        e0, e1 = self._evo[i], self._evo[i + 1]
        return Utterance(self._audio[a:b].copy(), self._times[e0:e1].copy(), self._ids[e0:e1].copy(),
                         float(self._end[i]), str(self._voices[i]), str(self._langs[i]), str(self._texts[i]))
