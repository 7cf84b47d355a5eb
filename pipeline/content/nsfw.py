"""NudeNet's bundled detector (`320n.onnx`, nudenet 3.4.2) on onnxruntime's CPU provider, batched.

This is adult-content screening: it finds exposed (or covered) body parts in an image. It is *not*
a CSAM classifier; the control for known child sexual abuse material is hash-list matching in the
safety stage, which always runs first.

The pre- and post-processing are NudeNet's own (`nudenet/nudenet.py`: `_read_image`,
`_postprocess`), reproduced step for step so that scores equal `NudeDetector.detect` on the same
pixels (tests and `bench/adult_content.py` check it):

- the picture, in RGB order, is padded at the bottom and right with black to a square, then
  `cv2.dnn.blobFromImage(..., 1/255, (320, 320), swapRB=True)` resizes it bilinearly, swaps it to
  BGR and scales it (NudeNet reads BGR with OpenCV, then its `COLOR_RGBA2BGR` swaps it to RGB and
  `swapRB` swaps it back: the network sees BGR);
- of the 2,100 candidate boxes, those whose best class scores >= 0.2 are kept, rescaled to the
  image and clipped to it, then `cv2.dnn.NMSBoxes(score >= 0.25, IoU 0.45)`.

What differs on purpose: the image is decoded by the pipeline's safe decoder
(`pipeline.safety.images`: bounded pixels, frames and time; EXIF orientation applied as OpenCV's
`imread` does; alpha composited on white, grey and palette images made RGB), where NudeNet's own
API drops alpha without compositing and fails on greyscale bytes. Many images go through the
network in one call (`detect_batch`); NudeNet's `detect` runs one at a time.

Usage::

    model = NudeNetModel()                            # loads the ONNX file shipped in the wheel
    [dets] = model.detect_batch([rgb])                # rgb: (H, W, 3) uint8, RGB
    dets[0].label, dets[0].score, dets[0].box         # 'FACE_FEMALE', 0.71, (x, y, w, h)
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

# The model's output classes, in its output order (nudenet 3.4.2, `__labels`).
LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
# The classes that mean sexual exposure. The other `*_EXPOSED` classes (belly, feet, armpits, male
# chest) are everyday beach and sports photos: screening on them would drop ordinary pictures.
EXPOSED: tuple[str, ...] = (
    "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)
MODEL_FILE = "320n.onnx"
INPUT_SIDE = 320            # the network's input (NudeDetector's default inference_resolution)
CANDIDATE_SCORE = 0.2       # `_postprocess`: a box is a candidate when its best class scores >= 0.2
NMS_SCORE = 0.25            # `cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)`
NMS_IOU = 0.45
# The lowest score a detection can have: a threshold below it behaves as this value.
MIN_REPORTED_SCORE = NMS_SCORE


class DetectorError(PipelineError):
    """The detector cannot be loaded (package missing, model file absent or unreadable)."""


@dataclass(frozen=True)
class Detection:
    """One detected region: NudeNet's class name, its score and its box (x, y, w, h) in pixels."""

    label: str
    score: float
    box: tuple[int, int, int, int]


def model_path() -> Path:
    """The ONNX file inside the installed nudenet wheel, found without importing the package."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError("the adult_image stage needs nudenet 3.4.2 (its wheel ships the model, AGPL-3.0): "
                            "pip install 'hygiene-pipeline[adult]'")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise DetectorError(f"nudenet is installed but its model file {MODEL_FILE} is missing; reinstall nudenet==3.4.2")
    return path


def model_info(path: Path | None = None) -> dict:
    """What identifies the model for the manifest: package versions and the file's sha256."""
    path = path or model_path()
    versions = {}
    for dist in ("nudenet", "onnxruntime", "opencv-python-headless"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"model": f"nudenet/{MODEL_FILE}", "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "input_side": INPUT_SIDE, "versions": versions}


def pad_square(rgb: np.ndarray) -> np.ndarray:
    """NudeNet's padding: black at the bottom and the right up to a square (a view when already square)."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    if h == w:
        return rgb
    out = np.zeros((side, side, 3), dtype=np.uint8)
    out[:h, :w] = rgb
    return out


class NudeNetModel:
    """The bundled 320n detector on one onnxruntime CPU session.

    `threads=1` (the default) gives the session one intra-op and one inter-op thread: the pipeline
    already runs one worker per core, and onnxruntime's default (a thread per core in every
    session) would oversubscribe the cores with N workers x N threads and make per-core figures
    meaningless. Inference releases the GIL, so worker threads sharing one session run in parallel.
    """

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        try:
            import cv2
            import onnxruntime as ort
        except ImportError as e:
            raise DetectorError("the adult_image stage needs onnxruntime and OpenCV (nudenet's dependencies): "
                                f"pip install 'hygiene-pipeline[adult]' ({e})") from e
        self._cv2 = cv2
        self.path = path or model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors on a bad file
            raise DetectorError(f"{self.path}: onnxruntime cannot load the model ({e.__class__.__name__}); "
                                "reinstall nudenet==3.4.2") from e
        self.input_name = self.session.get_inputs()[0].name

    def blob(self, rgbs: list[np.ndarray]) -> np.ndarray:
        """The network input for RGB images: (N, 3, 320, 320) float32, as NudeNet's `_read_image`."""
        cv2 = self._cv2
        return cv2.dnn.blobFromImages([pad_square(a) for a in rgbs], 1 / 255.0, (INPUT_SIDE, INPUT_SIDE),
                                      (0, 0, 0), swapRB=True, crop=False)

    def raw(self, rgbs: list[np.ndarray]) -> np.ndarray:
        """The network's output for a batch: (N, 4 + classes, candidates) float32."""
        if not rgbs:
            return np.zeros((0, 4 + len(LABELS), 0), dtype=np.float32)
        return self.session.run(None, {self.input_name: self.blob(rgbs)})[0]

    def detect_batch(self, rgbs: list[np.ndarray]) -> list[list[Detection]]:
        """Detections per image (NudeNet's `detect` on each, in one network call)."""
        out = self.raw(rgbs)
        return [self.postprocess(out[j], a.shape[1], a.shape[0]) for j, a in enumerate(rgbs)]

    def postprocess(self, output: np.ndarray, width: int, height: int) -> list[Detection]:
        """NudeNet's `_postprocess` over one image's output (4 + classes, candidates), vectorised.

        The arithmetic stays in float32 as NudeNet's (numpy float32 scalars with Python ints), so
        the boxes that reach NMS are the same numbers.
        """
        rows = output.T
        scores_all = rows[:, 4:]
        best = scores_all.max(axis=1)
        keep = best >= CANDIDATE_SCORE
        if not keep.any():
            return []
        cand = rows[keep]
        best = best[keep]
        class_id = scores_all[keep].argmax(axis=1)
        side = max(width, height)
        x_pad, y_pad = side - width, side - height
        x, y, w, h = (cand[:, k] for k in range(4))
        x = x - w / 2
        y = y - h / 2
        x = x * (width + x_pad) / INPUT_SIDE
        y = y * (height + y_pad) / INPUT_SIDE
        w = w * (width + x_pad) / INPUT_SIDE
        h = h * (height + y_pad) / INPUT_SIDE
        x = np.maximum(np.float32(0), np.minimum(x, np.float32(width)))
        y = np.maximum(np.float32(0), np.minimum(y, np.float32(height)))
        w = np.minimum(w, np.float32(width) - x)
        h = np.minimum(h, np.float32(height) - y)
        boxes = np.stack([x, y, w, h], axis=1).astype(np.float64).tolist()
        indices = self._cv2.dnn.NMSBoxes(boxes, best.astype(np.float64).tolist(), NMS_SCORE, NMS_IOU)
        return [Detection(LABELS[int(class_id[i])], float(best[i]),
                          (int(boxes[i][0]), int(boxes[i][1]), int(boxes[i][2]), int(boxes[i][3])))
                for i in np.asarray(indices, dtype=np.int64).reshape(-1)]


def class_scores(detections: list[Detection]) -> dict[str, float]:
    """The highest score per detected class."""
    out: dict[str, float] = {}
    for d in detections:
        if d.score > out.get(d.label, -1.0):
            out[d.label] = d.score
    return out
