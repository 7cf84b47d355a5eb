"""Language identification: detectors whose models ship inside their wheels (no download)."""
