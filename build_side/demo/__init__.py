"""`slmops demo`: the whole story on one machine, on embedded defaults (see story.py)."""
