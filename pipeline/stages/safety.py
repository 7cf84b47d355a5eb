"""The safety stage: every record is matched against the configured hash lists of known
prohibited material before anything about it persists; a match is quarantined (hashes, ids and
the location go to an owner-only incident file), never copied.

It is always the first stage of a run. Text records are matched on their digests (and a URL
column when configured), image records on their exact and perceptual hashes, which the core
computes once while reading (`ctx.extra["image_hashes"]`).
"""

from __future__ import annotations

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BatchContext, RecordStage, Verdicts
from pipeline.safety.hashlist import HashListError
from pipeline.safety.matcher import Matcher
from pipeline.safety.quarantine import incident

QUARANTINED = DecisionKind("quarantined", Category.QUARANTINED,
                           "matched a hash list of known prohibited material; quarantined, never copied")
EVIDENCE = ("hash_list", "hash_entry", "hash_type", "hash_distance")


def match_reason(m) -> str:
    """The ledger reason of a match (list name, hash type, what matched; never content)."""
    return f"matched hash list '{m.list}' ({m.hash_type}, {m.matched_on})"


class SafetyStage(RecordStage):
    """Hash-list matching and quarantine (the Safety by Design control for known material)."""

    kind = "safety"
    description = "matches every record against hash lists of known prohibited material; matches are quarantined"
    decisions = (QUARANTINED,)
    config_section = "safety"

    def setup(self) -> "SafetyStage":
        """Load and validate every list (fail closed), and check each is the list the plan recorded."""
        self.matcher = Matcher.from_config(self.plan.config)
        expected = {h["name"]: h.get("sha256") for h in self.plan.hash_lists}
        for hl, _ in self.matcher.lists:
            if hl.name in expected and expected[hl.name] != hl.sha256:
                raise HashListError(f"{hl.path}: hash list '{hl.name}' changed during the run; run again")
        return self

    def active(self) -> bool:
        return self.matcher is not None and self.matcher.active

    @property
    def dihedral(self) -> bool:
        """Whether image hashes must include the dihedral variants for matching."""
        return bool(self.active() and self.matcher.dihedral)

    def process(self, table, ctx: BatchContext) -> Verdicts:
        """Quarantine verdicts; incidents (hashes and locations only) go to `ctx.extra["incidents"]`."""
        n = table.num_rows
        if not self.active() or n == 0:
            return Verdicts.keep_all(n)
        images = ctx.extra.get("image_hashes")
        if images is not None:
            hits = [self.matcher.match_image(h) for h in images]
        else:
            url_field = self.matcher.url_field
            urls = table[url_field].to_pylist() if url_field and url_field in table.column_names else None
            hits = self.matcher.match_text(table[ctx.text_field], ctx.extra["digests"], urls)
        rows = ctx.rows.tolist()
        out = []
        for i, m in enumerate(hits):
            if m is None:
                out.append(None)
                continue
            ctx.extra["incidents"].append(incident(m, ctx.record_ids[i], ctx.source, ctx.extra["uris"][i],
                                                   ctx.extra["locations"][i], rows[i]))
            out.append((QUARANTINED.name, match_reason(m),
                        {"hash_list": m.list, "hash_entry": m.entry_id, "hash_type": m.hash_type,
                         "hash_distance": m.distance}))
        return Verdicts.from_rows(out)

    def match_rejected(self, hashes):
        """The first match among the images of a record the reader rejected (safety wins over
        rejection), as (match, image hash), or None."""
        if not self.active():
            return None
        for h in hashes:
            m = None if h.rejected else self.matcher.match_image(h)
            if m is not None:
                return m, h
        return None

    def summary(self) -> dict:
        return {"lists": len(self.matcher.lists) if self.matcher is not None else 0}
