#!/usr/bin/env python3
"""Time the reference pipeline (onnxruntime + OpenCV) per stage on the fixture photos.

    PY=$(scripts/pyenv.sh)
    "$PY" scripts/bench-reference.py [--repeats 10] [--threads 1,2] [--order round-robin|photo]
        [--out bench/reference-ort.json]

For each onnxruntime thread count (intra_op_num_threads; inter_op_num_threads = 1, sequential),
after one untimed warm-up pass over the photos, runs the whole pipeline --repeats times on each
photo (by default every photo once per repeat, in turn, as `facepass bench` does; --order photo
runs each photo's repeats in a row, which keeps caches warmer) and times every stage inside each
run: decode (cv2.imdecode from bytes + BGR->RGB), detector preprocess (resize,
letterbox, normalise), detector model run, detector postprocess (decode anchors, NMS, sort), then for
every detected face align (Umeyama + warpAffine) and embed (recognizer, batch 1, L2-normalise).
end_to_end is the wall time of the whole pass (all faces). Reports medians in milliseconds.
OpenCV is limited to one thread so that only onnxruntime's thread count varies.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # noqa: E402  (first: it explains a missing venv)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

STAGES = ["decode", "det_pre", "det_run", "det_post", "align_face", "embed_face", "end_to_end"]


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_once(pipe: ref.Pipeline, data: bytes, t: dict[str, list[float]]) -> int:
    clock = time.perf_counter
    t0 = clock()
    rgb = ref.decode_rgb(data)
    t1 = clock()
    blob, scale = pipe.detect_preprocess(rgb)
    t2 = clock()
    outs = pipe.detect_run(blob)
    t3 = clock()
    faces = pipe.detect_postprocess(outs, scale)
    t4 = clock()
    for face in faces:
        a0 = clock()
        crop, _ = pipe.align(rgb, face.landmarks)
        a1 = clock()
        pipe.embed(crop)
        a2 = clock()
        t["align_face"].append(a1 - a0)
        t["embed_face"].append(a2 - a1)
    t5 = clock()
    t["decode"].append(t1 - t0)
    t["det_pre"].append(t2 - t1)
    t["det_run"].append(t3 - t2)
    t["det_post"].append(t4 - t3)
    t["end_to_end"].append(t5 - t0)
    return len(faces)


def med_ms(xs: list[float]) -> float | None:
    return round(statistics.median(xs) * 1000.0, 3) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=ref.DEFAULT_MODELS)
    ap.add_argument("--photos", type=Path, default=ref.DEFAULT_PHOTOS)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", default="1,2", help="comma-separated onnxruntime intra-op thread counts")
    ap.add_argument("--score-threshold", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=ref.REPO / "bench" / "reference-ort.json")
    ap.add_argument("--order", choices=["round-robin", "photo"], default="round-robin",
                    help="round-robin: every photo once per repeat, as `facepass bench` runs them "
                         "(and a server sees them); photo: each photo's repeats in a row (warmer caches)")
    args = ap.parse_args()

    cv2.setNumThreads(1)
    names = [p for p in ref.FIXTURE_PHOTOS if (args.photos / p).is_file()]
    if len(names) != len(ref.FIXTURE_PHOTOS):
        sys.exit("missing fixture photos: run scripts/fetch-fixtures.sh")
    blobs = {n: (args.photos / n).read_bytes() for n in names}
    threads = [int(x) for x in args.threads.split(",") if x.strip()]

    result = {
        "generator": "scripts/bench-reference.py",
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
        "versions": {"onnxruntime": ort.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "repeats": args.repeats,
        "order": args.order,
        "unit": "ms (median)",
        "runs": [],
    }
    for th in threads:
        pipe = ref.Pipeline(args.models, threads=th, score_threshold=args.score_threshold)
        per_photo = []
        all_t: dict[str, list[float]] = {k: [] for k in STAGES}
        times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in STAGES} for n in names}
        faces: dict[str, int] = {}
        if args.order == "round-robin":
            for n in names:
                run_once(pipe, blobs[n], {k: [] for k in STAGES})  # warm-up
            for _ in range(args.repeats):
                for n in names:
                    faces[n] = run_once(pipe, blobs[n], times[n])
        else:
            for n in names:
                run_once(pipe, blobs[n], {k: [] for k in STAGES})  # warm-up
                for _ in range(args.repeats):
                    faces[n] = run_once(pipe, blobs[n], times[n])
        for n in names:
            t = times[n]
            for k in STAGES:
                all_t[k].extend(t[k])
            per_photo.append({"file": n, "faces": faces[n], **{k: med_ms(t[k]) for k in STAGES}})
        summary = {k: med_ms(all_t[k]) for k in ("det_pre", "det_run", "det_post", "align_face", "embed_face")}
        result["runs"].append({"intra_op_threads": th, "inter_op_threads": 1, "photos": per_photo,
                               "summary_all_photos": summary})
    result["machine"]["loadavg_end"] = list(os.getloadavg())

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    def fmt(v):
        return "-" if v is None else f"{v:8.2f}"

    cols = ["decode", "det_pre", "det_run", "det_post", "align_face", "embed_face", "end_to_end"]
    for run in result["runs"]:
        print(f"\nonnxruntime intra_op_threads={run['intra_op_threads']}  (median ms over {args.repeats} runs)")
        print(f"{'photo':28s} {'faces':>5s} " + " ".join(f"{c:>10s}" for c in cols))
        for p in run["photos"]:
            print(f"{p['file']:28s} {p['faces']:5d} " + " ".join(f"{fmt(p[c]):>10s}" for c in cols))
        s = run["summary_all_photos"]
        print(f"{'all photos (median)':28s} {'':5s} {'':>10s} " + " ".join(
            f"{fmt(s[c]):>10s}" for c in ["det_pre", "det_run", "det_post", "align_face", "embed_face"]))
    print(f"\nloadavg start {result['machine']['loadavg_start']} end {result['machine']['loadavg_end']}; "
          f"cpu {result['machine']['cpu']} x{result['machine']['nproc']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
