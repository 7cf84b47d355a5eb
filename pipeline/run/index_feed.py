"""What a published run adds to the corpus index of later runs (`state.dir`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.core.decisions import Category
from pipeline.core.registry import decision_table, run_stages
from pipeline.core.stage import BarrierStage
from pipeline.plan import RunPlan
from pipeline.run.workdir import unit_name


def stage_additions(work: Path, plan: RunPlan) -> dict[str, tuple[dict, pl.DataFrame]]:
    """kind -> (settings, frame) of what the run's barrier stages keep in the corpus index for
    later runs (`BarrierStage.index_additions`), from its kept records."""
    from pipeline.core.registry import stages_at
    from pipeline.core.runtime import stage_instance
    from pipeline.core.stage import Placement

    kept_names = list(decision_table(plan.config).names(Category.KEPT))
    kept = None
    out = {}
    for spec in stages_at(plan.config, Placement.BARRIER):
        stage = stage_instance(spec, plan)
        if type(stage).index_additions is BarrierStage.index_additions:
            continue
        if kept is None:
            kept = pl.concat([
                pl.read_parquet(work / "decisions" / f"{unit_name(u.unit_id)}.parquet", columns=["row", "record_id", "decision"])
                .filter(pl.col("decision").is_in(kept_names))
                .select(pl.lit(u.unit_id, pl.Int64).alias("unit"), "row", "record_id")
                for u in plan.units]) if plan.units else pl.DataFrame(
                schema={"unit": pl.Int64, "row": pl.Int64, "record_id": pl.String})
        frame = stage.index_additions(work, kept)
        if frame is not None:
            out[spec.kind] = (stage.index_params(), frame)
    return out


def write_stage_additions(final: Path, additions: dict[str, tuple[dict, pl.DataFrame]]) -> list[dict]:
    """Publish the barrier stages' index additions with the run (`index/<kind>.parquet`), so that
    `hygiene index rebuild` restores them: they cannot be derived from the shards (a removed
    paragraph is gone from them). Returns the manifest's `outputs.index` entries."""
    from pipeline.fileio import sha256_path

    entries = []
    for kind, (settings, frame) in sorted(additions.items()):
        path = final / "index" / f"{kind}.parquet"
        path.parent.mkdir(exist_ok=True)
        frame.write_parquet(path, compression="zstd", statistics=False)
        entries.append({"path": f"index/{kind}.parquet", "bytes": path.stat().st_size, "sha256": sha256_path(path),
                        "stage": kind, "settings": settings})
    return entries


def index_additions(work: Path, plan: RunPlan) -> tuple[pl.DataFrame, pa.Table | None, np.ndarray | None, pl.DataFrame]:
    """What a published run adds to the corpus index: exact keys, band keys and signatures of its
    kept records, and the inputs it processed."""
    kept_names = list(decision_table(plan.config).names(Category.KEPT))
    kept_frames, exact_frames = [], []
    for u in plan.units:
        name = unit_name(u.unit_id)
        kept = (pl.read_parquet(work / "decisions" / f"{name}.parquet", columns=["row", "record_id", "decision"])
                .filter(pl.col("decision").is_in(kept_names)).select("row", "record_id"))
        keys = pl.read_parquet(work / "pass1" / f"{name}.parquet", columns=["row", "key"])
        exact_frames.append(kept.join(keys, on="row", how="inner").select("key", "record_id"))
        kept_frames.append(kept.with_columns(pl.lit(u.unit_id, pl.Int64).alias("unit")))
    exact = pl.concat(exact_frames) if exact_frames else pl.DataFrame(schema={"key": pl.Binary, "record_id": pl.String})
    inputs = pl.DataFrame([{"source": f.source, "path": f.path, "sha256": f.sha256} for f in plan.inputs],
                          schema={"source": pl.String, "path": pl.String, "sha256": pl.String})
    near_cfg = plan.config.dedup.near
    if "near_dedup" not in {s.kind for s in run_stages(plan.config)}:
        return exact, None, None, inputs
    from pipeline.dedup.near import SignatureStore

    band_frames = []
    for u in plan.units:
        path = work / "minhash" / f"{unit_name(u.unit_id)}.parquet"
        band_frames.append(pl.read_parquet(path).with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("sig_idx")))
    kept = pl.concat(kept_frames) if kept_frames else pl.DataFrame(schema={"row": pl.Int64, "record_id": pl.String, "unit": pl.Int64})
    bands = pl.concat(band_frames) if band_frames else None
    if bands is None or kept.height == 0:
        return exact, None, None, inputs
    signed = kept.join(bands, on=["unit", "row"], how="inner").filter(pl.col("shingles") > 0).sort("unit", "row")
    store = SignatureStore({u.unit_id: work / "minhash" / f"{unit_name(u.unit_id)}.sig" for u in plan.units}, near_cfg.num_perm)
    sig = store.gather(signed["unit"].to_numpy(), signed["sig_idx"].to_numpy())
    band_cols = [c for c in signed.columns if c.startswith("b") and c[1:].isdigit()]
    return exact, signed.select(["record_id", *band_cols]).to_arrow(), sig, inputs
