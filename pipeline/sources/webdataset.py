"""WebDataset-style `.tar` shards: members sharing a key (`dir/000123.jpg`, `.json`, `.txt`) form one
sample, and one sample is one record (`key`, `path`, `image` bytes, `json` and `txt` sidecar text).

Shards are streamed in tar order (`tarfile` mode `r|`); a compressed shard (`.tar.gz`, `.tgz`,
`.tar.bz2`, `.tar.xz`, told by its first bytes) is inflated in bounded pieces against its budget
(`units.limits`), and a member over its size limit is skipped unread, by its header's size. Memory
holds one batch and the set of keys seen in the current shard.
One unit is one shard and a record's row is the sample's 0-based index within its shard.
Members other than the image and the `.json`/`.txt` sidecars (`.cls`, `.npy`, ...) are ignored,
as are members whose name has no key (`.hidden`) and non-file members (directories, links).
Decoding and hashing of the image happen later, in the safety stage, as for `image_dir`.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import orjson
import pyarrow as pa

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.sources.base import Batch, InputFile, Reader, Reject, Unit
from pipeline.sources.limits import (DECOMPRESSION_ERRORS, BlockStream, DecompressionBudget, decompressed_blocks,
                                    sniff_codec, too_large)

WDS_SCHEMA = pa.schema([("key", pa.string()), ("path", pa.string()), ("image", pa.large_binary()),
                        ("json", pa.large_string()), ("txt", pa.large_string())])
_CLEAN_END = "EOFHeaderError"


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name by the WebDataset rule: the key runs to the first dot of the basename."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot <= slash or dot == len(name) - 1:
        return None
    return name[:dot], name[dot + 1 :]


def _tracking_tarinfo() -> tuple[type[tarfile.TarInfo], dict]:
    """A TarInfo class recording why the last header read failed, so a shard cut at a member
    boundary (which `tarfile` takes for a clean end) is told apart from one with its end marker."""
    state: dict = {"end": None}

    class _TarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf, encoding, errors):
            try:
                info = super().frombuf(buf, encoding, errors)
            except tarfile.HeaderError as e:
                state["end"] = type(e).__name__
                raise
            state["end"] = None
            return info

    return _TarInfo, state


@dataclass
class _Sample:
    key: str
    row: int
    members: dict[str, bytes] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    repeated: bool = False
    too_large: str | None = None  # the reason, when a member was over its size limit (and left unread)


def _stream(raw, path: str, limits):
    """The tar stream of a shard: the file itself, or its bytes decompressed in bounded pieces and
    counted against the shard's decompression budget (`tarfile`'s own streaming inflates a
    buffer's worth of input in one call, which for bz2 can be gigabytes)."""
    codec = sniff_codec(raw.read(6))
    raw.seek(0)
    if codec is None:
        return raw
    return BlockStream(decompressed_blocks(raw, codec, 1 << 20, DecompressionBudget.for_file(path, limits)))


class WebDatasetReader(Reader):
    """Reads WebDataset tar shards; record ids are `source/shard.tar:row` unless `id_field` names a column (`key`)."""

    kind = "webdataset"
    suffixes = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "", workers: int = 1) -> list[Unit]:
        # A tar cannot be split without reading it, so each shard is one unit.
        return [self._unit(source, f, 0, 0, f.bytes, 0) for f in inputs]

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        exts = tuple(e.lower().lstrip(".") for e in source.image_exts)
        out = _BatchBuilder(unit.relpath, source)
        seen: set[str] = set()
        current: _Sample | None = None
        row = 0
        tarinfo, state = _tracking_tarinfo()
        limits = units.limits
        try:
            with open(unit.path, "rb") as raw, tarfile.open(fileobj=_stream(raw, unit.path, limits), mode="r|",
                                                            tarinfo=tarinfo) as tf:
                while (member := tf.next()) is not None:
                    tf.members = []  # streaming: do not keep every header of the shard
                    parts = split_member(member.name) if member.isfile() else None
                    if parts is None:
                        continue
                    key, ext = parts
                    if current is None or key != current.key:
                        if current is not None:
                            out.add(current, exts)
                            if out.size >= units.batch_bytes:
                                yield out.flush()
                        current = _Sample(key, row, repeated=key in seen)
                        seen.add(key)
                        row += 1
                    ext = ext.lower()
                    if ext in current.names:
                        current.repeated = True
                    elif ext in exts or ext in ("json", "txt"):
                        current.names[ext] = member.name
                        # The header gives the size: a member over its limit is skipped unread.
                        knob, cap = ("max_image_bytes", limits.max_image_bytes) if ext in exts else \
                            ("max_record_bytes", limits.max_record_bytes)
                        if member.size > cap:
                            current.too_large = current.too_large or too_large(f"member .{ext}", member.size, knob, cap)
                        else:
                            current.members[ext] = tf.extractfile(member).read()
                if state["end"] != _CLEAN_END:
                    raise EOFError("the archive ends without its end-of-archive marker")
        except (tarfile.TarError, *DECOMPRESSION_ERRORS) as e:
            if out.rows or out.rejects:
                yield out.flush()
            raise SourceError(
                f"{unit.path}: cannot read past sample {row - 1 if current else 0} "
                f"({e.__class__.__name__}: the tar file is truncated or corrupt)"
            ) from e
        except SourceError:  # past the decompression budget: the samples before it stay
            if out.rows or out.rejects:
                yield out.flush()
            raise
        if current is not None:
            out.add(current, exts)
        if out.rows or out.rejects:
            yield out.flush()


class _BatchBuilder:
    """Collects finished samples as columns and rejects until a batch is flushed."""

    def __init__(self, relpath: str, source) -> None:
        self.relpath, self.source = relpath, source
        self.cols: dict[str, list] = {f.name: [] for f in WDS_SCHEMA}
        self.rows: list[int] = []
        self.rejects: list[Reject] = []
        self.size = 0

    def add(self, s: _Sample, exts: tuple[str, ...]) -> None:
        images = [e for e in s.members if e in exts]
        image = s.members[images[0]] if images else None
        digest = hashlib.sha256(image).digest() if image is not None else None
        rid = s.key if self.source.id_field == "key" else None  # a rejected sample keeps its key as id
        reason, json_text, txt = None, None, None
        if s.repeated:
            reason = "repeated sample key"
        elif s.too_large:
            reason = s.too_large
        elif not images:
            reason = "sample has no image member"
        elif len(images) > 1:
            reason = "sample has more than one image member"
        if reason is None and "json" in s.members:
            try:
                orjson.loads(s.members["json"])
                json_text = s.members["json"].decode("utf-8")
            except (orjson.JSONDecodeError, UnicodeDecodeError):
                reason = "sidecar .json is not valid JSON"
        if reason is None and "txt" in s.members:
            try:
                txt = s.members["txt"].decode("utf-8")
            except UnicodeDecodeError:
                reason = "sidecar .txt is not valid UTF-8"
        if reason is not None:
            blobs = tuple(s.members[e] for e in images)
            member = s.names[images[0]] if images else next((s.names[e] for e in s.names if e in exts), None)
            self.rejects.append(Reject(s.row, reason, digest, None, rid, images=blobs, member=member))
            return
        for k, v in (("key", s.key), ("path", f"{self.relpath}#{s.names[images[0]]}"), ("image", image),
                     ("json", json_text), ("txt", txt)):
            self.cols[k].append(v)
        self.rows.append(s.row)
        self.size += sum(len(v) for v in s.members.values())

    def flush(self) -> Batch:
        """The collected samples as a Batch; the builder starts empty again."""
        batch = Batch(pa.table(self.cols, schema=WDS_SCHEMA), np.asarray(self.rows, dtype=np.int64), self.rejects)
        self.cols = {f.name: [] for f in WDS_SCHEMA}
        self.rows, self.rejects, self.size = [], [], 0
        return batch
