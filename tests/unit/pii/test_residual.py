"""The residual scan's sample size and confidence bound (no model needed)."""

from __future__ import annotations

import pytest

from pipeline.pii.config import ResidualScanConfig
from pipeline.pii.residual import ResidualScan, in_sample, required_records, sample_fraction, summarize, upper_bound
from pipeline.pii.spans import Span


@pytest.mark.parametrize("k,n,expected", [
    # scipy.stats.beta.ppf(0.95, k + 1, n - k): the one-sided Clopper-Pearson bound
    (1, 10, 0.394163), (5, 100, 0.102253), (3, 3000, 0.002583), (40, 2000, 0.025956),
])
def test_the_upper_bound_is_the_clopper_pearson_bound(k, n, expected):
    assert upper_bound(k, n, 0.95) == pytest.approx(expected, abs=1e-5)


def test_the_bound_of_a_clean_sample_and_the_edges():
    assert upper_bound(0, 2995, 0.95) <= 0.001 < upper_bound(0, 2994, 0.95)
    assert required_records(0.95, 0.001) == 2995
    assert upper_bound(0, 0, 0.95) == 1.0 and upper_bound(7, 7, 0.95) == 1.0
    assert upper_bound(3, 100, 0.99) > upper_bound(3, 100, 0.95) > 3 / 100


def test_the_sample_is_sized_for_the_target_and_never_below_the_whole_run():
    cfg = ResidualScanConfig()
    assert sample_fraction(cfg, 1_000) == 1.0                      # a small run is scanned whole
    f = sample_fraction(cfg, 1_000_000)
    assert f * 1_000_000 == pytest.approx(1.1 * 2995)
    assert sample_fraction(ResidualScanConfig(sample_fraction=0.25), 10) == 0.25   # an explicit share wins
    ids = [f"r{i}" for i in range(20_000)]
    picked = sum(in_sample(r, 0.1) for r in ids)
    assert 1_800 < picked < 2_200 and [in_sample(r, 0.1) for r in ids[:50]] == [in_sample(r, 0.1) for r in ids[:50]]


def test_residual_spans_inside_tokens_are_not_counted_and_records_are_counted_once():
    def detect(texts):
        return [[Span("PERSON", 0, 5, 0.9), Span("PERSON", 6, 11, 0.9)] if t.startswith("Alice") else
                [Span("PERSON", 0, 8, 0.9)] for t in texts]

    scan = ResidualScan(detect, 1.0)
    # record 1: two residual names in one field; record 2: a "name" that is the redaction token itself
    scan.scan([[("Alice Bobby met", [])], [("<PERSON> left", [(0, 8)])], []])
    d = scan.to_dict()
    assert (d["records"], d["records_with_residual"], d["spans"]) == (3, 1, 2)
    s = summarize([d, {"records": 7, "records_with_residual": 0, "spans": 0}], ResidualScanConfig(), 10, 1.0)
    assert s["records"] == 10 and s["rate"] == 0.1 and s["upper_bound"] == pytest.approx(upper_bound(1, 10, 0.95), abs=1e-6)
    assert s["full"] is True and s["population"] == 10
