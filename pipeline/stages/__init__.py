"""Built-in stages, one module each, on the contract of `pipeline.core.stage`."""
