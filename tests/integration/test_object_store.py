"""Runs whose inputs, hash lists, corpus index and run directory live on an object store.

What each backend does its own way (reading, versions, byte ranges, publishing) is tested on
every store; what the pipeline then does the same way everywhere, on S3. Each store is a real
server in its own process on 127.0.0.1 reached over HTTP by the store's fsspec backend (tests/storeservers.py): S3 (moto's server mode,
s3fs), Google Cloud Storage (gcp-storage-emulator, gcsfs) and Azure Blob Storage (Azurite, adlfs).
The run reads its inputs from one bucket and publishes into another, and what it publishes must
equal, byte for byte, what the same job writes to a local directory. Then the faults: a write
refused midway (nothing published, the rerun completes), an object changed while the run reads
it, a missing bucket, a run without its manifest, credentials the store refuses (on GCS through a
front that checks them as GCS does, tests/gcsauthproxy.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import parse_config
from pipeline.errors import OutputError, SourceError
from pipeline.executor import run_local
from pipeline.sources.base import Reader
from pipeline.storage import RemoteRunDir, drop_local_copies
from tests.conftest import REPO

SAMPLES = REPO / "data_samples"


# The session fixture (tests/conftest.py) that starts each store's server.
_SERVERS = {"s3": "s3_server", "gs": "gcs_server", "az": "azure_server"}


@dataclass
class Store:
    """One store under test: its URL scheme and an fsspec filesystem on its server."""

    scheme: str
    fs: object

    def url(self, path: str) -> str:
        return f"{self.scheme}://{path}"


def _store(request, scheme: str, tmp_path, monkeypatch) -> Store:
    """Empty buckets (containers) `in-bucket` and `out-bucket` on one store, the samples uploaded to
    <scheme>://in-bucket/samples/, and this test's own object cache."""
    import fsspec

    request.getfixturevalue(_SERVERS[scheme]).reset()
    monkeypatch.setenv("HYGIENE_CACHE_DIR", str(tmp_path / "cache"))
    fs = fsspec.filesystem(scheme)
    fs.mkdir("in-bucket")
    fs.mkdir("out-bucket")
    fs.put(str(SAMPLES / "web"), "in-bucket/samples/web", recursive=True)
    fs.put_file(str(SAMPLES / "forum.csv"), "in-bucket/samples/forum.csv")
    fs.put(str(SAMPLES / "images"), "in-bucket/samples/images", recursive=True)
    fs.put_file(str(SAMPLES / "hashlists" / "sample-list.csv"), "in-bucket/lists/sample-list.csv")
    fs.invalidate_cache()
    return Store(scheme, fs)


@pytest.fixture(params=sorted(_SERVERS))
def store(request, tmp_path, monkeypatch):
    """Every store: for what each backend does its own way (listing, versions, byte ranges, publish)."""
    return _store(request, request.param, tmp_path, monkeypatch)


@pytest.fixture
def one_store(request, tmp_path, monkeypatch):
    """S3 only: for what the pipeline does the same way on every store once reading, publishing and
    versions work there (chaining, sign-off, the command line, refused writes, a shared scratch
    space); each of those runs on S3, the store moto's server models most fully (ACLs, IAM)."""
    return _store(request, "s3", tmp_path, monkeypatch)


def _config(root: str, lists: str, out: str, state: str | None = None, **extra):
    data = {
        "sources": [
            {"name": "web", "kind": "jsonl", "paths": [f"{root}/web"], "text_field": "text", "id_field": "id"},
            {"name": "forum", "kind": "csv", "paths": [f"{root}/forum.csv"], "text_field": "text", "id_field": "id",
             "priority": 1},
            {"name": "images", "kind": "image_dir", "paths": [f"{root}/images"]},
        ],
        "safety": {"hash_lists": [{"name": "sample", "path": lists}], "trim_borders": True},
        "dedup": {"exact": {"enabled": True}, "near": {"enabled": True}},
        "output": {"dir": out},
        **extra,
    }
    if state:
        data["state"] = {"dir": state}
    return parse_config(data, "test-config")


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def _incidents(data: bytes) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "detected_at"} for line in data.splitlines()]


def _remote_outputs(fs, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {p[len(prefix) + 1:]: fs.cat_file(p) for p in fs.find(prefix)
            if p[len(prefix) + 1:].startswith(("shards/", "ledger/", "quarantine/"))}


def _local_outputs(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.relative_to(run).parts[0] in ("shards", "ledger", "quarantine")}


def _assert_incidents_access(store: Store, access: str) -> None:
    """Incidents stay owner-only where the store takes a per-object ACL (S3: a private ACL on the
    object; GCS: the predefined ACL `private` set after upload); elsewhere the manifest says that
    the bucket or container decides, naming the store."""
    if store.scheme == "s3":
        import boto3

        grants = boto3.client("s3").get_object_acl(Bucket="out-bucket", Key="runs/one/quarantine/incidents.jsonl")["Grants"]
        assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
        assert "ACL 'private'" in access
    elif store.scheme == "gs":
        import fsspec

        # The emulator takes the ACL update but keeps no ACLs: the object's metadata generation
        # shows that it was updated after its upload (the upload is generation 1).
        meta = fsspec.filesystem("gs").call("GET", "b/{}/o/{}", "out-bucket", "runs/one/quarantine/incidents.jsonl",
                                            json_out=True)
        assert meta["metageneration"] == "2"
        assert access.startswith("object ACL 'private' (owner-only) set after upload"), access
    else:
        assert access.startswith(f"the {store.scheme}:// store takes no per-object ACL"), access


def test_a_run_on_the_store_equals_the_same_run_on_local_files(store, tmp_path):
    local = run_local(_config(str(SAMPLES), str(SAMPLES / "hashlists" / "sample-list.csv"), str(tmp_path / "local")))
    run = store.url("out-bucket/runs/one")
    remote = run_local(_config(store.url("in-bucket/samples"), store.url("in-bucket/lists/sample-list.csv"),
                               run, state=store.url("out-bucket/state")))

    stored, written = _remote_outputs(store.fs, "out-bucket/runs/one"), _local_outputs(tmp_path / "local")
    incidents = [_incidents(x.pop("quarantine/incidents.jsonl")) for x in (stored, written)]
    assert _digests(stored) == _digests(written)  # shards and ledger, byte for byte
    # The incidents too, but for when they were detected and the URI of the matched image.
    assert [{**i, "uri": None} for i in incidents[0]] == [{**i, "uri": None} for i in incidents[1]]
    samples = store.url("in-bucket/samples/")
    assert all(i["uri"].startswith(samples) for i in incidents[0]), [i["uri"] for i in incidents[0]]
    assert remote["conservation"] == local["conservation"]
    assert remote["quarantine"]["count"] == local["quarantine"]["count"] >= 1
    published = json.loads(store.fs.cat_file("out-bucket/runs/one/manifest.json"))
    assert published["run_id"] == remote["run_id"]
    # The inputs are named by their URLs (as written: az://, not adlfs's abfs://), never by this
    # machine's copies.
    assert all(f["path"].startswith(samples) for f in published["inputs"])
    _assert_incidents_access(store, published["quarantine"]["access"])
    # Nothing stays behind on this machine but lock files and the chain head: no staging copy, no object copies.
    cache = Path(tmp_path / "cache")
    assert not any(p.is_file() and not p.name.startswith(".hygiene") for p in (cache / "runs").rglob("*"))
    assert not any(p.is_file() for p in (cache / "objects").rglob("*"))
    # The index on the store knows the run by its URL.
    index = json.loads(store.fs.cat_file("out-bucket/state/index.json"))
    assert [r["out_dir"] for r in index["runs"]] == [run]

    runner = CliRunner()
    verified = runner.invoke(main, ["verify", run, "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["ok"] is True
    inspected = runner.invoke(main, ["inspect", run, "--json"])
    assert inspected.exit_code == 0, inspected.output
    assert json.loads(inspected.output)["run_id"] == remote["run_id"]
    rebuilt = runner.invoke(main, ["index", "rebuild", store.url("out-bucket/state-rebuilt"), run])
    assert rebuilt.exit_code == 0, rebuilt.output
    again = json.loads(store.fs.cat_file("out-bucket/state-rebuilt/index.json"))
    assert [(r["run_id"], r["out_dir"], r["records"]) for r in again["runs"]] == \
        [(r["run_id"], r["out_dir"], r["records"]) for r in index["runs"]]


def test_a_second_run_into_the_same_location_repeats_nothing_and_chains(one_store, tmp_path):
    root, lists, state = one_store.url("in-bucket/samples"), one_store.url("in-bucket/lists/sample-list.csv"), one_store.url("out-bucket/state")
    first = run_local(_config(root, lists, one_store.url("out-bucket/runs/a"), state=state))
    # The same inputs again: every input was processed by the first run, so none is read.
    second = run_local(_config(root, lists, one_store.url("out-bucket/runs/b"), state=state))
    assert second["conservation"]["overall"]["input"] == 0
    assert {s["processed_in_run"] for s in second["skipped_inputs"]} == {first["run_id"]}
    assert second["previous_run"]["run_id"] == first["run_id"]
    assert second["previous_run"]["path"] == one_store.url("out-bucket/runs/a")
    assert CliRunner().invoke(main, ["verify", one_store.url("out-bucket/runs/b")]).exit_code == 0


def test_a_refused_write_publishes_nothing_and_the_rerun_completes(one_store, tmp_path, monkeypatch):
    run = one_store.url("out-bucket/runs/x")
    cfg = _config(one_store.url("in-bucket/samples"), one_store.url("in-bucket/lists/sample-list.csv"), run)
    real_put = RemoteRunDir._put
    calls = {"n": 0}

    def refuse_third(self, src, rel):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OutputError(f"{self.where(rel)}: cannot upload: access denied (injected)")
        return real_put(self, src, rel)

    monkeypatch.setattr(RemoteRunDir, "_put", refuse_third)
    with pytest.raises(OutputError, match="injected"):
        run_local(cfg)
    one_store.fs.invalidate_cache()
    assert not one_store.fs.exists("out-bucket/runs/x/manifest.json")  # unfinished, and readers say so
    refused = CliRunner().invoke(main, ["verify", run])
    assert refused.exit_code == 2 and "unfinished" in refused.output

    monkeypatch.setattr(RemoteRunDir, "_put", real_put)
    manifest = run_local(cfg)
    assert manifest["run_id"]
    assert CliRunner().invoke(main, ["verify", run]).exit_code == 0


def test_an_object_changed_during_the_run_stops_it(store, tmp_path):
    cfg = _config(store.url("in-bucket/samples"), store.url("in-bucket/lists/sample-list.csv"), store.url("out-bucket/runs/y"))
    changed = {"done": False}

    def change_an_input(step, result):
        if not changed["done"]:
            changed["done"] = True
            store.fs.pipe_file("in-bucket/samples/forum.csv", b"id,text\n1,a different file\n")

    with pytest.raises(SourceError, match=f"{store.url('in-bucket/samples/forum.csv')}: the object changed"):
        run_local(cfg, on_unit=change_an_input)
    store.fs.invalidate_cache()
    assert not store.fs.exists("out-bucket/runs/y/manifest.json")


def test_a_missing_bucket_is_named(store, tmp_path):
    cfg = _config(store.url("no-such-bucket/samples"), store.url("in-bucket/lists/sample-list.csv"), str(tmp_path / "out"))
    with pytest.raises(SourceError, match=f"{store.url('no-such-bucket/samples/web')}: no such object or prefix"):
        run_local(cfg)


def test_signoff_on_a_stored_run_records_it_there(one_store, tmp_path):
    run = one_store.url("out-bucket/runs/s")
    run_local(_config(one_store.url("in-bucket/samples"), one_store.url("in-bucket/lists/sample-list.csv"), run))
    policy = REPO / "configs" / "policy-dedup-only.yaml"
    out = CliRunner().invoke(main, ["signoff", run, "--policy", str(policy), "--approver", "Ada"])
    assert out.exit_code == 1, out.output  # evaluated (this policy fails an unsigned run), and recorded
    assert "pass verify" in out.output and "sign-off FAILED" in out.output
    one_store.fs.invalidate_cache()
    records = one_store.fs.find("out-bucket/runs/s/signoffs")
    assert len(records) == 1
    assert json.loads(one_store.fs.cat_file(records[0]))["approver"] == "Ada"


def test_the_command_line_reads_and_writes_urls(one_store, tmp_path):
    """`hygiene run --input s3://... --output s3://...` finds the same sources as a local folder
    (one per format under the prefix) and publishes the same ledger."""
    import polars as pl

    config = REPO / "examples" / "stages" / "config.yaml"
    runner = CliRunner()
    local = runner.invoke(main, ["run", str(config), "--no-prefect", "--input", str(SAMPLES / "web"),
                                 "--input", str(SAMPLES / "forum.csv"), "--output", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    remote = runner.invoke(main, ["run", str(config), "--no-prefect", "--input", one_store.url("in-bucket/samples/web"),
                                  "--input", one_store.url("in-bucket/samples/forum.csv"), "--output", one_store.url("out-bucket/runs/cli")])
    assert remote.exit_code == 0, remote.output
    assert one_store.url("out-bucket/runs/cli") in remote.output
    one_store.fs.invalidate_cache()
    stored = pl.concat([pl.read_parquet(one_store.fs.cat_file(p)) for p in sorted(one_store.fs.find("out-bucket/runs/cli/ledger"))])
    written = pl.read_parquet(str(tmp_path / "local" / "ledger" / "*.parquet"))
    assert stored.equals(written)


def test_refused_credentials_are_named_with_what_to_check(s3_server, tmp_path, monkeypatch):
    """A server that checks credentials (and knows none of ours): reading an input and publishing
    a run both fail with an error naming the URL and the credentials, and nothing is published."""
    from tests.s3server import S3Server

    monkeypatch.setenv("HYGIENE_CACHE_DIR", str(tmp_path / "cache"))
    strict = S3Server.start(authenticate=True)
    try:
        _assert_refused("s3", "(AWS_PROFILE", tmp_path)
    finally:
        strict.stop()


def _assert_refused(scheme: str, credentials: str, tmp_path) -> None:
    """Listing the inputs, reading a hash list and publishing a run are each refused with a message
    naming the URL and where the store's client looks for credentials."""
    lists = str(SAMPLES / "hashlists" / "sample-list.csv")
    with pytest.raises(SourceError, match=rf"{scheme}://in-bucket/samples/web: cannot list the objects: access denied: "
                                          rf"check the credentials {re.escape(credentials)}"):
        run_local(_config(f"{scheme}://in-bucket/samples", lists, str(tmp_path / "out")))
    with pytest.raises(SourceError, match=rf"{scheme}://in-bucket/lists/sample-list.csv: cannot read this object: access denied"):
        run_local(_config(str(SAMPLES), f"{scheme}://in-bucket/lists/sample-list.csv", str(tmp_path / "out")))
    with pytest.raises(OutputError, match=rf"{scheme}://out-bucket/runs/z.*access denied"):
        run_local(_config(str(SAMPLES), lists, f"{scheme}://out-bucket/runs/z"))


def test_refused_credentials_on_azure_are_named_like_on_s3(request, tmp_path, monkeypatch):
    """Azurite checks every request's shared-key signature. With a wrong account key the Azure SDK
    raises its own HttpResponseError (not an OSError, as s3fs's and gcsfs's are); it still
    becomes the message that names the URL and the credentials to check, never a traceback.
    (The GCS servers check no credentials: GCS's test puts a front before them that does.)"""
    from adlfs import AzureBlobFileSystem

    from tests.storeservers import AZURITE_KEY

    _store(request, "az", tmp_path, monkeypatch)
    good = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", good.replace(AZURITE_KEY, "A" * 86 + "=="))
    AzureBlobFileSystem.clear_instance_cache()  # fsspec reuses a filesystem made with the good key
    try:
        _assert_refused("az", "(AZURE_STORAGE_CONNECTION_STRING", tmp_path)
    finally:
        AzureBlobFileSystem.clear_instance_cache()


# Service accounts known to the credential-checking GCS front (tests/gcsauthproxy.py).
_GCS_READER = "reader@hygiene-test.iam.gserviceaccount.com"  # may reach every bucket
_GCS_OUTSIDER = "outsider@hygiene-test.iam.gserviceaccount.com"  # a valid key, granted no bucket
_GCS_DELETED = "deleted@hygiene-test.iam.gserviceaccount.com"  # a key the token endpoint refuses
_SAMPLE_LIST = SAMPLES / "hashlists" / "sample-list.csv"


@pytest.fixture
def gcs_front(request, tmp_path, monkeypatch):
    """The GCS store of `_store`, now reached through a front that checks credentials as GCS does;
    the front is stopped after the test (also when it fails)."""
    from tests.storeservers import GcsAuthFront

    store = _store(request, "gs", tmp_path, monkeypatch)
    front = GcsAuthFront.start(request.getfixturevalue("gcs_server"), {_GCS_READER: ["*"], _GCS_OUTSIDER: []})
    try:
        yield front, store
    finally:
        front.stop()


def _sign_in_gcs(front, account: str, folder: Path, monkeypatch) -> None:
    """gcsfs finds its credentials as it would on a user's machine: no token given, so Google's
    default chain, which reads the service-account key file that GOOGLE_APPLICATION_CREDENTIALS names."""
    import fsspec.config
    from gcsfs import GCSFileSystem

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(front.service_account_key(account, folder)))
    monkeypatch.setitem(fsspec.config.conf["gs"], "token", None)
    GCSFileSystem.clear_instance_cache()


def _published_on_gcs(front, prefix: str) -> list[str]:
    """What the server behind the front holds under `prefix` (asked directly, anonymously)."""
    from gcsfs import GCSFileSystem

    server = GCSFileSystem(token="anon", endpoint_url=front.upstream.endpoint, skip_instance_cache=True)
    return server.find(prefix)


def _skip_gcsfs_backoff(monkeypatch) -> None:
    """gcsfs retries a 401 "Invalid Credentials" (in case a token expired in flight) 5 times, waiting
    1, 2, 4, 8 and 16 s plus jitter: measured here, each refused request took about 34 s (102.6 s for
    the three of `_assert_refused`). The requests are still made, all of them; only the waits go."""
    import types

    import gcsfs.retry

    async def no_wait(seconds: float) -> None:
        return None

    monkeypatch.setattr(gcsfs.retry, "asyncio", types.SimpleNamespace(sleep=no_wait))


@pytest.mark.parametrize("account", [None, _GCS_OUTSIDER, _GCS_DELETED], ids=["anonymous", "no-access", "deleted-key"])
def test_refused_credentials_on_gcs_are_named_like_on_s3(gcs_front, account, tmp_path, monkeypatch):
    """GCS's answers through a front that checks credentials: 401 to a caller without credentials
    (gcsfs goes anonymous when it finds none), 403 to an account whose valid key reaches no bucket,
    and 401 "Invalid Credentials" when the token endpoint refuses the key (deleted or revoked).
    Each is the message that names the URL and where gcsfs looks for credentials; nothing is published."""
    front, _ = gcs_front
    if account is not None:
        _sign_in_gcs(front, account, tmp_path, monkeypatch)
    if account == _GCS_DELETED:
        _skip_gcsfs_backoff(monkeypatch)
    _assert_refused("gs", "(GOOGLE_APPLICATION_CREDENTIALS", tmp_path)
    assert _published_on_gcs(front, "out-bucket/runs") == []
    with pytest.raises(SourceError) as refused:
        run_local(_config("gs://in-bucket/samples", str(_SAMPLE_LIST), str(tmp_path / "out")))
    assert ("the request carried none" in str(refused.value)) == (account is None)


def test_a_granted_account_runs_through_the_gcs_front(gcs_front, tmp_path, monkeypatch):
    """The refusals above come from the credentials: the same front lets an account with access read
    the inputs and publish the run."""
    front, _ = gcs_front
    _sign_in_gcs(front, _GCS_READER, tmp_path, monkeypatch)
    run_local(_config("gs://in-bucket/samples", str(_SAMPLE_LIST), "gs://out-bucket/runs/ok"))
    assert "out-bucket/runs/ok/manifest.json" in _published_on_gcs(front, "out-bucket/runs/ok")


def test_a_scratch_space_on_the_store_gives_the_same_run(one_store, tmp_path):
    """`runner.scratch: store`: the steps run on a copy of the scratch space that is exchanged with
    the store (as on workers that share no filesystem); PII runs in its own tasks on that copy too.
    The published shards and ledger equal the local run's, and no scratch is left on the store."""
    pii = {"entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"], "residual_scan": {"enabled": False}}
    local = run_local(_config(str(SAMPLES), str(SAMPLES / "hashlists" / "sample-list.csv"), str(tmp_path / "local"),
                              pii=pii))
    shared = run_local(_config(one_store.url("in-bucket/samples"), one_store.url("in-bucket/lists/sample-list.csv"),
                               one_store.url("out-bucket/runs/shared"), pii=pii, runner={"scratch": "store"}))
    stored, written = _remote_outputs(one_store.fs, "out-bucket/runs/shared"), _local_outputs(tmp_path / "local")
    for x in (stored, written):
        x.pop("quarantine/incidents.jsonl")
    assert _digests(stored) == _digests(written)
    assert shared["conservation"] == local["conservation"]
    one_store.fs.invalidate_cache()
    assert not one_store.fs.exists("out-bucket/runs/shared/_work")
    assert CliRunner().invoke(main, ["verify", one_store.url("out-bucket/runs/shared")]).exit_code == 0


def test_a_unit_of_a_large_object_fetches_only_its_byte_range(store, tmp_path):
    """Objects cut into many units (16 KiB here): each unit copies only its byte range (a sparse
    local file), and the run still equals the local one byte for byte."""
    units = {"target_bytes": 16 * 1024}
    local = run_local(_config(str(SAMPLES), str(SAMPLES / "hashlists" / "sample-list.csv"), str(tmp_path / "local"),
                              units=units))
    copies: set[str] = set()

    def look(step, result):
        copies.update(p.name for p in (tmp_path / "cache" / "objects").rglob("part-0.jsonl*") if p.is_file())

    # On a worker that did not plan the run: no whole copy of the object here.
    real_plan_inputs = Reader.plan_inputs

    def plan_then_forget(self, source, inputs, *args, **kwargs):
        planned = real_plan_inputs(self, source, inputs, *args, **kwargs)
        drop_local_copies([f.path for f in inputs])
        return planned

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Reader, "plan_inputs", plan_then_forget)
        remote = run_local(_config(store.url("in-bucket/samples"), store.url("in-bucket/lists/sample-list.csv"),
                                   store.url("out-bucket/runs/ranges"), units=units), on_unit=look)
    assert remote["units"] == local["units"] >= 8
    ranges = {c for c in copies if ".range-" in c and not c.endswith(".hygiene-etag")}
    assert len(ranges) >= 5, copies  # part-0.jsonl (114 KiB) read as ranges by its units
    stored, written = _remote_outputs(store.fs, "out-bucket/runs/ranges"), _local_outputs(tmp_path / "local")
    for x in (stored, written):
        x.pop("quarantine/incidents.jsonl")
    assert _digests(stored) == _digests(written)
