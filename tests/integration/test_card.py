"""Dataset-side metadata: the Hugging Face card and Croissant JSON-LD agree with the manifest."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import load_config, parse_config
from pipeline.executor import run_local
from pipeline.sinks.card import size_category
from tests.conftest import REPO


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "run"
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(out)
    return out, run_local(parse_config(data))


def test_the_card_front_matter_points_hugging_face_at_the_shards(run):
    import datasets

    out, manifest = run
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["license"] == ["cc-by-4.0", "cc0-1.0"] and front["size_categories"] == ["n<1K"]
    assert front["configs"][0]["data_files"][0]["path"] == "shards/*.parquet"
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(out.parent / "hf"))
    assert ds.num_rows == manifest["conservation"]["overall"]["kept"]
    assert manifest["run_id"] in text and "471 in = 415 kept" in text


def test_croissant_lists_every_shard_with_its_digest_and_fills_the_rai_fields(run):
    out, manifest = run
    c = json.loads((out / "croissant.json").read_text())
    assert c["conformsTo"] == "http://mlcommons.org/croissant/1.0" and c["@type"] == "sc:Dataset"
    objects = {d["contentUrl"]: d["sha256"] for d in c["distribution"] if d["@type"] == "cr:FileObject"}
    assert objects == {f["path"]: f["sha256"] for f in manifest["outputs"]["shards"]}
    schema = pq.read_schema(out / manifest["outputs"]["shards"][0]["path"])
    assert [f["name"] for f in c["recordSet"][0]["field"]] == schema.names
    threshold = str(manifest["near_dedup"]["threshold"])
    assert "MinHash" in c["rai:dataPreprocessingProtocol"] and f"threshold {threshold}" in c["rai:dataPreprocessingProtocol"]
    assert "No PII detection" in c["rai:personalSensitiveInformation"]


def test_metadata_files_are_subjects_of_the_manifest(run):
    out, manifest = run
    assert {m["path"] for m in manifest["outputs"]["metadata"]} == {"README.md", "croissant.json"}


@pytest.mark.parametrize("n,label", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000, "100K<n<1M"), (3 * 10**9, "1B<n<10B")])
def test_size_categories_follow_hugging_face_buckets(n, label):
    assert size_category(n) == label
