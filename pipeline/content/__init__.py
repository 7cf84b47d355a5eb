"""Readers of what a record's content says about itself (e.g. an image's provenance metadata)."""
