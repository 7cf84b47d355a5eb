"""Content screening kernels behind the content-filter stages (adult-content detection, term lists)."""
