"""The hash chain of runs published in one output location (the folder that holds run directories).

`<location>/.hygiene-chain.json` names the newest run published there; each new manifest records
it as `previous_run` (run id, path, manifest sha256) before becoming the new head, so a deleted or
rewritten run breaks the chain visibly. A run published over an older one in the same directory
keeps the older manifest (and attestation) under `history/<run_id>/`, so the chain stays checkable.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.fileio import atomic_write_json, sha256_path

HEAD_FILE = ".hygiene-chain.json"
HISTORY = "history"


def location_of(run_dir: Path) -> Path:
    """The output location of a run directory: its parent folder."""
    return Path(run_dir).resolve().parent


@contextmanager
def chain_lock(location: Path) -> Iterator[None]:
    """Serialise head updates of one location across processes."""
    location.mkdir(parents=True, exist_ok=True)
    fd = os.open(location / ".hygiene-chain.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_head(location: Path) -> dict | None:
    """The newest run published in `location`, or None."""
    p = location / HEAD_FILE
    if not p.exists():
        return None
    return json.loads(p.read_text())


def archive_replaced(run_dir: Path) -> None:
    """Before a run is published over an older one, keep the older manifest and attestation."""
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return
    try:
        run_id = json.loads(manifest.read_text())["run_id"]
    except (OSError, json.JSONDecodeError, KeyError):
        return
    dest = run_dir / HISTORY / run_id
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "attestation.dsse.json"):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, dest / name)


def set_head(location: Path, run_id: str, run_dir: Path, public: str | None = None) -> None:
    """Make the run just published the head of its location's chain (`public`: the run's URL, when
    `run_dir` is only its local staging copy)."""
    path = public if public is not None and "://" in public else str(Path(run_dir).resolve())
    atomic_write_json(location / HEAD_FILE, {"run_id": run_id, "path": path,
                                              "manifest_sha256": sha256_path(Path(run_dir) / "manifest.json")})


def find_manifest(link: dict, referrer: Path) -> Path | None:
    """Where the manifest a `previous_run` link names is now: its run dir, or the referrer's history
    (a run on an object store: a local copy of its manifest)."""
    if "://" in link["path"]:
        from pipeline.storage import fetch_run_file

        candidates = [fetch_run_file(link["path"], rel) for rel in ("manifest.json", f"{HISTORY}/{link['run_id']}/manifest.json")]
        candidates = [c for c in candidates if c is not None]
    else:
        candidates = [Path(link["path"]) / "manifest.json", Path(link["path"]) / HISTORY / link["run_id"] / "manifest.json",
                      referrer / HISTORY / link["run_id"] / "manifest.json"]
    for c in candidates:
        if c.exists():
            try:
                if json.loads(c.read_text()).get("run_id") == link["run_id"]:
                    return c
            except (OSError, json.JSONDecodeError):
                continue
    return None
