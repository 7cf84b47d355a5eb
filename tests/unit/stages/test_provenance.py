"""The ai_provenance stage: C2PA and XMP claims of AI generation are found, validated offline,
tagged or dropped by config, and broken metadata never crashes it. Images are built by
tests/fixtures/provenance/make.py under a throw-away signing chain."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from pipeline.content import provenance as prov
from pipeline.content.provenance import C2paInspector, find_markers, inspect_image, parse_xmp
from pipeline.core.registry import BUILTIN, stage_class
from pipeline.core.stage import BatchContext
from pipeline.errors import ConfigError
from pipeline.executor import run_local
from pipeline.stages.provenance import AiProvenanceStage
from tests.conftest import build_config
from tests.fixtures.provenance.make import build_cases, encode, make_chain, picture, remote_manifest, xmp_packet


@pytest.fixture(scope="module")
def chain():
    return make_chain()


@pytest.fixture(scope="module")
def cases(chain):
    return build_cases(chain)


@pytest.fixture(scope="module")
def inspector():
    return C2paInspector()


# name: (provenance_source, digital_source_type, c2pa_validation, a word of the problem or None)
EXPECTED = {
    "plain.jpg": ("none", None, "absent", None),
    "plain.png": ("none", None, "absent", None),
    "c2pa_ai.jpg": ("c2pa", "trainedAlgorithmicMedia", "untrusted", None),
    "c2pa_camera.jpg": ("c2pa", "digitalCapture", "untrusted", None),
    "c2pa_composite.png": ("c2pa", "compositeWithTrainedAlgorithmicMedia", "untrusted", None),
    "c2pa_ai_tampered.jpg": ("c2pa", "trainedAlgorithmicMedia", "invalid:assertion.dataHash.mismatch", None),
    "c2pa_edit_of_ai.jpg": ("c2pa", None, "untrusted", None),
    "c2pa_truncated.jpg": ("c2pa", None, "invalid:truncated", "past the end"),
    "c2pa_truncated_scan.jpg": ("c2pa", "trainedAlgorithmicMedia", "invalid:assertion.dataHash.mismatch", None),
    "c2pa_garbage.jpg": ("c2pa", None, "invalid:unreadable", "c2pa:"),
    "c2pa_remote.jpg": ("none", None, "absent", "not fetched"),
    "xmp_ai.jpg": ("xmp", "trainedAlgorithmicMedia", "absent", None),
    "xmp_ai_element.png": ("xmp", "trainedAlgorithmicMedia", "absent", None),
    "xmp_ai_compressed.png": ("xmp", "trainedAlgorithmicMedia", "absent", None),
    "xmp_ai.webp": ("xmp", "compositeWithTrainedAlgorithmicMedia", "absent", None),
    "xmp_camera.jpg": ("xmp", "digitalCapture", "absent", None),
    "xmp_broken.jpg": ("none", None, "absent", "unparseable"),
    "xmp_entities.png": ("none", None, "absent", "DTD"),
    "xmp_huge.png": ("none", None, "absent", "not read"),
    "xmp_bomb.png": ("none", None, "absent", "inflated"),
}


def test_every_fixture_case_is_covered(cases):
    assert set(cases) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_image_s_provenance_is_read_as_its_metadata_says(cases, inspector, name):
    source, code, validation, problem = EXPECTED[name]
    p = inspect_image(cases[name], inspector)
    assert (p.source, p.source_type, p.c2pa_validation) == (source, code, validation)
    if problem is None:
        assert p.problems == []
    else:
        assert any(problem in x for x in p.problems), p.problems


def test_the_claim_generator_and_an_ai_ingredient_are_recorded(cases, inspector):
    assert inspect_image(cases["c2pa_ai.jpg"], inspector).claim_generator == "ExampleGen/1.0"
    edit = inspect_image(cases["c2pa_edit_of_ai.jpg"], inspector)
    assert edit.claim_generator == "ExampleEditor/3.0"
    assert edit.c2pa.ingredient_source_types == ["trainedAlgorithmicMedia"]
    assert inspect_image(cases["xmp_ai.jpg"], inspector).xmp.creator_tool == "ExampleGen 1.0"


def test_a_signer_chaining_to_configured_anchors_is_valid_and_tampering_still_shows(cases, chain):
    trusting = C2paInspector(chain.root_pem.decode())
    assert inspect_image(cases["c2pa_ai.jpg"], trusting).c2pa_validation == "valid"
    assert inspect_image(cases["c2pa_ai_tampered.jpg"], trusting).c2pa_validation == "invalid:assertion.dataHash.mismatch"
    other = C2paInspector(make_chain().root_pem.decode())      # anchors of someone else
    assert inspect_image(cases["c2pa_ai.jpg"], other).c2pa_validation == "untrusted"


def test_images_without_markers_never_reach_the_c2pa_library(cases):
    class Refuses(C2paInspector):
        def read(self, data, mime):
            raise AssertionError("the C2PA library was called for an image without a manifest store")

    for name in ("plain.jpg", "plain.png", "xmp_ai.jpg", "xmp_ai_element.png", "xmp_ai.webp", "xmp_broken.jpg"):
        inspect_image(cases[name], Refuses())


def test_the_container_walk_finds_the_xmp_packet_and_the_manifest_store(cases):
    m = find_markers(cases["xmp_ai.jpg"])
    assert m.format == "jpeg" and m.xmp is not None and b"DigitalSourceType" in m.xmp and not m.c2pa
    assert find_markers(cases["c2pa_ai.jpg"]).c2pa
    assert find_markers(cases["c2pa_composite.png"]).c2pa and find_markers(cases["c2pa_composite.png"]).format == "png"
    assert find_markers(cases["xmp_ai.webp"]).format == "webp"


def test_xmp_in_an_unknown_container_is_still_found():
    blob = b"GIF89a" + b"\x00" * 50 + xmp_packet("trainedAlgorithmicMedia") + b"\x00;"
    p = inspect_image(blob, None)
    assert (p.source, p.source_type) == ("xmp", "trainedAlgorithmicMedia")


def test_source_type_codes_are_read_from_uris_and_bare_codes():
    assert prov.source_type_code("http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia") == \
        "trainedAlgorithmicMedia"
    assert prov.source_type_code(" compositeWithTrainedAlgorithmicMedia ") == "compositeWithTrainedAlgorithmicMedia"
    assert prov.source_type_code("http://c2pa.org/digitalsourcetype/trainedAlgorithmicData/") == "trainedAlgorithmicData"
    assert prov.source_type_code("") is None and prov.source_type_code(None) is None


def test_an_external_entity_in_xmp_is_refused_not_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    packet = (f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret}">]>'
              '<x:xmpmeta xmlns:x="adobe:ns:meta/">&e;</x:xmpmeta>').encode()
    facts = parse_xmp(packet)
    assert facts.source_types == [] and "refused" in facts.problem


def test_no_connection_is_made_for_a_manifest_stored_remotely():
    import c2pa

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(5)
    hits = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            hits.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/manifest.c2pa"
    blob = remote_manifest(encode(picture(20), "JPEG"), url)
    try:
        p = inspect_image(blob, C2paInspector())
        assert hits == [] and p.c2pa_validation == "absent"
        assert any("not fetched" in x for x in p.problems) and not any(url in x for x in p.problems)
        # Control: the library's default settings do fetch it (what OFFLINE_SETTINGS turns off).
        with pytest.raises(c2pa.C2paError):
            import io
            c2pa.Reader("image/jpeg", io.BytesIO(blob))
        assert hits == [1]
    finally:
        server.close()


def test_damaged_copies_of_every_case_are_facts_not_exceptions(cases, inspector):
    rng = np.random.default_rng(3)
    for name, blob in cases.items():
        if len(blob) > 100_000:
            continue
        for cut in (1, 2, 9, len(blob) // 3, len(blob) - 1):
            inspect_image(blob[:cut], inspector)
        for _ in range(4):
            b = bytearray(blob)
            for i in rng.integers(0, len(b), 3):
                b[int(i)] ^= 0xFF
            p = inspect_image(bytes(b), inspector)
            assert p.source in ("c2pa", "xmp", "none")
    for junk in (b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", bytes(range(256)) * 4):
        assert inspect_image(junk, inspector).source == "none"


# -- the stage ---------------------------------------------------------------------------------------

def _stage(**config) -> AiProvenanceStage:
    return AiProvenanceStage(AiProvenanceStage.Config.model_validate(config)).setup()


def _run(stage: AiProvenanceStage, cases: dict, names: list[str]):
    table = pa.table({"path": names, "image": pa.array([cases[n] for n in names], pa.large_binary())})
    ctx = BatchContext("img", None, np.arange(len(names), dtype=np.int64), names, 0, None, {})
    v = stage.process(table, ctx)
    return {n: (v.decision[i], v.reason[i], {k: col[i] for k, col in v.evidence.items() if col[i] is not None})
            for i, n in enumerate(names)}


def test_the_stage_is_registered():
    assert BUILTIN["ai_provenance"] == "pipeline.stages.provenance:AiProvenanceStage"
    assert stage_class("ai_provenance")[0] is AiProvenanceStage


def test_tag_mode_keeps_everything_and_records_the_evidence(cases):
    out = _run(_stage(), cases, sorted(cases))
    assert all(d is None for d, _, _ in out.values())
    _, _, ev = out["c2pa_ai.jpg"]
    assert ev["provenance_source"] == "c2pa" and ev["digital_source_type"] == "trainedAlgorithmicMedia"
    assert ev["claim_generator"] == "ExampleGen/1.0" and ev["c2pa_validation"] == "untrusted"
    assert ev["ai_generated"] is True and ev["ai_reason"].startswith('c2pa trainedAlgorithmicMedia by "ExampleGen/1.0"')
    _, _, plain = out["plain.jpg"]
    assert plain == {"provenance_source": "none", "c2pa_validation": "absent", "ai_generated": False}
    assert out["c2pa_camera.jpg"][2]["ai_generated"] is False
    assert "unparseable" in out["xmp_broken.jpg"][2]["provenance_problem"]


def test_drop_mode_drops_every_claim_of_ai_by_default_signed_or_not(cases):
    out = _run(_stage(mode="drop"), cases, sorted(cases))
    dropped = {n for n, (d, _, _) in out.items() if d == "dropped_ai_generated"}
    assert dropped == {"c2pa_ai.jpg", "c2pa_composite.png", "c2pa_ai_tampered.jpg", "c2pa_edit_of_ai.jpg",
                       "c2pa_truncated_scan.jpg", "xmp_ai.jpg", "xmp_ai_element.png", "xmp_ai_compressed.png",
                       "xmp_ai.webp"}
    assert out["c2pa_ai.jpg"][1] == ('c2pa trainedAlgorithmicMedia by "ExampleGen/1.0" '
                                     "(signature valid, signer not on a configured trust list)")
    assert out["c2pa_ai_tampered.jpg"][1].endswith("(signature invalid: assertion.dataHash.mismatch)")
    assert out["c2pa_edit_of_ai.jpg"][1].startswith('c2pa ingredient trainedAlgorithmicMedia by "ExampleEditor/3.0"')
    assert out["xmp_ai.jpg"][1] == 'xmp trainedAlgorithmicMedia (unsigned; creator tool "ExampleGen 1.0")'
    assert out["c2pa_ai.jpg"][2]["claim_generator"] == "ExampleGen/1.0"     # evidence on dropped rows too
    assert "ai_reason" not in out["c2pa_ai.jpg"][2]                          # the reason column holds it


def test_requiring_a_valid_signature_only_drops_intact_c2pa_claims(cases):
    out = _run(_stage(mode="drop", require_valid_signature=True), cases, sorted(cases))
    dropped = {n for n, (d, _, _) in out.items() if d}
    assert dropped == {"c2pa_ai.jpg", "c2pa_composite.png", "c2pa_edit_of_ai.jpg"}
    assert out["c2pa_ai_tampered.jpg"][2]["ai_generated"] is False       # still tagged with what it claims
    assert out["c2pa_ai_tampered.jpg"][2]["digital_source_type"] == "trainedAlgorithmicMedia"


def test_requiring_a_trusted_signer_needs_anchors_and_then_counts_only_trusted_claims(cases, chain, tmp_path):
    with pytest.raises(ConfigError, match="trust_anchors"):
        _stage(mode="drop", require_trusted_signer=True)
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(make_chain().root_pem)                        # not our signer's root
    out = _run(_stage(mode="drop", require_trusted_signer=True, trust_anchors=str(anchors)), cases, ["c2pa_ai.jpg"])
    assert out["c2pa_ai.jpg"][0] is None
    anchors.write_bytes(chain.root_pem)
    out = _run(_stage(mode="drop", require_trusted_signer=True, trust_anchors=str(anchors)), cases,
               ["c2pa_ai.jpg", "xmp_ai.jpg"])
    assert out["c2pa_ai.jpg"][0] == "dropped_ai_generated" and "signer trusted" in out["c2pa_ai.jpg"][1]
    assert out["xmp_ai.jpg"][0] == "dropped_ai_generated"             # unsigned claims still count here


def test_a_missing_or_empty_anchor_file_stops_the_run(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        _stage(trust_anchors=str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("")
    with pytest.raises(ConfigError, match="no PEM"):
        _stage(trust_anchors=str(tmp_path / "empty.pem"))


def test_configured_source_types_may_be_uris_and_narrow_the_drop(cases):
    stage = _stage(mode="drop", drop_source_types=["http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"])
    assert stage.config.drop_source_types == ("trainedAlgorithmicMedia",)
    out = _run(stage, cases, ["c2pa_ai.jpg", "c2pa_composite.png"])
    assert out["c2pa_ai.jpg"][0] == "dropped_ai_generated" and out["c2pa_composite.png"][0] is None
    with pytest.raises(ValueError):
        AiProvenanceStage.Config.model_validate({"drop_source_types": "trainedAlgorithmicMedia"})
    with pytest.raises(ValueError):
        AiProvenanceStage.Config.model_validate({"mode": "delete"})


def test_text_records_are_kept_without_evidence():
    stage = _stage(mode="drop")
    table = pa.table({"text": ["made by ExampleGen trainedAlgorithmicMedia", ""]})
    v = stage.process(table, BatchContext("t", "text", np.arange(2, dtype=np.int64), ["a", "b"], 0, None, {}))
    assert v.decision == [None, None] and v.evidence == {}


def test_an_image_run_records_the_evidence_in_the_ledger_and_drops_by_config(tmp_path, cases):
    corpus = tmp_path / "in"
    corpus.mkdir()
    names = ["plain.jpg", "c2pa_ai.jpg", "c2pa_camera.jpg", "c2pa_ai_tampered.jpg", "xmp_ai.jpg", "xmp_broken.jpg",
             "c2pa_truncated.jpg"]
    for n in names:
        (corpus / n).write_bytes(cases[n])
    cfg = build_config(tmp_path / "out", [{"name": "img", "kind": "image_dir", "paths": [str(corpus)]}],
                       stages=[{"kind": "safety"}, {"kind": "ai_provenance", "config": {"mode": "drop"}}])
    manifest = run_local(cfg)
    assert manifest["conservation"]["balanced"]
    ledger = pl.read_parquet(str(tmp_path / "out" / "ledger" / "*.parquet"))
    rows = {r["location"]: r for r in ledger.iter_rows(named=True)}
    assert {n for n, r in rows.items() if r["decision"] == "dropped_ai_generated"} == \
        {"c2pa_ai.jpg", "c2pa_ai_tampered.jpg", "xmp_ai.jpg"}
    assert rows["c2pa_truncated.jpg"]["decision"] == "rejected"        # undecodable: the reader rejects it first
    ai = rows["c2pa_ai.jpg"]
    assert ai["stage"] == "ai_provenance" and ai["reason"].startswith('c2pa trainedAlgorithmicMedia by "ExampleGen/1.0"')
    ev = json.loads(ai["evidence"])
    assert ev["c2pa_validation"] == "untrusted" and ev["claim_generator"] == "ExampleGen/1.0"
    camera = json.loads(rows["c2pa_camera.jpg"]["evidence"])
    assert rows["c2pa_camera.jpg"]["decision"] == "kept"
    assert camera["digital_source_type"] == "digitalCapture" and camera["ai_generated"] is False
    assert json.loads(rows["plain.jpg"]["evidence"])["provenance_source"] == "none"
    assert "unparseable" in json.loads(rows["xmp_broken.jpg"]["evidence"])["provenance_problem"]
    assert json.loads(rows["c2pa_ai_tampered.jpg"]["evidence"])["c2pa_validation"].startswith("invalid:")
    st = manifest["stages"]["ai_provenance"]
    assert st["dropped"] == 3 and st["seen"] == st["kept"] + st["dropped"]
    assert "dropped_ai_generated" in manifest["pipeline"]["decisions"]


def test_binary_large_binary_sliced_and_null_image_columns_read_alike(cases):
    stage = _stage(mode="drop")
    names = ["plain.jpg", "c2pa_ai.jpg", "xmp_ai.jpg", "xmp_camera.jpg"]
    blobs = [cases[n] for n in names]
    want = [None, "dropped_ai_generated", "dropped_ai_generated", None]
    for typ in (pa.binary(), pa.large_binary()):
        table = pa.table({"image": pa.chunked_array([pa.array(blobs[:2], typ), pa.array(blobs[2:] + [None], typ)])})
        ctx = BatchContext("img", None, np.arange(5, dtype=np.int64), list("abcde"), 0, None, {})
        assert stage.process(table, ctx).decision == want + [None]
        sliced = table.slice(1, 3)
        ctx = BatchContext("img", None, np.arange(3, dtype=np.int64), list("abc"), 0, None, {})
        assert stage.process(sliced, ctx).decision == want[1:4]


def test_threads_sharing_one_inspector_read_alike(cases):
    from concurrent.futures import ThreadPoolExecutor

    shared = C2paInspector()
    names = ["c2pa_ai.jpg", "c2pa_camera.jpg", "c2pa_ai_tampered.jpg", "plain.jpg"] * 5
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda n: inspect_image(cases[n], shared).c2pa_validation, names))
    assert got == [EXPECTED[n][2] for n in names]
