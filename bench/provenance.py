"""Speed of the ai_provenance stage per core: images without metadata (the common case), with C2PA
credentials and with an XMP digital source type, beside calling the C2PA library on every image
(no marker pre-check) and beside decoding the image with Pillow (what pass 1 pays anyway).

Images: the benign photos of ../shared/data/hashmatch/pdq-vectors (JPEG and PNG, as they are), the
same photos signed with a throw-away test chain (tests/fixtures/provenance/make.py), and the same
photos with a hand-written XMP packet. One thread; medians of --repeats passes.

    PYTHONPATH=. python bench/provenance.py [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import machine_info, median, results_path  # noqa: E402

PHOTOS = HERE.parent.parent / "shared" / "data" / "hashmatch" / "pdq-vectors" / "files"


def photos() -> list[tuple[str, bytes]]:
    files = sorted(p for p in PHOTOS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no photos under {PHOTOS}")
    return [(p.name, p.read_bytes()) for p in files]


def variants(plain: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    from tests.fixtures.provenance.make import AI, jpeg_with_xmp, make_chain, png_with_xmp, sign, xmp_packet

    chain = make_chain()
    signed, xmp = [], []
    for name, blob in plain:
        mime = "image/png" if blob[:4] == b"\x89PNG" else "image/jpeg"
        signed.append(sign(blob, mime, chain, AI))
        packet = xmp_packet(AI, "ExampleGen 1.0")
        xmp.append(png_with_xmp(blob, packet) if mime == "image/png" else jpeg_with_xmp(blob, packet))
    return {"no_metadata": [b for _, b in plain], "c2pa": signed, "xmp": xmp}


def rate(fn, blobs: list[bytes], repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for b in blobs:
            fn(b)
        times.append(time.perf_counter() - t)
    m = median(times)
    return {"images_per_s": round(len(blobs) / m, 1), "us_per_image": round(m / len(blobs) * 1e6, 1),
            "seconds": [round(x, 4) for x in times]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    import c2pa
    import numpy as np
    import pyarrow as pa
    from PIL import Image

    from pipeline.content.provenance import OFFLINE_SETTINGS, C2paInspector, inspect_image
    from pipeline.core.stage import BatchContext
    from pipeline.stages.provenance import AiProvenanceStage

    info = machine_info(("c2pa-python", "pillow", "defusedxml"))
    plain = photos()
    sets = variants(plain)
    inspector = C2paInspector()
    ctx = c2pa.Context.from_dict(OFFLINE_SETTINGS)
    stage = AiProvenanceStage(AiProvenanceStage.Config()).setup()

    def naive(blob: bytes) -> None:        # the library on every image, no pre-check
        try:
            r = c2pa.Reader.try_create(None, io.BytesIO(blob), None, ctx)
        except c2pa.C2paError:
            return
        if r is not None:
            with r:
                json.loads(r.json())

    def decode(blob: bytes) -> None:       # what pass 1 already pays for each image
        with Image.open(io.BytesIO(blob)) as im:
            im.load()

    def stage_batch(table) -> None:      # the stage as pass 1 calls it, on an Arrow batch
        c = BatchContext("b", None, np.arange(table.num_rows, dtype=np.int64), [""] * table.num_rows, 0, None, {})
        stage.process(table, c)

    results = {}
    for name, blobs in sets.items():
        found = {}
        for b in blobs:
            p = inspect_image(b, inspector)
            key = f"{p.source}:{p.source_type}:{p.c2pa_validation}"
            found[key] = found.get(key, 0) + 1
        t = []
        table = pa.table({"image": pa.array(blobs, pa.large_binary())})
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            stage_batch(table)
            t.append(time.perf_counter() - t0)
        results[name] = {
            "images": len(blobs), "mean_bytes": round(sum(map(len, blobs)) / len(blobs)), "found": found,
            "stage_inspect": rate(lambda b: inspect_image(b, inspector), blobs, args.repeats),
            "stage_process_batch": {"images_per_s": round(len(blobs) / median(t), 1)},
            "c2pa_reader_on_every_image": rate(naive, blobs, args.repeats),
            "pillow_decode": rate(decode, blobs, args.repeats),
        }
        r = results[name]
        print(f"{name:12} {len(blobs)} images, {r['mean_bytes']} B mean: stage {r['stage_inspect']['images_per_s']}/s "
              f"({r['stage_inspect']['us_per_image']} us), batch {r['stage_process_batch']['images_per_s']}/s, "
              f"c2pa on every image {r['c2pa_reader_on_every_image']['images_per_s']}/s, "
              f"Pillow decode {r['pillow_decode']['images_per_s']}/s; found {found}")
    out = results_path("provenance", args.out)
    out.write_text(json.dumps({"machine": info, "repeats": args.repeats, "threads": 1, "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
