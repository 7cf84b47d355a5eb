"""Near-duplicate resolution in steps, so that the candidate graph's groups of connected components
are tasks of their own and no step holds a row or an id per cluster of the run:

    plan_groups     once, after the `lsh-band` tasks: the docs (records in a candidate pair or in
                    the short-document pass), the short-document pass, the boilerplate bits of
                    every doc (from the sketch the `boilerplate-part` tasks counted over ranges of
                    units, added up), the connected components (union-find over int arrays) packed into
                    groups of at most GROUP_RECORDS records; one input file per group
    resolve_one     per group (any worker): its records' attribute rows (split off the key files by
                    the plan), signatures and texts (`verify: borderline`), verified and clustered
                    (`near.resolve_group`); its verdicts, with the record ids and input positions
                    they name, under cluster numbers of its own (`near_merge.write_group`), and its
                    candidate pairs written
    number_groups   once, after every group: the clusters' global ids, by a k-way merge of the
                    groups' stars (`near_merge.number_clusters`), written per group
    relabel_one     per group: its clusters and verdicts files under the global ids
    merge_groups    in the barrier's global step: `near/decisions.parquet` written by a k-way merge
                    of the relabelled files (`near_merge.MergedGroups`); the rows are then read per
                    unit: no key row, no row per drop, no id per cluster held

Files under `_work/near/groups/`:

    plan.json                 the groups and the statistics of the plan (written last: done-marker)
    boilerplate.npy           the run's boilerplate shingle values (`verify: borderline`)
    gNNNNN.npz                a group's input: its docs (global doc numbers, unit, row, signature
                              row), pairs and short pairs (group doc numbers), boilerplate bits
    gNNNNN.rows.parquet       the attribute rows of its own records (`ATTRIBUTE_SCHEMA`, doc order),
                              split off the key files in one pass over the units
    gNNNNN.stars.parquet      its verdicts (`near_merge`): a row per cluster (for the numbering), its
    gNNNNN.clusters.parquet   rows in cluster order (for `near/decisions.parquet`) and by `_i` (for
    gNNNNN.verdicts.parquet   the units)
    gNNNNN.drops.parquet      its near-dropped text records in partitions of their record id (with
                              exact dedup on: the near side of `pipeline.dedup.repoint`)
    gNNNNN.candidates.parquet its candidate pairs (global doc numbers) and their similarities
    gNNNNN.json               its done-marker: verified and vetoed pairs, borderline re-checks
    number.json               the numbering's done-marker: how many clusters, the first free id
    gNNNNN.ids                a group's global cluster ids (int64, in its local cluster order)
    gNNNNN.clusters.global.parquet, gNNNNN.verdicts.global.parquet
                              its rows under the global ids; gNNNNN.global.json their done-marker

Memory: the plan holds int arrays per doc and pair (about 100 bytes per doc in a pair at the
benchmark's pair rate, bench/README.md) and the boilerplate sketch (up to 256 MiB); a group task
its group's records; the numbering and the merge a row group of each group's files at a time,
never a key row per record, a row per drop nor an id per cluster; a relabel task its group's rows.

Usage::

    plan = plan_groups(work, cfg, external, kept_rows, unit_rows)
    for g in range(plan["groups"]):
        resolve_one(work, cfg, prefer, external, g, read_texts, repoint_parts)
    number_groups(work)
    for g in range(plan["groups"]):
        relabel_one(work, g)
    merged, stats = merge_groups(work, cfg, prefer, live_count)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.config import NearDedupConfig
from pipeline.dedup.candidates import doc_code
from pipeline.dedup.groups import GROUP_RECORDS, ComponentGroups
from pipeline.dedup.lsh import CommonValues, add_histograms
from pipeline.dedup.near import (SignatureStore, banding, candidate_pairs, common_bits, params, resolve_group,
                                 signature_sources)
from pipeline.dedup.near_merge import GroupFiles, MergedGroups, number_clusters, relabel_group, write_drops, write_group
from pipeline.dedup.pair_docs import DocIndex, doc_index, external_ids, group_frame, signed_rows, verdict_frames
from pipeline.dedup.short_pass import SHORT_FILE_SUFFIX, ShortPass, run_short_pass
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_path, atomic_write_json
from pipeline.run.workdir import allow_open_files, part_files, read_done

# The attribute rows a group task reads (`_split_rows`): what the survivor rules rank by and what
# its verdicts name.
ATTRIBUTE_SCHEMA = {"_i": pl.Int64, "unit": pl.Int64, "row": pl.Int64, "record_id": pl.String, "priority": pl.Int64,
                    "text_bytes": pl.Int64, "quality": pl.Float64, "order_str": pl.String, "order_int": pl.Int64,
                    "phash": pl.String}


def groups_dir(work: Path) -> Path:
    """The folder of the groups' files."""
    return Path(work) / "near" / "groups"


def group_path(work: Path, g: int, suffix: str) -> Path:
    """A file of group `g`: `suffix` is `.npz`, `.rows.parquet`, `.stars.parquet`, `.clusters.parquet`,
    `.verdicts.parquet`, `.drops.parquet`, `.candidates.parquet` or `.json`."""
    return groups_dir(work) / f"g{g:05d}{suffix}"


def group_files(work: Path, g: int, relabelled: bool = False) -> GroupFiles:
    """The verdict files of group `g` (`relabelled`: the clusters and verdicts files under the
    global cluster ids, `relabel_one`'s)."""
    kind = ".global" if relabelled else ""
    return GroupFiles(group_path(work, g, ".stars.parquet"),
                      *(group_path(work, g, f".{name}{kind}.parquet") for name in ("clusters", "verdicts")))


def planned_groups(work: Path) -> dict | None:
    """The plan of the groups (`plan_groups`' result), or None before it is made."""
    return read_done(groups_dir(work) / "plan.json")


def _short_doc_codes(own: list, kept_rows: Callable[[int], np.ndarray], cfg: NearDedupConfig,
                     index_runs: int) -> np.ndarray:
    """Doc codes of the records the short-document pass may pair: short, still kept, signed."""
    if cfg.short_pass_max_words <= 0:
        return np.zeros(0, np.int64)
    out = [np.zeros(0, np.int64)]
    for unit, path, _r in own:
        sp = Path(path).with_name(Path(path).stem + SHORT_FILE_SUFFIX)
        if not sp.exists():
            continue
        rows = np.intersect1d(pl.read_parquet(sp, columns=["row"])["row"].to_numpy(), kept_rows(int(unit)))
        signed = signed_rows(path, rows).filter(pl.col("shingles") > 0)
        out.append(doc_code(unit, signed["row"].to_numpy(), index_runs))
    return np.concatenate(out)


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would add `.npz` to the temporary name
            np.savez(f, **arrays)


def plan_groups(work: Path, cfg: NearDedupConfig, external: list[tuple[str, Path, Path]],
                kept_rows: Callable[[int], np.ndarray], unit_rows: Callable[[int, np.ndarray], pl.DataFrame]) -> dict:
    """Plan the groups of components of the run's candidate graph and write each group's input.

    `external`: the corpus index's (run_id, band keys, signatures); `kept_rows(unit)`: the rows of a
    unit still kept after the ids and exact steps (the short-document pass pairs only those);
    `unit_rows(unit, rows)`: the attribute rows of those of a unit's rows that are still kept
    (`_i`, unit, row, record_id, priority, text_bytes, quality, order_str, order_int, phash), in row
    order."""
    files, sig_paths = signature_sources(work, list(external))
    own = [(u, p, r) for u, p, r in files if r is None]
    codes, counts = candidate_pairs(work)
    out = {"groups": 0, "counts": counts, "empty": counts["signed"] == 0 or counts["signed"] + counts["index_records"] < 2}
    groups_dir(work).mkdir(parents=True, exist_ok=True)
    if out["empty"]:
        atomic_write_json(groups_dir(work) / "plan.json", out)
        return out
    # The docs are only the records in a candidate pair or in the short-document pass, numbered in
    # (unit, row) order: every step after this depends on docs only through that order.
    e = len(external)
    in_docs = np.unique(np.concatenate([codes.ravel(), _short_doc_codes(own, kept_rows, cfg, e)]))
    index = doc_index(in_docs, work, e)
    n = len(in_docs)
    pairs = np.searchsorted(in_docs, codes).reshape(-1, 2)
    del codes, in_docs
    min_docs = max(cfg.boilerplate_min_docs, int(np.ceil(cfg.boilerplate_min_share * counts["signed_all"])))
    # The short-document pass: content character 5-grams, exact Jaccard (short_pass.py); its docs'
    # signatures are gathered too (the clustering compares them with their other neighbours).
    short = run_short_pass([(u, Path(p)) for u, p, _r in own], index.key_frame(), cfg, min_docs)
    sketches = [p.with_suffix(".u16") for p in part_files(work, "boilerplate-part")]
    bits, boilerplate_docs = _boilerplate(work, cfg, index, pairs, short, sketches, sig_paths, min_docs,
                                          counts["signed_all"])
    with_boilerplate = int(bits.any(axis=1).sum()) if bits is not None else 0
    groups = ComponentGroups.build(n, [pairs, short.pairs], GROUP_RECORDS)
    for g, (g_docs, at, short_at) in enumerate(zip(groups, groups.split(pairs), groups.split(short.pairs))):
        _write_npz(group_path(work, g, ".npz"), docs=g_docs, unit=index.unit[g_docs], row=index.row[g_docs],
                   sig_idx=index.sig_idx[g_docs], pairs=np.searchsorted(g_docs, pairs[at]).reshape(-1, 2),
                   short_pairs=np.searchsorted(g_docs, short.pairs[short_at]).reshape(-1, 2),
                   short_sims=short.sims[short_at],
                   bits=bits[g_docs] if bits is not None else np.zeros((0, 0), np.uint8))
    del bits
    allow_open_files(groups.stats["groups"])  # a writer per group
    _split_rows(work, index, groups, unit_rows)
    out.update({"groups": groups.stats["groups"], "candidate_pairs": int(len(pairs)), "boilerplate_min_docs": boilerplate_docs,
                "involved_with_boilerplate": with_boilerplate,
                "short_pass": short.stats, "grouping": groups.stats})
    atomic_write_json(groups_dir(work) / "plan.json", out)
    return out


def _split_rows(work: Path, index: DocIndex, groups: ComponentGroups,
                unit_rows: Callable[[int, np.ndarray], pl.DataFrame]) -> None:
    """Each group's attribute rows of its own docs, in doc order, to `gNNNNN.rows.parquet`: one pass
    over the units (a unit's rows at a time), so a group task reads its share only, not every unit.
    A writer per group is open during the pass (at 1B documents about 720 files: the process's
    open-file limit must allow it)."""
    paths = [group_path(work, g, ".rows.parquet") for g in range(groups.stats["groups"])]
    tmps = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in paths]
    writers: dict[int, pq.ParquetWriter] = {}
    own = np.flatnonzero(~index.external & (groups.group_of >= 0))  # doc order: by unit, then row
    units = index.unit[own]
    cuts = np.flatnonzero(np.concatenate([[True], units[1:] != units[:-1], [True]])) if own.size else []
    try:
        for a, b in zip(cuts[:-1], cuts[1:]):
            docs = own[a:b]
            rows = unit_rows(int(units[a]), index.row[docs]).select(list(ATTRIBUTE_SCHEMA))
            if not np.array_equal(rows["row"].to_numpy(), index.row[docs]):
                raise PipelineError(f"near dedup: records of unit {int(units[a])} in a candidate pair are not among the "
                                    "records still kept at the barrier; the barrier's partitions are stale: delete "
                                    "_work/barrier and _work/near and run again")
            group = groups.group_of[docs]
            for g in np.unique(group).tolist():
                table = rows.filter(pl.Series(group == g)).to_arrow()
                if g not in writers:
                    writers[g] = pq.ParquetWriter(tmps[g], table.schema)
                writers[g].write_table(table)
        for g, tmp in enumerate(tmps):
            if g not in writers:  # a group of published records only: no own rows
                pl.DataFrame(schema=ATTRIBUTE_SCHEMA).write_parquet(tmp)
            else:
                writers.pop(g).close()
            os.replace(tmp, paths[g])
    finally:
        for w in writers.values():
            w.close()
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _boilerplate(work: Path, cfg: NearDedupConfig, index: DocIndex, pairs: np.ndarray, short: ShortPass,
                 sketches: list[Path], sig_paths: dict, min_docs: int, signed_all: int) -> tuple[np.ndarray | None, int]:
    """The boilerplate bits (packed) of every doc (doc order; rows of docs in no pair stay zero)
    and the sketch's floor; with `verify: borderline`, the run's boilerplate shingle values are
    written to `boilerplate.npy`. Minima that recur in many of this run's signed records, exact
    copies included (a text copied a thousand times is boilerplate too; see lsh.CommonValues),
    counted by the `boilerplate-part` tasks over ranges of units (`sketches`: their files)."""
    if not (cfg.boilerplate_min_docs and signed_all >= min_docs):
        return None, 0
    if not sketches:
        raise PipelineError("near dedup: the boilerplate sketch was not counted; run the barrier's `boilerplate-part` "
                            "tasks first")
    cv = CommonValues(signed_all, cfg.num_perm, min(min_docs, 65535))
    for path in sketches:
        cv.absorb(path)
    involved = np.unique(np.concatenate([pairs.ravel(), short.pairs.ravel()])).astype(np.int64)
    store = SignatureStore(sig_paths, cfg.num_perm)
    packed, boilerplate = common_bits(cv, store, index, involved, params(cfg) if cfg.verify == "borderline" else None)
    bits = np.zeros((len(index.unit), packed.shape[1]), np.uint8)
    bits[involved] = packed
    if boilerplate is not None:
        with atomic_path(groups_dir(work) / "boilerplate.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, boilerplate)
    return bits, cv.min_docs


def resolve_one(work: Path, cfg: NearDedupConfig, prefer: str, external: list[tuple[str, Path, Path]], g: int,
                read_texts: Callable[[np.ndarray, np.ndarray], list[str]] | None, repoint_parts: int) -> dict:
    """Verify and cluster group `g` and write its verdicts (`near_merge.write_group`), its text
    drops in `repoint_parts` partitions (`near_merge.write_drops`; none when 0: a run without
    exact dedup has nothing to re-point) and candidate pairs; returns its counts (the cluster
    counts the merge adds up among them). It reads its input and attribute rows (written by
    `plan_groups`), its records' signatures and, with `verify: borderline`,
    `read_texts(units, rows)`: their texts."""
    if cfg.verify == "borderline" and read_texts is None:
        raise PipelineError("near dedup: `verify: borderline` needs the records' texts at the barrier (read_texts)")
    with np.load(group_path(work, g, ".npz")) as npz:
        z = dict(npz)
    docs, index = z["docs"], DocIndex(z["unit"], z["row"], z["sig_idx"])
    ext = index.external
    own = pl.read_parquet(group_path(work, g, ".rows.parquet"))
    if not np.array_equal(own["row"].to_numpy(), index.row[~ext]):
        raise PipelineError(f"near dedup: group {g}'s attribute rows do not match its records; delete _work/near and "
                            "run the barrier again")
    ext_ids = external_ids(index.unit[ext], index.row[ext], list(external))
    frame = group_frame(index, own, ext_ids)
    short = ShortPass(z["short_pairs"], z["short_sims"], {})
    boilerplate_file = groups_dir(work) / "boilerplate.npy"
    boilerplate = np.load(boilerplate_file) if cfg.verify == "borderline" and boilerplate_file.exists() else None
    _files, sig_paths = signature_sources(work, list(external))
    pairs = z["pairs"]
    r = resolve_group(frame, pairs, short, SignatureStore(sig_paths, cfg.num_perm), z["bits"] if z["bits"].size else None,
                      work, cfg, prefer, read_texts, boilerplate)
    stars, drops = verdict_frames(r, docs, frame, own, pl.concat([ext_ids, own["record_id"]]))
    counted = write_group(stars, drops, group_files(work, g))
    if repoint_parts:
        write_drops(group_files(work, g), group_path(work, g, ".drops.parquet"), repoint_parts)
    with atomic_path(group_path(work, g, ".candidates.parquet")) as tmp:
        pl.DataFrame({"doc_a": docs[pairs[:, 0]], "doc_b": docs[pairs[:, 1]], "similarity": r.sims,
                      "estimated_jaccard": r.ests, "content_jaccard": r.contents, "content_positions": r.cpos},
                     schema={"doc_a": pl.Int64, "doc_b": pl.Int64, "similarity": pl.Float64,
                             "estimated_jaccard": pl.Float64, "content_jaccard": pl.Float64,
                             "content_positions": pl.Int64}).write_parquet(tmp)
    result = {"group": g, "records": len(docs), "pairs": int(len(pairs)), "verified": int(r.verified),
              "vetoed": int(r.vetoed), "short_added": int(np.sum(r.short_added)),
              "rechecked": [int(x) for x in r.rechecked], "stars": stars.height, "drops": drops.height,
              "counted": counted}
    atomic_write_json(group_path(work, g, ".json"), result)
    return result


def _all_done(work: Path, groups: int, suffix: str, step: str) -> list[dict]:
    """Every group's done-marker of a step (`suffix`), or an error naming the first group missing."""
    done = [read_done(group_path(work, g, suffix)) for g in range(groups)]
    missing = [g for g, d in enumerate(done) if d is None]
    if missing:
        raise PipelineError(f"near dedup: {len(missing)} of {groups} group task(s) of the barrier's `{step}` step have "
                            f"not run (first: group {missing[0]}); run them first")
    return done


def number_groups(work: Path) -> dict:
    """Number every group's clusters globally (once every group task is done; cached): each
    group's ids written to `gNNNNN.ids`; returns the cluster count and the first free id."""
    path = groups_dir(work) / "number.json"
    if (cached := read_done(path)) is not None:
        return cached
    plan = planned_groups(work)
    if plan is None:
        raise PipelineError("near dedup: the groups of the candidate graph were not planned; run the barrier's "
                            "`near-groups` step (and its `near-group` tasks) first")
    groups = plan["groups"]
    _all_done(work, groups, ".json", "near-group")
    allow_open_files(2 * groups)  # every group's stars file read, and its ids written, side by side
    numbered = number_clusters([group_path(work, g, ".stars.parquet") for g in range(groups)],
                               [group_path(work, g, ".ids") for g in range(groups)])
    atomic_write_json(path, numbered)
    return numbered


def relabel_one(work: Path, g: int) -> dict:
    """Group `g`'s clusters and verdicts files under the global cluster ids (cached once done)."""
    path = group_path(work, g, ".global.json")
    if (cached := read_done(path)) is not None:
        return cached
    if read_done(groups_dir(work) / "number.json") is None:
        raise PipelineError("near dedup: the clusters were not numbered; run the barrier's `near-number` step first")
    groups = planned_groups(work)["groups"]
    result = {"group": g, **relabel_group(group_files(work, g), group_path(work, g, ".ids"), group_files(work, g, True),
                                          groups)}
    atomic_write_json(path, result)
    return result


def merge_groups(work: Path, cfg: NearDedupConfig, prefer: str, live_count: int) -> tuple[MergedGroups, dict]:
    """Every group's verdicts under global cluster ids (`MergedGroups`: its `rows(first, last)` are
    (`_i`, duplicate_of, cluster_id, similarity, via, path) for every dropped record and every
    survivor of this run's records that heads a cluster, read per unit), `near/decisions.parquet`
    written (`ROWS_SCHEMA`, in cluster id order), and the statistics for the manifest.
    `live_count`: the records still kept after exact dedup.

    `via` names the directly dropped record through which a second-hop drop (`second_hop`) was
    reached; `similarity` is always to the survivor. The decisions do not depend on the groups."""
    plan = planned_groups(work)
    if plan is None:
        raise PipelineError("near dedup: the groups of the candidate graph were not planned; run the barrier's "
                            "`near-groups` step (and its `near-group` tasks) first")
    bd = banding(cfg)
    counts = plan["counts"]
    stats = {
        "threshold": cfg.threshold, "num_perm": cfg.num_perm, "seed": cfg.seed, "ngram": cfg.ngram,
        "char_ngrams": cfg.char_ngrams, "short_docs": cfg.short_docs, "bands": bd.bands, "rows": bd.rows,
        "candidate_probability_at_threshold": round(bd.probability, 6), "verify": cfg.verify,
        "signed": counts["signed"], "without_shingles": live_count - counts["signed"],
        "index_records": counts["index_records"],
    }
    if plan["empty"]:
        stats.update({"candidate_pairs": 0, "verified_pairs": 0, "clusters": 0, "dropped": 0, "dropped_against_index": 0,
                      "second_hop": cfg.hop_bar, "dropped_second_hop": 0, "cluster_sizes": {}, "survivor_rule": prefer,
                      "boilerplate_min_docs": cfg.boilerplate_min_docs, "involved_with_boilerplate": 0,
                      "pairs_vetoed_by_content": 0})
        merged = MergedGroups([], {"clusters": 0, "first_free": 0})
        merged.write_decisions(work / "near" / "decisions.parquet")
        return merged, stats
    done = _all_done(work, plan["groups"], ".json", "near-group")
    numbered = read_done(groups_dir(work) / "number.json")
    if numbered is None:
        raise PipelineError("near dedup: the clusters were not numbered; run the barrier's `near-number` step first")
    _all_done(work, plan["groups"], ".global.json", "near-relabel")
    merged = MergedGroups([group_files(work, g, True) for g in range(plan["groups"])], numbered)
    merged.write_decisions(work / "near" / "decisions.parquet")
    counted = [d["counted"] for d in done]
    short_stats = plan["short_pass"]
    short_stats["pairs_added"] = sum(d["short_added"] for d in done)
    stats["short_pass"] = short_stats
    rechecked = np.sum([d["rechecked"] for d in done], axis=0) if done else np.zeros(3, np.int64)
    stats.update({
        "candidate_pairs": plan["candidate_pairs"],
        "verified_pairs": sum(d["verified"] for d in done),
        "clusters": merged.clusters,
        "dropped": sum(c["dropped"] for c in counted),
        "dropped_against_index": sum(c["dropped_against_index"] for c in counted),
        "second_hop": cfg.hop_bar,
        "dropped_second_hop": sum(c["dropped_second_hop"] for c in counted),
        "survivor_rule": prefer,
        "boilerplate_min_docs": plan["boilerplate_min_docs"],
        "involved_with_boilerplate": plan["involved_with_boilerplate"],
        "pairs_vetoed_by_content": sum(d["vetoed"] for d in done),
        "cluster_sizes": add_histograms([c["cluster_sizes"] for c in counted]),
        "groups": plan["grouping"],
    })
    if cfg.verify == "borderline":
        stats["borderline"] = {"sigmas": cfg.borderline_sigmas, "comparisons_rechecked": int(rechecked[0]),
                               "comparisons_flipped": int(rechecked[1]), "texts_read": int(rechecked[2])}
    stats["short_pass"]["dropped"] = sum(c["through_short"] for c in counted)
    return merged, stats
