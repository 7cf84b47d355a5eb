"""The canary test through the real Prefect flow: planted matches (a text and a benign image listed in
a test list) leave no byte in anything the run writes: outputs, report, logs, Prefect's storage."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from pipeline.audit.report import render_report
from pipeline.config import parse_config
from pipeline.safety.imagehash_stage import hash_image
from tests.conftest import REPO

pytestmark = pytest.mark.e2e
CANARY = "CANARY-e2e-51c9 a benign planted sentence standing in for listed material"


def files_under(root: Path):
    for dirpath, _d, files in os.walk(root):
        for f in files:
            yield Path(dirpath) / f


def test_no_byte_of_a_quarantined_item_reaches_any_file_log_or_prefect_storage(tmp_path, caplog, capsys):
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME

    from flows.clean import run_flow

    caplog.set_level(logging.DEBUG)
    (tmp_path / "text").mkdir()
    rows = [{"id": f"t{i}", "text": f"harmless record {i} with a few ordinary words"} for i in range(10)]
    rows.insert(4, {"id": "planted", "text": CANARY})
    (tmp_path / "text" / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    images = tmp_path / "images"
    shutil.copytree(REPO / "data_samples" / "images", images)
    planted_image = (images / "field-5.png").read_bytes()
    lst = tmp_path / "list.csv"
    lst.write_text("hash,type,entry_id\n"
                   f"{hashlib.sha256(CANARY.encode()).hexdigest()},sha256,T1\n{hash_image(planted_image).pdq},pdq,I1\n")
    cfg = parse_config({
        "sources": [{"name": "t", "kind": "jsonl", "paths": [str(tmp_path / "text")], "id_field": "id"},
                    {"name": "i", "kind": "image_dir", "paths": [str(images)]}],
        "output": {"dir": str(tmp_path / "out")},
        "safety": {"hash_lists": [{"name": "canary", "path": str(lst)}]},
    })
    manifest = run_flow(cfg)
    assert manifest["conservation"]["overall"]["quarantined"] == 2
    (tmp_path / "report.html").write_text(render_report(tmp_path / "out"))

    needles = [CANARY.encode(), CANARY[:30].encode(), planted_image[200:264], planted_image[-64:]]
    roots = [tmp_path / "out", tmp_path / "report.html", Path(str(PREFECT_HOME.value()))]
    db = str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")
    if db.startswith("sqlite"):
        roots.append(Path(db.split("///", 1)[-1]).parent)
    for root in roots:
        for f in ([root] if root.is_file() else files_under(root) if root.exists() else []):
            data = f.read_bytes()
            assert not any(n in data for n in needles), f"quarantined content found in {f}"
    out, err = capsys.readouterr()
    text = out + err + caplog.text
    assert CANARY[:30] not in text
    # The incident file holds the hashes; the image itself is nowhere, not even as a thumbnail.
    assert not list((tmp_path / "out").rglob("*.png")) and not list((tmp_path / "out").rglob("*.jpg"))
