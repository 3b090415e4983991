"""Leaf helpers every layer may use: digests, atomic files, progress, host fingerprint, tokenizing, test seams. No ML library at import time."""
