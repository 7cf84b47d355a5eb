"""The stage list a config gives: defaults as before, explicit lists, your own stages, and errors
that name the stage and say what to fix."""

from __future__ import annotations

import sys
import textwrap

import pytest

from pipeline.config import load_config, parse_config
from pipeline.core import registry
from pipeline.core.decisions import Category
from pipeline.core.stage import Placement
from pipeline.errors import ConfigError
from tests.conftest import REPO

SRC = [{"name": "t", "kind": "jsonl", "paths": ["/nonexistent.jsonl"]}]


def kinds(cfg):
    return [s.kind for s in registry.resolve_stages(cfg)]


def test_an_existing_config_gives_the_historic_stages_in_the_historic_order():
    assert kinds(parse_config({"sources": SRC})) == ["safety", "exact_dedup", "near_dedup"]
    assert kinds(parse_config({"sources": SRC, "pii": {}})) == ["safety", "exact_dedup", "near_dedup", "pii"]
    assert kinds(parse_config({"sources": SRC, "dedup": {"exact": {"enabled": False}, "near": {"enabled": False}}})) == ["safety"]
    assert kinds(load_config(REPO / "configs" / "sample.yaml")) == ["safety", "exact_dedup", "near_dedup", "pii"]


def test_an_explicit_list_runs_what_it_lists_and_safety_always_first():
    cfg = parse_config({"sources": SRC, "stages": [{"kind": "exact_dedup"}]})
    assert kinds(cfg) == ["safety", "exact_dedup"]
    with pytest.raises(ConfigError, match="safety stage must come first"):
        kinds(parse_config({"sources": SRC, "stages": [{"kind": "exact_dedup"}, {"kind": "safety"}]}))


def test_stage_list_errors_name_the_stage(tmp_path):
    with pytest.raises(ConfigError, match="unknown stage kind 'langid'"):
        kinds(parse_config({"sources": SRC, "stages": [{"kind": "langid"}]}))
    with pytest.raises(ConfigError, match="stage 'near_dedup' is listed in `stages` but `dedup.near` is absent or disabled"):
        kinds(parse_config({"sources": SRC, "dedup": {"near": {"enabled": False}}, "stages": [{"kind": "near_dedup"}]}))
    with pytest.raises(ConfigError, match="its options live in the `dedup.exact` section"):
        kinds(parse_config({"sources": SRC, "stages": [{"kind": "exact_dedup", "config": {"x": 1}}]}))
    with pytest.raises(ConfigError, match="stages run by placement"):
        kinds(parse_config({"sources": SRC, "pii": {}, "stages": [{"kind": "pii"}, {"kind": "exact_dedup"}]}))
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        kinds(parse_config({"sources": SRC, "stages": [{"kind": "no_such_module:Filter"}]}))


def test_your_own_stage_is_found_beside_the_config_and_its_options_are_validated(tmp_path):
    (tmp_path / "cfg.yaml").write_text(textwrap.dedent(f"""
        sources: [{{name: t, kind: jsonl, paths: [{tmp_path}/x.jsonl]}}]
        stages:
          - kind: short_docs:ShortDocsFilter
            config: {{min_words: 3}}
    """))
    (tmp_path / "short_docs.py").write_text((REPO / "examples" / "stages" / "short_docs.py").read_text())
    cfg = load_config(tmp_path / "cfg.yaml")
    (spec,) = [s for s in registry.resolve_stages(cfg) if s.kind == "short_docs"]
    assert spec.origin == "module" and spec.placement == Placement.RECORD and spec.config.min_words == 3
    assert registry.decision_table(cfg).category("dropped_short") == Category.DROPPED
    (tmp_path / "bad.yaml").write_text((tmp_path / "cfg.yaml").read_text().replace("min_words: 3", "min_wrds: 3"))
    with pytest.raises(ConfigError, match=r"bad.yaml: stage 'short_docs:ShortDocsFilter': invalid config: min_wrds"):
        load_config(tmp_path / "bad.yaml")


def test_an_installed_package_publishes_stages_by_entry_point(tmp_path, monkeypatch):
    (tmp_path / "pkg_filters.py").write_text((REPO / "examples" / "stages" / "short_docs.py").read_text())
    dist = tmp_path / "pkg_filters-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pkg-filters\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hygiene.stages]\nshort_docs = pkg_filters:ShortDocsFilter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh_entry_points()
    try:
        cfg = parse_config({"sources": SRC, "stages": [{"kind": "short_docs", "config": {"min_words": 2}}]})
        spec = registry.resolve_stages(cfg)[1]
        assert spec.origin.startswith("entry point") and spec.config.min_words == 2
        assert any(d["kind"] == "short_docs" for d in registry.describe_available())
    finally:
        registry.refresh_entry_points()
        sys.modules.pop("pkg_filters", None)


def test_the_builtin_decision_table_has_a_category_for_every_historic_decision():
    table = registry.builtin_decisions()
    assert set(table.names(Category.KEPT)) >= {"kept", "kept_redacted"}
    assert set(table.names(Category.DROPPED)) >= {"dropped_duplicate", "dropped_near_duplicate", "dropped_pii"}
    assert table.names(Category.QUARANTINED) == ("quarantined",)
    assert table.names(Category.REJECTED) == ("rejected",)
