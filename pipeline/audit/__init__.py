"""The audit trail: ledger, manifest."""
