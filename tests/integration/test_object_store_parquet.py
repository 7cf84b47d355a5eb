"""Parquet objects on real S3, GCS and Azure servers (`tests/storeservers.py`): a unit of row
groups fetches the object's footer and its own column chunks only (a sparse local copy at the same
offsets), and the run equals the same run on the local file byte for byte; an object that is not
Parquet is still named in a clear error."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.errors import PipelineError
from pipeline.executor import run_local
from pipeline.sources.base import Reader
from pipeline.storage import drop_local_copies
from tests.integration.test_object_store import store  # noqa: F401 - the fixture: S3, GCS and Azure servers

ROW_GROUPS = 24


def _parquet(path: Path) -> None:
    """ROW_GROUPS row groups of 200 rows, a dictionary-encoded column among them, with exact copies
    across row groups (so that units' decisions depend on each other)."""
    rng = random.Random(3)
    texts = [" ".join(f"w{rng.randrange(3000)}" for _ in range(40)) for _ in range(3000)]
    n = ROW_GROUPS * 200
    table = pa.table({"id": [f"r{i}" for i in range(n)], "text": [texts[rng.randrange(3000)] for _ in range(n)],
                      "lang": [rng.choice(["en", "fr", "de"]) for _ in range(n)]})
    pq.write_table(table, path, row_group_size=200, use_dictionary=["lang"])


def _config(path: str, out: str):
    return parse_config({
        "sources": [{"name": "t", "kind": "parquet", "paths": [path], "text_field": "text", "id_field": "id"}],
        "dedup": {"exact": {"enabled": True}, "near": {"enabled": True}},
        "units": {"target_rows": 600},
        "output": {"dir": out},
    }, "test-config")


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


def test_a_unit_of_a_parquet_object_fetches_its_row_groups_only(store, tmp_path):
    local_file = tmp_path / "data.parquet"
    _parquet(local_file)
    store.fs.put_file(str(local_file), "in-bucket/data/data.parquet")
    local = run_local(_config(str(local_file), str(tmp_path / "local")))

    fetched: dict[str, int] = {}

    def look(step, result):  # the sparse copies this machine holds, and the disk they take
        for p in (tmp_path / "cache" / "objects").rglob("data.parquet.range-*"):
            if not p.name.endswith(".hygiene-etag"):
                fetched[p.name] = p.stat().st_blocks * 512

    real_plan_inputs = Reader.plan_inputs

    def plan_then_forget(self, source, inputs, *args, **kwargs):  # as on a worker that did not plan
        planned = real_plan_inputs(self, source, inputs, *args, **kwargs)
        drop_local_copies([f.path for f in inputs])
        return planned

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Reader, "plan_inputs", plan_then_forget)
        remote = run_local(_config(store.url("in-bucket/data/data.parquet"), store.url("out-bucket/runs/pq")), on_unit=look)

    assert remote["units"] == local["units"] == ROW_GROUPS // 3
    size = local_file.stat().st_size
    units = [v for k, v in fetched.items() if not k.endswith(f"-{size}")]  # the footer tail alone ends at the size
    assert len(units) >= ROW_GROUPS // 3 - 1, fetched
    assert max(units) < size / 2  # a unit's copy holds its three row groups and the footer, not the object
    out = tmp_path / "pulled"
    store.fs.invalidate_cache()
    store.fs.get("out-bucket/runs/pq", str(out), recursive=True)
    assert _digests(out) == _digests(tmp_path / "local") and _digests(out)


def test_an_object_that_is_not_parquet_is_named(store, tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1" + b"x" * 5000)
    store.fs.put_file(str(junk), "in-bucket/data/junk.parquet")
    with pytest.raises(PipelineError, match="junk.parquet"):
        run_local(_config(store.url("in-bucket/data/junk.parquet"), str(tmp_path / "out")))
