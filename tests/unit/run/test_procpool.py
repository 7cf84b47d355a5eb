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


def _engine_loaded() -> tuple[int, bool]:
    """In a pool process: its pid, and whether a PII stage there has its engine loaded."""
    import os

    from pipeline.core.runtime import _INSTANCES

    return os.getpid(), any(getattr(s, "_engine", None) is not None for (_d, kind), s in _INSTANCES.items()
                            if kind == "pii")


def test_a_warmed_pool_has_a_process_per_worker_with_the_model_loaded(tmp_path, monkeypatch):
    """`warm_pool` starts the processes a PII run will use and loads the model in them before the
    stage's step (here right after planning); below POOL_MIN_BYTES of input it starts nothing."""
    import pipeline.run.procpool as pool
    from pipeline.core.builder import build_steps
    from pipeline.plan import make_plan
    from tests.conftest import build_config

    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": f"Ann Lee wrote {i}."}) + "\n"
                                       for i in range(50)))
    cfg = build_config(tmp_path / "out", [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}],
                       pii={}, runner={"max_workers": 2})
    work = str(make_plan(cfg, max_workers=2).work_dir)
    pool.shutdown()
    try:
        pool.warm_pool(work, build_steps(cfg), 2)   # 50 short records: far below POOL_MIN_BYTES
        assert pool._POOL is None
        monkeypatch.setattr(pool, "POOL_MIN_BYTES", 0)
        pool.warm_pool(work, build_steps(cfg), 2)
        assert len(pool._POOL._processes) == 2
        # each process handles its calls in turn: probes sent after the warm-up see it done
        probes = [pool._POOL.submit(_engine_loaded) for _ in range(4)]
        assert all(loaded for _pid, loaded in (p.result(timeout=300) for p in probes))
    finally:
        pool.shutdown()
