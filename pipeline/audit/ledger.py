"""The per-record ledger: one row per input record, its final decision and the evidence; never content.

Which decisions exist and what they mean (kept, dropped, quarantined, rejected) is data: the
run's `DecisionTable` (`pipeline.core.decisions`), recorded in the manifest.
"""

from __future__ import annotations

import pyarrow as pa

LEDGER_VERSION = 1

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("location", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("content_sha256", pa.string()),
        pa.field("decision", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("cluster_id", pa.int64()),
        pa.field("similarity", pa.float64()),
        pa.field("text_bytes", pa.int64()),
        pa.field("hash_list", pa.string()),
        pa.field("hash_entry", pa.string()),
        pa.field("hash_type", pa.string()),
        pa.field("hash_distance", pa.int64()),
        # PII evidence: spans per entity type as compact JSON ({"EMAIL_ADDRESS": 2}), never values;
        # the action: clean (scanned, none found), redacted, dropped or rejected; null when not scanned.
        pa.field("pii_counts", pa.string()),
        pa.field("pii_action", pa.string()),
    ],
    metadata={"hygiene.ledger_version": str(LEDGER_VERSION)},
)
# The evidence of a user's stage (compact JSON, e.g. {"words":3,"min_words":5}); the column exists
# in runs that have such a stage, so the ledger of every other run keeps its historic bytes.
EVIDENCE_FIELD = pa.field("evidence", pa.string())
# PII routed by language (`pii.route_by_language`): the record's language as routing saw it
# (`unknown` when none was found) and the coverage it got: `full` (an NER model searched names)
# or `patterns_only` (no model for its language: names and places were not searched). The columns
# exist only in runs that route, so the ledger of every other run keeps its historic bytes.
PII_ROUTING_FIELDS = (pa.field("pii_language", pa.string()), pa.field("pii_coverage", pa.string()))


def ledger_schema(with_evidence: bool, with_pii_routing: bool = False) -> pa.Schema:
    """The ledger schema of a run (with the `evidence` column when a user's stage runs, and the
    PII routing columns when PII detection is routed by language)."""
    schema = LEDGER_SCHEMA
    if with_pii_routing:
        for field in PII_ROUTING_FIELDS:
            schema = schema.append(field)
    return schema.append(EVIDENCE_FIELD) if with_evidence else schema
