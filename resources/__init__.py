"""Data shipped with the app: the default checkpoint, icons, demo audio (no code)."""
