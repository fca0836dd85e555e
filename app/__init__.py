"""Desktop app (installed as knotanim.app)."""
