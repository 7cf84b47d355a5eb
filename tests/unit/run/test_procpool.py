"""When a GIL-bound per-unit stage gets worker processes: by the work its tasks were cut by."""

import json

import pytest

from pipeline.run.procpool import POOL_MIN_BYTES, pool_workers


def _planned(tmp_path, records: int, text_bytes: int) -> str:
    path = tmp_path / "stages" / "pii" / "tasks.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"stage": "pii", "target_bytes": 1 << 20, "records": records,
                                "text_bytes": text_bytes, "tasks": []}))
    return str(tmp_path)


@pytest.mark.parametrize("records, text_bytes, expected", [
    (2_000, POOL_MIN_BYTES, 2),            # enough text
    (100, POOL_MIN_BYTES // 2, 1),         # a small corpus: the calling process
    # many one-line records: little text, but their per-record cost is the work of several cores
    (100_000, POOL_MIN_BYTES // 2, 2),
])
def test_pool_by_text_and_records(tmp_path, records, text_bytes, expected):
    assert pool_workers(_planned(tmp_path, records, text_bytes), "pii", 2) == expected
