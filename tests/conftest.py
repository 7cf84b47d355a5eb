"""Shared fixtures: building configs and running the pipeline without Prefect."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# gcsfs reads this when it is imported: its experimental file system asks Google's gRPC control API
# for each bucket's layout, which the GCS test server does not serve (tests/storeservers.py).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from pipeline.config import RunConfig, parse_config  # noqa: E402
from pipeline.executor import run_local  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Property tests assert decisions, never wall time: a first example that pays for imports or a
# loaded CI machine must not fail Hypothesis's default 200 ms deadline.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("hygiene", deadline=None)
_hypothesis_settings.load_profile("hygiene")
SHARED_DATA = REPO.parent / "shared" / "data"


def build_config(out_dir: Path, sources: list[dict], **overrides) -> RunConfig:
    """A validated RunConfig writing into `out_dir`; `overrides` are top-level sections."""
    data = {"sources": sources, "output": {"dir": str(out_dir)}, **overrides}
    return parse_config(data, "test-config")


def run_one_stage(root: Path, rows: list[dict], stage: dict, **sections) -> tuple[dict, Path]:
    """`rows` as one JSONL source (`id` the id field) under `root/in`, run with safety and `stage`
    (a `stages:` entry) into `root/out`; `sections`: other config sections (e.g. `state`).
    Returns (manifest, run directory)."""
    import json

    d = root / "in"
    d.mkdir(parents=True)
    (d / "000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "out"
    manifest = run_local(parse_config({
        "sources": [{"name": "s", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}],
        "output": {"dir": str(out)}, "stages": [{"kind": "safety"}, stage], **sections}))
    return manifest, out


def _serving(server_class):
    """Start a store's test server, yield it, and stop it (only the process it started)."""
    server = server_class.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 for the tests that ask for it;
    the AWS variables point at it while it runs (child processes inherit them)."""
    from tests.s3server import S3Server

    yield from _serving(S3Server)


@pytest.fixture(scope="session")
def gcs_server():
    """A GCS JSON API server (gcp-storage-emulator, in memory) on 127.0.0.1; gcsfs reaches it
    anonymously through STORAGE_EMULATOR_HOST while it runs."""
    from tests.storeservers import GcsServer

    yield from _serving(GcsServer)


@pytest.fixture
def fake_gcs_server():
    """fake-gcs-server (Go, in memory; it starts in a fraction of a second) on 127.0.0.1, reached
    like `gcs_server`: the GCS server of the tests that need preconditions (create only if absent).
    Per test: it points STORAGE_EMULATOR_HOST at itself while the test runs, and gives it back to
    the session's `gcs_server` after."""
    from tests.storeservers import FakeGcsServer

    yield from _serving(FakeGcsServer)


@pytest.fixture(scope="session")
def azure_server():
    """Azurite's blob service (in memory) on 127.0.0.1; adlfs reaches it through
    AZURE_STORAGE_CONNECTION_STRING while it runs. Skipped where node or Azurite is missing
    (`make azurite` installs it into .tools/)."""
    from tests.storeservers import AzuriteServer, azurite_command

    if azurite_command() is None:
        pytest.skip("Azurite is not installed (needs node; `make azurite` installs it from npm into .tools/)")
    yield from _serving(AzuriteServer)


@pytest.fixture(scope="session", autouse=True)
def _local_prefect_api_home(tmp_path_factory):
    """A local Prefect API that any test starts (`hygiene run` outside the e2e harness) lives in a
    temporary home and is stopped when the session ends: the suite never touches the user's own
    server and never leaves one running."""
    from flows.api_server import HOME_ENV, stop_server

    home = tmp_path_factory.mktemp("hygiene-prefect")
    before = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(home)
    yield home
    stop_server(home)
    if before is None:
        os.environ.pop(HOME_ENV, None)
    else:
        os.environ[HOME_ENV] = before


@pytest.fixture
def run_pipeline(tmp_path):
    """Run sources through the local executor; returns (manifest, ledger frame, shards frame)."""

    def _run(sources: list[dict], out: Path | None = None, **overrides):
        out = out or tmp_path / "run"
        manifest = run_local(build_config(out, sources, **overrides))
        ledger = pl.read_parquet(str(out / "ledger" / "*.parquet"))
        shard_files = sorted((out / "shards").glob("*.parquet"))
        shards = pl.concat([pl.read_parquet(f) for f in shard_files], how="diagonal") if shard_files else pl.DataFrame()
        return manifest, ledger, shards

    return _run


@pytest.fixture(autouse=True)
def _free_memory_spills(request):
    """Tests that stop a run midway leave its memory spill (RAM) behind: removed after the test.
    Only tests with a `tmp_path` run pipelines; no temporary directory is made for the others."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is None:
        return
    import json
    import shutil

    from pipeline.spill import memory_spill_base

    base = memory_spill_base()
    if not base.is_dir():
        return
    root = str(tmp.resolve())
    for d in base.iterdir():
        try:
            owner = json.loads((d / "owner.json").read_text())["work_dir"]
        except (OSError, ValueError, KeyError):
            continue
        if owner.startswith(root):
            shutil.rmtree(d, ignore_errors=True)
