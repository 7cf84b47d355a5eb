"""What an image's metadata says about where it came from: C2PA content credentials (read and
validated with the C2PA reference implementation, `c2pa-python`) and the IPTC "digital source type"
of its XMP packet (parsed here).

The common case, an image without any metadata, must cost next to nothing, so the container is
walked first (JPEG segments up to the first scan, PNG chunk headers, RIFF chunk headers) to find
an XMP packet and a C2PA manifest store (JPEG APP11 JUMBF, PNG `caBX`, WebP `C2PA`); the C2PA
library is only called when a manifest store is there. Nothing is fetched from the network: remote
manifests, OCSP and trust lists are off (`OFFLINE_SETTINGS`); only the trust anchors a team
configures are used.

Nothing here raises on bad input: a truncated container, an unparseable or oversized XMP packet,
a manifest store the library cannot read all come back as facts with a `problem` (short, never
content).

Usage::

    inspector = C2paInspector()                    # once per process; `trust_anchors_pem=` optional
    facts = inspect_image(blob, inspector)
    facts.source, facts.source_type, facts.claim_generator, facts.c2pa_validation
    # ("c2pa", "trainedAlgorithmicMedia", "ExampleGen/1.0", "untrusted")
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from xml.etree.ElementTree import ParseError

# XMP is XML written by whoever made the file: no DTD, no entity may be expanded (billion laughs,
# external entities). defusedxml refuses both before expat sees them; a real XMP packet never has
# a DTD (XMP spec part 1, 7.3), so refusing loses nothing.
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring

logger = logging.getLogger(__name__)

IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
AI_SOURCE_TYPES = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")
"""The IPTC codes for media made (wholly or in part) by a generative model."""

NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_DCTERMS = "http://purl.org/dc/terms/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DST = f"{{{NS_IPTC_EXT}}}DigitalSourceType"
_CREATOR_TOOL = f"{{{NS_XMP}}}CreatorTool"
_DC_PROVENANCE = f"{{{NS_DCTERMS}}}provenance"
_RDF_RESOURCE = f"{{{NS_RDF}}}resource"

JPEG_XMP_SIG = b"http://ns.adobe.com/xap/1.0/\x00"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp\x00"
PNG_SIG = b"\x89PNG\r\n\x1a\n"
MAX_XMP_BYTES = 1 << 20      # a JPEG's packet is at most 64 KiB; 1 MiB leaves room for PNG/WebP ones
MAX_FIELD_CHARS = 200        # generator names and reasons in the ledger are cut to this

# The C2PA validation status codes that mean "the signer is not on a configured trust list" (the
# signature itself is intact); every other failure code means the claim or the asset was changed.
UNTRUSTED_CODES = frozenset({"signingCredential.untrusted"})

REMOTE_NOT_FETCHED = "c2pa: the manifest is stored remotely (dcterms:provenance); not fetched (offline)"
OFFLINE_SETTINGS = {
    "verify": {
        "verify_after_reading": True,
        "verify_trust": True,
        "remote_manifest_fetch": False,   # default True: would fetch a manifest named in the XMP
        "ocsp_fetch": False,              # default False already; stated so a newer default cannot change it
    },
    "core": {"decode_identity_assertions": False},  # CAWG identities may name did:web documents to resolve
}


def source_type_code(value: str | None) -> str | None:
    """The IPTC code of a digital-source-type value: a NewsCodes URI, a C2PA one or a bare code."""
    if not isinstance(value, str):
        return None
    v = value.strip().rstrip("/")
    if not v:
        return None
    code = re.split(r"[/#]", v)[-1]
    return code[:MAX_FIELD_CHARS] or None


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text[:MAX_FIELD_CHARS] if text else None


# -- the container: where the XMP packet and the C2PA manifest store are ---------------------------

@dataclass
class Markers:
    """What a walk of the container found, before any parsing."""

    format: str                       # jpeg | png | webp | other
    xmp: bytes | None = None          # the XMP packet, when there is one within the size bound
    c2pa: bool = False                # a C2PA manifest store (JUMBF) is embedded
    c2pa_cut: bool = False            # ... but the file ends inside it
    problem: str | None = None        # why the walk stopped early or a packet was ignored

    @property
    def mime(self) -> str | None:
        """The MIME type for the C2PA reader (None: let it detect)."""
        return {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}.get(self.format)


def find_markers(data: bytes | memoryview, max_xmp_bytes: int = MAX_XMP_BYTES) -> Markers:
    """Walk the container's structure (never the pixels) for XMP and C2PA; never raises. `data` may
    be a memoryview (e.g. of an Arrow buffer): only the packet found is copied."""
    if data[:2] == b"\xff\xd8":
        return _jpeg(data, max_xmp_bytes)
    if data[:8] == PNG_SIG:
        return _png(data, max_xmp_bytes)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data, max_xmp_bytes)
    return _other(data, max_xmp_bytes)


def _at(data, pos: int, sig: bytes) -> bool:
    return data[pos:pos + len(sig)] == sig


def _bounded(m: Markers, packet, max_xmp_bytes: int) -> None:
    if len(packet) > max_xmp_bytes:
        m.problem = f"xmp packet of {len(packet)} bytes > {max_xmp_bytes}, not read"
    elif m.xmp is None:
        m.xmp = bytes(packet)


def _jpeg(data: bytes, max_xmp_bytes: int) -> Markers:
    # Metadata segments (APPn) come before the first scan (SOS); the walk reads 4 bytes a segment.
    m = Markers("jpeg")
    n, i = len(data), 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            m.problem = f"jpeg: no segment marker at byte {i}"
            return m
        marker = data[i + 1]
        if marker == 0xFF:                                # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:      # markers without a length
            i += 2
            continue
        if marker in (0xDA, 0xD9):                        # start of scan / end of image
            return m
        length = int.from_bytes(data[i + 2:i + 4], "big")
        end = i + 2 + length
        if length < 2 or end > n:
            m.c2pa_cut = marker == 0xEB
            what = "C2PA (APP11) segment" if m.c2pa_cut else "segment"
            m.problem = f"jpeg: {what} at byte {i} runs past the end of the file"
            return m
        if marker == 0xE1 and _at(data, i + 4, JPEG_XMP_SIG):
            _bounded(m, data[i + 4 + len(JPEG_XMP_SIG):end], max_xmp_bytes)
        elif marker == 0xEB and _at(data, i + 4, b"JP") and b"jumb" in bytes(data[i + 4:i + 40]):
            m.c2pa = True                                 # APP11: a JUMBF box (ISO 19566-5), C2PA's carrier
        i = end
    if i < n:
        m.problem = "jpeg: truncated before the first scan"
    return m


def _png(data: bytes, max_xmp_bytes: int) -> Markers:
    m = Markers("png")
    n, i = len(data), 8
    while i + 8 <= n:
        length = int.from_bytes(data[i:i + 4], "big")
        kind = bytes(data[i + 4:i + 8])
        end = i + 12 + length
        if end > n:
            m.c2pa_cut = kind == b"caBX"
            m.problem = f"png: chunk {kind!r} at byte {i} runs past the end of the file"
            return m
        if kind == b"iTXt" and _at(data, i + 8, PNG_XMP_KEYWORD):
            packet, problem = _itxt_text(bytes(data[i + 8 + len(PNG_XMP_KEYWORD):i + 8 + length]), max_xmp_bytes)
            if packet is not None:
                _bounded(m, packet, max_xmp_bytes)
            m.problem = m.problem or problem
        elif kind == b"caBX":
            m.c2pa = True
        elif kind == b"IEND":
            return m
        i = end
    m.problem = m.problem or "png: no IEND chunk (truncated)"
    return m


def _itxt_text(rest: bytes, max_xmp_bytes: int) -> tuple[bytes | None, str | None]:
    """The text of an iTXt chunk after its keyword: flag, method, language\\0, translated keyword\\0, text."""
    if len(rest) < 2:
        return None, "png: iTXt chunk too short"
    compressed = rest[0] == 1
    parts = rest[2:].split(b"\x00", 2)
    if len(parts) < 3:
        return None, "png: malformed iTXt chunk"
    text = parts[2]
    if not compressed:
        return text, None
    d = zlib.decompressobj()
    try:
        out = d.decompress(text, max_xmp_bytes + 1)   # bounded: a zip bomb stops here
    except zlib.error:
        return None, "png: compressed XMP does not inflate"
    if len(out) > max_xmp_bytes:
        return None, f"xmp packet > {max_xmp_bytes} bytes once inflated, not read"
    return out, None


def _webp(data: bytes, max_xmp_bytes: int) -> Markers:
    m = Markers("webp")
    n, i = len(data), 12
    while i + 8 <= n:
        kind = bytes(data[i:i + 4])
        length = int.from_bytes(data[i + 4:i + 8], "little")
        end = i + 8 + length
        if end > n:
            m.c2pa_cut = kind == b"C2PA"
            m.problem = f"webp: chunk {kind!r} at byte {i} runs past the end of the file"
            return m
        if kind == b"XMP ":
            _bounded(m, data[i + 8:end], max_xmp_bytes)
        elif kind == b"C2PA":
            m.c2pa = True
        i = end + (length & 1)                            # chunks are padded to an even length
    return m


def _other(data: bytes, max_xmp_bytes: int) -> Markers:
    # GIF, TIFF, HEIF/AVIF, ...: no walker; look for the packet and the JUMBF box by their signatures
    # (a memchr-speed search over the bytes).
    m = Markers("other")
    data = bytes(data)
    start = data.find(b"<x:xmpmeta")
    if start >= 0:
        stop = data.find(b"</x:xmpmeta>", start)
        if stop < 0:
            m.problem = "xmp packet without its end tag"
        else:
            _bounded(m, data[start:stop + len(b"</x:xmpmeta>")], max_xmp_bytes)
    j = data.find(b"jumb")
    m.c2pa = j >= 0 and data.find(b"c2pa", j) >= 0
    return m


# -- XMP ---------------------------------------------------------------------------------------------

@dataclass
class XmpFacts:
    """The provenance fields of an XMP packet."""

    source_types: list[str] = field(default_factory=list)   # IPTC codes, in document order
    creator_tool: str | None = None                          # xmp:CreatorTool (a hint, never decisive)
    remote_manifest: bool = False                            # dcterms:provenance names a C2PA manifest elsewhere
    problem: str | None = None


def parse_xmp(packet: bytes) -> XmpFacts:
    """`Iptc4xmpExt:DigitalSourceType`, `xmp:CreatorTool` and `dcterms:provenance` of a packet;
    an unparseable packet (or one with a DTD or entities) gives a problem, never an exception."""
    facts = XmpFacts()
    text = packet.strip(b"\x00 \t\r\n")
    try:
        root = safe_fromstring(text, forbid_dtd=True)
    except DefusedXmlException as e:
        facts.problem = f"xmp refused: {type(e).__name__} (a DTD or entity)"
        return facts
    except (ParseError, ValueError) as e:
        facts.problem = f"xmp unparseable: {_short(str(e))}"
        return facts
    for el in root.iter():
        for key, value in el.attrib.items():
            if key == _DST:
                _add_code(facts.source_types, value)
            elif key == _CREATOR_TOOL and facts.creator_tool is None:
                facts.creator_tool = _short(value)
            elif key == _DC_PROVENANCE:
                facts.remote_manifest = True
        if el.tag == _DST:
            _add_code(facts.source_types, el.get(_RDF_RESOURCE) or el.text)
        elif el.tag == _CREATOR_TOOL and facts.creator_tool is None:
            facts.creator_tool = _short(el.text)
        elif el.tag == _DC_PROVENANCE:
            facts.remote_manifest = True
    return facts


def _add_code(out: list[str], value) -> None:
    code = source_type_code(value)
    if code and code not in out:
        out.append(code)


# -- C2PA --------------------------------------------------------------------------------------------

@dataclass
class C2paFacts:
    """The active manifest of a C2PA manifest store and its validation."""

    validation: str = "absent"                               # valid | untrusted | invalid:<codes> | absent
    claim_generator: str | None = None
    source_types: list[str] = field(default_factory=list)    # from the active manifest's actions
    ingredient_source_types: list[str] = field(default_factory=list)  # from the other manifests of the store
    problem: str | None = None


class C2paInspector:
    """Reads C2PA manifest stores offline with `c2pa-python`; one per process (its native context
    is made lazily in the process that uses it, so a forked worker never shares the parent's).

    `trust_anchors_pem`: root certificates (PEM) a signer must chain to for `valid`; without them
    every intact signature is `untrusted` (nothing is downloaded)."""

    def __init__(self, trust_anchors_pem: str | None = None) -> None:
        self.trust_anchors_pem = trust_anchors_pem
        self._context = None
        self._pid = None

    def settings(self) -> dict:
        """The settings given to the C2PA library (offline; the configured anchors only)."""
        settings = json.loads(json.dumps(OFFLINE_SETTINGS))
        if self.trust_anchors_pem:
            settings["trust"] = {"trust_anchors": self.trust_anchors_pem}
        return settings

    def _ctx(self):
        import c2pa

        if self._context is None or self._pid != os.getpid():
            self._context = c2pa.Context.from_dict(self.settings())
            self._pid = os.getpid()
        return self._context

    def read(self, data: bytes, mime: str | None) -> C2paFacts:
        """The facts of the embedded manifest store; unreadable stores give `invalid:unreadable`."""
        import c2pa

        try:
            reader = c2pa.Reader(mime, io.BytesIO(data), context=self._ctx())
        except c2pa.C2paError.ManifestNotFound:
            return C2paFacts(problem="c2pa: JUMBF box without a C2PA manifest store")
        except (c2pa.C2paError, ValueError, TypeError, OSError) as e:
            if str(e).startswith("Remote"):
                return C2paFacts(problem=REMOTE_NOT_FETCHED)
            return C2paFacts("invalid:unreadable", problem=f"c2pa: {_error_name(e)}")
        try:
            with reader:
                store = json.loads(reader.json())
        except (c2pa.C2paError, ValueError) as e:
            return C2paFacts("invalid:unreadable", problem=f"c2pa: {_error_name(e)}")
        return manifest_facts(store)


def _error_name(e: Exception) -> str:
    # The library's messages name the problem ("Other: asset could not be parsed: ..."); they never
    # hold pixels, but may hold a URL taken from the file: URLs are masked, the text is cut short.
    text = _URL.sub("<url>", " ".join(str(e).split()))
    return _short(f"{type(e).__name__.lstrip('_')}: {text}"[:120]) or type(e).__name__


_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")


def manifest_facts(store: dict) -> C2paFacts:
    """Facts from the reader's JSON of a manifest store (robust to missing or odd fields)."""
    manifests = store.get("manifests") if isinstance(store.get("manifests"), dict) else {}
    active_label = store.get("active_manifest")
    active = manifests.get(active_label) if isinstance(active_label, str) else None
    facts = C2paFacts(validation=_validation(store))
    if not isinstance(active, dict):
        facts.problem = "c2pa: no active manifest"
        if facts.validation == "absent":
            facts.validation = "invalid:no_active_manifest"
        return facts
    facts.claim_generator = _generator(active)
    facts.source_types = _action_source_types(active)
    for label, other in manifests.items():
        if label != active_label and isinstance(other, dict):
            for code in _action_source_types(other):
                if code not in facts.ingredient_source_types:
                    facts.ingredient_source_types.append(code)
    return facts


def _generator(manifest: dict) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, dict):
        info = [info]
    if isinstance(info, list):
        for item in info:
            if isinstance(item, dict) and item.get("name"):
                version = item.get("version")
                return _short(f"{item['name']}/{version}" if version else str(item["name"]))
    return _short(manifest.get("claim_generator")) if isinstance(manifest.get("claim_generator"), str) else None


def _action_source_types(manifest: dict) -> list[str]:
    out: list[str] = []
    assertions = manifest.get("assertions")
    for a in assertions if isinstance(assertions, list) else []:
        if not (isinstance(a, dict) and str(a.get("label", "")).startswith("c2pa.actions")):
            continue
        data = a.get("data") if isinstance(a.get("data"), dict) else {}
        actions = data.get("actions")
        for action in actions if isinstance(actions, list) else []:
            if isinstance(action, dict):
                _add_code(out, action.get("digitalSourceType"))
                params = action.get("parameters")
                if isinstance(params, dict):
                    _add_code(out, params.get("digitalSourceType"))
    return out


def _validation(store: dict) -> str:
    """valid (intact and trusted) | untrusted (intact, signer not on a configured trust list) |
    invalid:<failure codes> (the claim or the asset changed after signing)."""
    codes: list[str] = []
    results = store.get("validation_results")
    active = results.get("activeManifest") if isinstance(results, dict) else None
    if isinstance(active, dict) and isinstance(active.get("failure"), list):
        codes = [c.get("code") for c in active["failure"] if isinstance(c, dict) and c.get("code")]
    elif isinstance(store.get("validation_status"), list):
        codes = [c.get("code") for c in store["validation_status"] if isinstance(c, dict) and c.get("code")]
    failures = sorted({c for c in codes if c not in UNTRUSTED_CODES})
    state = store.get("validation_state")
    if failures:
        return "invalid:" + ",".join(failures)
    if state == "Invalid":
        return "invalid:unknown"
    if state == "Trusted" or (state is None and not codes):
        return "valid"
    return "untrusted"


# -- one image ---------------------------------------------------------------------------------------

@dataclass
class Provenance:
    """Everything the stage records about one image."""

    source: str = "none"                  # c2pa | xmp | none: where the digital source type came from
                                          # (c2pa also for a manifest that names none)
    source_type: str | None = None        # the decisive IPTC code (an AI one first, when there is one)
    c2pa: C2paFacts = field(default_factory=C2paFacts)
    xmp: XmpFacts = field(default_factory=XmpFacts)
    problems: list[str] = field(default_factory=list)

    @property
    def claim_generator(self) -> str | None:
        return self.c2pa.claim_generator

    @property
    def c2pa_validation(self) -> str:
        return self.c2pa.validation


def inspect_image(data: bytes | memoryview, inspector: C2paInspector | None, max_xmp_bytes: int = MAX_XMP_BYTES,
                  prefer: tuple[str, ...] = AI_SOURCE_TYPES) -> Provenance:
    """The provenance facts of one image's bytes; `inspector=None` skips C2PA (XMP only)."""
    out = Provenance()
    markers = find_markers(data, max_xmp_bytes)
    if markers.problem:
        out.problems.append(markers.problem)
    if markers.xmp is not None:
        out.xmp = parse_xmp(markers.xmp)
        if out.xmp.problem:
            out.problems.append(out.xmp.problem)
    if markers.c2pa and inspector is not None:
        out.c2pa = inspector.read(data, markers.mime)
        if out.c2pa.problem:
            out.problems.append(out.c2pa.problem)
    elif markers.c2pa_cut:
        out.c2pa = C2paFacts("invalid:truncated")
    elif out.xmp.remote_manifest:
        out.problems.append(REMOTE_NOT_FETCHED)
    if out.c2pa.source_types:
        out.source, out.source_type = "c2pa", _pick(out.c2pa.source_types, prefer)
    elif out.xmp.source_types:
        out.source, out.source_type = "xmp", _pick(out.xmp.source_types, prefer)
    elif out.c2pa.validation != "absent":
        out.source = "c2pa"               # a manifest without a source type of its own (e.g. an edit)
    return out


def _pick(codes: list[str], prefer: tuple[str, ...]) -> str:
    return next((c for c in codes if c in prefer), codes[0])
