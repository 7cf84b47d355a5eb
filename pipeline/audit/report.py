"""A self-contained HTML report of a run: no network, no scripts from elsewhere, charts as inline SVG.

Usage::

    html = render_report(Path("runs/sample"))
    Path("report.html").write_text(html)
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from pipeline.audit.inspect import summarize

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde;padding-bottom:.3rem}
.meta{color:#5a6275;font-size:.9rem}.ok{color:#127a3a;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#8a5a00;font-weight:600}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #dde;padding:.3rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f5f9}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #dde;border-radius:8px;padding:.7rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.4rem}svg text{font-size:12px;fill:#1d2330}
.sample{border:1px solid #dde;border-radius:8px;padding:.5rem 1rem;margin:.7rem 0}.sample p{margin:.3rem 0}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f8fb;padding:.5rem;border-radius:4px;font-size:.85rem}
del{background:#fde2e1;color:#b3261e}ins{background:#dcf5e3;color:#127a3a;text-decoration:none;font-weight:600}
"""


def _esc(v) -> str:
    return html.escape("-" if v is None else str(v))


def _bars(chart_id: str, items: list[tuple[str, int]], color: str = "#3b6fd8", width: int = 720) -> str:
    """A horizontal bar chart as inline SVG; every bar carries its value in data-value."""
    if not items:
        return f'<p id="{chart_id}" class="meta">nothing to chart</p>'
    label_w, bar_h, gap = 260, 22, 6
    top = max(v for _, v in items) or 1
    height = len(items) * (bar_h + gap) + gap
    rows = []
    for i, (label, value) in enumerate(items):
        y = gap + i * (bar_h + gap)
        w = max(1.0, (width - label_w - 90) * value / top) if value else 0
        rows.append(
            f'<g class="bar" data-label="{_esc(label)}" data-value="{value}"><title>{_esc(label)}: {value:,}</title>'
            f'<text x="{label_w - 8}" y="{y + bar_h * 0.7}" text-anchor="end">{_esc(label)[:40]}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}" rx="3"></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7}">{value:,}</text></g>'
        )
    return (f'<svg id="{chart_id}" class="chart" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(rows)}</svg>')


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), table_id: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{v:,}</td>' if i in numeric and isinstance(v, int) else f"<td>{_esc(v)}</td>"
                         for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _content_html(c: dict) -> str:
    if c.get("status") not in ("ok", "unverified"):
        return f'<p class="warn">{_esc(c.get("status"))}: {_esc(c.get("note"))}</p>'
    check = "sha256 verified" if c["status"] == "ok" else "not verified (no digest in the ledger)"
    if c.get("kind") == "image":
        dims = f'{c["width"]}×{c["height"]}, ' if "width" in c else ""
        return (f'<p class="meta">image: {dims}{c["bytes"]:,} bytes, sha256 {_esc(c["sha256"])}, pdq {_esc(c.get("pdq"))}, '
                f'phash {_esc(c.get("phash"))} ({check}; bytes not shown)</p>')
    cut = f', first {len(c["text"]):,} shown' if c.get("truncated") else ""
    return (f'<p class="meta">text: {c["chars"]:,} chars{cut} ({check}, {_esc(c.get("masked_spans"))} PII span(s) masked)</p>'
            f'<pre class="text">{_esc(c["text"])}</pre>')


def _samples_html(run_dir: Path, n: int, removals: list[dict]) -> str:
    """N records of each dropped decision, read back, masked, with survivors and marked differences."""
    from pipeline.audit.sample import Masker, condensed, sample_records, visible
    from pipeline.audit.verify import load_manifest
    from pipeline.core.decisions import Category
    from pipeline.core.registry import manifest_decisions

    manifest = load_manifest(run_dir)
    table = manifest_decisions(manifest)
    present = {r["decision"] for r in removals}
    decisions = [d for d in table.names(Category.DROPPED) if d in present]
    if not decisions:
        return '<p id="samples" class="meta">No record was dropped: nothing to sample.</p>'
    masker = Masker(manifest)
    parts = [f'<p class="meta" id="samples">{n} record(s) per dropped decision, chosen by seed 0 '
             f'(<code>hygiene sample RUN --reason DECISION</code> shows others). Personal data: {_esc(masker.note)}. '
             'Quarantined records are never shown.</p>']
    for d in decisions:
        s = sample_records(run_dir, d, n=n, seed=0, masker=masker)
        parts.append(f'<section class="sample-group" id="samples-{_esc(d)}" data-decision="{_esc(d)}">'
                     f'<h3>{_esc(d)}: {s["matching"]:,} record(s), {len(s["records"])} shown</h3>')
        for r in s["records"]:
            ev = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r["evidence"].items())
            parts.append(f'<div class="sample" data-record-id="{_esc(r["record_id"])}">'
                         f'<p><b>{_esc(r["record_id"])}</b> <span class="meta">{_esc(r["source"])}: {_esc(r["location"])} '
                         f'row {r["row"]}</span></p><p>{_esc(r["stage"])}: {_esc(r["reason"])}</p>'
                         + (f'<p class="meta">evidence: {_esc(ev)}</p>' if ev else "") + _content_html(r["content"]))
            sv = r.get("survivor")
            if sv:
                parts.append(f'<p>survivor <b>{_esc(sv["record_id"])}</b>'
                             + (f' ({_esc(sv.get("decision"))})' if sv.get("decision") else "") + "</p>")
                if sv["content"].get("kind") != "text":
                    parts.append(_content_html(sv["content"]))
            if r.get("diff") is not None and all(op == "=" for op, _ in r["diff"]):
                over = f' in their first {r["diff_chars"]:,} characters' if r.get("diff_chars") else ""
                parts.append(f'<p class="meta">identical to the survivor\'s text{over} (after masking)</p>')
            elif r.get("diff") is not None:
                marks = {"-": "del", "+": "ins"}
                body = "".join(f"<{marks[op]}>{_esc(t)}</{marks[op]}>" if op in marks else _esc(t)
                               for op, t in visible(condensed(r["diff"])))
                parts.append('<p class="meta">differences from the survivor (struck: only in the survivor; '
                             f'green: only in this record):</p><pre class="diff">{body}</pre>')
            parts.append("</div>")
        parts.append("</section>")
    return "".join(parts)


def render_report(run_dir: Path, samples: int = 0) -> str:
    """The report of one run as a single HTML string; `samples` > 0 adds that many read-back records
    per dropped decision (masked; never a quarantined record)."""
    s = summarize(Path(run_dir))
    signoff = s["signoff"]
    t = s["totals"]
    v = s["verification"]
    sig = s["signature"]
    cards = "".join(
        f'<div class="card" id="card-{k}"><span>{k}</span><b data-value="{t[k]}">{t[k]:,}</b></div>'
        for k in ("input", "kept", "dropped", "quarantined", "rejected")
    )
    funnel = _bars("funnel", [(name, st["kept"]) for name, st in s["funnel"].items()])
    by_reason: dict[str, int] = {}
    for r in s["removals"]:
        key = f"{r['decision']}: {r['reason'] or '-'}"
        by_reason[key] = by_reason.get(key, 0) + r["records"]
    by_source: dict[str, int] = {}
    for r in s["removals"]:
        by_source[r["source"]] = by_source.get(r["source"], 0) + r["records"]
    nd = s["near_dedup"] or {}
    clusters = _bars("cluster-sizes", list((nd.get("cluster_sizes") or {}).items()), color="#7a4bd1")
    pii = s.get("pii")
    pii_html = _bars("pii", sorted((pii or {}).get("by_entity", {}).items())) if pii else \
        '<p id="pii" class="meta">The PII stage did not run in this version of the pipeline: no PII counts to report.</p>'
    hash_lists = (_table(["name", "version", "type", "entries", "sha256"],
                         [[h.get("name"), h.get("version"), h.get("type"), h.get("entries"), (h.get("sha256") or "")[:16]]
                          for h in s["hash_lists"]], {3}, "hash-lists")
                  if s["hash_lists"] else '<p id="hash-lists" class="meta">No hash lists were configured for this run.</p>')
    verification = (f'<p id="verification" class="{"ok" if v["ok"] else "bad"}">'
                    + ("Verified: every digest, the Merkle root, the conservation totals and the chain check out."
                       if v["ok"] else "Verification FAILED: " + "; ".join(_esc(f"{x['name']}: {x['detail']}") for x in v["failures"]))
                    + "</p>")
    signature = (f'<p id="signature" class="ok">Signed (Ed25519, key {_esc(sig["keyid"][:16])}…).</p>' if sig["signed"]
                 else '<p id="signature" class="warn">Unsigned: no signing key was configured.</p>')
    signoff_html = ('<p id="signoff" class="meta">No sign-off recorded.</p>' if signoff is None else
                    f'<p id="signoff" class="{"ok" if signoff["passed"] else "bad"}">Sign-off by {_esc(signoff["approver"])} '
                    f'on {_esc(signoff["at"])}: {"PASSED" if signoff["passed"] else "FAILED"}</p>')
    sources = _table(["source", "kind", "licence", "input", "kept", "dropped", "quarantined", "rejected"],
                     [[x["name"], x["kind"], x["license"], x["input"], x["kept"], x["dropped"], x["quarantined"], x["rejected"]]
                      for x in s["sources"]], {3, 4, 5, 6, 7}, "sources")
    near = ("" if not nd else
            f'<p class="meta">Threshold {nd["threshold"]}, {nd["bands"]}×{nd["rows"]} bands (probability of flagging a pair at the '
            f'threshold {nd["candidate_probability_at_threshold"]:.3f}), {nd["candidate_pairs"]:,} candidate pairs, '
            f'{nd["verified_pairs"]:,} verified, {nd["clusters"]:,} clusters.</p>')
    tm = s.get("timings")
    timings_html = ('<p id="timings" class="meta">This run recorded no timings (written before they were measured).</p>'
                    if not tm else
                    f'<p class="meta">{_esc(tm.get("cpu") or "unknown CPU")}, {tm.get("cores") or "?"} cores; total '
                    f'{tm.get("total_wall_s") or 0:,.1f} s. CPU is the process tree\'s (the run and its worker processes).</p>'
                    + _table(["phase", "items", "wall s", "CPU s", "CPU/wall", "MB/s"],
                             [[p["name"], p.get("items", 1), f'{p["wall_s"]:,.2f}',
                               "-" if p.get("cpu_s") is None else f'{p["cpu_s"]:,.2f}',
                               "-" if p.get("cpu_per_wall") is None else f'{p["cpu_per_wall"]:.2f}',
                               "-" if p.get("mb_per_s") is None else f'{p["mb_per_s"]:,.3f}'] for p in tm["phases"]],
                             {1, 2, 3, 4, 5}, "timings")
                    + _table(["stage", "wall s (summed over tasks)", "CPU s"],
                             [[k, f'{v["wall_s"]:,.2f}', f'{v["cpu_s"]:,.2f}'] for k, v in tm["stages"].items()],
                             {1, 2}, "stage-timings"))
    samples_html = (f'<h2>Samples of removed records</h2>{_samples_html(Path(run_dir), samples, s["removals"])}'
                    if samples > 0 else "")
    data = json.dumps({"totals": t, "funnel": s["funnel"], "run_id": s["run_id"]}, sort_keys=True)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hygiene run {_esc(s['run_id'])}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>{_CSS}</style></head><body>
<h1>Run {_esc(s['run_id'])}</h1>
<p class="meta">{_esc(s['started_at'])} → {_esc(s['ended_at'])} · config sha256 {_esc(s['config_sha256'][:16])}… ·
{s['inputs']['files']} input file(s), {s['inputs']['bytes']:,} bytes · {s['outputs']['shards']} shard(s), {s['outputs']['rows']:,} rows</p>
<div class="cards">{cards}</div>
<h2>Verification and sign-off</h2>{verification}{signature}{signoff_html}
<h2>Funnel: records kept after each stage</h2>{funnel}
<h2>Removals by reason</h2>{_bars("removals-by-reason", sorted(by_reason.items(), key=lambda kv: -kv[1]), "#d8703b")}
<h2>Removals by source</h2>{_bars("removals-by-source", sorted(by_source.items(), key=lambda kv: -kv[1]), "#d8703b")}
<h2>Sources</h2>{sources}
<h2>Near-duplicate clusters by size</h2>{near}{clusters}
<h2>PII by entity type</h2>{pii_html}
<h2>Hash lists</h2>{hash_lists}
<h2>Where the time went</h2>{timings_html}
{samples_html}<script type="application/json" id="run-data">{html.escape(data, quote=False)}</script>
</body></html>
"""
