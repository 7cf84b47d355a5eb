"""The residual scan: detection over the redacted text of a deterministic sample of the kept
records, reported as a rate of records with residual personal data and its upper confidence bound.

Scanning every output record again costs as much as detection itself. A sample answers the
question a reviewer asks ("at most what share of the output still holds personal data?") with a
stated confidence for a fraction of the cost: by default the sample is sized so that a sample
with no residual PII bounds the rate below `target_rate` at `confidence` (2,995 records for
0.1% at 95%), and the sign-off policy compares the bound, not the point estimate.

The redacted text is made from the record's text and its detected spans exactly as pass 2 writes
it (`Redactor.apply_with_positions`), so the scan can run beside detection, on every worker,
instead of inside the shard writer.

Usage::

    fraction = sample_fraction(cfg.residual_scan, records_entering_the_stage)
    scan = ResidualScan(engine, fraction)
    picked = scan.sample(record_ids)                  # positions in the sample
    scan.scan(redacted_texts, token_positions)        # per sampled, kept record
    scan.to_dict()                                    # additive counters; see `summarize`
"""

from __future__ import annotations

import hashlib
import math
import time

from pipeline.pii.redact import resolve
from pipeline.pii.spans import Span

# Oversampling of the sample size: the hash sample is binomial, and records the stage drops
# leave it, so ask for a tenth more than the bound needs.
OVERSAMPLE = 1.1


def required_records(confidence: float, target_rate: float) -> int:
    """The sample size whose clean result (no residual record) bounds the rate below `target_rate`
    at `confidence`: the smallest n with (1 - target_rate)^n <= 1 - confidence."""
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target_rate))


def sample_fraction(cfg, population: int) -> float:
    """The share of records the scan looks at: `sample_fraction` when set, else sized for the
    confidence target over `population` records (1.0 for small runs)."""
    if cfg.sample_fraction is not None:
        return float(cfg.sample_fraction)
    if population <= 0:
        return 1.0
    return min(1.0, OVERSAMPLE * required_records(cfg.confidence, cfg.target_rate) / population)


def in_sample(record_id: str, fraction: float) -> bool:
    """Whether a record is in the deterministic sample (by a hash of its id)."""
    if fraction >= 1.0:
        return True
    return int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:4], "big") < int(fraction * 2**32)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lg = math.lgamma(n + 1)
    terms = [lg - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq for j in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def upper_bound(k: int, n: int, confidence: float) -> float:
    """The one-sided Clopper-Pearson upper bound of a rate with `k` hits in `n` trials: the largest
    p with P(X <= k) >= 1 - confidence (1.0 when n == 0 or k == n)."""
    if n <= 0 or k >= n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    lo, hi = k / n, 1.0
    for _ in range(100):  # bisection: the CDF falls as p grows
        mid = (lo + hi) / 2
        if _binom_cdf(k, n, mid) >= alpha:
            lo = mid
        else:
            hi = mid
    return hi


class ResidualScan:
    """Counts residual spans (spans not inside an inserted redaction token) in sampled records."""

    def __init__(self, detect, fraction: float):
        self.detect = detect
        self.fraction = fraction
        self.records = 0
        self.records_with_residual = 0
        self.spans = 0
        self.by_entity: dict[str, int] = {}
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def sample(self, record_ids: list[str]) -> list[int]:
        """Positions of the records in the deterministic sample."""
        return [i for i, r in enumerate(record_ids) if in_sample(r, self.fraction)]

    def scan(self, records: list[list[tuple[str, list[tuple[int, int]]]]], keys: list[str] | None = None) -> None:
        """One entry per sampled record: its redacted text fields with their token positions;
        with `keys` (one per record), `detect(texts, keys)` scans each record by the engine its
        key names (`pipeline.pii.router`)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        flat = [(k, text, toks) for k, fields in enumerate(records) for text, toks in fields if text]
        hit = [False] * len(records)
        if flat:
            texts = [t for _, t, _ in flat]
            found = self.detect(texts) if keys is None else self.detect(texts, [keys[k] for k, _, _ in flat])
            for (k, text, toks), spans in zip(flat, found):
                for s in resolve(spans):
                    if not inside_tokens(text, s, toks):
                        hit[k] = True
                        self.spans += 1
                        self.by_entity[s.entity] = self.by_entity.get(s.entity, 0) + 1
        self.records += len(records)
        self.records_with_residual += sum(hit)
        self.seconds += time.perf_counter() - t0
        self.cpu_seconds += time.thread_time() - c0

    def to_dict(self) -> dict:
        """Additive counters (summed over tasks by `summarize`)."""
        return {"records": self.records, "records_with_residual": self.records_with_residual, "spans": self.spans,
                "by_entity": dict(sorted(self.by_entity.items())), "seconds": round(self.seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3)}


def summarize(parts: list[dict], cfg, population: int, fraction: float) -> dict:
    """The manifest's residual-scan section from the tasks' counters."""
    total = {"records": 0, "records_with_residual": 0, "spans": 0, "by_entity": {}, "seconds": 0.0, "cpu_seconds": 0.0}
    for p in parts:
        for k in ("records", "records_with_residual", "spans", "seconds", "cpu_seconds"):
            total[k] += p.get(k, 0)
        for e, n in p.get("by_entity", {}).items():
            total["by_entity"][e] = total["by_entity"].get(e, 0) + n
    n, k = total["records"], total["records_with_residual"]
    return {
        "records": n, "records_with_residual": k, "spans": total["spans"],
        "by_entity": dict(sorted(total["by_entity"].items())),
        "population": population, "sample_fraction": round(fraction, 6), "full": fraction >= 1.0,
        "rate": round(k / n, 6) if n else 0.0,
        "confidence": cfg.confidence,
        "upper_bound": round(upper_bound(k, n, cfg.confidence), 6),
        "seconds": round(total["seconds"], 3), "cpu_seconds": round(total["cpu_seconds"], 3),
    }


def inside_tokens(text: str, span: Span, tokens: list[tuple[int, int]]) -> bool:
    """True when every letter or digit of the span lies inside inserted redaction tokens
    (a detector that tags "<PERSON> <PERSON>" as one name has found no residual PII)."""
    inside = [(a, b) for a, b in tokens if a < span.end and span.start < b]
    for i in range(span.start, span.end):
        if text[i].isalnum() and not any(a <= i < b for a, b in inside):
            return False
    return True
