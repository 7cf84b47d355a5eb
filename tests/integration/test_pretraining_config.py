"""configs/pretraining.yaml, as shipped, runs end to end on data_samples/ with every content filter."""

from __future__ import annotations

import json

import polars as pl

from pipeline.audit.verify import verify_run
from pipeline.config import load_config
from pipeline.executor import run_local
from tests.conftest import REPO


def test_the_pretraining_config_runs_every_filter_with_evidence_and_balances(tmp_path):
    cfg = load_config(REPO / "configs" / "pretraining.yaml")
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(tmp_path / "run")})})
    m = run_local(cfg)
    kinds = [s["kind"] for s in m["pipeline"]["stages"]]
    assert kinds == ["safety", "language", "c4_quality", "gopher_repetition", "gopher_quality", "fineweb_quality",
                     "ai_provenance", "adult_image", "exact_dedup", "near_dedup", "pii"]
    c = m["conservation"]["overall"]
    assert c["input"] == c["kept"] + c["dropped"] + c["quarantined"] + c["rejected"]
    assert verify_run(tmp_path / "run").ok
    ledger = pl.read_parquet(str(tmp_path / "run" / "ledger" / "*.parquet"))
    web = ledger.filter((pl.col("source") == "web") & pl.col("evidence").is_not_null())
    assert web.height > 0 and all("language" in json.loads(e) for e in web["evidence"].to_list())
    dropped = set(ledger.filter(pl.col("stage").is_in(["c4_quality", "gopher_quality", "gopher_repetition"]))["decision"])
    assert dropped and all(d.startswith("dropped_") for d in dropped)
    assert set(m["stages"]["language"]["counts"]) >= {"en"}
    assert m["pii"]["records_by_coverage"] and m["timings"]["phases"]
