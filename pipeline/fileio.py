"""Crash-safe file writing: write to a temporary name in the same folder, fsync, rename."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed to `path`.

    Usage::

        with atomic_path("out/x.parquet") as tmp:
            pq.write_table(table, tmp)
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def json_bytes(obj: object) -> bytes:
    """An object as indented, key-sorted JSON with a final newline: the form every JSON file here has."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """Write an object as indented, key-sorted JSON atomically."""
    atomic_write_bytes(path, json_bytes(obj))


def sha256_path(path: str | os.PathLike, chunk: int = 8 * 1024 * 1024) -> str:
    """sha256 of a file's bytes.

    Reads into one reused buffer: a fresh 8 MiB `bytes` per read costs page faults that made
    hashing a large input three times slower than the hash itself.
    """
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames inside a directory durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def output_lock(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on a run directory so that two runs never write into it at once."""
    import fcntl

    from pipeline.errors import OutputError

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / ".hygiene.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise OutputError(f"{d}: another run is writing into this directory; wait for it or choose another --output") from e
        yield
    finally:
        os.close(fd)
