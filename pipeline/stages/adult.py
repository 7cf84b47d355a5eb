"""Adult-content screening: `adult_image` (NudeNet's bundled detector) and `adult_text` (a term list).

Thorn's Safety by Design guidance asks that adult sexual content be kept apart from anything
involving children in training data. These stages screen for adult content; they are **not** a
CSAM classifier. Known child sexual abuse material is controlled by hash-list matching in the
safety stage, which runs before them and quarantines matches.

`adult_image` (per record, pass 1, image records only) decodes each image with the safe decoder
(bounded pixels and time; animated images: the first frame), runs NudeNet 3.4.2's 320n ONNX
detector on onnxruntime's CPU provider in batches (`pipeline.content.nsfw`), and records per image
the highest score of each configured class. Modes: `score` records the scores; `tag` also records
`adult_flagged`; `drop` drops an image whose score of any configured class reaches its threshold
(`dropped_adult`, reason `adult_image FEMALE_BREAST_EXPOSED 0.812 >= 0.6`). Evidence of every
screened image, kept or dropped: `adult_top` (the configured class scoring highest, absent when
none was detected), `adult_score` (its score, 0.0 when none) and `adult_scores` ({class: score}
of the configured classes detected), rounded to 3 decimals. An image it cannot decode is rejected with the
decoder's reason. Text records are kept without evidence.

`adult_text` (per record, pass 1, text records only) counts whole-word, case-insensitive matches
of a user's term list (`pipeline.content.terms`) and tags or drops a record whose matches reach
`min_matches` or whose matches per word reach `min_density` (`dropped_adult_text`, reason
`adult_text.matches 3 >= 2`). Evidence: `adult_matches` (the total), `adult_terms` ({term id: count}
of the matched terms), `adult_density` when `min_density` is set, `adult_flagged` in tag mode. Terms
are named by id (a hash prefix, `pipeline.content.terms.term_id`), not spelled out, unless
`term_ids: plain`: the ledger carries no content, and a list of explicit terms is content.
Image records are kept without evidence.

Usage (in `stages:` after `safety`)::

    - kind: adult_image
      config: {mode: drop, threshold: 0.6}
    - kind: adult_text
      config: {terms_file: adult-terms.txt, mode: drop, min_matches: 2}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.content.nsfw import EXPOSED, LABELS, NudeNetModel, class_scores, model_info
from pipeline.content.terms import TermList
from pipeline.core.decisions import REJECTED, Category, DecisionKind
from pipeline.core.stage import BatchContext, RecordStage, Verdicts
from pipeline.safety.images import DEFAULT_MAX_PIXELS, PIL_PIXEL_CEILING, ImageRejected, decode_image

logger = logging.getLogger(__name__)

DROPPED_ADULT = DecisionKind("dropped_adult", Category.DROPPED,
                             "adult content: an image's detector score of a configured class reached its threshold")
DROPPED_ADULT_TEXT = DecisionKind("dropped_adult_text", Category.DROPPED,
                                  "adult content: a text matched the configured term list at or above the limit")
# Scores are rounded before they are compared or recorded: the last bits of a float32 network's
# output differ between processors (AVX2, AVX-512), three decimals do not (except at a boundary).
SCORE_DIGITS = 3
# An animated image is screened on its first frame; the cap bounds the cost of counting frames.
FIRST_FRAME_OF_AT_MOST = 10_000


class AdultImageConfig(BaseModel):
    """Options of `adult_image`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["score", "tag", "drop"] = "drop"
    # NudeNet class names; the default is the classes of sexual exposure (pipeline.content.nsfw.EXPOSED).
    classes: tuple[str, ...] = EXPOSED
    # NudeNet never reports a region scoring below 0.25, so lower thresholds act as 0.25.
    threshold: float = Field(0.6, gt=0, le=1)
    class_thresholds: dict[str, float] = Field(default_factory=dict)
    batch_size: int = Field(8, ge=1, le=256)
    # JPEG only: decode at 1/2, 1/4 or 1/8 scale while the longer side stays >= this (faster on
    # big photos; scores then differ slightly from NudeNet's own full decode). None: full decode.
    draft_max_side: int | None = Field(None, ge=320)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, le=PIL_PIXEL_CEILING)

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in v if c not in LABELS]
        if unknown:
            raise ValueError(f"unknown class(es) {', '.join(unknown)}; NudeNet's classes are {', '.join(LABELS)}")
        if not v or len(set(v)) != len(v):
            raise ValueError("list each class once, at least one")
        return v

    @model_validator(mode="after")
    def _thresholds_of_configured_classes(self) -> "AdultImageConfig":
        extra = [c for c in self.class_thresholds if c not in self.classes]
        if extra:
            raise ValueError(f"class_thresholds names class(es) not in `classes`: {', '.join(extra)}")
        bad = [c for c, t in self.class_thresholds.items() if not 0 < t <= 1]
        if bad:
            raise ValueError(f"class_thresholds must be in (0, 1]: {', '.join(bad)}")
        return self

    def threshold_of(self, cls: str) -> float:
        """The threshold of one class (its own, or the common one)."""
        return self.class_thresholds.get(cls, self.threshold)


class AdultImageStage(RecordStage):
    """NudeNet's detector over image records: scores, tags or drops by class and threshold."""

    kind = "adult_image"
    description = ("adult-content screening of images with NudeNet's bundled ONNX detector (not a CSAM "
                   "classifier: hash lists are that control); scores, tags or drops by class and threshold")
    decisions = (DROPPED_ADULT,)
    Config = AdultImageConfig

    def setup(self) -> "AdultImageStage":
        """Load the ONNX model from the nudenet wheel (one CPU thread per process; no download)."""
        self.model = NudeNetModel(threads=1)
        self.info = model_info(self.model.path)
        return self

    def summary(self) -> dict:
        info = getattr(self, "info", None) or model_info()
        c = self.config
        return {**info, "mode": c.mode, "classes": list(c.classes), "threshold": c.threshold,
                "class_thresholds": dict(sorted(c.class_thresholds.items()))}

    def scores(self, blobs: list) -> list[dict[str, float] | str]:
        """Per image: {configured class: rounded score} of the classes detected, or the reason it
        could not be decoded. Decodes and runs the network `batch_size` images at a time."""
        c = self.config
        out: list[dict[str, float] | str] = []
        for start in range(0, len(blobs), c.batch_size):
            chunk = blobs[start:start + c.batch_size]
            rgbs, slots = [], []
            for b in chunk:
                out.append("")
                if not isinstance(b, (bytes, bytearray, memoryview)) or not len(b):
                    out[-1] = "no image bytes"
                    continue
                try:
                    rgbs.append(decode_image(b, max_pixels=c.max_pixels, max_frames=FIRST_FRAME_OF_AT_MOST,
                                             draft_max_side=c.draft_max_side))
                except ImageRejected as e:
                    out[-1] = f"not a usable image ({e.reason.value})"
                    continue
                slots.append(len(out) - 1)
            for slot, dets in zip(slots, self.model.detect_batch(rgbs)):
                found = class_scores(dets)
                out[slot] = {k: round(found[k], SCORE_DIGITS) for k in c.classes if k in found}
        return out

    def process(self, table, ctx: BatchContext) -> Verdicts:
        n = table.num_rows
        if ctx.text_field is not None or "image" not in table.column_names or n == 0:
            return Verdicts.keep_all(n)
        c = self.config
        # One value per key and row (a dict, not a key per class): a dropped row's evidence keeps
        # every key of its batch, so keys that only some rows have would make it depend on batching.
        rows, ev = [], {"adult_top": [None] * n, "adult_score": [None] * n, "adult_scores": [None] * n}
        if c.mode == "tag":
            ev["adult_flagged"] = [None] * n
        counts: dict[str, int] = {}
        for i, s in enumerate(self.scores(table["image"].to_pylist())):
            if isinstance(s, str):
                rows.append((REJECTED.name, f"adult_image: {s}"))
                counts["rejected_undecodable"] = counts.get("rejected_undecodable", 0) + 1
                continue
            top = max(s, key=lambda k: (s[k], -c.classes.index(k)), default=None)
            ev["adult_top"][i], ev["adult_score"][i] = top, s.get(top, 0.0)
            ev["adult_scores"][i] = s or None
            hits = [(v, k) for k, v in s.items() if v >= c.threshold_of(k)]
            if c.mode == "tag":
                ev["adult_flagged"][i] = bool(hits)
            counts["screened"] = counts.get("screened", 0) + 1
            if hits:
                counts["flagged"] = counts.get("flagged", 0) + 1
                for _, k in hits:
                    counts[f"flagged.{k}"] = counts.get(f"flagged.{k}", 0) + 1
            if hits and c.mode == "drop":
                v, k = max(hits, key=lambda h: (h[0], -c.classes.index(h[1])))
                rows.append((DROPPED_ADULT.name, f"adult_image {k} {v:.{SCORE_DIGITS}f} >= {c.threshold_of(k):g}"))
            else:
                rows.append(None)
        v = Verdicts.from_rows(rows)
        v.evidence = ev
        v.counts = counts
        return v


def config_folder(run_config, kind: str) -> Path | None:
    """The folder of the config file that listed `kind` (relative paths in its options resolve there)."""
    for e in getattr(run_config, "stages", None) or ():
        if e.kind == kind and e.search_path:
            return Path(e.search_path)
    return None


class AdultTextConfig(BaseModel):
    """Options of `adult_text`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # One term per line, UTF-8; relative to the config file's folder. Only its digest and size
    # reach the manifest. `terms` (inline) is for small, harmless lists: they are written into the
    # manifest's resolved config.
    terms_file: str | None = None
    terms: tuple[str, ...] = ()
    mode: Literal["tag", "drop"] = "drop"
    min_matches: int | None = Field(1, ge=1)
    # Matches per whitespace-separated word (meaningless for scripts written without spaces).
    min_density: float | None = Field(None, gt=0, le=1)
    term_ids: Literal["hashed", "plain"] = "hashed"

    @model_validator(mode="after")
    def _one_list_and_a_rule(self) -> "AdultTextConfig":
        if (self.terms_file is None) == (not self.terms):
            raise ValueError("give the term list as `terms_file` (a file of one term per line) or `terms`, not both")
        if self.min_matches is None and self.min_density is None:
            raise ValueError("set `min_matches`, `min_density` or both")
        return self


class AdultTextStage(RecordStage):
    """A user's term list over text records: counts per term as evidence; tags or drops."""

    kind = "adult_text"
    description = ("adult-content screening of text with a user's term list (whole words, any case); "
                   "tags or drops by match count or density")
    decisions = (DROPPED_ADULT_TEXT,)
    Config = AdultTextConfig

    def setup(self) -> "AdultTextStage":
        """Read and compile the term list (a ConfigError names the file when it is missing or empty)."""
        c = self.config
        if c.terms_file is not None:
            p = Path(c.terms_file).expanduser()
            if not p.is_absolute():
                p = (config_folder(self.run_config, self.kind) or Path.cwd()) / p
            self.terms = TermList.from_file(p)
        else:
            self.terms = TermList(list(c.terms), "stages.adult_text.config.terms")
        return self

    def summary(self) -> dict:
        c = self.config
        return {"terms": len(self.terms), "terms_sha256": self.terms.digest, "mode": c.mode,
                "min_matches": c.min_matches, "min_density": c.min_density, "term_ids": c.term_ids}

    def process(self, table, ctx: BatchContext) -> Verdicts:
        n = table.num_rows
        if ctx.text_field is None or n == 0:
            return Verdicts.keep_all(n)
        c = self.config
        count = self.terms.count if c.term_ids == "plain" else self.terms.count_ids
        rows = []
        counts: dict[str, int] = {}
        ev = {"adult_matches": [None] * n, "adult_terms": [None] * n}
        if c.min_density is not None:
            ev["adult_density"] = [None] * n
        if c.mode == "tag":
            ev["adult_flagged"] = [None] * n
        for i, text in enumerate(table[ctx.text_field].to_pylist()):
            found = count(text) if isinstance(text, str) else {}
            total = sum(found.values())
            ev["adult_matches"][i] = total
            ev["adult_terms"][i] = found or None
            why = None
            if c.min_matches is not None and total >= c.min_matches:
                why = f"adult_text.matches {total} >= {c.min_matches}"
            if c.min_density is not None:
                words = len(text.split()) if total else 0
                density = round(total / words, 4) if words else 0.0
                ev["adult_density"][i] = density
                if why is None and total and density >= c.min_density:
                    why = f"adult_text.density {density:g} >= {c.min_density:g}"
            if c.mode == "tag":
                ev["adult_flagged"][i] = why is not None
            if total:
                counts["records_matched"] = counts.get("records_matched", 0) + 1
                counts["term_matches"] = counts.get("term_matches", 0) + total
            if why is not None:
                counts["flagged"] = counts.get("flagged", 0) + 1
            rows.append((DROPPED_ADULT_TEXT.name, why) if why is not None and c.mode == "drop" else None)
        v = Verdicts.from_rows(rows)
        v.evidence = ev
        v.counts = counts
        return v
