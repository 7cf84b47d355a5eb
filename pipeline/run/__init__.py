"""The run's steps over paths and ids (pass 1, barrier, per-unit stages, pass 2, index feed), so
any executor can schedule them; the order comes from `pipeline.core.builder`."""
