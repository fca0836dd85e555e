"""Inference backends and export (installed as knotanim.engines)."""
