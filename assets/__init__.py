"""Bundled model and example files (installed as knotanim.assets)."""
