#!/usr/bin/env python3
"""Reference face pipeline (onnxruntime + OpenCV) and the fixture JSON the Rust engine is tested against.

    PY=$(scripts/pyenv.sh)
    scripts/fetch-models.sh && scripts/fetch-fixtures.sh
    "$PY" scripts/reference.py [--score-threshold 0.5] [--out tests/fixtures/reference.json]

The pipeline follows shared MODELS.md exactly:

* decode: cv2.imdecode(bytes, IMREAD_COLOR) -> 8-bit BGR (alpha dropped, grey expanded, EXIF
  orientation applied by OpenCV), then BGR->RGB.
* detector (SCRFD): scale = S / max(w, h) with S = 640; resized size = (floor(w*S/max), floor(h*S/max))
  in integer arithmetic; cv2.resize INTER_LINEAR on the uint8 RGB image; pasted at the top-left of an
  SxS canvas of pixel value 0; (x - 127.5) / 128; NCHW float32. For stride s in 8, 16, 32 the
  outputs score_s [1,N,1], bbox_s [1,N,4], kps_s [1,N,10] have N = (S/s)^2 * 2 rows in the order
  (y, x, anchor); the anchor centre is (x*s, y*s); box = (cx - d0*s, cy - d1*s, cx + d2*s, cy + d3*s);
  landmark k = (cx + o[2k]*s, cy + o[2k+1]*s). Keep score >= threshold, divide boxes and landmarks
  by scale, then greedy NMS: sort by score descending (stable, ties by output order), drop a box
  whose IoU with a kept box is > nms_iou; IoU = inter / (area_a + area_b - inter) on continuous
  coordinates (no +1). Boxes are not clipped to the image.
* faces sorted by box area, largest first (ties: higher score first).
* alignment: Umeyama least-squares similarity (rotation + uniform scale + translation, no
  reflection) mapping the 5 landmarks onto the ArcFace template; cv2.warpAffine(rgb, M, (112, 112),
  INTER_LINEAR, BORDER_CONSTANT 0).
* recognizer: crop RGB, (x - 127.5) / 127.5, NCHW float32 batch 1, output L2-normalised.

Importable: bench-reference.py and eval-reference.py use Pipeline from this file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import cv2
    import numpy as np
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover
    sys.exit(f"{exc}: run with the project venv, e.g. PY=$(scripts/pyenv.sh) && \"$PY\" {' '.join(sys.argv)}")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO / "models"
DEFAULT_PHOTOS = REPO / "tests" / "fixtures" / "photos"
DEFAULT_OUT = REPO / "tests" / "fixtures" / "reference.json"

DETECTOR_FILE = "scrfd_500m_bnkps.onnx"
RECOGNIZER_FILE = "w600k_mbf.onnx"

# The photos scripts/fetch-fixtures.sh provides, in the order reference.json lists them.
FIXTURE_PHOTOS = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "biden.jpg",
    "yaoming.jpg",
    "gdp.jpg",
    "players.jpg",
    "solvay_conference_1927.jpg",
    "nofaces_chelsea.png",
    "nofaces_coffee.png",
]
PAIR_PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
CROP_SIZE = 112
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_id(path: Path, sha256: str) -> str:
    """Model id as stored with every embedding: file stem + first 12 hex of the sha256."""
    return f"{path.stem}-{sha256[:12]}"


def decode_rgb(data: bytes) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB (alpha dropped, grey expanded)."""
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("cv2.imdecode could not decode the image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def letterbox_geometry(width: int, height: int, size: int) -> tuple[float, int, int]:
    """scale = size / max(w, h); resized dims floor(dim * size / max(w, h)) (integer arithmetic)."""
    longest = max(width, height)
    new_w = max(1, width * size // longest)
    new_h = max(1, height * size // longest)
    return size / longest, new_w, new_h


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991, no reflection) mapping src onto dst; 2x3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_d = src - src_mean
    dst_d = dst - dst_mean
    cov = dst_d.T @ src_d / n
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[dim - 1] = -1.0
    u, s, vt = np.linalg.svd(cov)
    r = u @ np.diag(d) @ vt
    var_src = (src_d**2).sum() / n
    scale = float((s * d).sum() / var_src)
    t = dst_mean - scale * (r @ src_mean)
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = scale * r
    m[:, 2] = t
    return m


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS; returns kept indices in descending score order (stable)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_threshold]
    return keep


@dataclass
class Face:
    bbox: np.ndarray  # (4,) x1 y1 x2 y2, original image pixels
    score: float
    landmarks: np.ndarray  # (5, 2)

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))


class Pipeline:
    def __init__(
        self,
        models_dir: Path = DEFAULT_MODELS,
        threads: int = 1,
        score_threshold: float = 0.5,
        nms_iou: float = 0.4,
        input_size: int = 640,
        detector_file: str = DETECTOR_FILE,
        recognizer_file: str = RECOGNIZER_FILE,
    ):
        # detector_file / recognizer_file: a name inside models_dir, or a path to any compatible model
        self.detector_path = Path(models_dir) / detector_file
        self.recognizer_path = Path(models_dir) / recognizer_file
        for p in (self.detector_path, self.recognizer_path):
            if not p.is_file():
                sys.exit(f"missing {p}: run scripts/fetch-models.sh")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CPUExecutionProvider"]
        self.det = ort.InferenceSession(str(self.detector_path), opts, providers=providers)
        self.rec = ort.InferenceSession(str(self.recognizer_path), opts, providers=providers)
        self.det_input = self.det.get_inputs()[0].name
        self.rec_input = self.rec.get_inputs()[0].name
        self.det_outputs = [o.name for o in self.det.get_outputs()]
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_size = input_size
        self._anchor_cache: dict[tuple[int, int], np.ndarray] = {}

    # ---- detector -------------------------------------------------------------------------
    def detect_preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = rgb.shape[:2]
        scale, new_w, new_h = letterbox_geometry(w, h, self.input_size)
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((self.input_size, self.input_size, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = resized
        blob = (canvas.astype(np.float32) - 127.5) / 128.0
        blob = np.ascontiguousarray(blob.transpose(2, 0, 1)[None])
        return blob, scale

    def detect_run(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.det.run(self.det_outputs, {self.det_input: blob})

    def _anchors(self, stride: int) -> np.ndarray:
        key = (self.input_size, stride)
        if key not in self._anchor_cache:
            cells = self.input_size // stride
            ys, xs = np.mgrid[:cells, :cells]
            centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            self._anchor_cache[key] = np.repeat(centres, ANCHORS_PER_CELL, axis=0)
        return self._anchor_cache[key]

    def detect_postprocess(self, outs: list[np.ndarray], scale: float) -> list[Face]:
        named = dict(zip(self.det_outputs, outs))
        all_boxes, all_scores, all_kps = [], [], []
        for s in STRIDES:
            scores = named[f"score_{s}"].reshape(-1)
            dist = named[f"bbox_{s}"].reshape(-1, 4) * s
            offs = named[f"kps_{s}"].reshape(-1, 10) * s
            anchors = self._anchors(s)
            assert anchors.shape[0] == scores.shape[0], (s, anchors.shape, scores.shape)
            idx = np.nonzero(scores >= self.score_threshold)[0]
            if idx.size == 0:
                continue
            a = anchors[idx]
            d = dist[idx]
            boxes = np.stack([a[:, 0] - d[:, 0], a[:, 1] - d[:, 1], a[:, 0] + d[:, 2], a[:, 1] + d[:, 3]], axis=1)
            kps = np.tile(a, (1, 5)) + offs[idx]
            all_boxes.append(boxes)
            all_scores.append(scores[idx])
            all_kps.append(kps)
        if not all_boxes:
            return []
        boxes = np.concatenate(all_boxes).astype(np.float64) / scale
        scores = np.concatenate(all_scores).astype(np.float64)
        kps = np.concatenate(all_kps).astype(np.float64) / scale
        keep = nms(boxes, scores, self.nms_iou)
        faces = [Face(boxes[i], float(scores[i]), kps[i].reshape(5, 2)) for i in keep]
        faces.sort(key=lambda f: (-f.area, -f.score))
        return faces

    def detect(self, rgb: np.ndarray) -> tuple[list[Face], float]:
        blob, scale = self.detect_preprocess(rgb)
        return self.detect_postprocess(self.detect_run(blob), scale), scale

    # ---- alignment + recognizer -----------------------------------------------------------
    @staticmethod
    def align(rgb: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = umeyama_similarity(landmarks, ARCFACE_TEMPLATE)
        crop = cv2.warpAffine(
            rgb, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
        )
        return crop, m

    def embed(self, crop: np.ndarray) -> np.ndarray:
        blob = (crop.astype(np.float32) - 127.5) / 127.5
        blob = np.ascontiguousarray(blob.transpose(2, 0, 1)[None])
        out = self.rec.run(None, {self.rec_input: blob})[0].reshape(-1).astype(np.float64)
        return out / np.linalg.norm(out)


def to_json(obj, indent: int = 0) -> str:
    """JSON with structure indented but every face (and every list of numbers) on one line,
    so that a change shows up in a diff as the faces that changed."""
    pad = " " * indent
    if isinstance(obj, dict) and not ("bbox" in obj and "embedding" in obj):
        items = [f'{pad} {json.dumps(k)}: {to_json(v, indent + 1).lstrip()}' for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, dict) for v in obj):
        return pad + "[\n" + ",\n".join(to_json(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return pad + json.dumps(obj, separators=(",", ":"))


def r(x, nd):
    return [round(float(v), nd) for v in np.asarray(x).reshape(-1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="directory with the .onnx files")
    ap.add_argument("--detector", default=DETECTOR_FILE, help="detector file in --models, or a path")
    ap.add_argument("--recognizer", default=RECOGNIZER_FILE, help="recognizer file in --models, or a path")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="directory with the fixture photos")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON (default tests/fixtures/reference.json)")
    ap.add_argument("--score-threshold", type=float, default=0.5)
    ap.add_argument("--nms-iou", type=float, default=0.4)
    ap.add_argument("--input-size", type=int, default=640)
    ap.add_argument("--max-embeddings", type=int, default=8, help="embeddings for the N largest faces per photo")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = ap.parse_args()

    pipe = Pipeline(args.models, args.threads, args.score_threshold, args.nms_iou, args.input_size,
                    args.detector, args.recognizer)
    det_sha = sha256_file(pipe.detector_path)
    rec_sha = sha256_file(pipe.recognizer_path)

    missing = [p for p in FIXTURE_PHOTOS if not (args.photos / p).is_file()]
    if missing:
        sys.exit(f"missing fixture photos {missing}: run scripts/fetch-fixtures.sh")

    doc = {
        "generator": "scripts/reference.py",
        "versions": {"onnxruntime": ort.__version__, "opencv": cv2.__version__, "numpy": np.__version__},
        "detector": {
            "file": pipe.detector_path.name,
            "sha256": det_sha,
            "model_id": model_id(pipe.detector_path, det_sha),
            "input_size": args.input_size,
            "score_threshold": args.score_threshold,
            "nms_iou": args.nms_iou,
            "strides": list(STRIDES),
            "anchors_per_cell": ANCHORS_PER_CELL,
            "normalisation": "(x - 127.5) / 128, RGB, NCHW",
            "resize": "cv2.resize INTER_LINEAR (uint8 RGB, half-pixel centres, no antialiasing) to "
                      "(floor(w*S/max(w,h)), floor(h*S/max(w,h))), pasted top-left on an SxS canvas of 0",
            "scale": "S / max(w, h); boxes and landmarks divided by it",
            "nms": "greedy by score desc (stable); suppress IoU > nms_iou; IoU without +1; boxes not clipped",
        },
        "recognizer": {
            "file": pipe.recognizer_path.name,
            "sha256": rec_sha,
            "model_id": model_id(pipe.recognizer_path, rec_sha),
            "input_size": [CROP_SIZE, CROP_SIZE],
            "normalisation": "(x - 127.5) / 127.5, RGB, NCHW, batch 1; output L2-normalised",
        },
        "decode": "cv2.imdecode IMREAD_COLOR (8-bit, alpha dropped, grey expanded to 3 channels, "
                  "EXIF orientation applied), then BGR->RGB",
        "alignment": "Umeyama similarity, no reflection, landmarks -> template; "
                     "cv2.warpAffine INTER_LINEAR, BORDER_CONSTANT 0, 112x112; affine maps image -> crop",
        "template": ARCFACE_TEMPLATE.tolist(),
        "max_embeddings_per_photo": args.max_embeddings,
        "photos": [],
        "pairs": [],
    }

    largest: dict[str, np.ndarray] = {}
    for name in FIXTURE_PHOTOS:
        path = args.photos / name
        rgb = decode_rgb(path.read_bytes())
        h, w = rgb.shape[:2]
        faces, scale = pipe.detect(rgb)
        _, new_w, new_h = letterbox_geometry(w, h, args.input_size)
        entry = {
            "file": name,
            "sha256": sha256_file(path),
            "width": w,
            "height": h,
            "scale": scale,
            "resized": [new_w, new_h],
            "faces": [],
        }
        for k, face in enumerate(faces):
            fj = {
                "bbox": r(face.bbox, 4),
                "score": round(face.score, 6),
                "landmarks": [r(p, 4) for p in face.landmarks],
                "affine": None,
                "embedding": None,
            }
            if k < args.max_embeddings:
                crop, m = pipe.align(rgb, face.landmarks)
                emb = pipe.embed(crop)
                fj["affine"] = [r(row, 8) for row in m]
                fj["embedding"] = r(emb, 6)
                if k == 0:
                    largest[name] = emb
            entry["faces"].append(fj)
        doc["photos"].append(entry)
        print(f"{name:28s} {w:5d}x{h:<5d} faces {len(faces):3d}", file=sys.stderr)

    for i, a in enumerate(PAIR_PHOTOS):
        for b in PAIR_PHOTOS[i + 1:]:
            if a in largest and b in largest:
                cos = float(largest[a] @ largest[b])
                doc["pairs"].append({"a": a, "b": b, "cosine": round(cos, 6),
                                     "same_person": a.startswith("obama") == b.startswith("obama")})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        f.write(to_json(doc) + "\n")
    os.replace(tmp, args.out)
    for p in doc["pairs"]:
        print(f"cosine {p['a']:>10s} ~ {p['b']:<10s} {p['cosine']:+.4f}", file=sys.stderr)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
