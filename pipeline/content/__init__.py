"""Content kernels behind the content-filter stages: what an image's metadata says about its provenance,
adult-content detection, term lists."""
