"""The image folder reader: one record per image file, bytes untouched, empty files rejected."""

from __future__ import annotations

import pytest

from pipeline.config import ImageDirSourceConfig, UnitConfig
from pipeline.errors import SourceError
from pipeline.sources import reader_for


def test_each_image_file_is_one_record_with_its_bytes_and_relative_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.PNG").write_bytes(b"\x89PNG fake bytes")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 jpeg-ish")
    (tmp_path / "empty.gif").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image suffix")
    src = ImageDirSourceConfig(kind="image_dir", name="img", paths=(str(tmp_path),))
    reader = reader_for("image_dir")
    inputs = [reader.describe(src, p, r) for p, r in reader.list_inputs(src)]
    assert sorted(i.relpath for i in inputs) == ["a/x.PNG", "b.jpg", "empty.gif"]
    units = reader.plan(src, inputs, UnitConfig(target_bytes=1024))
    batches = [b for u in units for b in reader.read(u, src, UnitConfig())]
    records = {p: img for b in batches for p, img in zip(b.table["path"].to_pylist(), b.table["image"].to_pylist())}
    assert records == {"a/x.PNG": b"\x89PNG fake bytes", "b.jpg": b"\xff\xd8 jpeg-ish"}
    rejects = [r for b in batches for r in b.rejects]
    assert [(r.relpath, r.reason) for r in rejects] == [("empty.gif", "empty file")]


def test_a_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    src = ImageDirSourceConfig(kind="image_dir", name="img", paths=(str(tmp_path),))
    with pytest.raises(SourceError, match="no image file"):
        reader_for("image_dir").list_inputs(src)


def test_an_image_file_over_max_image_bytes_is_rejected_by_its_size_unread(tmp_path):
    (tmp_path / "small.png").write_bytes(b"\x89PNG small")
    (tmp_path / "huge.png").write_bytes(b"\x89PNG" + b"\0" * 10_000)
    src = ImageDirSourceConfig(kind="image_dir", name="img", paths=(str(tmp_path),))
    reader = reader_for("image_dir")
    units = UnitConfig(limits={"max_image_bytes": 4096})
    inputs = [reader.describe(src, p, r) for p, r in reader.list_inputs(src)]
    batches = [b for u in reader.plan(src, inputs, units) for b in reader.read(u, src, units)]
    assert [p for b in batches for p in b.table["path"].to_pylist()] == ["small.png"]
    assert [(r.relpath, r.reason, r.raw_sha256) for b in batches for r in b.rejects] == [
        ("huge.png", "image of 10,004 bytes exceeds units.limits.max_image_bytes (4,096)", None)]
