"""Config loading: strict, frozen, and errors that name the file, the key and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError

MINIMAL = "sources:\n  - {name: web, kind: jsonl, paths: [data]}\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_a_minimal_config_fills_defaults_and_resolves_paths_against_its_folder(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.sources[0].paths == (str(tmp_path / "data"),)
    assert cfg.output.dir == str((tmp_path / "runs/latest").resolve())
    assert cfg.dedup.exact.enabled is True


def test_a_state_url_is_kept_as_written_and_a_state_path_resolves_against_the_folder(tmp_path):
    assert load_config(write(tmp_path, MINIMAL + "state: {dir: s3://bucket/state}\n")).state.dir == "s3://bucket/state"
    assert load_config(write(tmp_path, MINIMAL + "state: {dir: state}\n")).state.dir == str(tmp_path / "state")


def test_an_unknown_key_names_the_file_and_the_key(tmp_path):
    p = write(tmp_path, MINIMAL + "outptu: {dir: x}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "outptu" in str(e.value) and "Extra inputs are not permitted" in str(e.value)


def test_a_wrong_type_names_the_field_and_the_expected_type(tmp_path):
    p = write(tmp_path, MINIMAL + "output: {shard_max_rows: many}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "output.shard_max_rows" in str(e.value) and "integer" in str(e.value)


def test_an_unknown_source_kind_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="sources.0"):
        load_config(write(tmp_path, "sources:\n  - {name: w, kind: xml, paths: [a]}\n"))


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "sources: [\n"))


def test_a_top_level_list_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_repeated_source_names_are_rejected():
    data = {"sources": [{"name": "a", "kind": "jsonl", "paths": ["x"]}, {"name": "a", "kind": "csv", "paths": ["y"]}]}
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config(data)


def test_an_invalid_cron_or_timezone_is_rejected():
    base = {"sources": [{"name": "a", "kind": "jsonl", "paths": ["x"]}]}
    with pytest.raises(ConfigError, match="cron"):
        parse_config({**base, "schedule": {"cron": "every night"}})
    with pytest.raises(ConfigError, match="timezone"):
        parse_config({**base, "schedule": {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}})


def test_the_digest_is_stable_and_changes_with_any_setting():
    base = {"sources": [{"name": "a", "kind": "jsonl", "paths": ["/x"]}]}
    a, b = parse_config(base), parse_config(dict(base))
    assert a.digest() == b.digest() and len(a.digest()) == 64
    c = parse_config({**base, "dedup": {"exact": {"normalize": {"lowercase": True}}}})
    assert c.digest() != a.digest()


def test_configs_are_frozen():
    cfg = parse_config({"sources": [{"name": "a", "kind": "jsonl", "paths": ["/x"]}]})
    with pytest.raises(Exception):
        cfg.name = "other"


def test_the_sample_config_is_valid():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "sample.yaml")
    assert [s.kind for s in cfg.sources] == ["jsonl", "csv", "text_dir", "image_dir"]
    assert cfg.safety.hash_lists[0].path.endswith("data_samples/hashlists/sample-list.csv")
    assert cfg.schedule is not None


def test_a_second_hop_below_the_near_threshold_is_rejected():
    source = {"sources": [{"name": "a", "kind": "jsonl", "paths": ["x"]}]}
    with pytest.raises(ConfigError, match="second_hop"):
        parse_config({**source, "dedup": {"near": {"threshold": 0.8, "second_hop": 0.7}}})
    assert parse_config({**source, "dedup": {"near": {"threshold": 0.8, "second_hop": 0.9}}}).dedup.near.second_hop == 0.9


def test_limits_live_under_units_and_may_be_switched_off_but_not_made_negative():
    cfg = parse_config({"sources": [{"name": "w", "kind": "jsonl", "paths": ["d"]}],
                        "units": {"limits": {"max_record_bytes": 1024, "max_compression_ratio": None}}})
    assert cfg.units.limits.max_record_bytes == 1024 and cfg.units.limits.max_compression_ratio is None
    assert cfg.units.limits.max_decompressed_bytes == 1 << 40  # defaults for the rest
    with pytest.raises(ConfigError, match=r"units.limits.max_record_bytes: Input should be greater than or equal to 1"):
        parse_config({"sources": [{"name": "w", "kind": "jsonl", "paths": ["d"]}], "units": {"limits": {"max_record_bytes": 0}}})
    with pytest.raises(ConfigError, match=r"units.limits.max_line_bytes: Extra inputs are not permitted"):
        parse_config({"sources": [{"name": "w", "kind": "jsonl", "paths": ["d"]}], "units": {"limits": {"max_line_bytes": 5}}})
