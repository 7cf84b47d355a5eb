"""A per-record stage's own counters (`Verdicts.counts`): checked with its verdicts, summed per
source from the pass-1 unit results into the manifest's stage statistics, valid in the schema."""

from __future__ import annotations

from types import SimpleNamespace

import jsonschema
import pytest

from pipeline.audit.manifest import add_stage_counts, manifest_json_schema
from pipeline.core.decisions import CORE_DECISIONS, DecisionTable
from pipeline.core.stage import Verdicts
from pipeline.core.verdicts import StageError, check_verdicts


def test_counts_are_summed_per_source_and_over_the_run():
    plan = SimpleNamespace(units=[SimpleNamespace(source="web"), SimpleNamespace(source="web"),
                                  SimpleNamespace(source="books")])
    pass1 = [{"stage_counts": {"language": {"en": 2, "fr": 1}}},
             {"stage_counts": {"language": {"en": 3, "unknown": 1}}},
             {"records": 4}]  # a unit whose stages counted nothing (or a result written before counts)
    stats = {"read": {"seen": 10, "kept": 10, "dropped": 0}, "language": {"seen": 10, "kept": 7, "dropped": 3}}
    out = add_stage_counts(stats, plan, pass1)
    assert out["language"]["counts"] == {"en": 5, "fr": 1, "unknown": 1}
    assert out["language"]["counts_by_source"] == {"web": {"en": 5, "fr": 1, "unknown": 1}}
    assert out["read"] == {"seen": 10, "kept": 10, "dropped": 0}  # stages without counters unchanged
    assert list(out["language"]["counts"]) == sorted(out["language"]["counts"])


def test_a_stage_entry_with_counts_is_valid_in_the_manifest_schema():
    schema = manifest_json_schema()
    entry = {"seen": 3, "kept": 2, "dropped": 1, "counts": {"en": 2, "fr": 1}, "counts_by_source": {"web": {"en": 2}}}
    jsonschema.validate(entry, {**schema, **schema["$defs"]["counts"]})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**entry, "counts": {"en": -1}}, {**schema, **schema["$defs"]["counts"]})


@pytest.mark.parametrize("counts", [{"en": -1}, {"en": 1.5}, {"en": True}, {3: 1}])
def test_counts_that_are_not_non_negative_integers_break_the_contract(counts):
    table = DecisionTable(CORE_DECISIONS)
    with pytest.raises(StageError, match="counts must map names"):
        check_verdicts("mine", Verdicts([None], [None], {}, counts), 1, table)


def test_valid_counts_pass_the_check():
    table = DecisionTable(CORE_DECISIONS)
    v = Verdicts([None, None], [None, None], {}, {"en": 2})
    assert check_verdicts("mine", v, 2, table) is v
