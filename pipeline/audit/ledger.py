"""The per-record ledger: one row per input record, its final decision and the evidence; never content."""

from __future__ import annotations

from enum import Enum

import pyarrow as pa

LEDGER_VERSION = 1


class Decision(str, Enum):
    """The final decision of a record."""

    KEPT = "kept"
    KEPT_REDACTED = "kept_redacted"
    DROPPED_DUPLICATE = "dropped_duplicate"
    DROPPED_NEAR_DUPLICATE = "dropped_near_duplicate"
    DROPPED_PII = "dropped_pii"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"


class Stage(str, Enum):
    """The stage that made a record's final decision."""

    READ = "read"
    SAFETY = "safety"
    IDENTITY = "identity"
    EXACT_DEDUP = "exact_dedup"
    NEAR_DEDUP = "near_dedup"
    PII = "pii"
    OUTPUT = "output"


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

DROPPED = (Decision.DROPPED_DUPLICATE.value, Decision.DROPPED_NEAR_DUPLICATE.value, Decision.DROPPED_PII.value)
KEPT = (Decision.KEPT.value, Decision.KEPT_REDACTED.value)
