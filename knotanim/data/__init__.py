"""Synthetic training data: procedural and photo portraits animated by espeak-ng speech.

    from knotanim.data import Clip, make_clip, SpeechCorpus, Utterance, synthesize_speech
"""
from knotanim.data.clips import Clip, make_clip
from knotanim.data.corpus import SpeechCorpus, build_corpus
from knotanim.data.speech import Utterance, synthesize_speech

__all__ = ["Clip", "make_clip", "SpeechCorpus", "Utterance", "synthesize_speech", "build_corpus"]
