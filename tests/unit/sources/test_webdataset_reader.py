"""The WebDataset reader: samples grouped by key, sidecars, rejects, compressed and damaged shards."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pipeline.config import UnitConfig, parse_config
from pipeline.errors import ConfigError, SourceError
from pipeline.sources.webdataset import split_member
from tests.unit.sources.support import read_source

PNG = b"\x89PNG\r\n\x1a\n synthetic bytes"


def write_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    return path


def source(*paths, **kw):
    spec = {"name": "w", "kind": "webdataset", "paths": [str(p) for p in paths], **kw}
    return parse_config({"sources": [spec], "output": {"dir": "/tmp/unused"}}).sources[0]


def test_the_key_runs_to_the_first_dot_of_the_basename():
    assert split_member("a.b/000123.seg.png") == ("a.b/000123", "seg.png")
    assert split_member("000123.jpg") == ("000123", "jpg")
    assert split_member("dir/.hidden") is None and split_member("dir/noext") is None and split_member("x.") is None


def test_extra_members_are_ignored_and_uppercase_image_suffixes_count(tmp_path):
    tar = tmp_path / "s.tar"
    with tarfile.open(tar, "w") as tf:
        d = tarfile.TarInfo("dir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
    members = [("dir/0.JPG", PNG), ("dir/0.cls", b"3"), ("dir/0.txt", b"caption"), ("dir/1.png", PNG)]
    write_tar(tar, members)
    got = read_source(source(tar))
    assert [(r["key"], r["path"], r["txt"]) for r in got.records] == [("dir/0", "s.tar#dir/0.JPG", "caption"),
                                                                     ("dir/1", "s.tar#dir/1.png", None)]
    assert got.rows == [0, 1] and got.rejects == []


def test_two_images_in_a_sample_or_a_caption_that_is_not_utf8_are_rejected(tmp_path):
    tar = write_tar(tmp_path / "s.tar", [("a.png", PNG), ("a.jpg", PNG), ("b.png", PNG), ("b.txt", b"\xff\xfe"),
                                         ("c.png", PNG)])
    got = read_source(source(tar))
    assert got.reasons() == {0: "sample has more than one image member", 1: "sidecar .txt is not valid UTF-8"}
    assert [r["key"] for r in got.records] == ["c"] and got.rows == [2]


def test_a_gzipped_shard_reads_like_the_plain_one_and_small_batches_keep_tar_order(tmp_path):
    members = [(f"{i:03d}.png", PNG + bytes([i]) * 800) for i in range(6)]
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    plain = write_tar(tmp_path / "p" / "s.tar", members)
    gz = write_tar(tmp_path / "g" / "s.tar.gz", members, "w:gz")
    small = UnitConfig(batch_bytes=1024)
    a, b = read_source(source(plain), small), read_source(source(gz), small)
    assert len(a.schemas) > 1 and a.rows == list(range(6))
    assert [r["image"] for r in a.records] == [r["image"] for r in b.records] == [d for _, d in members]


@pytest.mark.parametrize("cut", ["member boundary", "inside data"])
def test_a_shard_cut_anywhere_is_a_source_error_naming_the_file(tmp_path, cut):
    data = write_tar(tmp_path / "full.tar", [("0.png", PNG * 40), ("1.png", PNG * 40)]).read_bytes()
    assert len(PNG * 40) == 960  # so the first member is one header block plus 1024 bytes of padded data
    end = 512 + 1024 if cut == "member boundary" else 700
    (tmp_path / "cut.tar").write_bytes(data[:end])
    with pytest.raises(SourceError, match=r"cut\.tar: cannot read past sample"):
        read_source(source(tmp_path / "cut.tar"))


def test_a_file_that_is_not_a_tar_is_a_source_error(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"not a tar archive at all" * 40)
    with pytest.raises(SourceError, match="x.tar"):
        read_source(source(tmp_path / "x.tar"))


def test_an_id_field_other_than_key_or_path_is_a_config_error():
    with pytest.raises(ConfigError, match="key` or `path"):
        source("/tmp/x.tar", id_field="caption")


def test_members_over_their_limit_are_skipped_unread_and_reject_their_sample(tmp_path, monkeypatch):
    members = [("000.png", PNG), ("000.txt", b"ok"),
               ("001.png", b"\x89PNG" + b"\0" * 5000), ("001.txt", b"caption"),
               ("002.png", PNG), ("002.json", b'{"k": "' + b"v" * 3000 + b'"}'),
               ("003.png", PNG)]
    tar = write_tar(tmp_path / "s.tar", members)
    read_sizes = []
    original = tarfile.ExFileObject.read if hasattr(tarfile, "ExFileObject") else None

    def spy(self, *args):
        data = original(self, *args)
        read_sizes.append(len(data))
        return data

    if original is not None:
        monkeypatch.setattr(tarfile.ExFileObject, "read", spy)
    units = UnitConfig(limits={"max_image_bytes": 4096, "max_record_bytes": 1000})
    result = read_source(source(tar), units)
    assert result.rows == [0, 3]
    assert [(r.row, r.reason, r.member) for r in result.rejects] == [
        (1, "member .png of 5,004 bytes exceeds units.limits.max_image_bytes (4,096)", "001.png"),
        (2, "member .json of 3,009 bytes exceeds units.limits.max_record_bytes (1,000)", "002.png"),
    ]
    assert result.rejects[1].images == (PNG,)  # a sample's images that were read are still matched
    assert original is None or max(read_sizes) < 1000


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_a_compressed_shard_past_its_budget_keeps_the_samples_before_and_names_the_limit(tmp_path, mode):
    members = [(f"{i:03d}.png", PNG) for i in range(3)] + [("003.png", b"\0" * (3 << 20))] + [("004.png", PNG)]
    tar = write_tar(tmp_path / f"s.tar.{mode[2:]}", members, mode)
    assert tar.stat().st_size < 100_000
    units = UnitConfig(batch_bytes=1024, limits={"max_compression_ratio": 10, "ratio_exempt_bytes": 1 << 20})
    src = source(tar)
    from pipeline.sources import reader_for
    from tests.unit.sources.support import plan_source

    reader = reader_for("webdataset")
    (unit,) = plan_source(src, units)
    rows = []
    with pytest.raises(SourceError, match=r"s\.tar\.\w+: decompresses to more than 1,048,576 bytes .*max_compression_ratio"):
        for batch in reader.read(unit, src, units):
            rows.extend(batch.rows.tolist())
    assert rows == [0, 1, 2]
