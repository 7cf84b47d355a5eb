"""expand_paths, require_unique_relpaths and string_digests from pipeline.sources.base."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import JsonlSourceConfig, TextDirSourceConfig
from pipeline.errors import SourceError
from pipeline.sources import Unit, reader_for
from pipeline.sources.base import expand_paths, require_unique_relpaths, string_digests

JSONL = (".jsonl", ".jsonl.gz")


def touch(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"{}\n")
    return root


def rels(pairs: list[tuple[str, str]]) -> list[str]:
    return [rel for _, rel in pairs]


def test_a_file_is_listed_by_its_name_whatever_its_suffix(tmp_path):
    p = touch(tmp_path, "deep/dir/odd.name") / "deep/dir/odd.name"

    assert expand_paths((str(p),), JSONL) == [(str(p.resolve()), "odd.name")]


def test_a_directory_lists_its_files_recursively_relative_to_itself(tmp_path):
    touch(tmp_path / "in", "b.jsonl", "a.jsonl", "sub/c.jsonl.gz", "sub/deeper/d.jsonl", "skip.txt", "sub/skip.parquet")

    pairs = expand_paths((str(tmp_path / "in"),), JSONL)

    assert rels(pairs) == ["a.jsonl", "b.jsonl", "sub/c.jsonl.gz", "sub/deeper/d.jsonl"]
    assert all(Path(path).is_absolute() and path.endswith(rel) for path, rel in pairs)


def test_a_directory_without_suffixes_lists_every_file(tmp_path):
    touch(tmp_path, "a.txt", "b.bin", "c/d")

    assert rels(expand_paths((str(tmp_path),), None)) == ["a.txt", "b.bin", "c/d"]


def test_a_glob_lists_matching_files_relative_to_its_first_wildcard_directory(tmp_path):
    touch(tmp_path, "data/2023/part-0.jsonl", "data/2024/part-0.jsonl", "data/2024/notes.txt", "data/top.jsonl")

    pairs = expand_paths((str(tmp_path / "data" / "*" / "*.jsonl"),), JSONL)

    assert rels(pairs) == ["2023/part-0.jsonl", "2024/part-0.jsonl"]


def test_a_recursive_glob_skips_directories_and_ignores_the_suffix_filter(tmp_path):
    touch(tmp_path, "x/a.jsonl", "x/y/b.custom", "x/y/z/c.jsonl")

    pairs = expand_paths((str(tmp_path / "x" / "**" / "*"),), JSONL)

    assert rels(pairs) == ["a.jsonl", "y/b.custom", "y/z/c.jsonl"]


def test_a_relative_glob_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    touch(tmp_path, "a.jsonl", "b.jsonl")
    monkeypatch.chdir(tmp_path)

    pairs = expand_paths(("*.jsonl",), JSONL)

    assert pairs == [(str(tmp_path / "a.jsonl"), "a.jsonl"), (str(tmp_path / "b.jsonl"), "b.jsonl")]


def test_a_relative_directory_gives_absolute_paths(tmp_path, monkeypatch):
    touch(tmp_path, "in/a.jsonl")
    monkeypatch.chdir(tmp_path)

    assert expand_paths(("in",), JSONL) == [(str(tmp_path / "in" / "a.jsonl"), "a.jsonl")]


def test_a_file_reached_by_two_patterns_is_listed_once_under_its_first_relative_path(tmp_path):
    touch(tmp_path, "in/a.jsonl", "in/b.jsonl")

    pairs = expand_paths((str(tmp_path / "in"), str(tmp_path / "in" / "a.jsonl"), str(tmp_path / "in" / "*.jsonl")), JSONL)

    assert rels(pairs) == ["a.jsonl", "b.jsonl"]


def test_inputs_are_sorted_by_relative_path_whatever_the_pattern_order(tmp_path):
    touch(tmp_path, "z/c.jsonl", "a/b.jsonl", "m/a.jsonl")

    pairs = expand_paths(tuple(str(tmp_path / d) for d in ("z", "a", "m")), JSONL)

    assert rels(pairs) == ["a.jsonl", "b.jsonl", "c.jsonl"]


def test_a_path_that_does_not_exist_is_a_source_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match="nowhere.jsonl: no such file or directory"):
        expand_paths((str(tmp_path / "nowhere.jsonl"),), JSONL)


def test_a_glob_that_matches_nothing_is_a_source_error_naming_it(tmp_path):
    touch(tmp_path, "a.txt")

    with pytest.raises(SourceError, match=r"\*\.jsonl: the glob matches no file"):
        expand_paths((str(tmp_path / "*.jsonl"),), JSONL)


def test_a_glob_that_matches_only_directories_is_a_source_error(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()

    with pytest.raises(SourceError, match="matches no file"):
        expand_paths((str(tmp_path / "*.jsonl"),), JSONL)


def test_a_directory_without_any_input_file_is_a_source_error(tmp_path):
    touch(tmp_path, "readme.md")

    with pytest.raises(SourceError, match="holds no input file"):
        expand_paths((str(tmp_path),), JSONL)


def test_one_missing_pattern_among_good_ones_is_still_an_error(tmp_path):
    touch(tmp_path, "a.jsonl")

    with pytest.raises(SourceError, match="missing"):
        expand_paths((str(tmp_path), str(tmp_path / "missing")), JSONL)


def test_distinct_inputs_with_the_same_relative_path_are_a_source_error():
    pairs = [("/d/2023/part-0.jsonl", "part-0.jsonl"), ("/d/2024/part-0.jsonl", "part-0.jsonl")]

    with pytest.raises(SourceError, match="same relative path 'part-0.jsonl'.*common parent directory"):
        require_unique_relpaths(pairs)


def test_inputs_with_distinct_relative_paths_pass_unchanged():
    pairs = [("/d/2023/part-0.jsonl", "2023/part-0.jsonl"), ("/d/2024/part-0.jsonl", "2024/part-0.jsonl")]

    assert require_unique_relpaths(pairs) == pairs


@pytest.mark.parametrize(
    ("kind", "config"),
    [("jsonl", JsonlSourceConfig), ("text_dir", TextDirSourceConfig)],
)
def test_a_reader_refuses_two_directories_holding_the_same_file_name(tmp_path, kind, config):
    name = "part-0.jsonl" if kind == "jsonl" else "part-0.txt"
    touch(tmp_path, f"2023/{name}", f"2024/{name}")
    src = config(kind=kind, name="s", paths=(str(tmp_path / "2023"), str(tmp_path / "2024")))

    with pytest.raises(SourceError, match="record ids would collide"):
        reader_for(kind).list_inputs(src)


def test_a_reader_accepts_the_same_files_through_their_common_parent(tmp_path):
    touch(tmp_path, "2023/part-0.jsonl", "2024/part-0.jsonl")
    src = JsonlSourceConfig(kind="jsonl", name="s", paths=(str(tmp_path),))

    assert rels(reader_for("jsonl").list_inputs(src)) == ["2023/part-0.jsonl", "2024/part-0.jsonl"]


def test_a_unit_survives_a_round_trip_through_its_dict():
    unit = Unit(3, "s", "text_dir", "/a/x.txt", "x.txt", 1, 0, 2, 0, files=("/a/x.txt\tx.txt", "/a/y.txt\ty.txt"))

    assert Unit.from_dict(unit.to_dict()) == unit
    assert unit.to_dict()["files"] == ["/a/x.txt\tx.txt", "/a/y.txt\ty.txt"]


# string_digests


def expected(values: list[str | None]) -> list[bytes]:
    return [hashlib.sha256((v or "").encode()).digest() for v in values]


@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string(), pa.string_view()])
def test_string_digests_are_the_sha256_of_each_utf8_value(string_type):
    values = ["", "a", "héllo wörld", "\U0001f600", "x" * 10_000]
    arr = pa.array(values, pa.string()).cast(string_type)

    assert string_digests(arr) == expected(values)


def test_string_digests_of_a_null_are_the_digest_of_the_empty_string():
    assert string_digests(pa.array(["a", None])) == expected(["a", None])


def test_string_digests_of_an_empty_array_are_empty():
    assert string_digests(pa.array([], pa.string())) == []
    assert string_digests(pa.chunked_array([], pa.string())) == []


def test_string_digests_of_a_slice_cover_only_the_slice():
    arr = pa.array(["zero", "one", "two", "three"], pa.large_string())

    assert string_digests(arr.slice(1, 2)) == expected(["one", "two"])


def test_string_digests_of_a_chunked_array_follow_its_chunks_in_order():
    arr = pa.chunked_array([["a", "b"], [], ["c"]], pa.string())

    assert string_digests(arr) == expected(["a", "b", "c"])


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.text()), max_size=30),
    large=st.booleans(),
    data=st.data(),
)
def test_string_digests_match_hashlib_for_any_text_and_any_slice(values, large, data):
    arr = pa.array(values, pa.large_string() if large else pa.string())
    start = data.draw(st.integers(min_value=0, max_value=len(values)))
    length = data.draw(st.integers(min_value=0, max_value=len(values) - start))

    assert string_digests(arr) == expected(values)
    assert string_digests(arr.slice(start, length)) == expected(values[start : start + length])
