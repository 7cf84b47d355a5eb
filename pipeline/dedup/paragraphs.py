"""Repeated paragraphs (or lines) across documents: split, normalise and hash per batch in pass 1;
find the units whose text occurs in more than K documents at the barrier, partition by partition.

A *unit* is a line (split on `\\n`, Dolma's "paragraph") or a paragraph (a run of non-blank lines;
blank lines separate paragraphs). Its span `[start, end)` is in characters (code points) and
includes the separator that follows it (the `\\n` of a line, the blank lines after a paragraph), so
removing spans leaves well-formed text. Splitting and normalising run in polars (Rust) or, for
lines, one numba pass over the batch's bytes (`pipeline.dedup.paragraph_bytes`); hashes are
xxh3-64 of the normalised UTF-8 text (polars-hash, stable across versions and platforms).

Usage::

    units = split_units(rows, text, cfg)          # per batch: one row per unit with its hash
    removals, stats = find_repeats(unit_files, ranks, work, cfg)   # at the barrier

Why 64-bit hashes are enough: a unit is wrongly removed only when its hash equals the hash of a
*different* text that occurs in more than K documents. With D distinct texts and F frequent ones
the expected number of such false matches is at most D * F / 2**64 (e.g. 10**9 distinct and 10**7
frequent: 5e-4). The barrier reports this bound in the manifest (`expected_false_matches`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import polars_hash as plh
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.dedup.paragraph_bytes import (ASCII_LOWER, BYTE_CLASS, LINE_CLASS, SAME_BYTE, copy_ranges, cut_byte_spans,
                                          scan, split_lines)

UNIT_SCHEMA = {"row": pl.Int64, "idx": pl.Int32, "start": pl.Int64, "end": pl.Int64, "words": pl.Int32,
               "hash": pl.UInt64}
DOC_SCHEMA = {"row": pl.Int64, "chars": pl.Int64, "words": pl.Int64, "units": pl.Int64, "short_units": pl.Int64}
_MARK = "\x1e"  # a paragraph boundary while splitting (any in the input is replaced by a space: same length)
_PARAGRAPH_SEP = r"(\n[ \t\r\f\v]*\n\s*)"
# Rows a barrier partition holds at most (about 60 bytes each while grouping): the number of
# partitions grows with the run, so memory does not.
PARTITION_ROWS = 20_000_000


_NEEDS_COLLAPSE = r"\s\s|[^\S ]|^\s|\s$"  # a whitespace run, a whitespace other than a space, or one at an end


def _words(flat: pl.Series) -> np.ndarray:
    """Words of collapsed text: spaces + 1, none when empty (the regex count is faster than the
    literal one in polars 2.1)."""
    return flat.to_frame("f").select(pl.when(pl.col("f") != "").then(pl.col("f").str.count_matches(" ") + 1)
                                     .otherwise(0)).to_series().to_numpy()


def _collapsed_words(p: pl.Series, lines: bool) -> tuple[pl.Series, pl.Series]:
    """(text, words): whitespace runs as one space and ends stripped, and the words of that text.
    The regex runs only on the pieces that need it. Lines (`lines`), most of which need nothing,
    are told apart by one scan of their bytes that also counts their words; paragraphs, which
    hold newlines and so nearly all need the regex, by the regex itself."""
    if not lines:
        mask = p.str.contains(_NEEDS_COLLAPSE)
        if mask.any():
            p = p.clone().scatter(mask.arg_true(), p.filter(mask).str.replace_all(r"\s+", " ").str.strip_chars())
        return p, pl.Series(_words(p), dtype=pl.Int32)
    arr = p.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    flagged, spaces = np.zeros(len(arr), np.bool_), np.zeros(len(arr), np.int64)
    scan(data, offsets, BYTE_CLASS, flagged, spaces)
    words = np.where(np.diff(offsets) > 0, spaces + 1, 0)
    at = np.flatnonzero(flagged)
    if at.size:
        fixed = p.gather(at).str.replace_all(r"\s+", " ").str.strip_chars()
        p = p.clone().scatter(at, fixed)
        words[at] = _words(fixed)
    return p, pl.Series(words, dtype=pl.Int32)


def split_units(rows: np.ndarray, text: pa.Array | pa.ChunkedArray, unit: str, lowercase: bool, collapse: bool,
                min_chars: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(units, docs) of one batch.

    `units`: one row per unit of at least `min_chars` normalised characters: row, idx (the unit's
    position in its record), start, end (characters, the following separator included), words,
    hash. `docs`: one row per record: row, chars, words, units, short_units (units under
    `min_chars`, never hashed nor removed)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    if unit == "line":
        return _line_units(rows, _large_strings(text), lowercase, collapse, min_chars)
    frame = pl.DataFrame({"row": pl.Series(rows, dtype=pl.Int64), "text": pl.Series(text).cast(pl.String).fill_null("")})
    pieces = (pl.col("text").str.replace_all(_MARK, " ", literal=True)
              .str.replace_all(_PARAGRAPH_SEP, "${1}" + _MARK).str.split(_MARK))  # each piece carries its separator
    parts = (frame.select("row", pl.col("text").str.len_chars().alias("chars"), pieces.alias("p")).explode("p")
             .with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("row").alias("idx"),
                           pl.col("p").str.len_chars().alias("_len")))
    # A text ending in blank lines leaves one empty trailing piece: not a unit.
    parts = parts.filter((pl.col("p") != "") | (pl.col("idx") == 0))
    norm, words = _normalised(parts["p"], lowercase, collapse, False)
    parts = parts.with_columns(
        (pl.col("_len").cum_sum().over("row") - pl.col("_len")).alias("start"),
        norm.alias("n"), words.alias("words"),
    ).with_columns(
        pl.min_horizontal(pl.col("start") + pl.col("_len"), pl.col("chars")).alias("end"),
        (pl.col("n").str.len_chars() >= min_chars).alias("_long"),
    )
    docs = parts.group_by("row", maintain_order=True).agg(
        pl.col("chars").first(), pl.col("words").sum(), pl.len().alias("units"),
        (~pl.col("_long")).sum().alias("short_units")).cast(DOC_SCHEMA)
    units = parts.filter("_long").select(
        "row", "idx", "start", "end", "words", plh.col("n").nchash.xxh3_64().alias("hash")).cast(UNIT_SCHEMA)
    return units, docs


def _normalised(raw: pl.Series, lowercase: bool, collapse: bool, lines: bool) -> tuple[pl.Series, pl.Series]:
    """(normalised text, words) of pieces: the definition every path agrees with. Lowercasing
    changes no whitespace: the collapsed lowercase text has the words of the collapsed text,
    which need not be made separately."""
    if collapse:
        return _collapsed_words(raw.str.to_lowercase() if lowercase else raw, lines)
    return (raw.str.to_lowercase() if lowercase else raw), _collapsed_words(raw, lines)[1]


def _large_strings(text: pa.Array) -> pa.Array:
    """The column as one `large_string` array without nulls (a null is an empty text)."""
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type) or pa.types.is_string_view(text.type)):
        text = pl.Series(text).cast(pl.String).to_arrow()
    if text.type != pa.large_string():
        text = text.cast(pa.large_string())
    return pc.fill_null(text, "") if text.null_count else text


def _hashes(norm: pl.Series) -> np.ndarray:
    """xxh3-64 of each string's UTF-8 bytes (a writable array)."""
    return norm.to_frame("n").select(plh.col("n").nchash.xxh3_64()).to_series().to_numpy(writable=True)


def _line_units(rows: np.ndarray, text: pa.Array, lowercase: bool, collapse: bool,
                min_chars: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`split_units` for lines: one numba pass over the batch's UTF-8 bytes splits, normalises
    and counts the words of every ASCII line into one buffer, which is hashed at once; lines with
    a non-ASCII byte (Unicode case and whitespace) take `_normalised`, the polars definition."""
    bufs = text.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[text.offset: text.offset + len(text) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    n = len(text)
    m = n + int(np.count_nonzero(data[lo:hi] == 10))
    out = np.empty(hi - lo, np.uint8)
    out_off = np.empty(m + 1, np.int64)
    doc, idx, words = np.empty(m, np.int32), np.empty(m, np.int32), np.empty(m, np.int32)
    first, last, other = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.bool_)
    split_lines(data, offsets, LINE_CLASS, ASCII_LOWER if lowercase else SAME_BYTE, collapse,
                 out, out_off, doc, idx, first, last, words, other)
    norm = pl.Series(pa.LargeStringArray.from_buffers(m, pa.py_buffer(out_off), pa.py_buffer(out)))
    hashes = _hashes(norm)
    chars, nchars = last - first, np.diff(out_off)   # ASCII: one byte a character
    at = np.flatnonzero(other)
    if at.size:
        raw = _gather(data, first[at], last[at])
        n_, w_ = _normalised(raw, lowercase, collapse, True)
        chars[at] = raw.str.len_chars().to_numpy()
        nchars[at] = n_.str.len_chars().to_numpy()
        words[at] = w_.to_numpy()
        hashes[at] = _hashes(n_)
    # Spans in characters, each with its newline; the last line of a record ends at the record's end.
    span = chars + 1
    ends = np.cumsum(span)
    head = np.flatnonzero(idx == 0)
    before = ends[head] - span[head]
    start = ends - span - before[doc]
    doc_chars = np.append(ends[head[1:] - 1], ends[-1:]) - before - 1 if m else np.zeros(0, np.int64)
    end = np.minimum(ends - before[doc], doc_chars[doc])
    short = nchars < min_chars
    docs = pl.DataFrame({"row": rows.astype(np.int64, copy=False), "chars": doc_chars,
                         "words": np.add.reduceat(words.astype(np.int64), head) if m else np.zeros(0, np.int64),
                         "units": np.diff(np.append(head, m)),
                         "short_units": np.add.reduceat(short.astype(np.int64), head) if m else np.zeros(0, np.int64)},
                        schema=DOC_SCHEMA)
    keep = np.flatnonzero(~short)
    units = pl.DataFrame({"row": rows[doc[keep]].astype(np.int64, copy=False), "idx": idx[keep], "start": start[keep],
                          "end": end[keep], "words": words[keep], "hash": hashes[keep]}, schema=UNIT_SCHEMA)
    return units, docs


def _gather(data: np.ndarray, first: np.ndarray, last: np.ndarray) -> pl.Series:
    """The byte ranges `[first, last)` of `data` as a string column."""
    off = np.zeros(first.size + 1, np.int64)
    np.cumsum(last - first, out=off[1:])
    buf = np.empty(int(off[-1]), np.uint8)
    copy_ranges(data, first, last, buf, off)
    return pl.Series(pa.LargeStringArray.from_buffers(first.size, pa.py_buffer(off), pa.py_buffer(buf)))


class UnitHashWriter:
    """Pass 1 key writer: each batch's unit hashes and record summaries to two scratch Parquet
    files per unit of work (`<dir>/uNNNNN.parquet`, `<dir>/uNNNNN.docs.parquet`)."""

    def __init__(self, directory: Path, unit_id: int, unit: str, lowercase: bool, collapse: bool, min_chars: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = (directory / f"u{unit_id:05d}.parquet", directory / f"u{unit_id:05d}.docs.parquet")
        self.tmp = tuple(p.with_name(p.name + ".tmp") for p in self.paths)
        self.opts = (unit, lowercase, collapse, min_chars)
        self.writers: list[pq.ParquetWriter] | None = None

    def _open(self) -> list[pq.ParquetWriter]:
        schemas = [pl.DataFrame(schema=s).to_arrow().schema for s in (UNIT_SCHEMA, DOC_SCHEMA)]
        return [pq.ParquetWriter(t, s, compression="lz4", write_statistics=False) for t, s in zip(self.tmp, schemas)]

    def add(self, text, rows: np.ndarray) -> None:
        if self.writers is None:
            self.writers = self._open()
        units, docs = split_units(rows, text, *self.opts)
        self.writers[0].write_table(units.to_arrow())
        self.writers[1].write_table(docs.to_arrow())

    def close(self) -> None:
        if self.writers is None:
            self.writers = self._open()
        for w in self.writers:
            w.close()
        for t, p in zip(self.tmp, self.paths):
            t.replace(p)

    def abort(self) -> None:
        for w in self.writers or []:
            w.close()
        for t in self.tmp:
            t.unlink(missing_ok=True)


def _partitions(total_rows: int, partition_rows: int) -> int:
    bits = 0
    while (total_rows >> bits) > partition_rows and bits < 12:
        bits += 1
    return bits


def find_repeats(unit_files: list[tuple[int, Path]], ranks: pl.DataFrame, work: Path, max_documents: int,
                 partition_rows: int = PARTITION_ROWS, count: str = "documents",
                 prior: pl.LazyFrame | pl.DataFrame | None = None) -> tuple[pl.DataFrame, dict]:
    """Units to remove: every occurrence but the first of a text found in more than
    `max_documents` distinct records (`count="documents"`), or more than `max_documents` times,
    repeats inside one record included (`count="occurrences"`: Dolma's and datatrove's rule at 1).

    `unit_files` are (unit id, scratch file) pairs; `ranks` has unit, row, rank (the record's
    place in the survivor order: lower is first) for the records still kept. Returns (unit, row,
    idx, start, end, words, hash) of the units to remove and statistics. The hashes are split into
    2**bits partitions by their top bits (each file read once, spilled per partition), so memory
    holds one partition at a time. `prior`: (hash, docs) counted in earlier runs (the corpus
    index; one row per run and text, read per partition), which come first: their counts add to
    this run's, and a text they have is removed at every occurrence here (its first occurrence was
    published before)."""
    total = sum(pq.ParquetFile(p).metadata.num_rows for _u, p in unit_files)
    bits = _partitions(total, partition_rows)
    stats = {"units_hashed": total, "partitions": 1 << bits}
    empty = pl.DataFrame(schema={"unit": pl.Int64, "row": pl.Int64, "idx": pl.Int32, "start": pl.Int64,
                                 "end": pl.Int64, "words": pl.Int32, "hash": pl.UInt64})
    if total == 0 or ranks.height == 0:
        stats.update({"distinct_texts": 0, "frequent_texts": 0, "units_removed": 0, "expected_false_matches": 0.0})
        return empty, stats

    rank_of = {int(u): _dense_ranks(g) for (u,), g in ranks.group_by("unit")}

    def load(u: int, p: Path) -> pl.DataFrame:
        df = pl.read_parquet(p)
        rows, dense = df["row"].to_numpy(), rank_of.get(u, np.zeros(0, np.int64))
        rank = np.full(rows.size, -1, np.int64)
        inside = rows < dense.size
        rank[inside] = dense[rows[inside]]
        return (df.with_columns(pl.lit(u, pl.Int64).alias("unit"), pl.Series("rank", rank, pl.Int64))
                .filter(pl.col("rank") >= 0))

    if bits == 0:
        parts = [lambda: pl.concat([load(u, p) for u, p in unit_files])]
    else:
        spill = work / "paragraph_partitions"
        shutil.rmtree(spill, ignore_errors=True)  # a retried barrier starts afresh
        spill.mkdir(parents=True)
        top = pl.lit(1 << (64 - bits), pl.UInt64)
        for u, p in unit_files:
            df = load(u, p).with_columns((pl.col("hash") // top).cast(pl.Int32).alias("_part"))
            for (k,), g in df.group_by("_part"):
                g.drop("_part").write_parquet(spill / f"p{k:04d}-u{u:05d}.parquet", compression="lz4", statistics=False)
        parts = [(lambda k=k: pl.concat([pl.read_parquet(f) for f in sorted(spill.glob(f"p{k:04d}-u*.parquet"))])
                  if any(spill.glob(f"p{k:04d}-u*.parquet")) else None) for k in range(1 << bits)]
    distinct = frequent = index_texts = 0
    out = []
    for k, make in enumerate(parts):
        before = _prior_part(prior, bits, k)
        index_texts += before.height if before is not None else 0
        df = make()
        if df is None or df.height == 0:
            continue
        # Per text (window functions keep the rows in place: no sort by hash): its count, and
        # whether this row is its first occurrence in the survivor order (one per text).
        n = pl.col("rank").n_unique() if count == "documents" else pl.len()
        df = df.with_columns(n.over("hash").alias("docs"), _is_first(df).alias("_first"))
        if before is not None:
            df = (df.join(before.select("hash", pl.col("docs").alias("before")), on="hash", how="left",
                          maintain_order="left").with_columns(pl.col("before").fill_null(0)))
        else:
            df = df.with_columns(pl.lit(0, pl.Int64).alias("before"))
        hot = pl.col("docs") + pl.col("before") > max_documents
        d, f = df.select(pl.col("_first").sum().alias("d"), (pl.col("_first") & hot).sum().alias("f")).row(0)
        distinct, frequent = distinct + d, frequent + f
        # The first occurrence stays, unless an earlier run published it.
        out.append(df.filter(hot & (~pl.col("_first") | (pl.col("before") > 0)))
                   .select("unit", "row", "idx", "start", "end", "words", "hash"))
        del df
    if bits:
        shutil.rmtree(work / "paragraph_partitions", ignore_errors=True)
    removals = pl.concat(out) if out else empty
    if not _in_order(removals, ("unit", "row", "idx")):
        removals = removals.sort(*_order(removals, ("unit", "row", "idx")))
    stats.update({"distinct_texts": distinct, "frequent_texts": frequent, "units_removed": removals.height,
                  "expected_false_matches": float(distinct) * float(frequent) / 2.0 ** 64, "index_texts": index_texts})
    return removals, stats


def _dense_ranks(g: pl.DataFrame) -> np.ndarray:
    """One unit's ranks indexed by row (-1: the record is no longer kept)."""
    rows = g["row"].to_numpy()
    dense = np.full(int(rows.max()) + 1 if rows.size else 0, -1, np.int64)
    dense[rows] = g["rank"].to_numpy()
    return dense


def _is_first(frame: pl.DataFrame) -> pl.Expr:
    """Whether a row is its text's first occurrence: the lowest (rank, idx) of its hash."""
    key = _order(frame, ("rank", "idx"))
    if len(key) == 1:  # packed into one integer
        return key[0] == key[0].min().over("hash")
    lowest = pl.col("rank") == pl.col("rank").min().over("hash")
    return lowest & (pl.col("idx") == pl.when(lowest).then(pl.col("idx")).min().over("hash"))


def _in_order(frame: pl.DataFrame, columns: tuple[str, ...]) -> bool:
    """Whether the rows are strictly ascending in `columns` (checked on the packed key, if any)."""
    if frame.height < 2:
        return True
    key = _order(frame, columns)
    if len(key) != 1:
        return False
    k = frame.select(key[0]).to_series().to_numpy()
    return bool(np.all(k[1:] > k[:-1]))


def _prior_part(prior: pl.LazyFrame | pl.DataFrame | None, bits: int, k: int) -> pl.DataFrame | None:
    """(hash, docs) of earlier runs for the hashes of partition `k` of 2**bits (by top bits), the
    counts of a text summed over runs: read per partition, so memory holds one partition's share."""
    if prior is None:
        return None
    lazy = prior.lazy()
    if bits:
        lazy = lazy.filter((pl.col("hash") // pl.lit(1 << (64 - bits), pl.UInt64)).cast(pl.Int32) == k)
    return lazy.group_by("hash").agg(pl.col("docs").sum()).collect()


def _order(frame: pl.DataFrame, columns: tuple[str, ...]) -> list:
    """Sort keys for `columns` (non-negative integers), ascending in that order: one UInt64 key
    packing them when their largest values fit in 64 bits together (a sort on one key is several
    times faster than on three), else the columns themselves."""
    widths = [max(int(frame[c].max() or 0), 1).bit_length() for c in columns] if frame.height else [1] * len(columns)
    if sum(widths) > 63:
        return list(columns)
    key, shift = pl.lit(0, pl.UInt64), 0
    for c, w in reversed(list(zip(columns, widths))):
        key = key + pl.col(c).cast(pl.UInt64) * pl.lit(1 << shift, pl.UInt64)
        shift += w
    return [key]


def remove_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` without the sorted, non-overlapping character spans (the definition `cut_spans` follows)."""
    out, at = [], 0
    for s, e in spans:
        out.append(text[at:s])
        at = e
    out.append(text[at:])
    return "".join(out)


def cut_spans(text: pa.Array, record: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[pa.Array, int, int]:
    """`remove_spans` over a column at once: each record's character spans `[start, end)` removed
    (`record` the position in `text`; spans sorted by record then start, non-overlapping). Returns
    (the column, of its type; records changed; characters removed); a null stays null, unchanged.

        new, n_records, n_chars = cut_spans(column, np.array([0, 0, 2]), starts, ends)
    """
    flat = _large_strings(text)
    bufs = flat.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[flat.offset: flat.offset + len(flat) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    valid = np.ones(len(text), np.bool_) if text.null_count == 0 else pc.is_valid(text).to_numpy(zero_copy_only=False)
    keep = valid[record]
    record, start, end = record[keep], start[keep], end[keep]
    span_off = np.searchsorted(record, np.arange(len(text) + 1))
    out = np.empty(int(offsets[-1] - offsets[0]), np.uint8)
    out_off, removed = np.empty(len(text) + 1, np.int64), np.zeros(len(text), np.int64)
    cut_byte_spans(data, offsets, span_off, start.astype(np.int64), end.astype(np.int64), out, out_off, removed)
    new = pa.LargeStringArray.from_buffers(len(text), pa.py_buffer(out_off), pa.py_buffer(out))
    if text.null_count:
        new = pc.if_else(pc.is_valid(text), new, pa.scalar(None, pa.large_string()))
    if new.type != text.type:
        new = new.cast(text.type)
    return new, int(np.count_nonzero(np.diff(span_off))), int(removed.sum())
