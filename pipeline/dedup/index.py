"""The corpus index: what earlier runs published, so a new run drops copies of it.

Layout under the state directory (a local path by default, or any fsspec URL; files are plain
Parquet and raw uint32 signatures, one set per published run)::

    index.json                 format version, parameters, and the published runs with file digests
    exact/<run_id>.parquet     key (sha256 of normalised text), record_id      -- exact dedup
    near/<run_id>.parquet      record_id, b00..bNN (LSH band keys)             -- candidates
    near/<run_id>.sig          raw uint32 signatures, same row order           -- verification
    inputs/<run_id>.parquet    source, path, sha256 of every input the run processed
    stages/<kind>/<run_id>.parquet  what a barrier stage keeps for later runs (e.g. containment's
                               shingles of kept records), with its settings in the run's entry

A run reads the index before deciding, and adds its own survivors only after it has published,
by writing its files and then replacing index.json atomically: a run that fails leaves the
index as it was. A remote state directory (s3://, gs://, memory://, ...) is read through a
verified local mirror and written files first, index.json last (`index_store`).

Concurrent runs (one state directory, several runs at once): a run takes `state_lock` on the
state directory just before its barrier and holds it until its index update in finalize is done,
so a second run's barrier sees the first run's committed survivors (and drops its copies of them)
and two index updates never interleave; reading (pass 1), the expensive part, still overlaps.
`add_run` also re-reads index.json under its own short lock, so no other writer (`hygiene index
rebuild`) loses a run either. flock is released by the kernel when the process exits, however it
exits (`pipeline.dedup.state_lock`). A remote state directory is held with a lease: objects
created only if absent (a conditional put), renewed while held, lapsing two minutes after a
holder dies; a store that cannot create only-if-absent runs unheld, with a warning.

Usage::

    idx = CorpusIndex.open(state_dir, cfg)       # validates version, parameters and digests
    idx.exact_keys()  /  idx.near_parts()  /  idx.processed_inputs()  /  idx.stage_frames(kind, params)
    idx.add_run(run_id, out_dir, exact, near_keys, near_sig, inputs, stage_frames)
    with state_lock(cfg.state): ...             # barrier .. index update of one run
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup.index_store import INDEX_FILE, CorpusIndexError, RemoteStateDir, local_state_dir
from pipeline.dedup.state_lock import INDEX_LOCK, acquire_flock, state_lock
from pipeline.fileio import atomic_path, atomic_write_json, json_bytes, sha256_path

INDEX_FORMAT_VERSION = 1
def index_params(cfg) -> dict:
    """The settings an index's contents depend on: they must not change between runs."""
    near = cfg.dedup.near
    from pipeline.dedup.near import banding

    bd = banding(near)
    return {
        "exact_normalize": cfg.dedup.exact.normalize.model_dump(mode="json"),
        "near": {"num_perm": near.num_perm, "seed": near.seed, "ngram": near.ngram, "char_ngrams": near.char_ngrams,
                 "short_docs": near.short_docs, "bands": bd.bands, "rows": bd.rows},
    }


def _rebuild_hint(state_dir: Path | str) -> str:
    return f"recreate it with `hygiene index rebuild {state_dir} RUN_DIR...` (the published run directories)"


def _validated(raw: str | bytes, where: str, state_dir: Path | str, params: dict) -> dict:
    """index.json's contents, checked for format version and dedup parameters."""
    try:
        meta = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise CorpusIndexError(f"{where}: the corpus index is unreadable ({e.__class__.__name__}); {_rebuild_hint(state_dir)}") from e
    if not isinstance(meta, dict) or meta.get("format_version") != INDEX_FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise CorpusIndexError(
            f"{where}: corpus index format {found!r}, this version reads {INDEX_FORMAT_VERSION}; {_rebuild_hint(state_dir)}")
    if meta.get("params") != params:
        raise CorpusIndexError(
            f"{where}: the index was built with other dedup settings ({json.dumps(meta.get('params'), sort_keys=True)}); "
            f"use the same settings, another state directory, or {_rebuild_hint(state_dir)}")
    return meta


@dataclass
class CorpusIndex:
    """A validated corpus index.

    `root` is where its files are read: the state directory itself, or for a remote one
    (`remote` set) a local mirror in a temporary directory, removed with this object.
    """

    root: Path
    meta: dict
    remote: RemoteStateDir | None = None

    @classmethod
    def open(cls, state_dir: str | os.PathLike, cfg) -> "CorpusIndex":
        """Open (or start) the index under `state_dir`, checking version, parameters and every file digest."""
        params = index_params(cfg)
        root = local_state_dir(state_dir)
        if root is None:
            return cls._open_remote(RemoteStateDir.parse(state_dir), params)
        path = root / INDEX_FILE
        if not path.exists():
            return cls(root, {"format_version": INDEX_FORMAT_VERSION, "params": params, "runs": []})
        try:
            raw = path.read_text()
        except (OSError, ValueError) as e:  # ValueError: not UTF-8
            raise CorpusIndexError(f"{path}: the corpus index is unreadable ({e.__class__.__name__}); {_rebuild_hint(root)}") from e
        idx = cls(root, _validated(raw, str(path), root, params))
        idx.verify()
        return idx

    @classmethod
    def _open_remote(cls, remote: RemoteStateDir, params: dict) -> "CorpusIndex":
        raw = remote.read_index()
        if raw is None:
            return cls._mirrored(remote, {"format_version": INDEX_FORMAT_VERSION, "params": params, "runs": []})
        idx = cls._mirrored(remote, _validated(raw, remote.where(INDEX_FILE), remote.url, params))
        idx.verify()
        return idx

    @classmethod
    def _mirrored(cls, remote: RemoteStateDir, meta: dict) -> "CorpusIndex":
        """An index over a fresh local mirror of `remote` (TMPDIR), deleted when the index is."""
        mirror = Path(tempfile.mkdtemp(prefix="hygiene-index-"))
        idx = cls(mirror, meta, remote)
        weakref.finalize(idx, shutil.rmtree, mirror, True)
        return idx

    @property
    def location(self) -> str:
        """The state directory as configured: its URL when remote, else its path."""
        return self.remote.url if self.remote is not None else str(self.root)

    def _where(self, rel: str) -> str:
        return self.remote.where(rel) if self.remote is not None else str(self.root / rel)

    def verify(self) -> None:
        """Every file named in index.json exists with its recorded digest (fetched first when remote)."""
        for run in self.meta["runs"]:
            for rel, digest in run["files"].items():
                p = self.root / rel
                present = self.remote.fetch(rel, p) if self.remote is not None else p.exists()
                if not present:
                    raise CorpusIndexError(f"{self._where(rel)}: a file of the corpus index is missing; {_rebuild_hint(self.location)}")
                if sha256_path(p) != digest:
                    raise CorpusIndexError(f"{self._where(rel)}: a file of the corpus index is corrupted (digest mismatch); "
                                           f"{_rebuild_hint(self.location)}")

    @property
    def runs(self) -> list[dict]:
        """Published runs, oldest first."""
        return self.meta["runs"]

    def exact_keys(self, where: pl.Expr | None = None) -> pl.DataFrame:
        """(key, record_id) of every published record (`where`: only the rows it selects, filtered
        while reading, e.g. one key partition); record ids are `run_id/record_id`."""
        frames = []
        for r in self.runs:
            scan = pl.scan_parquet(self.root / "exact" / f"{r['run_id']}.parquet")
            if where is not None:
                scan = scan.filter(where)
            frames.append(scan.with_columns((pl.lit(r["run_id"] + "/") + pl.col("record_id")).alias("record_id"))
                          .collect())
        return pl.concat(frames) if frames else pl.DataFrame(schema={"key": pl.Binary, "record_id": pl.String})

    def near_parts(self) -> list[tuple[str, Path, Path]]:
        """(run_id, band-key parquet, signature file) of every published run."""
        return [(r["run_id"], self.root / "near" / f"{r['run_id']}.parquet", self.root / "near" / f"{r['run_id']}.sig")
                for r in self.runs]

    def processed_inputs(self) -> dict[str, str]:
        """sha256 of every input a published run processed -> the run id."""
        out: dict[str, str] = {}
        for r in self.runs:
            df = pl.read_parquet(self.root / "inputs" / f"{r['run_id']}.parquet")
            for digest in df["sha256"].to_list():
                out.setdefault(digest, r["run_id"])
        return out

    def stage_frames(self, kind: str, params: dict, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame | None:
        """What the runs of the index kept for stage `kind` with these settings (`BarrierStage.
        index_additions`), oldest run first, record ids (if any) as `run_id/record_id`; None when
        no run has any. `lazy`: a scan, for a stage that reads it in parts."""
        frames = []
        for r in self.runs:
            if r.get("stages", {}).get(kind) != params:
                continue
            df = pl.scan_parquet(self.root / "stages" / kind / f"{r['run_id']}.parquet")
            if "record_id" in df.collect_schema().names():
                df = df.with_columns((pl.lit(r["run_id"] + "/") + pl.col("record_id")).alias("record_id"))
            frames.append(df)
        if not frames:
            return None
        return pl.concat(frames) if lazy else pl.concat(frames).collect()

    def add_run(self, run_id: str, out_dir: str, exact: pl.DataFrame, near_keys: pa.Table | None,
                near_sig: np.ndarray | None, inputs: pl.DataFrame,
                stage_frames: dict[str, tuple[dict, pl.DataFrame]] | None = None) -> None:
        """Add a published run's survivors, then replace index.json (the commit point).
        `stage_frames`: kind -> (settings, frame) of the barrier stages' additions.

        For a remote state directory the files are written in the mirror, uploaded, and only then
        is index.json written: a failure before that leaves the remote index unchanged.
        """
        files: dict[str, str] = {}

        def put_parquet(rel: str, table) -> None:
            with atomic_path(self.root / rel) as tmp:
                if isinstance(table, pl.DataFrame):
                    table.write_parquet(tmp)
                else:
                    pq.write_table(table, tmp)
            files[rel] = sha256_path(self.root / rel)

        put_parquet(f"exact/{run_id}.parquet", exact.select("key", "record_id"))
        put_parquet(f"inputs/{run_id}.parquet", inputs.select("source", "path", "sha256"))
        if near_keys is not None:
            bands = [c for c in near_keys.column_names if c != "record_id"]
            schema = pa.schema([("record_id", pa.string())] + [(c, pa.uint64()) for c in bands])
            put_parquet(f"near/{run_id}.parquet", near_keys.select(["record_id", *bands]).cast(schema))
            with atomic_path(self.root / "near" / f"{run_id}.sig") as tmp:
                np.ascontiguousarray(near_sig, dtype=np.uint32).tofile(tmp)
            files[f"near/{run_id}.sig"] = sha256_path(self.root / "near" / f"{run_id}.sig")
        for kind, (_params, frame) in sorted((stage_frames or {}).items()):
            put_parquet(f"stages/{kind}/{run_id}.parquet", frame)
        entry = {"run_id": run_id, "out_dir": out_dir, "records": exact.height, "files": files,
                 "added_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if stage_frames:
            entry["stages"] = {kind: params for kind, (params, _f) in sorted(stage_frames.items())}
        if self.remote is None:
            # Read-modify-write of index.json under its own lock, from what is committed now (not
            # what this object read when opened): a run another writer added meanwhile is kept.
            fd = acquire_flock(self.root / INDEX_LOCK, None, "it is updating the index", logging.DEBUG)  # milliseconds
            try:
                meta = self._with_run(entry)
                atomic_write_json(self.root / INDEX_FILE, meta)
            finally:
                os.close(fd)
        else:
            for rel in files:
                self.remote.upload(self.root / rel, rel)
            # Runs hold the store's lease here (`state_lock`); re-reading just before the write
            # also narrows, without closing, the window for a writer that holds no lease.
            meta = self._with_run(entry)
            self.remote.commit_index(json_bytes(meta))
        self.meta = meta

    def _with_run(self, entry: dict) -> dict:
        """index.json as committed now, with `entry` added (replacing an earlier entry of its run)."""
        if self.remote is None:
            path = self.root / INDEX_FILE
            raw = path.read_text() if path.exists() else None
        else:
            raw = self.remote.read_index()
        committed = _validated(raw, self._where(INDEX_FILE), self.location, self.meta["params"])["runs"] if raw else []
        runs = [r for r in committed if r["run_id"] != entry["run_id"]]
        return {**self.meta, "runs": [*runs, entry]}

    def summary(self) -> dict:
        """What the manifest records about the index a run was checked against."""
        return {"path": self.location, "format_version": INDEX_FORMAT_VERSION,
                "runs": [r["run_id"] for r in self.runs], "records": sum(r["records"] for r in self.runs)}


def rebuild(state_dir: str | os.PathLike, run_dirs: list[str | os.PathLike],
            names: list[str] | None = None) -> CorpusIndex:
    """Recreate the index from published run directories (their manifests, ledgers and shards),
    holding the state directory like a run does (waiting for a run that holds it). `names`: what
    the index calls each run directory (its URL, when `run_dirs` are local copies of runs on a store)."""
    from types import SimpleNamespace

    root = local_state_dir(state_dir)
    if root is not None and root.exists() and not root.is_dir():
        return _rebuild(state_dir, run_dirs, names)  # which says what is wrong
    with state_lock(SimpleNamespace(dir=os.fspath(state_dir))):
        return _rebuild(state_dir, run_dirs, names)


def _rebuild(state_dir: str | os.PathLike, run_dirs: list[str | os.PathLike], names: list[str] | None = None) -> CorpusIndex:
    """Recreate the index from published run directories (their manifests, ledgers and shards).

    The dedup settings come from the runs' own manifests and must agree; each shard's digest is
    checked against its manifest before its records are indexed. The barrier stages' additions
    (containment, paragraph counts) are restored from the files the run published with them.
    """
    from pipeline.config import parse_config
    from pipeline.dedup.exact import exact_keys
    from pipeline.dedup.lsh import band_keys
    from pipeline.dedup.minhash import normalize_for_shingles, signatures
    from pipeline.dedup.near import banding, params

    runs = []
    name_of = dict(zip(map(str, run_dirs), names or map(str, run_dirs)))
    for d in run_dirs:
        path = Path(d) / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CorpusIndexError(f"{path}: not a published run (no readable manifest.json)") from e
        runs.append((Path(d), manifest, parse_config(manifest["config"], path)))
    if not runs:
        raise CorpusIndexError("name at least one published run directory to rebuild the index from")
    runs.sort(key=lambda r: (r[1]["started_at"], r[1]["run_id"]))
    cfg0 = runs[0][2]
    for d, _m, cfg in runs:
        if index_params(cfg) != index_params(cfg0):
            raise CorpusIndexError(f"{d}: was deduplicated with other settings than {runs[0][0]}; index them separately")
    meta = {"format_version": INDEX_FORMAT_VERSION, "params": index_params(cfg0), "runs": []}
    root = local_state_dir(state_dir)
    if root is None:
        remote = RemoteStateDir.parse(state_dir)
        remote.remove_index()
        idx = CorpusIndex._mirrored(remote, meta)
    else:
        if root.exists() and not root.is_dir():
            raise CorpusIndexError(f"{root}: exists and is not a directory; name a state directory to rebuild the index in")
        root.mkdir(parents=True, exist_ok=True)
        (root / INDEX_FILE).unlink(missing_ok=True)
        idx = CorpusIndex(root, meta)
    for d, manifest, cfg in runs:
        for f in manifest["outputs"]["shards"]:
            if sha256_path(d / f["path"]) != f["sha256"]:
                raise CorpusIndexError(f"{d / f['path']}: does not match its manifest digest; the run cannot be indexed")
        text_field = {s.name: s.text_field for s in cfg.sources}
        ledger = pl.read_parquet(str(d / "ledger" / "*.parquet"), columns=["record_id", "source", "decision"]) \
            if manifest["outputs"]["ledger"] else pl.DataFrame(schema={"record_id": pl.String, "source": pl.String, "decision": pl.String})
        source_of = dict(zip(ledger["record_id"].to_list(), ledger["source"].to_list()))
        exact_parts, id_parts, sig_parts, key_parts = [], [], [], []
        near = cfg.dedup.near
        bd = banding(near) if near.enabled else None
        for f in manifest["outputs"]["shards"]:
            table = pq.read_table(d / f["path"])
            ids = table["record_id"].to_pylist()
            texts = pa.array([table[text_field[source_of[i]]][k].as_py() for k, i in enumerate(ids)], pa.large_string())
            exact_parts.append(pl.DataFrame({"key": exact_keys(texts, cfg.dedup.exact.normalize), "record_id": ids},
                                            schema={"key": pl.Binary, "record_id": pl.String}))
            if bd is not None:
                sig, counts = signatures(normalize_for_shingles(texts), params(near))
                keep = counts > 0
                sig_parts.append(sig[keep])
                key_parts.append(band_keys(sig[keep], bd.bands, bd.rows))
                id_parts.extend(i for i, k in zip(ids, keep) if k)
        exact = pl.concat(exact_parts) if exact_parts else pl.DataFrame(schema={"key": pl.Binary, "record_id": pl.String})
        inputs = pl.DataFrame([{"source": i["source"], "path": i["path"], "sha256": i["sha256"]} for i in manifest["inputs"]],
                              schema={"source": pl.String, "path": pl.String, "sha256": pl.String})
        near_keys = near_sig = None
        if bd is not None:
            keys = np.concatenate(key_parts) if key_parts else np.zeros((0, bd.bands), np.uint64)
            cols = {"record_id": pa.array(id_parts, pa.string())}
            cols.update({f"b{k:02d}": pa.array(keys[:, k]) for k in range(bd.bands)})
            near_keys = pa.table(cols)
            near_sig = np.concatenate(sig_parts) if sig_parts else np.zeros((0, near.num_perm), np.uint32)
        idx.add_run(manifest["run_id"], name_of[str(d)], exact, near_keys, near_sig, inputs, _published_additions(d, manifest))
    return idx


def _published_additions(run_dir: Path, manifest: dict) -> dict[str, tuple[dict, pl.DataFrame]]:
    """The barrier stages' index additions a run published (`outputs.index`), each checked
    against its manifest digest; a run from before they were published has none."""
    out = {}
    for f in manifest["outputs"].get("index", []):
        path = run_dir / f["path"]
        if not path.exists() or sha256_path(path) != f["sha256"]:
            raise CorpusIndexError(f"{path}: missing or does not match its manifest digest; the run cannot be indexed")
        out[f["stage"]] = (f["settings"], pl.read_parquet(path))
    return out
