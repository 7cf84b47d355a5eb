"""Prohibited-material safety: hash lists, safe image decoding, perceptual hashes, indexes, matching."""
