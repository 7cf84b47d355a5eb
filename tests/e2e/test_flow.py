"""The real Prefect flow on data_samples/: thread and Dask runners, shards, ledger and manifest agree."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import load_config, parse_config
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def sample(out: Path, runner: str):
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(out)
    data["runner"]["kind"] = runner
    return parse_config(data)


def digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


@pytest.fixture(scope="module")
def thread_run(tmp_path_factory):
    from flows.clean import run_flow

    out = tmp_path_factory.mktemp("e2e") / "thread"
    return out, run_flow(sample(out, "thread"))


def test_the_flow_publishes_a_balanced_run_whose_files_match_the_manifest(thread_run):
    out, manifest = thread_run
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["conservation"]["balanced"]
    ledger = pl.read_parquet(str(out / "ledger" / "*.parquet"))
    shards = pl.read_parquet(str(out / "shards" / "*.parquet"))
    assert ledger.height == manifest["conservation"]["overall"]["input"]
    assert shards.height == manifest["conservation"]["overall"]["kept"] == ledger.filter(pl.col("decision").is_in(["kept", "kept_redacted"])).height
    for f in manifest["outputs"]["shards"] + manifest["outputs"]["ledger"]:
        assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert manifest["tool_versions"]["prefect"]


def test_the_dask_runner_gives_byte_identical_shards_and_ledger(thread_run, tmp_path):
    from flows.clean import run_flow

    out, _ = thread_run
    dask_out = tmp_path / "dask"
    run_flow(sample(dask_out, "dask"))
    assert digests(dask_out) == digests(out)


def test_the_flow_fails_and_publishes_nothing_when_rejections_are_not_allowed(tmp_path):
    from flows.clean import run_flow
    from pipeline.errors import RejectionsError

    cfg = sample(tmp_path / "strict", "thread")
    cfg = parse_config({**cfg.model_dump(mode="json"), "errors": {"fail_on_reject": True, "on_file_error": "fail"}})
    with pytest.raises(RejectionsError):
        run_flow(cfg)
    assert not (tmp_path / "strict" / "manifest.json").exists()
