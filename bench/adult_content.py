"""Adult-content screening on benign images only: false positives, speed and parity with NudeNet.

What it measures (issue #17 part 3), with the stage's default configuration (classes of sexual
exposure, threshold 0.6) unless said:

- false positives on benign pictures: the PDQ reference photos in ../shared/data/hashmatch/, the
  sample images in data_samples/images/ and >= 500 generated ones (gradients, shapes, noise,
  text, skin-toned colour fields, at sizes 48..1600 px, PNG and JPEG). Every image here is benign,
  so every flag is a false positive. True-positive recall is NOT measured: that would need
  explicit images, which this project never seeks, makes or keeps.
- speed in images/s on one core (onnxruntime with one thread): our stage from encoded bytes
  (safe decode + batched network + NudeNet's post-processing) against `NudeDetector.detect` on
  the files (its own OpenCV decode; onnxruntime's default threads pinned to one core for a fair
  per-core figure), in the same run, medians of `--repeats`.
- parity: per image and class, the highest score from our batched path against
  `NudeDetector.detect` on the same pixels and on the file itself; the maximum absolute difference
  and whether the set of detected classes is the same.
- the term-list filter's speed (MB/s per core) on generated text with a made-up list.

Usage::

    python bench/adult_content.py [--generated 500] [--speed-images 64] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import REPO, machine_info, median, results_path  # noqa: E402

from pipeline.content.nsfw import EXPOSED, LABELS, NudeNetModel, class_scores  # noqa: E402
from pipeline.content.terms import TermList  # noqa: E402
from pipeline.safety.images import decode_image  # noqa: E402
from pipeline.stages.adult import AdultImageConfig, AdultImageStage  # noqa: E402

HASHMATCH = REPO.parent / "shared" / "data" / "hashmatch"
KINDS = ("gradient", "shapes", "noise", "text", "skin")


def generated_image(i: int, rng: random.Random) -> tuple[str, bytes]:
    """One benign synthetic picture, encoded; its kind cycles, its size and format vary."""
    kind = KINDS[i % len(KINDS)]
    w, h = rng.randint(48, 1600), rng.randint(48, 1600)
    nrng = np.random.default_rng(i)
    if kind == "gradient":
        a = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            a[..., c] = np.linspace(rng.random() * 255, rng.random() * 255, w)[None, :] * 0.5 + \
                np.linspace(rng.random() * 255, rng.random() * 255, h)[:, None] * 0.5
        im = Image.fromarray(a.astype(np.uint8))
    elif kind == "noise":
        scale = rng.choice((1, 4, 16))
        small = nrng.integers(0, 256, (max(1, h // scale), max(1, w // scale), 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    elif kind == "skin":
        # Flat and softly shaded skin-toned fields with blobs: the colours a detector of exposed skin
        # is most likely to be fooled by, in shapes that are nothing at all.
        tones = [(224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (241, 194, 125)]
        im = Image.new("RGB", (w, h), rng.choice(tones))
        d = ImageDraw.Draw(im)
        for _ in range(rng.randint(1, 6)):
            x0, y0 = rng.randint(0, w), rng.randint(0, h)
            r = rng.randint(8, max(9, min(w, h) // 2))
            d.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=rng.choice(tones))
        im = im.filter(ImageFilter.GaussianBlur(rng.choice((0, 2, 8))))
    else:
        im = Image.new("RGB", (w, h), tuple(rng.randint(0, 255) for _ in range(3)))
        d = ImageDraw.Draw(im)
        if kind == "shapes":
            for _ in range(rng.randint(2, 12)):
                x0, y0 = rng.randint(0, w), rng.randint(0, h)
                box = [x0, y0, x0 + rng.randint(5, max(6, w // 2)), y0 + rng.randint(5, max(6, h // 2))]
                fill = tuple(rng.randint(0, 255) for _ in range(3))
                (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
        else:
            for row in range(0, h, 14):
                d.text((4, row), "zorblax quuxfoo lorem ipsum 0123456789"[: rng.randint(5, 38)], fill=(0, 0, 0))
    fmt = "JPEG" if rng.random() < 0.5 else "PNG"
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": rng.randint(60, 95)} if fmt == "JPEG" else {}))
    return f"generated/{i:04d}-{kind}.{fmt.lower()}", buf.getvalue()


def benign_corpus(n_generated: int) -> list[tuple[str, str, bytes]]:
    """(set, name, bytes) of every benign image: hashmatch photos, data_samples, generated."""
    out = []
    for p in sorted(HASHMATCH.rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            out.append(("hashmatch", str(p.relative_to(HASHMATCH)), p.read_bytes()))
    for p in sorted((REPO / "data_samples" / "images").glob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.name != "not-an-image.png":
            out.append(("data_samples", p.name, p.read_bytes()))
    rng = random.Random(17)
    out += [("generated", *generated_image(i, rng)) for i in range(n_generated)]
    return out


def false_positives(stage: AdultImageStage, corpus) -> dict:
    """Flags of the default configuration, and how many images any class or a lower threshold would flag."""
    scores = stage.scores([b for _, _, b in corpus])
    per_set: dict[str, dict] = {}
    lower = {t: 0 for t in (0.25, 0.4, 0.5)}
    flagged_names = []
    for (kind, name, _), s in zip(corpus, scores):
        d = per_set.setdefault(kind, {"images": 0, "rejected": 0, "flagged": 0})
        d["images"] += 1
        if isinstance(s, str):
            d["rejected"] += 1
            continue
        top = max(s.values(), default=0.0)
        if any(v >= stage.config.threshold_of(k) for k, v in s.items()):
            d["flagged"] += 1
            flagged_names.append({"image": name, "scores": s})
        for t in lower:
            lower[t] += top >= t
    for d in per_set.values():
        d["false_positive_rate"] = round(d["flagged"] / max(1, d["images"] - d["rejected"]), 4)
    total = sum(d["images"] - d["rejected"] for d in per_set.values())
    return {"per_set": per_set, "images": total, "flagged": len(flagged_names),
            "false_positive_rate": round(len(flagged_names) / max(1, total), 4), "flagged_images": flagged_names,
            "flagged_at_lower_thresholds_default_classes": {str(t): n for t, n in lower.items()}}


def parity(model: NudeNetModel, detector, corpus) -> dict:
    """Our batched path against NudeDetector.detect on the same pixels (and on the file's bytes)."""
    rgbs = [decode_image(b) for _, _, b in corpus]
    ours = []
    for i in range(0, len(rgbs), 16):
        ours += model.detect_batch(rgbs[i:i + 16])
    max_diff, same_sets, any_class = 0.0, 0, {}
    file_same, file_max, file_n, file_differs = 0, 0.0, 0, []
    for (kind, name, data), rgb, mine in zip(corpus, rgbs, ours):
        a = class_scores(mine)
        theirs = {}
        for d in detector.detect(np.ascontiguousarray(rgb[:, :, ::-1])):
            theirs[d["class"]] = max(theirs.get(d["class"], 0.0), d["score"])
        same_sets += set(a) == set(theirs)
        for k in set(a) & set(theirs):
            max_diff = max(max_diff, abs(a[k] - theirs[k]))
        for k, v in a.items():
            any_class[k] = max(any_class.get(k, 0.0), round(v, 3))
        if kind != "generated" or name.endswith(".png"):     # NudeDetector's own decode of the bytes
            file_n += 1
            fb = {}
            for d in detector.detect(data):
                fb[d["class"]] = max(fb.get(d["class"], 0.0), d["score"])
            file_same += set(fb) == set(a)
            if set(fb) != set(a):
                file_differs.append({"image": name, "mode": Image.open(io.BytesIO(data)).mode,
                                     "ours": {k: round(v, 3) for k, v in a.items()},
                                     "nudedetector_on_bytes": {k: round(v, 3) for k, v in fb.items()}})
            for k in set(a) & set(fb):
                file_max = max(file_max, abs(a[k] - fb[k]))
    return {"images": len(corpus), "same_class_set": same_sets, "max_abs_score_difference": max_diff,
            "own_decode_images": file_n, "own_decode_same_class_set": file_same,
            "own_decode_max_abs_score_difference": file_max, "own_decode_differs": file_differs,
            "highest_score_per_class_any_class": dict(sorted(any_class.items()))}


def speed(stage: AdultImageStage, detector, files: list[Path], repeats: int) -> dict:
    """Images/s on one core: ours from bytes; NudeDetector.detect on the files as it comes (its
    session has onnxruntime's default threads, here squeezed onto the one core) and with its
    session swapped for a one-thread one (the same model file, the rest of its code unchanged)."""
    from nudenet import NudeDetector

    one_thread = NudeDetector()
    one_thread.onnx_session = stage.model.session
    blobs = [p.read_bytes() for p in files]
    runs: dict[str, list[float]] = {"ours": [], "nudedetector": [], "nudedetector_one_thread": []}
    for _ in range(repeats):
        t = time.perf_counter()
        stage.scores(blobs)
        runs["ours"].append(len(blobs) / (time.perf_counter() - t))
        for name, det in (("nudedetector", detector), ("nudedetector_one_thread", one_thread)):
            t = time.perf_counter()
            for p in files:
                det.detect(str(p))
            runs[name].append(len(files) / (time.perf_counter() - t))
    med = {k: median(v) for k, v in runs.items()}
    return {"images": len(files), "ours_images_per_s": round(med["ours"], 2),
            "nudedetector_detect_images_per_s": round(med["nudedetector"], 2),
            "nudedetector_detect_one_thread_images_per_s": round(med["nudedetector_one_thread"], 2),
            "ratio": round(med["ours"] / med["nudedetector"], 3),
            "ratio_one_thread": round(med["ours"] / med["nudedetector_one_thread"], 3),
            "runs": {k: [round(x, 2) for x in v] for k, v in runs.items()}}


def term_speed(repeats: int) -> dict:
    rng = random.Random(5)
    syl = ["zor", "blax", "quux", "foo", "mip", "tal", "vek", "orn"]
    terms = sorted({"".join(rng.choice(syl) for _ in range(rng.randint(2, 4))) for _ in range(4000)})[:1000]
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))) for _ in range(20000)]
    text = " ".join(rng.choice(words) if rng.random() > 0.001 else rng.choice(terms) for _ in range(300_000))
    tl = TermList(terms)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        n = sum(tl.count(text).values())
        runs.append(len(text.encode()) / 1e6 / (time.perf_counter() - t))
    return {"terms": len(terms), "text_mb": round(len(text.encode()) / 1e6, 2), "matches": n,
            "mb_per_s": round(median(runs), 1), "runs": [round(x, 1) for x in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generated", type=int, default=500)
    ap.add_argument("--speed-images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--speed-only", action="store_true", help="skip the false-positive and parity passes")
    ap.add_argument("--out")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})      # one core for everything measured
    from nudenet import NudeDetector

    info = machine_info(("nudenet", "onnxruntime", "opencv-python-headless", "numpy", "pillow"))
    corpus = benign_corpus(args.generated)
    stage = AdultImageStage(AdultImageConfig()).setup()
    detector = NudeDetector()
    t0 = time.perf_counter()
    fp = None if args.speed_only else false_positives(stage, corpus)
    par = None if args.speed_only else parity(stage.model, detector, corpus)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "adult-bench-speed"
    tmp.mkdir(exist_ok=True)
    files = []
    for kind, name, data in corpus[: args.speed_images]:
        p = tmp / name.replace("/", "_")
        p.write_bytes(data)
        files.append(p)
    sp = speed(stage, detector, files, args.repeats)
    result = {"benchmark": "adult-content", "machine": info, "note": "shared machine (2 cores, up to 7 agents); "
              "one core pinned for the whole run; benign images only, recall not measurable here",
              "config": {"classes": list(EXPOSED), "threshold": stage.config.threshold, "labels": list(LABELS)},
              "model": stage.info, "false_positives": fp, "parity": par, "speed": sp, "terms": term_speed(args.repeats),
              "seconds": round(time.perf_counter() - t0, 1), "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    out = results_path("adult-content", args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("false_positives", "parity", "speed", "terms")}, indent=1)[:4000])
    print("wrote", out)


if __name__ == "__main__":
    main()
