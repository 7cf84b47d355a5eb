"""Reading the barrier's partition outputs back by ranges of `_i`: what a filter of all of them gives."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.run.workdir import SortedParts

SCHEMA = {"_i": pl.Int64, "decision": pl.String}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sets(st.integers(0, 300), max_size=80), min_size=1, max_size=4),
       st.sets(st.integers(1, 300), max_size=8), st.integers(1, 17))
def test_ranges_taken_in_order_give_each_file_s_rows_of_that_range(tmp_path_factory, files, cuts, batch):
    d = tmp_path_factory.mktemp("parts")
    paths = []
    for k, positions in enumerate(files):
        i = np.array(sorted(positions), dtype=np.int64)
        paths.append(d / f"p{k:05d}.parquet")
        pl.DataFrame({"_i": i, "decision": [f"d{k}"] * len(i)}, schema=SCHEMA).write_parquet(paths[-1])
    every = pl.concat([pl.read_parquet(p) for p in paths])
    parts = SortedParts(paths, SCHEMA, batch)
    assert parts.rows == every.height
    bounds = [0, *sorted(cuts), 301]
    for first, last in zip(bounds[:-1], bounds[1:]):
        taken = parts.take(first, last)
        assert taken.equals(every.filter(pl.col("_i").is_between(first, last - 1)))


def test_the_rows_read_side_by_side_do_not_grow_with_the_number_of_files():
    from pipeline.run.workdir import MAX_BATCH_ROWS, MIN_BATCH_ROWS, ROWS_IN_FLIGHT, batch_rows

    assert batch_rows(1) == MAX_BATCH_ROWS
    assert batch_rows(0) == MAX_BATCH_ROWS
    for files in (16, 100, ROWS_IN_FLIGHT // MIN_BATCH_ROWS):
        assert batch_rows(files) * files <= ROWS_IN_FLIGHT
    assert batch_rows(10_000) == MIN_BATCH_ROWS  # a floor: then it is the files that grow


def test_a_step_that_opens_many_files_raises_its_soft_limit_or_says_what_to_do():
    import os
    import resource

    import pytest

    from pipeline.errors import PipelineError
    from pipeline.run.workdir import allow_open_files

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = len(os.listdir("/proc/self/fd")) + 64
    if hard != resource.RLIM_INFINITY and hard < low + 1_000:
        pytest.skip(f"the hard limit ({hard}) leaves no room to test")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        allow_open_files(1_000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1_256
        allow_open_files(10)   # never lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1_256
        if hard != resource.RLIM_INFINITY:
            with pytest.raises(PipelineError, match=r"raise the hard limit to at least"):
                allow_open_files(hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
