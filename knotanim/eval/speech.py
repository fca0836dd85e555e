"""Held-out speech for KnotBench clips: eval-split languages and voices only, seeded per clip.

A clip needs speech for its whole length (make_clip places one utterance; silence elsewhere), so
`EvalSpeech.for_clip(seed, seconds)` joins utterances with short pauses into one `Utterance`
slightly longer than the clip. Utterances come from an eval-split `SpeechCorpus` (.npz built by
`knotanim data build-speech --split eval`; needed where espeak-ng is absent, e.g. the accelerator
machine) or, without one, are synthesised with espeak-ng from the eval languages and voice variants.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from knotanim.errors import ConfigError, InputError

PAUSE_S = (0.15, 0.6)  # silence between joined utterances, seconds (uniform)


class EvalSpeech:
    """Source of held-out speech. corpus: None (espeak-ng), a path to an eval .npz, or a SpeechCorpus."""

    def __init__(self, corpus=None) -> None:
        from knotanim.data.corpus import SpeechCorpus

        if isinstance(corpus, (str, Path)):
            corpus = SpeechCorpus(corpus)
        if corpus is not None and getattr(corpus, "split", "eval") != "eval":
            raise ConfigError(f"KnotBench needs an eval-split speech corpus (held-out voices and languages), "
                              f"this one is {corpus.split!r}")
        if corpus is not None and not len(corpus):
            raise InputError(f"the eval speech corpus {getattr(corpus, 'path', '')} holds no utterances")
        self.corpus = corpus
        self._engine = None  # one espeak-ng engine, created on first use (the library is per process)
        if corpus is None:  # check now that espeak-ng is there, not after a model has loaded
            from knotanim.data.speech import Espeak

            try:
                Espeak._load()
            except InputError as e:
                raise InputError(f"KnotBench needs held-out speech, and there is neither an eval corpus nor espeak-ng "
                                 f"here ({e}). Build a corpus where espeak-ng exists: `knotanim data build-speech "
                                 f"--split eval --minutes 10 --out speech_eval.npz`, and pass it: `knotanim eval "
                                 f"--corpus speech_eval.npz` (run_knotbench(corpus=...))") from None

    def describe(self) -> dict:
        """Where the held-out speech comes from, for the report: the corpus's build settings (its espeak-ng version
        where it recorded one) and size, or live espeak-ng and its version. The clips depend on all of it: the same
        seed picks other utterances from a corpus of another size or another espeak-ng."""
        if self.corpus is not None:
            return {"source": "corpus", "path": str(getattr(self.corpus, "path", "")),
                    "utterances": len(self.corpus), **getattr(self.corpus, "meta", {})}
        from knotanim.data.speech import Espeak, version_of
        return {"source": "espeak-ng", "espeak_ng": version_of(Espeak._load())}

    def _utterance(self, rng: np.random.Generator):
        if self.corpus is not None and len(self.corpus):
            return self.corpus[int(rng.integers(len(self.corpus)))]
        from knotanim.data.corpus import EVAL_LANGS, EVAL_VARIANTS, random_text
        from knotanim.data.speech import Espeak

        if self._engine is None:
            self._engine = Espeak()
        lang = str(EVAL_LANGS[int(rng.integers(len(EVAL_LANGS)))])
        var = str(EVAL_VARIANTS[int(rng.integers(len(EVAL_VARIANTS)))])
        u = self._engine.synth(random_text(lang, rng), lang + (f"+{var}" if var else ""),
                               int(rng.integers(120, 260)), int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        keep = min(len(u.audio), int((u.speech_end + 0.15) * 16000))
        u.audio = u.audio[:keep] * (0.9 / (float(np.abs(u.audio[:keep]).max(initial=0.0)) or 1.0))
        return u

    def for_clip(self, seed: int, seconds: float):
        """One `Utterance` of at least `seconds` + 0.5 s: utterances joined by pauses (a pause event,
        phoneme id 0, marks each gap so the mouth closes). Deterministic in (seed, corpus)."""
        from knotanim.data.speech import SAMPLE_RATE, Utterance

        rng = np.random.default_rng([int(seed), 0x5EEC])
        audio, times, ids, langs = [], [], [], []
        t = 0.0
        end = 0.0
        while t < seconds + 0.5:
            u = self._utterance(rng)
            if len(u.audio) == 0:
                continue
            audio.append(np.asarray(u.audio, np.float32))
            times.append(np.asarray(u.times, np.float64) + t)
            ids.append(np.asarray(u.phonemes, np.int64))
            end = t + float(u.speech_end)
            langs.append(u.lang)
            t += len(u.audio) / SAMPLE_RATE
            audio.append(np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), np.float32))
            times.append(np.array([end]))
            ids.append(np.array([0]))
            t += len(audio[-1]) / SAMPLE_RATE
        return Utterance(np.concatenate(audio), np.concatenate(times).astype(np.float32),
                         np.concatenate(ids).astype(np.int16), end, "", ",".join(sorted(set(langs))), "")
