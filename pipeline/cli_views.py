"""Terminal views (rich) of the steward's commands: inspect, explain, diff."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else ("-" if v is None else str(v))


def show_summary(s: dict, console: Console) -> None:
    """`hygiene inspect`."""
    console.print(f"[bold]run {s['run_id']}[/]  {s['started_at']} → {s['ended_at']}  config {s['config_sha256'][:12]}…")
    console.print(f"inputs: {s['inputs']['files']} file(s), {s['inputs']['bytes']:,} bytes"
                  + (f", {s['inputs']['skipped']} skipped (already processed)" if s["inputs"]["skipped"] else ""))
    t = Table(title="sources")
    for c in ("source", "kind", "license", "input", "kept", "dropped", "quarantined", "rejected"):
        t.add_column(c, justify="right" if c in ("input", "kept", "dropped", "quarantined", "rejected") else "left")
    for src in s["sources"]:
        t.add_row(src["name"], src["kind"], src["license"] or "-", *(_n(src[k]) for k in ("input", "kept", "dropped", "quarantined", "rejected")))
    console.print(t)
    f = Table(title="funnel (per stage: seen → kept, dropped)")
    for c in ("stage", "seen", "kept", "dropped"):
        f.add_column(c, justify="left" if c == "stage" else "right")
    for name, st in s["funnel"].items():
        f.add_row(name, _n(st["seen"]), _n(st["kept"]), _n(st["dropped"]))
    console.print(f)
    counted = {name: st for name, st in s["funnel"].items() if st.get("counts")}
    for name, st in counted.items():  # a stage's own counters (e.g. records per language), per source
        sources = sorted(st.get("counts_by_source") or {})
        c = Table(title=f"{name}: records per value")
        for col in ("value", "records", *sources):
            c.add_column(col, justify="left" if col == "value" else "right")
        rows = sorted(st["counts"].items(), key=lambda kv: (-kv[1], kv[0]))
        for key, total in rows[:40]:
            c.add_row(key, _n(total), *(_n(st["counts_by_source"][src].get(key, 0)) for src in sources))
        console.print(c)
        if len(rows) > 40:
            console.print(f"  … and {len(rows) - 40} more values (inspect --json lists them all)")
    if s["removals"]:
        r = Table(title="removals by reason and source")
        for c in ("source", "decision", "stage", "reason", "records"):
            r.add_column(c, justify="right" if c == "records" else "left")
        for row in s["removals"][:30]:
            r.add_row(row["source"], row["decision"], row["stage"], row["reason"] or "-", _n(row["records"]))
        console.print(r)
    nd = s.get("near_dedup")
    if nd:
        console.print(f"near duplicates: threshold {nd['threshold']}, {nd['bands']}×{nd['rows']} bands "
                      f"(P(candidate at threshold) {nd['candidate_probability_at_threshold']:.3f}), "
                      f"{nd['candidate_pairs']:,} candidate pairs, {nd['verified_pairs']:,} verified, "
                      f"{nd['clusters']:,} clusters, sizes {nd['cluster_sizes'] or '{}'}")
    pii = s.get("pii")
    if not pii:
        console.print("PII: stage not run")
    else:
        model = pii["engine"]["model"]
        console.print(f"PII ({model.get('name')} {model.get('version')}): records {pii['records_by_action'] or '{}'}; "
                      f"spans by type {pii['by_entity'] or '{}'}; actions {pii['actions']}")
        if "records_by_language" in pii:
            models = {k: (v.get("model") or {}).get("name") for k, v in (pii["engine"].get("languages") or {}).items()}
            gap = pii["records_patterns_only"]
            console.print(f"PII routed by language (models {models or '{}'}): records by language "
                          f"{pii['records_by_language'] or '{}'}, by coverage {pii['records_by_coverage'] or '{}'}; "
                          + (f"[bold]{gap:,} kept record(s) scanned by patterns only, names NOT searched[/bold] "
                             f"{pii.get('records_patterns_only_by_language') or ''}" if gap
                             else "every kept record scanned with an NER model for its language"))
        res = pii.get("residual_scan")
        if not res:
            console.print("residual PII scan: not run")
        elif "upper_bound" in res:
            scope = ("every kept record" if res["full"]
                     else f"sample {res['sample_fraction']:g} of {res['population']:,}")
            console.print(f"residual PII scan: {res['records_with_residual']:,} of {res['records']:,} scanned records "
                          f"({scope}) "
                          f"hold residual PII: rate {res['rate']:.3%}, {res['confidence']:.0%} upper bound "
                          f"{res['upper_bound']:.3%}; {res['spans']:,} span(s) {res['by_entity'] or ''}")
        else:
            console.print(f"residual PII scan: {res['spans']:,} span(s) in {res['records']:,} records scanned "
                          f"(sample {res['sample_fraction']:g}) {res['by_entity'] or ''}")
    if s.get("timings"):
        show_timings(s["timings"], console)
    console.print(f"quarantined: {s['quarantined']:,}; hash lists: {len(s['hash_lists']) or 'none configured'}")
    q = s.get("quarantine") or {}
    if q.get("variant_matches"):
        console.print("  matched through a variant: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in q["variant_matches"].items())
                      + "; by variant: " + ", ".join(f"{k} {v}" for k, v in q.get("by_variant", {}).items()))
    sig = s["signature"]
    console.print("signature: " + (f"signed (ed25519, key {sig['keyid'][:16]}…)" if sig["signed"] else "[yellow]unsigned[/]"))
    v = s["verification"]
    if v is not None:
        console.print("verification: " + ("[green]ok[/]" if v["ok"] else
                      "[red]FAILED[/]: " + "; ".join(f"{x['name']}: {x['detail']}" for x in v["failures"])))
    so = s.get("signoff")
    console.print("sign-off: " + ("none recorded" if so is None else
                  f"{'[green]PASSED[/]' if so['passed'] else '[red]FAILED[/]'} ({so['policy']}) by {so['approver']} at {so['at']}"
                  + (f"; failed: {', '.join(so['failed_rules'])}" if so["failed_rules"] else "")))
    console.print(f"output: {s['outputs']['shards']} shard(s), {s['outputs']['rows']:,} rows, {s['outputs']['bytes']:,} bytes")


def show_timings(tm: dict, console: Console) -> None:
    """Where the run's time went: per phase (wall, CPU of the process tree, CPU/wall, MB/s) and per stage."""
    t = Table(title=f"time per phase ({tm.get('cpu') or 'unknown CPU'}, {tm.get('cores') or '?'} cores; "
                    f"total {tm.get('total_wall_s') or 0:,.1f} s)")
    for c in ("phase", "items", "wall s", "CPU s", "CPU/wall", "MB/s"):
        t.add_column(c, justify="left" if c == "phase" else "right")
    for p in tm["phases"]:
        t.add_row(p["name"], _n(p.get("items", 1)), f"{p['wall_s']:,.2f}",
                  "-" if p.get("cpu_s") is None else f"{p['cpu_s']:,.2f}",
                  "-" if p.get("cpu_per_wall") is None else f"{p['cpu_per_wall']:.2f}",
                  "-" if p.get("mb_per_s") is None else f"{p['mb_per_s']:,.3f}")
    console.print(t)
    st = Table(title="time per stage (a stage's wall time sums its tasks, which overlap on several workers)")
    for c in ("stage", "wall s", "CPU s"):
        st.add_column(c, justify="left" if c == "stage" else "right")
    for name, v in tm["stages"].items():
        st.add_row(name, f"{v['wall_s']:,.2f}", f"{v['cpu_s']:,.2f}")
    if tm.get("residual_scan"):
        st.add_row("residual PII scan (inside pii)", f"{tm['residual_scan']['wall_s']:,.2f}", f"{tm['residual_scan']['cpu_s']:,.2f}")
    console.print(st)


def show_story(st: dict, console: Console) -> None:
    """`hygiene explain`."""
    src = st["source"]
    console.print(f"[bold]{st['record_id']}[/] in run {st['run_id']}")
    console.print(f"from source {src['name']} ({src['kind']}, licence {src['license'] or '-'}): {src['location']} row {src['row']}")
    if src["input"]:
        console.print(f"  input file {src['input']['path']} sha256 {src['input']['sha256'][:16]}…")
    console.print(f"content sha256 {st['content_sha256']}  ({_n(st['text_bytes'])} bytes of text)")
    t = Table(title="stages")
    for c in ("stage", "result", "reason"):
        t.add_column(c)
    for s in st["stages"]:
        t.add_row(s["stage"], s["result"], s.get("reason") or "")
    console.print(t)
    console.print(f"final decision: [bold]{st['decision']}[/] at {st['stage']}" + (f" ({st['reason']})" if st["reason"] else ""))
    ev = st["evidence"]
    if ev.get("duplicate_of"):
        console.print(f"duplicate of {ev['duplicate_of']}" + ("" if ev.get("survivor_in_this_run") else " (published by an earlier run)"))
    if ev.get("cluster_id") is not None:
        console.print(f"near-duplicate cluster {ev['cluster_id']}, similarity to survivor {ev.get('similarity_to_survivor')}")
        for m in ev["cluster"]:
            console.print(f"  {m['record_id']}: {m['decision']}" + (f" (similarity {m['similarity']:.3f})" if m["similarity"] is not None else ""))
    if ev.get("shard"):
        console.print(f"written to {ev['shard']['path']}")
    if st["ledger_rows_with_this_id"] > 1:
        console.print(f"[yellow]{st['ledger_rows_with_this_id']} ledger rows carry this id (repeated ids are rejected)[/]")


def show_diff(d: dict, console: Console) -> None:
    """`hygiene diff`."""
    console.print(f"A = {d['a']['run_id']} ({d['a']['path']})\nB = {d['b']['run_id']} ({d['b']['path']})")
    t = Table(title="totals")
    for c in ("", "A", "B", "change"):
        t.add_column(c, justify="left" if not c else "right")
    for k, v in d["totals"].items():
        t.add_row(k, _n(v["a"]), _n(v["b"]), f"{v['b'] - v['a']:+,}")
    console.print(t)
    if d["count_changes"]:
        c = Table(title="counts per stage / decision / reason that changed")
        for col in ("stage / decision / reason", "A", "B"):
            c.add_column(col, justify="left" if col.startswith("stage") else "right")
        for k, v in d["count_changes"].items():
            c.add_row(k, _n(v["a"]), _n(v["b"]))
        console.print(c)
    dc = d["decision_changes"]
    console.print(f"records whose decision changed: {dc['total']:,}" + (f" (matching {dc['filter']!r})" if dc.get("filter") else ""))
    if dc.get("transitions"):
        t = Table(title="decision changes (A → B) and the stage that caused them")
        for col in ("A", "B", "caused by", "records"):
            t.add_column(col, justify="right" if col == "records" else "left")
        for r in dc["transitions"]:
            t.add_row(r["a"] or "(absent)", r["b"] or "(absent)", r["cause"], _n(r["records"]))
        console.print(t)
        console.print("per stage: " + ", ".join(f"{k} {_n(v)}" for k, v in dc["by_stage"].items()))
    if dc["records"]:
        console.print(f"records" + (f" (first {len(dc['records'])})" if dc["total"] > len(dc["records"]) else "") + ":")
    for r in dc["records"]:
        why = f"  (by {r['cause']})" if r.get("cause") else ""
        console.print(f"  {r['record_id']}: {r['a'] or '(absent)'} → {r['b'] or '(absent)'}{why}")
    if d["config_changes"]:
        console.print("config changes:")
        for k, v in d["config_changes"].items():
            console.print(f"  {k}: {v['a']!r} → {v['b']!r}")
    else:
        console.print("config: identical" if d["config_sha256"]["a"] == d["config_sha256"]["b"] else "config: same settings")
    for i in d["input_changes"]:
        console.print(f"  input {i['source']}/{i['relpath']}: {(i['a'] or '(absent)')[:12]} → {(i['b'] or '(absent)')[:12]}")
    for h in d["hash_list_changes"]:
        console.print(f"  hash list {h['name']} changed")
