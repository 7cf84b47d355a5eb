"""Objects on fsspec stores (s3://, gs://, az://, ...): the run's inputs, hash lists and run directories.

The readers, the hash-list loader and the audit tools work on local files (they memory-map,
seek and rename), so an object store is reached through local copies, made and checked here:

- an input object is copied once per machine into the object cache
  (`$HYGIENE_CACHE_DIR/objects/<protocol>/<bucket>/<key>`, default `~/.cache/hygiene`), beside a
  sidecar with the ETag it was copied at. The copy is reused only while the object still has
  that ETag; an object whose ETag differs from the one the run planned with is an error naming
  it ("changed while the run read it"), never a silent mix of two versions;
- a run whose output directory is a URL is computed and published into a local staging copy
  (`output.local_dir`, default `$HYGIENE_CACHE_DIR/runs/<protocol>/<bucket>/<key>`), then
  uploaded by `RemoteRunDir.push`: every file first, `manifest.json` last. Stores have no rename,
  so the manifest is the commit point: a run directory without `manifest.json` is unfinished,
  and `verify`, `inspect` and the other readers refuse it;
- `readable_run` gives those readers a local copy of a published run (downloaded, the manifest
  checked unchanged at the end).

Plain paths and `file://` URLs never come here: they keep the local code paths.

Over 500 lines on purpose: the input copies and the run directories share the rules of reaching a
store (which field names an object's version on each store, the download cache and its sidecars,
the error text, the publish order with the manifest last); split in two, those helpers would
become public names of one module used only by the other.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

from pipeline.dedup.index_store import is_url
from pipeline.errors import OutputError, SourceError
from pipeline.storefs import StoreFS

CACHE_ENV = "HYGIENE_CACHE_DIR"
MANIFEST = "manifest.json"
# Files of a run directory that stay on the machine that wrote them.
_LOCAL_ONLY = (".hygiene.lock", ".hygiene-chain.lock")
_LOCAL_ONLY_DIRS = ("_work",)
# Stores whose objects take a canned ACL on upload (the quarantine's incidents are owner-only).
_ACL_PROTOCOLS = frozenset({"s3", "s3a"})
# Google Cloud Storage: a predefined ACL is set on the object after its upload, where the bucket
# takes per-object ACLs (not under uniform bucket-level access).
_GCS_PROTOCOLS = frozenset({"gs", "gcs"})
_DOWNLOAD_LOCK = threading.Lock()


def cache_root() -> Path:
    """Where local copies of objects and staged runs live on this machine."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hygiene").expanduser()


def _store(url: str, what: str, error=SourceError):
    """(filesystem, path) of a URL, or `error` naming it when its backend is missing or unusable."""
    import fsspec.core
    from fsspec.implementations.local import LocalFileSystem

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise error(f"{url}: cannot open this {what} ({e.__class__.__name__}: {e}); install the fsspec backend for "
                    "its protocol (`pip install 'hygiene-pipeline[s3]'` for s3://, `[gcs]` for gs://, `[azure]` for az://)") from e
    return (fs if isinstance(fs, LocalFileSystem) else StoreFS(fs)), path


def is_remote(url: str | os.PathLike) -> bool:
    """True for a URL on a non-local store (s3://...); false for a path or a file:// URL."""
    if not is_url(url):
        return False
    from fsspec.implementations.local import LocalFileSystem

    fs, _ = _store(os.fspath(url), "location")
    return not isinstance(fs, LocalFileSystem)


def local_path_of(url: str) -> str:
    """A plain path for a file:// URL (and for a plain path, itself)."""
    if is_url(url) and not is_remote(url):
        return _store(url, "location")[1]
    return url


def _protocol(fs) -> str:
    p = fs.protocol
    return p[0] if isinstance(p, (tuple, list)) else p


def _scheme(fs, url: str) -> str:
    """The protocol as the URL writes it: adlfs answers to az:// and abfs:// (its first name is abfs),
    and a URL the user wrote as az://... is reported back as az://..."""
    written = url.split("://", 1)[0] if "://" in url and "::" not in url else ""
    names = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return written if written in names else _protocol(fs)


# Where each store's client looks for credentials, for the message of a refused request.
_S3_CREDENTIALS = "(AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) and the bucket's policy"
_GCS_CREDENTIALS = "(GOOGLE_APPLICATION_CREDENTIALS or gcloud's application-default login) and the bucket's IAM policy"
_AZURE_CREDENTIALS = ("(AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_NAME and _KEY, or AZURE_STORAGE_SAS_TOKEN) "
                      "and the container's access")
_CREDENTIALS = {"gs": _GCS_CREDENTIALS, "gcs": _GCS_CREDENTIALS,
                "az": _AZURE_CREDENTIALS, "abfs": _AZURE_CREDENTIALS, "abfss": _AZURE_CREDENTIALS}


# GCS's 401 to a request without credentials. gcsfs sends none when it finds none (its chain ends
# in anonymous access, silently): then the fix is to provide credentials, not to change the IAM policy.
_GCS_ANONYMOUS = "Anonymous caller does not have"
_GCS_SENT_NONE = "; the request carried none (gcsfs found none and went anonymous)"


def explain_store_error(e: Exception, url: str = "") -> str:
    """What a store's error means for the user, and what to check (on the store `url` names)."""
    if isinstance(e, PermissionError):
        where = _CREDENTIALS.get(url.split("://", 1)[0], _S3_CREDENTIALS)
        sent_none = _GCS_SENT_NONE if _GCS_ANONYMOUS in str(e) else ""
        return f"access denied: check the credentials {where}{sent_none}"
    if isinstance(e, FileNotFoundError):
        return "no such object or bucket"
    return f"the store cannot be reached or refused the request ({e.__class__.__name__}: {e})"


@dataclass(frozen=True)
class ObjectInfo:
    """What identifies one version of an object: its size and ETag (or the store's equivalent)."""

    size: int
    etag: str
    mtime_ns: int


def info_of(fs, path: str, info: dict) -> ObjectInfo:
    """The version of an object from fsspec's `info`: S3's ETag, GCS's generation (a new number at
    every write of the object, where its etag also changes when only its metadata does), Azure's
    ETag, or else size and time."""
    size = int(info.get("size") or info.get("Size") or 0)
    etag = info.get("ETag") or info.get("generation") or info.get("etag") or info.get("md5Hash")
    when = info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime")
    if isinstance(when, datetime):
        mtime_ns = int(when.timestamp() * 1e9)
    elif isinstance(when, (int, float)):
        mtime_ns = int(when * 1e9)
    else:
        mtime_ns = 0
    if not etag:  # a store without ETags: size and time stand in for the version
        etag = f"size={size},mtime_ns={mtime_ns}"
    return ObjectInfo(size, str(etag).strip('"'), mtime_ns)


def object_info(url: str) -> ObjectInfo:
    """Size, ETag and modification time of one object; SourceError naming it if it cannot be read."""
    fs, path = _store(url, "input")
    fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except OSError as e:
        raise SourceError(f"{url}: cannot read this object: {explain_store_error(e, url)}") from e
    if info.get("type") == "directory":
        raise SourceError(f"{url}: is a prefix (a directory), not an object")
    return info_of(fs, path, info)


def _kind(fs, path: str) -> str | None:
    """"file", "directory", or None when nothing is there. Not fsspec's isdir and isfile: they answer
    False to any error, so a refused request (gcsfs's 403) would read as a missing object."""
    try:
        return fs.info(path).get("type")
    except FileNotFoundError:
        return None


def list_objects(pattern: str, suffixes: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """(URL, relative path) of the objects a URL names: one object, every object under a prefix
    (whose names end with one of `suffixes`), or a glob's matches. Nothing found is an error."""
    import glob as globlib

    fs, path = _store(pattern, "input")
    fs.invalidate_cache()  # another process may have written since this process last listed
    try:
        if globlib.has_magic(path):
            root = path[: len(path.split("*")[0].split("?")[0].split("[")[0])].rsplit("/", 1)[0]
            found = [p for p, i in fs.glob(path, detail=True).items() if i.get("type") != "directory"]
            if not found:
                raise SourceError(f"{pattern}: the glob matches no object; check the URL in the config or --input")
        elif (kind := _kind(fs, path)) == "directory":
            root = path.rstrip("/")
            found = [p for p in fs.find(root) if suffixes is None or p.endswith(suffixes)]
            if not found:
                raise SourceError(f"{pattern}: the prefix holds no input object ({', '.join(suffixes or ())})")
        elif kind == "file":
            root, found = path.rsplit("/", 1)[0], [path]
        else:
            raise SourceError(f"{pattern}: no such object or prefix; check the URL in the config or --input")
    except SourceError:
        raise
    except OSError as e:
        raise SourceError(f"{pattern}: cannot list the objects: {explain_store_error(e, pattern)}") from e
    scheme = _scheme(fs, pattern)
    return sorted(((f"{scheme}://{p}", p[len(root):].lstrip("/")) for p in found), key=lambda kv: (kv[1], kv[0]))


def _cache_path(fs, path: str) -> Path:
    return cache_root() / "objects" / _protocol(fs) / path.lstrip("/")


def local_copy(url: str, etag: str | None = None) -> str:
    """A local path holding the object's bytes (the URL itself for a local path).

    With `etag`, the copy must be that version of the object: a store that now holds another
    version is a SourceError naming the object. The copy is checked against the object's ETag
    before and after the download, so a write during the download is caught too.
    """
    if not is_remote(url):
        return local_path_of(url)
    fs, path = _store(url, "input")
    dest = _cache_path(fs, path)
    sidecar = dest.with_name(dest.name + ".hygiene-etag")
    before = object_info(url)
    if etag is not None and before.etag != etag:
        raise _changed(url, etag, before.etag)
    if dest.exists() and sidecar.exists() and sidecar.read_text() == before.etag and dest.stat().st_size == before.size:
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        fs.get_file(path, str(tmp))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SourceError(f"{url}: cannot download this object: {explain_store_error(e, url)}") from e
    after = object_info(url)
    if after.etag != before.etag or tmp.stat().st_size != before.size:
        tmp.unlink(missing_ok=True)
        raise _changed(url, before.etag, after.etag)
    with _DOWNLOAD_LOCK:  # two threads may have fetched the same object: either copy is the same bytes
        os.replace(tmp, dest)
        sidecar.write_text(before.etag)
    return str(dest)


def local_range(url: str, etag: str, start: int, stop: int) -> str:
    """A local file holding bytes [start, stop) of the object at the same offsets (a sparse file:
    the bytes before `start` take no disk), so a reader of that byte range of a large object fetches
    only its range. The object must still have `etag`, before and after the fetch."""
    return local_ranges(url, etag, [(start, stop)])


def local_ranges(url: str, etag: str, ranges: list[tuple[int, int]]) -> str:
    """A local file holding the object's bytes in `ranges` ([start, stop) pairs) at their own
    offsets, the rest a hole (a sparse file), so a reader that seeks only into those ranges (a
    Parquet footer and some row groups, a JSON Lines byte range) fetches only them. The object must
    still have `etag`, before and after the fetch. The whole object, when this machine has it
    already, serves instead."""
    fs, path = _store(url, "input")
    whole = _cache_path(fs, path)
    if whole.exists() and _sidecar(whole).exists() and _sidecar(whole).read_text() == etag:
        return str(whole)  # this machine has the whole object already (the planner's copy)
    merged: list[list[int]] = []
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    tag = (f"{merged[0][0]}-{merged[0][1]}" if len(merged) == 1
           else hashlib.sha256(json.dumps(merged).encode()).hexdigest()[:16])
    dest = whole.with_name(f"{whole.name}.range-{tag}")
    sidecar = _sidecar(dest)
    if dest.exists() and sidecar.exists() and sidecar.read_text() == etag:
        return str(dest)
    before = object_info(url)
    if before.etag != etag:
        raise _changed(url, etag, before.etag)
    try:
        data = fs.cat_ranges([path] * len(merged), [a for a, _ in merged], [b for _, b in merged], on_error="raise")
    except OSError as e:
        raise SourceError(f"{url}: cannot read {len(merged)} byte range(s) of this object: {explain_store_error(e, url)}") from e
    after = object_info(url)
    if after.etag != etag or any(len(d) != b - a for d, (a, b) in zip(data, merged)):
        raise _changed(url, etag, after.etag)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        for (a, _b), d in zip(merged, data):
            f.seek(a)
            f.write(d)
    with _DOWNLOAD_LOCK:
        os.replace(tmp, dest)
        sidecar.write_text(etag)
    return str(dest)


def _sidecar(copy: Path) -> Path:
    return copy.with_name(copy.name + ".hygiene-etag")


def _changed(url: str, planned: str, now: str) -> SourceError:
    return SourceError(f"{url}: the object changed while the run read it (ETag {planned} when planned, {now} now); "
                       "run again once the object is no longer being written")


def drop_local_copies(urls: list[str]) -> None:
    """Remove this machine's cached copies of these objects (a published run's inputs)."""
    for url in urls:
        if not is_remote(url):
            continue
        fs, path = _store(url, "input")
        dest = _cache_path(fs, path)
        for p in [dest, *dest.parent.glob(f"{dest.name}.range-*")] if dest.parent.exists() else [dest]:
            p.unlink(missing_ok=True)
            p.with_name(p.name + ".hygiene-etag").unlink(missing_ok=True)


def default_local_dir(url: str) -> str:
    """Where a run whose output is `url` is staged on this machine (deterministic: a killed run resumes)."""
    fs, path = _store(url, "output directory", OutputError)
    return str(cache_root() / "runs" / _protocol(fs) / path.strip("/"))


@dataclass
class RemoteRunDir:
    """A run directory on an object store, and the local staging copy it is published from."""

    url: str
    fs: object
    path: str

    @classmethod
    def parse(cls, url: str) -> "RemoteRunDir | None":
        """The remote run directory a URL names, or None for a local path or file:// URL."""
        if not is_remote(url):
            return None
        fs, path = _store(url.rstrip("/"), "output directory", OutputError)
        return cls(url.rstrip("/"), fs, path.rstrip("/"))

    def _p(self, rel: str) -> str:
        return f"{self.path}/{rel}" if rel else self.path

    def where(self, rel: str = "") -> str:
        """The URL of a file of the run, for messages."""
        return f"{self.url}/{rel}" if rel else self.url

    @property
    def location(self) -> str:
        """The store path of the folder that holds this run directory (its chain's location)."""
        return self.path.rsplit("/", 1)[0]

    def _fail(self, rel: str, doing: str, e: Exception) -> OutputError:
        return OutputError(f"{self.where(rel)}: cannot {doing}: {explain_store_error(e, self.url)}")

    def has_manifest(self) -> bool:
        """True when the run is published (its manifest is the commit point)."""
        self.fs.invalidate_cache()
        try:
            return self.fs.exists(self._p(MANIFEST))
        except OSError as e:
            raise self._fail(MANIFEST, "read the run directory", e) from e

    def published_files(self) -> list[str]:
        """Relative paths of the run directory's objects (none under `_work/`)."""
        self.fs.invalidate_cache()  # another process may have published since this one last listed
        try:
            found = self.fs.find(self.path) if self.fs.exists(self.path) else []
        except OSError as e:
            raise self._fail("", "list the run directory", e) from e
        rels = (p[len(self.path):].lstrip("/") for p in found)
        return sorted(r for r in rels if r and r.split("/")[0] not in _LOCAL_ONLY_DIRS and r not in _LOCAL_ONLY)

    def pull_published(self, local: Path, chain_head: str) -> None:
        """Before a run: give the staging copy the published run's manifest, attestation and
        history (its hash chain needs them) and the location's chain head, or none of them when
        nothing is published there."""
        local.mkdir(parents=True, exist_ok=True)
        keep = [r for r in self.published_files() if r in (MANIFEST, "attestation.dsse.json") or r.startswith("history/")]
        for name in (MANIFEST, "attestation.dsse.json"):
            (local / name).unlink(missing_ok=True)
        if (local / "history").exists():
            shutil.rmtree(local / "history")
        for rel in keep:
            self._get(rel, local / rel)
        head = f"{self.location}/{chain_head}"
        try:
            if self.fs.exists(head):
                self.fs.get_file(head, str(local.parent / chain_head))
            else:
                (local.parent / chain_head).unlink(missing_ok=True)
        except OSError as e:
            raise self._fail(f"../{chain_head}", "read the location's chain head", e) from e

    def _get(self, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get_file(self._p(rel), str(dest))
        except OSError as e:
            raise self._fail(rel, "download", e) from e

    def _put(self, src: Path, rel: str) -> None:
        kwargs = {}
        owner_only = rel.startswith("quarantine/")
        if owner_only and _protocol(self.fs) in _ACL_PROTOCOLS:
            kwargs["ACL"] = "private"  # owner-only, like the 0600 file of a local run
        try:
            self.fs.put_file(str(src), self._p(rel), **kwargs)
        except OSError as e:
            raise self._fail(rel, "upload", e) from e
        if owner_only and _protocol(self.fs) in _GCS_PROTOCOLS:
            self._gcs_private(rel)

    @functools.cached_property
    def gcs_object_acls(self) -> bool | None:
        """Whether this run's GCS bucket takes per-object ACLs: False under uniform bucket-level
        access, None when its settings cannot be read (asked once per instance)."""
        return gcs_object_acls(self.fs, self.path)

    def _gcs_private(self, rel: str) -> None:
        """Make an uploaded object owner-only (predefined ACL `private`) where the bucket allows it.
        Under uniform bucket-level access GCS refuses per-object ACLs: the manifest's quarantine
        `access` says so (`quarantine_access`), and its IAM policy decides."""
        if self.gcs_object_acls is False:
            return
        bucket, _, key = self._p(rel).partition("/")
        try:
            self.fs.call("PATCH", "b/{}/o/{}", bucket, key, predefinedAcl="private", json={})
        except OSError as e:
            if self.gcs_object_acls is None and _uniform_access_refusal(e):
                return  # the manifest said that the bucket's settings were unknown
            raise OutputError(f"{self.where(rel)}: cannot make this incident file owner-only (predefined ACL "
                              f"'private'): {explain_store_error(e, self.url)}; it stays unpublished. Allow "
                              "storage.objects.setIamPolicy (or the ACL update) for these credentials, or turn on "
                              "the bucket's uniform bucket-level access and restrict it with IAM") from e

    def push(self, local: Path, chain_head: str) -> None:
        """Publish the staged run: take the old manifest down (the run is unfinished from here on),
        upload every file, remove objects of an older run that this one does not have, and upload
        the manifest last; then the location's chain head. Repeating it after a failure is safe."""
        staged = sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                        if p.is_file() and p.relative_to(local).parts[0] not in _LOCAL_ONLY_DIRS and p.name not in _LOCAL_ONLY)
        if MANIFEST not in staged:
            raise OutputError(f"{local}: the staged run has no manifest; nothing to publish to {self.url}")
        try:
            if self.fs.exists(self._p(MANIFEST)):
                self.fs.rm_file(self._p(MANIFEST))
        except OSError as e:
            raise self._fail(MANIFEST, "replace the published manifest", e) from e
        for rel in staged:
            if rel != MANIFEST:
                self._put(local / rel, rel)
        for rel in sorted(set(self.published_files()) - set(staged)):
            try:
                self.fs.rm_file(self._p(rel))
            except OSError as e:
                raise self._fail(rel, "remove a file of the replaced run", e) from e
        self._put(local / MANIFEST, MANIFEST)
        if (local.parent / chain_head).exists():
            try:
                self.fs.put_file(str(local.parent / chain_head), f"{self.location}/{chain_head}")
            except OSError as e:
                raise self._fail(f"../{chain_head}", "upload the location's chain head", e) from e

    def download(self, dest: Path) -> None:
        """A local copy of the published run, checked to be one version of it."""
        self.fs.invalidate_cache()
        try:
            before = self.fs.info(self._p(MANIFEST))
        except FileNotFoundError as e:
            raise OutputError(f"{self.url}: no {MANIFEST}: the run is unfinished (or this is not a run directory); "
                              "wait for it to finish, or run it again") from e
        except OSError as e:
            raise self._fail(MANIFEST, "read the run's manifest", e) from e
        for rel in self.published_files():
            self._get(rel, dest / rel)
        self.fs.invalidate_cache()
        after = self.fs.info(self._p(MANIFEST))
        if info_of(self.fs, MANIFEST, after).etag != info_of(self.fs, MANIFEST, before).etag:
            raise OutputError(f"{self.url}: the run was published again while it was read; try again")

    def upload_new(self, local: Path, rels: list[str]) -> None:
        """Upload files added to a local copy of the run (a sign-off record)."""
        for rel in rels:
            self._put(local / rel, rel)


def quarantine_access(out_url: str) -> str:
    """How the quarantine's incident file is protected where this run is published."""
    remote = RemoteRunDir.parse(out_url)
    if remote is None:
        return "file mode 0600 in a 0700 directory (owner-only)"
    if _protocol(remote.fs) in _ACL_PROTOCOLS:
        return "object ACL 'private' (owner-only), unless the bucket's policy grants more"
    if _protocol(remote.fs) in _GCS_PROTOCOLS:
        acls = remote.gcs_object_acls
        if acls is False:
            return ("the gs:// bucket uses uniform bucket-level access, which turns per-object ACLs off: access is what "
                    "the bucket's IAM policy grants; restrict it there")
        if acls is None:
            return ("object ACL 'private' (owner-only) set after upload where the bucket takes per-object ACLs; its "
                    "settings could not be read: under uniform bucket-level access its IAM policy decides")
        return "object ACL 'private' (owner-only) set after upload, unless the bucket's IAM policy grants more"
    return (f"the {_scheme(remote.fs, remote.url)}:// store takes no per-object ACL here: access is whatever the bucket "
            "or container grants; restrict it there")


def gcs_object_acls(fs, path: str) -> bool | None:
    """Whether the GCS bucket of `path` takes per-object ACLs: False when uniform bucket-level
    access is on, True when not, None when the bucket's settings cannot be read (the credentials may
    write objects without being allowed to read the bucket's metadata)."""
    try:
        meta = fs.call("GET", "b/{}", path.split("/", 1)[0], json_out=True)
    except OSError:
        return None
    return takes_object_acls(meta)


def takes_object_acls(bucket: dict) -> bool:
    """From a GCS bucket's metadata (the JSON API's bucket resource): False when uniform bucket-level
    access is on (or its older name, bucket policy only)."""
    iam = bucket.get("iamConfiguration") or {}
    return not any((iam.get(k) or {}).get("enabled") for k in ("uniformBucketLevelAccess", "bucketPolicyOnly"))


def _uniform_access_refusal(e: OSError) -> bool:
    """True for GCS's refusal of an object ACL under uniform bucket-level access (HTTP 400)."""
    text = str(e).lower()
    return "uniform bucket-level access" in text or "object policy is disabled" in text


def fetch_run_file(run_url: str, rel: str) -> Path | None:
    """A local copy of one file of a run on a store (for walking a hash chain), or None if it has none."""
    import hashlib

    remote = RemoteRunDir.parse(run_url)
    if remote is None:
        return None
    dest = cache_root() / "read" / "chain" / hashlib.sha256(f"{remote.url}/{rel}".encode()).hexdigest()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        remote.fs.get_file(remote._p(rel), str(dest))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise remote._fail(rel, "read a manifest of the run's hash chain", e) from e
    return dest


@contextmanager
def readable_run(run_dir: str | os.PathLike) -> Iterator[Path]:
    """A local path to read a run from: the directory itself, or a fresh download of a remote run
    (removed afterwards)."""
    s = os.fspath(run_dir)
    remote = RemoteRunDir.parse(s) if is_url(s) else None
    if remote is None:
        yield Path(local_path_of(s))
        return
    base = cache_root() / "read"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    try:
        local = tmp / Path(remote.path).name
        remote.download(local)
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def writable_run(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Like `readable_run`, for a tool that adds files to a published run (a sign-off record): the
    files added to a remote run's local copy are uploaded when the block ends without error."""
    s = os.fspath(run_dir)
    remote = RemoteRunDir.parse(s) if is_url(s) else None
    with readable_run(s) as local:
        before = {p for p in local.rglob("*") if p.is_file()}
        yield local
        if remote is not None:
            added = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file() and p not in before)
            remote.upload_new(local, added)


def read_manifest(run_dir: str) -> dict:
    """The published manifest of a run directory (local or remote)."""
    remote = RemoteRunDir.parse(run_dir) if is_url(run_dir) else None
    if remote is None:
        return json.loads((Path(local_path_of(run_dir)) / MANIFEST).read_text())
    try:
        return json.loads(remote.fs.cat_file(remote._p(MANIFEST)))
    except FileNotFoundError as e:
        raise OutputError(f"{remote.url}: no {MANIFEST}: the run is unfinished") from e
