"""Benchmark decontamination: normalised word n-grams of benchmark test items, indexed once, and a
compiled scan that finds them in records (`pipeline.stages.decontaminate`)."""
