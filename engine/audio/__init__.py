"""Decoding, transforms and the audition player (numpy; no torch)."""
