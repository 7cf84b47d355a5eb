"""The barrier's partitioned steps: the work that grows with the corpus, split into tasks that each
hold only their partition's share, one done-marker per task (a killed run resumes where it was).

    ids-part     record-id uniqueness, partitioned by a hash of the id: the later copies (input
                 order) of an id among this partition's records
    exact-part   exact duplicates, partitioned by the first two bytes of the key (a sha256, so the
                 partitions are even): this run's undecided records of that key range and the
                 corpus index's published keys of the same range, resolved with the survivor rule
    lsh-band     near-duplicate candidates, partitioned by band group and by range of band-key
                 values: this run's records still kept after the two steps above (and the corpus
                 index's published records), paired per (band, key) bucket
    boilerplate-part  the count-min sketch of the signature minima that recur (`lsh.CommonValues`:
                 near dedup's boilerplate), over a range of units' signatures each; the
                 `near-groups` step adds the ranges' counters up (saturating, as the counting
                 does), so the counts are those of one pass over every signature

Files under `_work/barrier/`:

    parts.json            the partition plan: counts per step (`near-repoint` too), records per
                          unit, and the corpus index runs it was planned against
    ids/pNNNNN.parquet    `_i` (position in input order) of each rejected later copy of an id
    exact/pNNNNN.parquet  `_i`, decision, reason, duplicate_of of each exact duplicate
    exact/pNNNNN.copies.parquet  with near dedup on: the same copies' `_i` and duplicate_of in
                          partitions of that survivor's id (the exact side of the `near-repoint`
                          step's join, `pipeline.dedup.repoint`)
    lsh/pNNNNN.parquet    candidate pairs (a < b) as doc codes (`doc_code`)
    boilerplate/pNNNNN.u16  a sketch's counters, raw uint16 (`CommonValues.absorb` reads them)
    */pNNNNN.json         each task's done-marker (its result)

Every task reads the key columns it needs from every unit's key file, filtered to its partition
while scanning (polars' streaming engine), so its memory is its partition's rows; the reads repeat
per task (a map-side shuffle would read each file once; not done). The global barrier step
(`pipeline.run.barrier`) applies the outputs unit by unit (`workdir.SortedParts`: every output
file is sorted by `_i`, so one pass over each serves the units in input order) and clusters the
candidate pairs a group of components at a time (`pipeline.run.near_groups`: one task per group,
on the records `gather_live` reads for it).
Partitions change how the work is cut, never a decision: every duplicate group (a key, a record
id, an LSH bucket) lies wholly inside one partition.

Usage::

    for name in part_steps(cfg):
        for p in range(part_count(work_dir, name)):
            run_part(work_dir, name, p)
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.core.registry import stages_at
from pipeline.core.stage import Placement
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path, atomic_write_json
from pipeline.plan import RunPlan
from pipeline.dedup.candidates import UNIT_SHIFT, doc_code, unique_code_pairs
from pipeline.dedup.lsh import bucket_pairs
from pipeline.dedup.repoint import COPIES_SCHEMA, write_partitioned
from pipeline.run.workdir import PART_DIRS, batch_rows, part_done_path, part_files, read_done, unit_name

log = logging.getLogger(__name__)

PART_STEPS = tuple(PART_DIRS)
# Records per ids/exact task: an exact task of 2M key rows peaked at 1.0 GiB (bench/README.md).
PART_RECORDS = 2_000_000
# Records per partition of the re-pointing join (`pipeline.dedup.repoint`): its rows are the exact
# copies and the near-dropped texts, at most one per record (about a fifth at the benchmark's shares).
REPOINT_RECORDS = 4_000_000
# (doc, band) entries per LSH task: one band of 10M docs peaked at 0.95 GiB (keys, codes, the
# bucket sort, its pairs, the bit per record of what ids/exact removed).
LSH_DOC_BANDS = 16_000_000
# Records per boilerplate sketch task (at least one task per worker): each task writes the whole
# sketch (up to 256 MiB at 64M signatures and more), so fewer, longer tasks than the others.
SKETCH_RECORDS = 50_000_000
# What the barrier and the steps after it leave in the scratch space (pass 1's outputs stay).
AFTER_BARRIER = ("barrier", "barrier.json", "decisions", "shards.json", "output.schema", "near", "stages", "pass2",
                 "shards", "ledger.json", "ledger", "final", "rejections.parquet")


def part_steps(cfg) -> list[str]:
    """The partitioned steps a run has: record ids always, exact keys and LSH bands with their stages.

    Raises ConfigError when another barrier stage comes before the dedup stages: their partitions
    are computed on the records pass 1 kept (exact first, then near), before the global step."""
    from pipeline.errors import ConfigError

    kinds = [s.kind for s in stages_at(cfg, Placement.BARRIER)]
    dedup = [k for k in ("exact_dedup", "near_dedup") if k in kinds]
    if kinds[: len(dedup)] != dedup:
        raise ConfigError("exact_dedup and near_dedup run first among the barrier stages (in that order): their work "
                          f"is partitioned over the records pass 1 kept; got {', '.join(kinds)}")
    near = ["lsh-band"] + (["boilerplate-part"] if cfg.dedup.near.boilerplate_min_docs else [])
    return ["ids-part"] + (["exact-part"] if "exact_dedup" in kinds else []) + (near if "near_dedup" in kinds else [])


def _root(work: Path) -> Path:
    return work / "barrier"


_OPEN_LOCK = threading.Lock()


def open_index(cfg):
    """The corpus index (None without `state`), opened by one task of a process at a time: opening
    mirrors a remote index, which tasks on threads must not do at once from one store."""
    if cfg.state is None:
        return None
    from pipeline.dedup.index import CorpusIndex

    with _OPEN_LOCK:
        return CorpusIndex.open(cfg.state.dir, cfg)


def index_moved_on(work: Path, plan: RunPlan, seen: list[str] | None) -> bool:
    """True (and the barrier's scratch outputs discarded) when barrier work of an earlier attempt
    was done against the corpus index runs `seen` and another run has been added since: it must be
    done again, or this run would keep copies of what that run published. (The runner holds the
    state lock here.)"""
    if plan.config.state is None or seen is None:
        return False
    from pipeline.dedup.index import CorpusIndex

    runs = [r["run_id"] for r in CorpusIndex.open(plan.config.state.dir, plan.config).runs]
    if plan.run_id in runs:
        return False  # this run is committed already (killed after its index update): keep its decisions
    new = [r for r in runs if r not in seen]
    if not new:
        return False
    log.warning("run %s: %d run(s) were added to the corpus index since its barrier (%s); deciding again",
                plan.run_id, len(new), ", ".join(new))
    for name in AFTER_BARRIER:
        p = work / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return True


def plan_parts(work_dir: str) -> dict:
    """The partition plan (`barrier/parts.json`), made once pass 1 is done; made again (with every
    output after pass 1 discarded) when the corpus index moved on since it was made."""
    work = Path(work_dir)
    path = _root(work) / "parts.json"
    plan = RunPlan.load(work)
    if (cached := read_done(path)) is not None and not index_moved_on(work, plan, cached["index_runs"]):
        return cached
    cfg = plan.config
    counts = []
    for u in plan.units:
        done = read_done(work / "pass1" / f"{unit_name(u.unit_id)}.json")
        if done is None:
            raise PipelineError(f"unit {u.unit_id} has not been read yet: run pass 1 ('read') before the barrier")
        counts.append(done["records"])
    index = open_index(cfg)
    from pipeline.run.tasks import runner_workers

    workers = runner_workers(cfg)
    n = sum(counts)
    key_parts = max(workers, math.ceil(n / PART_RECORDS))
    steps = part_steps(cfg)
    parts = {"records": n, "units": [u.unit_id for u in plan.units], "unit_records": counts,
             "index_runs": [r["run_id"] for r in index.runs] if index is not None else None,
             "ids-part": key_parts, "exact-part": key_parts if "exact-part" in steps else 0,
             # the re-pointing of exact copies whose survivor went as a near duplicate: with both stages
             "near-repoint": (max(workers, math.ceil(n / REPOINT_RECORDS))
                              if "exact-part" in steps and "lsh-band" in steps else 0),
             "band_groups": [], "key_ranges": 1, "lsh-band": 0, "boilerplate-part": 0, "sketch_units": [],
             "hash_probe": hash_probe()}
    if "lsh-band" in steps:
        from pipeline.dedup.near import banding

        bands = banding(cfg.dedup.near).bands
        docs = n + (sum(r["records"] for r in index.runs) if index is not None else 0)
        group = max(1, min(LSH_DOC_BANDS // max(1, docs), math.ceil(bands / workers)))
        ranges = 1 if group > 1 else max(1, math.ceil(docs / LSH_DOC_BANDS))
        parts["band_groups"] = [list(range(b, min(bands, b + group))) for b in range(0, bands, group)]
        parts["key_ranges"] = ranges
        parts["lsh-band"] = len(parts["band_groups"]) * ranges
    if "boilerplate-part" in steps:  # ranges of units, in order
        cuts = np.linspace(0, len(plan.units), min(len(plan.units), max(workers, math.ceil(n / SKETCH_RECORDS))) + 1)
        parts["sketch_units"] = [[int(a), int(b)] for a, b in zip(cuts[:-1].round(), cuts[1:].round())]
        parts["boilerplate-part"] = len(parts["sketch_units"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, parts)
    return parts


# Record ids (`ids-part`) and exact survivors' ids (`near-repoint`) are partitioned by polars'
# hash: every task of a run must hash as the planner did, or one id could fall into two
# partitions and a repeated id or a re-pointing be missed without a word (workers on another
# polars build). The plan keeps the hash of a fixed text; every task that reads the plan checks it.
_HASH_PROBE = "hygiene: the partitions' hash"


def hash_probe() -> int:
    """This process's polars hash of a fixed text."""
    return int(pl.Series([_HASH_PROBE]).hash()[0])


def planned_parts(work: Path) -> dict:
    """The partition plan as made (`plan_parts` made once, without checking the corpus index again);
    PipelineError when this process would hash ids into other partitions than the planner did."""
    parts = read_done(_root(work) / "parts.json") or plan_parts(str(work))
    if parts.get("hash_probe", hash_probe()) != hash_probe():
        raise PipelineError(f"this worker's polars ({pl.__version__}) hashes ids differently from the process that "
                            "planned the run's partitions: install the same polars version on every worker (and the "
                            "flow's machine), then run again")
    return parts


def exact_copies_path(work: Path, p: int) -> Path:
    """The exact copies of exact-part task `p`, in the partitions of the re-pointing join."""
    return part_done_path(work, "exact-part", p).with_suffix(".copies.parquet")


def part_count(work_dir: str, name: str) -> int:
    """How many tasks the partitioned step `name` has."""
    return plan_parts(work_dir)[name]


def run_part(work_dir: str, name: str, item: int) -> dict:
    """Run task `item` of the partitioned step `name` (cached once done)."""
    work = Path(work_dir)
    done = part_done_path(work, name, item)
    if (cached := read_done(done)) is not None:
        return cached
    parts = planned_parts(work)
    t0 = time.perf_counter()
    plan = RunPlan.load(work)
    done.parent.mkdir(parents=True, exist_ok=True)
    if name == "boilerplate-part":  # not rows: a sketch
        result = {"step": name, "part": item, **_boilerplate_part(work, plan, parts, item, done.with_suffix(".u16")),
                  "seconds": round(time.perf_counter() - t0, 3)}
        atomic_write_json(done, result)
        return result
    frame, extra = {"ids-part": _ids_part, "exact-part": _exact_part, "lsh-band": _lsh_part}[name](work, plan, parts, item)
    # The ids and exact outputs in row groups as the unit loop reads them, side by side (`SortedParts`).
    groups = batch_rows(parts[name]) if name != "lsh-band" else None
    with atomic_path(done.with_suffix(".parquet")) as tmp:
        frame.write_parquet(tmp, compression="lz4", statistics=False, row_group_size=groups)
    result = {"step": name, "part": item, "rows": frame.height, **extra, "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_json(done, result)
    return result


def run_all_parts(work_dir: str) -> None:
    """Every task of every partitioned step that is not done yet, one after the other (a barrier
    called on its own, e.g. by a test or a benchmark, runs its partitions first)."""
    cfg = RunPlan.load(work_dir).config
    for name in part_steps(cfg):
        for item in range(part_count(work_dir, name)):
            run_part(work_dir, name, item)


# -- reading the key files ---------------------------------------------------------------------


def _key_scan(work: Path, parts: dict) -> pl.LazyFrame:
    """Every unit's key rows, `_i` their position in input order (the order of the barrier's frame)."""
    paths = [str(work / "pass1" / f"{unit_name(u)}.parquet") for u in parts["units"]]
    return pl.scan_parquet(paths, row_index_name="_i").with_columns(pl.col("_i").cast(pl.Int64))


def _unit_of(parts: dict, i: pl.Series) -> pl.Series:
    """The unit id of each position `i` in input order."""
    starts = np.concatenate([[0], np.cumsum(parts["unit_records"])[:-1]]).astype(np.int64)
    at = np.searchsorted(starts, i.to_numpy(), side="right") - 1
    return pl.Series("unit", np.asarray(parts["units"], np.int64)[at], dtype=pl.Int64)


def _positions(work: Path, name: str) -> np.ndarray:
    """`_i` of every record a partitioned step (ids or exact) took out, from all its outputs."""
    frames = [pl.read_parquet(p, columns=["_i"])["_i"].to_numpy() for p in part_files(work, name)]
    return np.concatenate(frames).astype(np.int64) if frames else np.zeros(0, np.int64)


def key_part(parts: int) -> pl.Expr:
    """The exact-key partition of each row: its key's first two bytes scaled to `parts` (0 when null)."""
    head = pl.col("key").bin.head(2).bin.reinterpret(dtype=pl.UInt16, endianness="big").cast(pl.Int64)
    return pl.coalesce(head * parts // 65536, pl.lit(0, pl.Int64))


def _empty(schema: dict) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


# -- the three steps ---------------------------------------------------------------------------


def _ids_part(work: Path, plan: RunPlan, parts: dict, p: int) -> tuple[pl.DataFrame, dict]:
    """Later copies of a record id among the ids of partition `p`: rejected (a core rule)."""
    if not parts["units"]:
        return _empty({"_i": pl.Int64}), {}
    n = parts["ids-part"]
    rows = (_key_scan(work, parts).select("_i", "record_id", "decision")
            .filter(pl.col("record_id").hash() % n == p).collect(engine="streaming").sort("_i"))
    rejected = rows.filter(~pl.col("record_id").is_first_distinct() & pl.col("decision").is_null()).select("_i")
    return rejected, {"records": rows.height}


def _exact_part(work: Path, plan: RunPlan, parts: dict, p: int) -> tuple[pl.DataFrame, dict]:
    """Exact duplicates among the undecided records (and the published keys) of key partition `p`."""
    from pipeline.stages.exact import exact_verdicts

    n = parts["exact-part"]
    schema = {"_i": pl.Int64, "unit": pl.Int64, "row": pl.Int64, "record_id": pl.String, "key": pl.Binary,
              "priority": pl.Int64, "order_str": pl.String, "order_int": pl.Int64, "_image": pl.Boolean}
    live = _empty(schema)
    if parts["units"]:
        rows = (_key_scan(work, parts).filter(pl.col("decision").is_null() & (key_part(n) == p))
                .select("_i", "row", "record_id", "key", "order_str", "order_int",
                        pl.col("phash").is_not_null().alias("_image"))
                .collect(engine="streaming"))
        rows = rows.filter(~pl.col("_i").is_in(pl.Series(_positions(work, "ids-part")).implode()))
        unit = _unit_of(parts, rows["_i"])
        priority = {u.unit_id: plan.source(u.source).priority for u in plan.units}
        live = rows.with_columns(unit, pl.Series("priority", [priority[u] for u in unit.to_list()], dtype=pl.Int64))
        live = live.select(list(schema))
    index = open_index(plan.config)
    published = (index.exact_keys(key_part(n) == p) if index is not None
                 else _empty({"key": pl.Binary, "record_id": pl.String}))
    verdicts = exact_verdicts(live, published)
    if parts["near-repoint"]:  # written before the task's done-marker, so a finished task has it
        write_partitioned(verdicts.select(list(COPIES_SCHEMA)), "duplicate_of", parts["near-repoint"],
                          exact_copies_path(work, p))
    return verdicts, {"records": live.height, "published": published.height}


def dead_bits(work: Path, n: int) -> np.ndarray:
    """A bit per record (input order): set when the ids or exact step took it out."""
    bits = np.zeros((n + 7) // 8, np.uint8)
    for name in ("ids-part", "exact-part"):
        i = _positions(work, name)
        np.bitwise_or.at(bits, i >> 3, (np.ones(len(i), np.uint8) << (i & 7).astype(np.uint8)))
    return bits


def _lsh_part(work: Path, plan: RunPlan, parts: dict, item: int) -> tuple[pl.DataFrame, dict]:
    """Candidate pairs of the bands of one group whose band key falls in one range of values."""
    cfg = plan.config.dedup.near
    ranges = parts["key_ranges"]
    group, r = divmod(item, ranges)
    names = [f"b{k:02d}" for k in parts["band_groups"][group]]
    index = open_index(plan.config)
    external = index.near_parts() if index is not None else []
    e = len(external)
    keys: dict[str, list[np.ndarray]] = {c: [] for c in names}
    codes: dict[str, list[np.ndarray]] = {c: [] for c in names}

    def add(table, code: np.ndarray, mask: np.ndarray | None) -> None:
        for c in names:
            k = table.column(c).to_numpy()
            if mask is not None:
                k = k[mask]
            sel = ((k >> np.uint64(32)) * np.uint64(ranges)) >> np.uint64(32) == np.uint64(r)
            keys[c].append(k[sel])
            codes[c].append(code[sel])

    counts = {"signed": 0, "signed_all": 0, "index_records": 0}
    dead = dead_bits(work, parts["records"])
    start = 0
    for unit, n in zip(parts["units"], parts["unit_records"]):
        first, start = start, start + n
        path = work / "minhash" / f"{unit_name(unit)}.parquet"
        if not path.exists():
            continue
        table = pq.read_table(path, columns=["row", "shingles", *names])
        p1 = pl.read_parquet(work / "pass1" / f"{unit_name(unit)}.parquet", columns=["row", "decision"])
        pos = np.flatnonzero(p1["decision"].is_null().to_numpy())
        i = first + pos
        alive = ((dead[i >> 3] >> (i & 7).astype(np.uint8)) & 1) == 0
        rows = table.column("row").to_numpy()
        signed = table.column("shingles").to_numpy() > 0
        mask = signed & np.isin(rows, p1["row"].to_numpy()[pos[alive]])
        counts["signed_all"] += int(signed.sum())
        counts["signed"] += int(mask.sum())
        add(table, doc_code(unit, rows[mask], e), mask)
    for k, (_run_id, path, _sig) in enumerate(external):
        table = pq.read_table(path, columns=names)
        counts["index_records"] += table.num_rows
        add(table, doc_code(-1 - k, np.arange(table.num_rows), e), None)
    found = [bucket_pairs(np.concatenate([np.zeros(0, np.int64), *codes[c]]),
                          np.concatenate([np.zeros(0, np.uint64), *keys[c]]), cfg.bucket_pair_limit) for c in names]
    pairs = unique_code_pairs(found)
    pairs = pairs[~((pairs[:, 0] >> UNIT_SHIFT < e) & (pairs[:, 1] >> UNIT_SHIFT < e))]  # published pairs were settled
    frame = pl.DataFrame({"a": pairs[:, 0], "b": pairs[:, 1]}, schema={"a": pl.Int64, "b": pl.Int64})
    return frame, counts


def sketch_counts(work: Path) -> dict:
    """The signed-record counts the `lsh-band` tasks found (`signed_all` sizes the sketch)."""
    files = part_files(work, "lsh-band")
    return read_done(files[0].with_suffix(".json")) if files else {"signed": 0, "signed_all": 0, "index_records": 0}


def _boilerplate_part(work: Path, plan: RunPlan, parts: dict, item: int, out: Path) -> dict:
    """Count the signatures of every signed record (exact copies included: a text copied a thousand
    times is boilerplate too) of units `sketch_units[item]` into a sketch sized for the run's signed
    records (after the `lsh-band` tasks, which counted them), written to `out`."""
    from pipeline.dedup.lsh import CommonValues

    cfg = plan.config.dedup.near
    cv = CommonValues(sketch_counts(work)["signed_all"], cfg.num_perm, 1)
    a, b = parts["sketch_units"][item]
    counted = 0
    for unit in parts["units"][a:b]:
        path = work / "minhash" / f"{unit_name(unit)}.parquet"
        if not path.exists():
            continue
        signed = np.flatnonzero(pl.read_parquet(path, columns=["shingles"])["shingles"].to_numpy() > 0)
        cv.add(np.fromfile(path.with_suffix(".sig"), dtype=np.uint32).reshape(-1, cfg.num_perm), signed)
        counted += len(signed)
    with atomic_path(out) as tmp:
        cv.table.tofile(tmp)  # raw: `CommonValues.absorb` reads it a slice at a time
    return {"units": [a, b], "signed": counted}


# -- reading the outputs back, unit by unit ------------------------------------------------------


# The key columns `gather_live` reads: what near-duplicate resolution ranks and reports by.
LIVE_COLUMNS = ["row", "record_id", "decision", "text_bytes", "quality", "order_str", "order_int", "phash",
                "pdq_quality"]


# The still-kept records' columns `gather_live` and `LiveRows.rows` return.
LIVE_SCHEMA = {"_i": pl.Int64, "unit": pl.Int64, "row": pl.Int64, "record_id": pl.String, "priority": pl.Int64,
               "text_bytes": pl.Int64, "quality": pl.Float64, "order_str": pl.String, "order_int": pl.Int64,
               "phash": pl.String, "pdq_quality": pl.Int64}


def _compact(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with string columns that hold only its rows' bytes: the strings of a filtered frame
    are views into the buffers of the whole frame it was filtered from, which stay alive with them
    (at 10M documents, 18% of them in a pair, the units' whole id columns: about 0.4 GiB)."""
    return pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest()))


def _alive(df: pl.DataFrame, first: int, dead: np.ndarray) -> np.ndarray:
    """Which rows of a unit's key columns (`decision` among them; the unit's first position in input
    order `first`) are still kept after pass 1 and the ids and exact steps (`dead_bits`)."""
    i = first + np.arange(df.height, dtype=np.int64)
    return df["decision"].is_null().to_numpy() & (((dead[i >> 3] >> (i & 7).astype(np.uint8)) & 1) == 0)


class LiveRows:
    """The key columns of the records still kept after the ids and exact steps, a unit at a time
    (memory: a bit per record of what those steps took out, and one unit's key columns)."""

    def __init__(self, work: Path, plan: RunPlan) -> None:
        parts = planned_parts(work)
        self.work, self.plan = work, plan
        self.dead = dead_bits(work, parts["records"])
        self.firsts = dict(zip(parts["units"], np.concatenate([[0], np.cumsum(parts["unit_records"])[:-1]])
                               .astype(np.int64).tolist()))

    def kept_rows(self, unit: int) -> np.ndarray:
        """The rows of `unit` still kept."""
        df = pl.read_parquet(self.work / "pass1" / f"{unit_name(unit)}.parquet", columns=["row", "decision"])
        return df["row"].to_numpy()[_alive(df, self.firsts[unit], self.dead)]

    def rows(self, unit: int, wanted: np.ndarray, with_images: bool = False) -> tuple[pl.DataFrame, int, bool]:
        """(the still-kept records of `unit` whose row is in `wanted`, and with `with_images` every
        image record: `LIVE_SCHEMA`, in row order; how many of the unit's records are still kept;
        whether any record of the unit has a pHash)."""
        df = pl.read_parquet(self.work / "pass1" / f"{unit_name(unit)}.parquet", columns=LIVE_COLUMNS)
        first = self.firsts[unit]
        alive = _alive(df, first, self.dead)
        image = df["phash"].is_not_null().to_numpy()
        keep = alive & (np.isin(df["row"].to_numpy(), wanted) | (image & with_images))
        frame = _compact(df.filter(pl.Series(keep)).select(
            pl.Series("_i", first + np.flatnonzero(keep), dtype=pl.Int64), pl.lit(unit, pl.Int64).alias("unit"), "row",
            "record_id", pl.lit(self.plan.source(self.plan.units[unit].source).priority, pl.Int64).alias("priority"),
            "text_bytes", "quality", "order_str", "order_int", "phash", "pdq_quality"))
        return frame, int(alive.sum()), bool(image.any())


def gather_live(work: Path, plan: RunPlan, wanted: dict[int, np.ndarray]) -> tuple[pl.DataFrame, int, bool]:
    """The records still kept after the ids and exact steps that a caller needs, read unit by unit:
    those whose row is in `wanted[unit]` and every image record (pHash). Returns (the records:
    `LIVE_SCHEMA`, in input order; how many records are still kept in all; whether any record of the
    run, kept or not, has a pHash). Memory: the records returned, a unit's key columns, a bit per record."""
    live_rows = LiveRows(work, plan)
    frames, live, images = [], 0, False
    for unit in plan.units:
        frame, alive, image = live_rows.rows(unit.unit_id, wanted.get(unit.unit_id, np.zeros(0, np.int64)), True)
        frames.append(frame)
        live, images = live + alive, images or image
    return pl.concat([pl.DataFrame(schema=LIVE_SCHEMA), *frames]), live, images
