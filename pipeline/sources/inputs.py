"""Source configs for paths given on the command line (`--input`): the format is taken from the names."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.storage import is_remote, list_objects, local_path_of

_KIND_BY_SUFFIX = [
    ((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz", ".jsonl.zst", ".ndjson.zst", ".json.zst"), "jsonl"),
    ((".parquet",), "parquet"),
    ((".csv",), "csv"),
    ((".txt",), "text_dir"),
    ((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"), "webdataset"),
    ((".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"), "image_dir"),
]
# Image sources take neither the text field nor the id field of the config's first source.
_NO_TEXT_KINDS = ("image_dir", "webdataset")


def kind_of_file(name: str) -> str | None:
    """The source kind a file name implies, or None."""
    for suffixes, kind in _KIND_BY_SUFFIX:
        if name.lower().endswith(suffixes):
            return kind
    return None


def sources_from_inputs(inputs: tuple[str, ...], template: dict) -> list[dict]:
    """Source configs for `--input` paths: the format is inferred from the names.

    A directory written by `save_to_disk` becomes an `hf_disk` source; another directory becomes
    one source per file format found in it. `text_field`/`id_field` come from `template`.
    """
    sources: list[dict] = []
    used: set[str] = set()

    def add(paths: list[str], kind: str, hint: str) -> None:
        base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", hint) or "input"
        name, k = base, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        base_fields = {} if kind in _NO_TEXT_KINDS else template
        sources.append({**base_fields, "name": name, "kind": kind, "paths": paths})

    for raw in inputs:
        if is_remote(raw):
            _add_objects(raw, add)
            continue
        p = Path(local_path_of(raw)).expanduser()
        hint = p.name.split(".")[0] or "input"
        if p.is_dir():
            if any((p / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
                add([str(p)], "hf_disk", hint)
                continue
            found: dict[str, set[str]] = {}
            for q in p.rglob("*"):
                if q.is_file() and (kind := kind_of_file(q.name)):
                    suffix = next(s for s in next(x for x, k in _KIND_BY_SUFFIX if k == kind) if q.name.lower().endswith(s))
                    found.setdefault(kind, set()).add(suffix)
            if not found:
                raise ConfigError(f"--input {raw}: the directory holds no .jsonl/.json(.gz/.zst), .parquet, .csv, .txt, "
                                  ".tar or image file")
            for kind in sorted(found):
                if len(found) == 1:
                    add([str(p)], kind, hint)
                else:
                    add([f"{p}/**/*{s}" for s in sorted(found[kind])], kind, f"{hint}-{kind}")
        else:
            kind = kind_of_file(p.name)
            if kind is None:
                raise ConfigError(f"--input {raw}: cannot tell the format from the name; use a config source with `kind`")
            add([str(p)], kind, hint)
    return sources


def _add_objects(url: str, add) -> None:
    """Sources for an `--input` URL: one object, or the objects under a prefix (one source per format)."""
    hint = url.rstrip("/").rsplit("/", 1)[-1].split(".")[0] or "input"
    if kind := kind_of_file(url):
        add([url], kind, hint)
        return
    found: dict[str, set[str]] = {}
    for obj, _ in list_objects(url, None):
        if kind := kind_of_file(obj):
            suffix = next(s for s in next(x for x, k in _KIND_BY_SUFFIX if k == kind) if obj.lower().endswith(s))
            found.setdefault(kind, set()).add(suffix)
    if not found:
        raise ConfigError(f"--input {url}: the prefix holds no .jsonl/.json(.gz/.zst), .parquet, .csv, .txt, .tar or "
                          "image object")
    for kind in sorted(found):
        paths = [url] if len(found) == 1 else [f"{url.rstrip('/')}/**/*{s}" for s in sorted(found[kind])]
        add(paths, kind, hint if len(found) == 1 else f"{hint}-{kind}")
