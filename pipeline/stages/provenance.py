"""The `ai_provenance` stage: images whose C2PA content credentials or IPTC/XMP metadata say a
generative model made them are tagged, or dropped by config, so a team can keep model output out
of its training data.

Every image record gets evidence in the ledger (kept or dropped): where the claim came from
(`provenance_source`: c2pa, xmp or none), the IPTC digital source type, the C2PA claim generator
and whether the C2PA signature validated (`c2pa_validation`: valid, untrusted, invalid:<codes>,
absent). Text records are kept without evidence. The reading lives in
`pipeline.content.provenance`; this module is the policy.

Why a forged or broken credential still counts by default (`require_valid_signature: false`):
nobody forges "made by a model" onto a real photo to get it excluded, while stripping or breaking a
credential after editing is common; a claim of AI is evidence of AI whether or not its signature
still checks. A team that only trusts signed claims sets `require_valid_signature: true` (then
unsigned XMP claims and tampered credentials are tagged, not dropped) and, with its own trust
anchors, `require_trusted_signer: true`.

Config (under the stage's `config:`)::

    - kind: ai_provenance
      config:
        mode: drop                       # tag (default): keep and record; drop: decision dropped_ai_generated
        drop_source_types: [trainedAlgorithmicMedia, compositeWithTrainedAlgorithmicMedia]
        require_valid_signature: false
        trust_anchors: /etc/hygiene/c2pa-anchors.pem   # optional PEM roots; nothing is downloaded
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.content.provenance import (AI_SOURCE_TYPES, MAX_XMP_BYTES, C2paInspector, Provenance, inspect_image,
                                         source_type_code)
from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import BatchContext, RecordStage, Verdicts
from pipeline.errors import ConfigError

DROPPED_AI = DecisionKind("dropped_ai_generated", Category.DROPPED,
                          "C2PA or IPTC/XMP metadata says a generative model made the image")
IMAGE_COLUMN = "image"
INTACT = ("valid", "untrusted")


class AiProvenanceStage(RecordStage):
    """Tags (or drops) images whose provenance metadata names a generative-model source type."""

    kind = "ai_provenance"
    description = ("reads C2PA content credentials and IPTC/XMP digital source type of images; "
                   "tags or drops images a generative model made")
    decisions = (DROPPED_AI,)

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        mode: Literal["tag", "drop"] = "tag"
        # IPTC codes (or their NewsCodes URIs) that count as model output.
        drop_source_types: tuple[str, ...] = AI_SOURCE_TYPES
        # true: only C2PA claims with an intact signature count (unsigned XMP and tampered claims are tagged only).
        require_valid_signature: bool = False
        # true: only C2PA claims whose signer chains to `trust_anchors` count.
        require_trusted_signer: bool = False
        # an AI source type in a manifest of an ingredient (e.g. an edited generated image) counts too.
        include_ingredients: bool = True
        # PEM file of root certificates a C2PA signer may chain to (e.g. the C2PA trust list, saved locally).
        trust_anchors: str | None = None
        max_xmp_bytes: int = Field(MAX_XMP_BYTES, ge=1024, le=64 << 20)

        @field_validator("drop_source_types", mode="before")
        @classmethod
        def _codes(cls, v):
            if isinstance(v, str):
                raise ValueError("a list of IPTC digital source types, e.g. [trainedAlgorithmicMedia]")
            codes = tuple(source_type_code(x) for x in v)
            if any(c is None for c in codes):
                raise ValueError("empty digital source type")
            return codes

    def setup(self) -> "AiProvenanceStage":
        """Load the trust anchors (fail closed when configured but unreadable) and check c2pa imports."""
        cfg = self.config
        if cfg.require_trusted_signer and not cfg.trust_anchors:
            raise ConfigError("stage 'ai_provenance': require_trusted_signer needs `trust_anchors` (a PEM file "
                              "of root certificates); without anchors no signer is trusted")
        pem = None
        if cfg.trust_anchors:
            path = Path(cfg.trust_anchors)
            try:
                pem = path.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"stage 'ai_provenance': cannot read trust_anchors {path}: {e}; "
                                  "give a readable PEM file or remove the option") from e
            if "-----BEGIN CERTIFICATE-----" not in pem:
                raise ConfigError(f"stage 'ai_provenance': trust_anchors {path} holds no PEM certificate")
        self.anchors_sha256 = hashlib.sha256(pem.encode()).hexdigest() if pem else None
        try:
            import c2pa  # noqa: F401  (the native library loads here, once per process)
        except ImportError as e:
            raise ConfigError("stage 'ai_provenance' needs the c2pa-python package: pip install c2pa-python") from e
        self.inspector = C2paInspector(pem)
        return self

    def process(self, table, ctx: BatchContext) -> Verdicts:
        n = table.num_rows
        if ctx.text_field is not None or IMAGE_COLUMN not in table.column_names or n == 0:
            return Verdicts.keep_all(n)
        cfg = self.config
        decision: list[str | None] = [None] * n
        reason: list[str | None] = [None] * n
        evidence: dict[str, list] = {}
        counts: dict[str, int] = {}
        for i, blob in enumerate(_views(table[IMAGE_COLUMN])):
            facts = inspect_image(blob, self.inspector, cfg.max_xmp_bytes, cfg.drop_source_types)
            why = self.ai_reason(facts)
            ev = {
                "provenance_source": facts.source,
                "digital_source_type": facts.source_type,
                "claim_generator": facts.claim_generator,
                "c2pa_validation": facts.c2pa_validation,
                "ai_generated": why is not None,
                "xmp_creator_tool": facts.xmp.creator_tool,
                "provenance_problem": "; ".join(facts.problems) or None,
            }
            if facts.c2pa.ingredient_source_types:
                ev["ingredient_source_types"] = ",".join(facts.c2pa.ingredient_source_types)
            if why is not None:
                if cfg.mode == "drop":
                    decision[i], reason[i] = DROPPED_AI.name, why
                else:
                    ev["ai_reason"] = why
            for k, v in ev.items():
                evidence.setdefault(k, [None] * n)[i] = v
            for key in (f"source.{facts.source}", f"c2pa.{(facts.c2pa_validation or 'absent').split(':')[0]}",
                        *([f"type.{facts.source_type}"] if facts.source_type else []),
                        *(["ai_generated"] if why is not None else []),
                        *(["provenance_problems"] if facts.problems else [])):
                counts[key] = counts.get(key, 0) + 1
        return Verdicts(decision, reason, evidence, counts)

    def ai_reason(self, p: Provenance) -> str | None:
        """Why the image counts as model output under this config (the ledger reason), or None."""
        cfg = self.config
        ai = set(cfg.drop_source_types)
        signed_ok = ((not cfg.require_valid_signature or p.c2pa_validation in INTACT)
                     and (not cfg.require_trusted_signer or p.c2pa_validation == "valid"))
        if signed_ok:
            by = f' by "{p.claim_generator}"' if p.claim_generator else ""
            for code in p.c2pa.source_types:
                if code in ai:
                    return f"c2pa {code}{by} ({_signature_text(p.c2pa_validation)})"
            if cfg.include_ingredients:
                for code in p.c2pa.ingredient_source_types:
                    if code in ai:
                        return f"c2pa ingredient {code}{by} ({_signature_text(p.c2pa_validation)})"
        if not cfg.require_valid_signature:
            for code in p.xmp.source_types:
                if code in ai:
                    tool = f'; creator tool "{p.xmp.creator_tool}"' if p.xmp.creator_tool else ""
                    return f"xmp {code} (unsigned{tool})"
        return None

    def summary(self) -> dict:
        import c2pa

        cfg = self.config
        return {"mode": cfg.mode, "drop_source_types": list(cfg.drop_source_types),
                "require_valid_signature": cfg.require_valid_signature,
                "require_trusted_signer": cfg.require_trusted_signer,
                "trust_anchors_sha256": getattr(self, "anchors_sha256", None), "c2pa_python": c2pa.__version__,
                "c2pa_sdk": c2pa.sdk_version(), "network": "off (no remote manifests, OCSP or trust-list fetches)"}


def _views(column):
    """A read-only view of each value's bytes, without copying them out of Arrow (the walk reads a
    few bytes of most images; copying every image out would cost more than the walk)."""
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        if not (pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type)):
            yield from (v or b"" for v in chunk.to_pylist())      # e.g. a binary view column: copied
            continue
        _, offsets, data = chunk.buffers()[:3]
        width = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        at = np.frombuffer(offsets, dtype=width)[chunk.offset:chunk.offset + len(chunk) + 1].tolist()
        whole = memoryview(data).cast("B") if data is not None else memoryview(b"")   # Arrow exports signed chars
        nulls = chunk.is_null().to_numpy(zero_copy_only=False).tolist() if chunk.null_count else [False] * len(chunk)
        for i, null in enumerate(nulls):
            yield b"" if null else whole[at[i]:at[i + 1]]


def _signature_text(validation: str) -> str:
    if validation == "valid":
        return "signature valid, signer trusted"
    if validation == "untrusted":
        return "signature valid, signer not on a configured trust list"
    if validation.startswith("invalid:"):
        return f"signature invalid: {validation.split(':', 1)[1]}"
    return f"signature {validation}"
