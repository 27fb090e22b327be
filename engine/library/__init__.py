"""The catalogue, the per-subspace vector stores and indexes, scanning and queries."""
