"""The `hygiene` command as a user runs it: help, overrides, exit codes."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from pipeline.cli import EXIT_REJECTED, EXIT_USAGE, main, sources_from_inputs
from tests.conftest import REPO

SAMPLE = str(REPO / "configs" / "sample.yaml")


@pytest.mark.parametrize("args", [[], ["run"], ["schedule"], ["validate"], ["sample"], ["prefect-server"],
                                  ["prefect-server", "stop"]])
def test_every_command_explains_itself(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output and len(result.output) > 80


def test_run_with_input_and_output_overrides_reads_the_users_files(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    shutil.copy(REPO / "data_samples" / "forum.csv", src / "a.csv")
    (src / "b.jsonl").write_text('{"id": "x1", "text": "my own text"}\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", SAMPLE, "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(s["kind"] for s in manifest["sources"]) == ["csv", "jsonl"]
    assert manifest["conservation"]["overall"]["input"] == 83 and manifest["conservation"]["balanced"]
    assert "total" in result.output


def test_fail_on_reject_exits_3_and_says_where_the_reasons_are(tmp_path):
    result = CliRunner().invoke(main, ["run", SAMPLE, "--output", str(tmp_path / "o"), "--fail-on-reject", "--no-prefect"])
    assert result.exit_code == EXIT_REJECTED and "rejections.parquet" in result.output


def test_a_bad_config_exits_2_naming_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {name: a, kind: jsonl, paths: [x], txt_field: body}\n")
    result = CliRunner().invoke(main, ["run", str(bad)])
    assert result.exit_code == EXIT_USAGE and str(bad) in result.output and "txt_field" in result.output


def test_a_missing_input_exits_1_naming_the_path(tmp_path):
    result = CliRunner().invoke(main, ["run", SAMPLE, "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o"), "--no-prefect"])
    assert result.exit_code == 1 and "nope.jsonl" in result.output


def test_an_unknown_prefect_api_exits_2_saying_what_is_valid_and_runs_nothing(tmp_path):
    result = CliRunner().invoke(main, ["run", SAMPLE, "--output", str(tmp_path / "o"), "--prefect-api", "lokal"])
    assert result.exit_code == EXIT_USAGE and "'lokal'" in result.output and "ephemeral" in result.output
    assert not (tmp_path / "o").exists()
    result = CliRunner().invoke(main, ["run", SAMPLE, "--no-prefect", "--prefect-api", "local"])
    assert result.exit_code == EXIT_USAGE and "--no-prefect" in result.output


def test_schedule_next_prints_fire_times():
    result = CliRunner().invoke(main, ["schedule", SAMPLE, "--next", "2"])
    assert result.exit_code == 0 and result.output.count("T03:00:00+00:00") == 2


def test_inputs_are_typed_by_their_names(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl.zst").write_bytes(b"")
    (tmp_path / "d" / "y.parquet").write_bytes(b"")
    got = sources_from_inputs((str(tmp_path / "d"), str(tmp_path / "z.csv")), {"text_field": "text", "id_field": None})
    assert [(s["kind"], s["name"]) for s in got] == [("jsonl", "d-jsonl"), ("parquet", "d-parquet"), ("csv", "z")]


def test_image_folders_and_tar_shards_are_typed_as_image_corpora(tmp_path):
    (tmp_path / "imgs").mkdir()
    shutil.copy(REPO / "data_samples" / "images" / "field-1.png", tmp_path / "imgs" / "A.PNG")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "s-000.tar").write_bytes(b"")
    got = sources_from_inputs((str(tmp_path / "imgs"), str(tmp_path / "shards")), {"text_field": "body", "id_field": "id"})
    assert [(s["kind"], s.get("id_field"), s.get("text_field")) for s in got] == [("image_dir", None, None),
                                                                                 ("webdataset", None, None)]


def test_a_one_off_check_of_an_image_folder_against_a_hash_list(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(REPO / "data_samples" / "images", images)
    out = tmp_path / "out"
    lst = REPO / "data_samples" / "hashlists" / "sample-list.csv"
    result = CliRunner().invoke(main, ["run", SAMPLE, "--input", str(images), "--output", str(out), "--no-prefect",
                                       "--hash-list", str(lst)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["kind"] for s in manifest["sources"]] == ["image_dir"]
    assert manifest["conservation"]["overall"]["quarantined"] >= 1 and manifest["conservation"]["balanced"]
