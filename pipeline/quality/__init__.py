"""Quality heuristics (Gopher, C4, FineWeb) as pure functions over batches of texts, matching datatrove 0.10.1."""
