"""Decoding, the sizes shared with the model's vocoders, and the audition player (numpy; no torch)."""
