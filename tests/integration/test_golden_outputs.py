"""The bytes of shards and ledger for fixed inputs and configs, recorded from the code before the
stage contract (issue 15) so that moving stages around provably changes no output.

The digests live in `tests/golden/outputs.json`. Regenerate them only for a change that is meant
to change outputs, and say why in the commit:

    HYGIENE_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/integration/test_golden_outputs.py
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import orjson
import pytest

from pipeline.config import load_config, parse_config
from pipeline.executor import run_local
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "outputs.json"
RECORD = os.environ.get("HYGIENE_RECORD_GOLDEN") == "1"

_WORDS = [f"w{i}" for i in range(4000)]


def _near_corpus(folder: Path) -> Path:
    """Two JSONL files of generated documents with exact, edited and chained copies."""
    rng = random.Random(20261207)
    docs: list[dict] = []
    for i in range(1500):
        if docs and rng.random() < 0.3:
            src = rng.choice(docs)["text"].split()
            op = rng.randrange(5)
            if op == 0:
                text = " ".join(src)
            elif op == 1:  # a few words swapped
                for _ in range(3):
                    a, b = rng.randrange(len(src)), rng.randrange(len(src))
                    src[a], src[b] = src[b], src[a]
                text = " ".join(src)
            elif op == 2:  # boilerplate around it
                text = "header of the site " + " ".join(src) + " footer copyright all rights reserved"
            elif op == 3:  # truncated
                text = " ".join(src[: max(3, int(len(src) * 0.85))])
            else:  # upper case and spacing
                text = "  ".join(src).upper()
        else:
            text = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(2, 120)))
        docs.append({"id": f"d{i:05d}", "text": text, "meta": {"n": i % 7}})
    folder.mkdir(parents=True)
    for k in range(2):
        with open(folder / f"part-{k}.jsonl", "wb") as f:
            for d in docs[k::2]:
                f.write(orjson.dumps(d) + b"\n")
    return folder


def _sample(out: Path, **sections) -> dict:
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(out)
    data.update(sections)
    return data


def _cases(tmp: Path) -> dict[str, dict]:
    corpus = _near_corpus(tmp / "corpus")
    sample = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    key = tmp / "hmac.key"
    key.write_bytes(b"k" * 32)
    pii = {**sample["pii"], "second_pass": False, "actions": {"EMAIL_ADDRESS": "hash", "PERSON": "mask"},
           "hmac_key": {"file": str(key)}}
    return {
        "sample": _sample(tmp / "sample"),
        "near": {
            "sources": [{"name": "web", "kind": "jsonl", "paths": [str(corpus)], "text_field": "text", "id_field": "id"}],
            "dedup": {"near": {"enabled": True, "threshold": 0.7, "second_hop": 0.7}},
            "units": {"target_bytes": 64 * 1024},
            "output": {"dir": str(tmp / "near"), "shard_max_rows": 400},
        },
        "images": {
            "sources": [s for s in sample["sources"] if s["kind"] == "image_dir"],
            "safety": sample["safety"],
            "dedup": {"near": {"enabled": True}},
            "output": {"dir": str(tmp / "images")},
        },
        "pii": _sample(tmp / "pii", pii=pii, sources=[s for s in sample["sources"] if s["name"] in ("web", "forum")],
                       units={"target_bytes": 16 * 1024}),
    }


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    out = {}
    for name, data in _cases(tmp).items():
        cfg = parse_config(data, f"golden:{name}")
        run_local(cfg)
        out[name] = _digests(Path(cfg.output.dir))
    if RECORD:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return out


@pytest.mark.parametrize("case", ["sample", "near", "images", "pii"])
def test_outputs_are_byte_identical_to_the_recorded_ones(golden_runs, case):
    expected = json.loads(GOLDEN.read_text())[case]
    assert golden_runs[case] == expected
