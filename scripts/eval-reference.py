#!/usr/bin/env python3
"""Baseline accuracy of the reference pipeline on a labelled photo set (e.g. shared faceeval).

    PY=$(scripts/pyenv.sh)
    "$PY" scripts/eval-reference.py /path/to/faceeval [--score-threshold 0.5] [--json out.json]

The set is read in place (never copied): <dir>/labels.csv with columns file, identity, kind
(portrait | group), faces_expected, identities_in_photo (';'-separated). For every portrait the
largest detected face is embedded; every pair of portraits is scored by cosine similarity, genuine
when both have the same identity, impostor otherwise. Prints the similarity distributions, the
equal error rate, and TAR at FAR 1%, 0.1%, 0.01% (a sample-size floor applies: with n impostor
pairs the smallest measurable FAR is 1/n). For group photos prints faces detected vs faces_expected
and, for each listed identity that has portraits, the best cosine between a face in the group and
that identity's portraits (found when >= the FAR 0.1% threshold).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # noqa: E402  (first: it explains a missing venv)
import cv2  # noqa: E402
import numpy as np  # noqa: E402

FARS = [1e-2, 1e-3, 1e-4]


def detect_padded_retry(pipe: ref.Pipeline, rgb: np.ndarray) -> tuple[list[ref.Face], bool]:
    """Not part of the reference: when nothing is found, pad h/2 and w/2 of zeros on every side
    and detect again (SCRFD-500M at 640 misses faces taller than ~70% of the long side)."""
    faces, _ = pipe.detect(rgb)
    if faces:
        return faces, False
    h, w = rgb.shape[:2]
    py, px = h // 2, w // 2
    padded = cv2.copyMakeBorder(rgb, py, py, px, px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    faces, _ = pipe.detect(padded)
    shift = np.array([px, py], dtype=np.float64)
    for f in faces:
        f.bbox = f.bbox - np.tile(shift, 2)
        f.landmarks = f.landmarks - shift
    return faces, bool(faces)


def quantiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {}
    q = np.percentile(x, [0, 1, 5, 50, 95, 99, 100])
    return dict(zip(["min", "p1", "p5", "median", "p95", "p99", "max"], (round(float(v), 4) for v in q)))


def eer(gen: np.ndarray, imp: np.ndarray) -> tuple[float, float]:
    """EER and its threshold; accept when score >= t. Sweeps every observed score."""
    ts = np.unique(np.concatenate([gen, imp]))
    gs, is_ = np.sort(gen), np.sort(imp)
    frr = np.searchsorted(gs, ts, side="left") / gs.size  # genuine below t
    far = 1.0 - np.searchsorted(is_, ts, side="left") / is_.size  # impostors at or above t
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2), float(ts[i])


def tar_at_far(gen: np.ndarray, imp: np.ndarray, far: float) -> tuple[float, float, float]:
    """Lowest threshold whose FAR <= far; returns (TAR, threshold, achieved FAR)."""
    desc = np.sort(imp)[::-1]
    k = int(np.floor(far * desc.size))  # impostors allowed at or above the threshold
    t = float(np.nextafter(desc[k], np.inf)) if k < desc.size else float(desc[-1])
    # ties: keep FAR <= far even when several impostors share the boundary score
    achieved = float((imp >= t).mean())
    return float((gen >= t).mean()), t, achieved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path, help="directory with labels.csv (e.g. the shared faceeval)")
    ap.add_argument("--models", type=Path, default=ref.DEFAULT_MODELS)
    ap.add_argument("--detector", default=ref.DETECTOR_FILE, help="detector file in --models, or a path")
    ap.add_argument("--recognizer", default=ref.RECOGNIZER_FILE, help="recognizer file in --models, or a path")
    ap.add_argument("--score-threshold", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--retry-padded", action="store_true",
                    help="not the reference: if no face is found, detect again on a 2x zero-padded image")
    ap.add_argument("--json", type=Path, help="also write the numbers here (keep it outside the repo's fixtures)")
    args = ap.parse_args()

    rows = list(csv.DictReader(open(args.dataset / "labels.csv", newline="")))
    pipe = ref.Pipeline(args.models, threads=args.threads, score_threshold=args.score_threshold,
                        detector_file=args.detector, recognizer_file=args.recognizer)
    print(f"dataset {args.dataset}: {len(rows)} files; detector {pipe.detector_path.name} "
          f"score >= {args.score_threshold}, NMS {pipe.nms_iou}, recognizer {pipe.recognizer_path.name}")

    portraits, groups = [], []
    rotated = []
    retried = []
    for r in rows:
        data = (args.dataset / r["file"]).read_bytes()
        rgb = ref.decode_rgb(data)
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if raw.shape != rgb.shape or not np.array_equal(cv2.cvtColor(raw, cv2.COLOR_BGR2RGB), rgb):
            rotated.append(r["file"])
        if args.retry_padded:
            faces, was_retried = detect_padded_retry(pipe, rgb)
            if was_retried:
                retried.append(r["file"])
        else:
            faces, _ = pipe.detect(rgb)
        if r["kind"] == "portrait":
            emb = pipe.embed(pipe.align(rgb, faces[0].landmarks)[0]) if faces else None
            portraits.append({"file": r["file"], "identity": r["identity"], "faces": len(faces),
                              "score": faces[0].score if faces else None, "emb": emb})
        else:
            embs = [pipe.embed(pipe.align(rgb, f.landmarks)[0]) for f in faces]
            groups.append({"file": r["file"], "expected": int(r["faces_expected"] or 0),
                           "identities": [x for x in r["identities_in_photo"].split(";") if x],
                           "faces": len(faces), "embs": embs})

    found = [p for p in portraits if p["emb"] is not None]
    missed = [p["file"] for p in portraits if p["emb"] is None]
    print(f"\nportraits: {len(portraits)} ({len({p['identity'] for p in portraits})} identities); "
          f"face found in {len(found)}; none in {len(missed)} {missed if missed else ''}")
    if args.retry_padded:
        print(f"found only after the padded retry: {len(retried)}")
    multi = [(p["file"], p["faces"]) for p in portraits if p["faces"] > 1]
    print(f"portraits with more than one face detected (largest used): {len(multi)}")
    if rotated:
        print(f"EXIF orientation changes the decoded pixels of {len(rotated)} files: {rotated}")
    else:
        print("EXIF orientation: no file decodes differently with and without it")

    gen, imp = [], []
    for a, b in combinations(found, 2):
        s = float(a["emb"] @ b["emb"])
        (gen if a["identity"] == b["identity"] else imp).append(s)
    gen_a, imp_a = np.array(gen), np.array(imp)
    print(f"\npairs: genuine {gen_a.size}, impostor {imp_a.size}")
    qg, qi = quantiles(gen_a), quantiles(imp_a)
    print(f"{'cosine':10s} " + " ".join(f"{k:>7s}" for k in qg))
    print(f"{'genuine':10s} " + " ".join(f"{v:7.4f}" for v in qg.values()))
    print(f"{'impostor':10s} " + " ".join(f"{v:7.4f}" for v in qi.values()))
    e, et = eer(gen_a, imp_a)
    print(f"\nEER {e * 100:.2f}% at threshold {et:.4f}")
    if gen_a.min() > imp_a.max():
        print(f"perfect separation: every threshold in ({imp_a.max():.4f}, {gen_a.min():.4f}] gives 0 errors; "
              f"midpoint {(imp_a.max() + gen_a.min()) / 2:.4f}")
    tars = []
    print(f"{'FAR target':>10s} {'threshold':>9s} {'achieved FAR':>12s} {'TAR':>7s}")
    for far in FARS:
        tar, t, achieved = tar_at_far(gen_a, imp_a, far)
        floor = " (below 1/n: threshold is just above the highest impostor)" if far * imp_a.size < 1 else ""
        print(f"{far * 100:9.2f}% {t:9.4f} {achieved * 100:11.3f}% {tar * 100:6.2f}%{floor}")
        tars.append({"far": far, "threshold": round(t, 6), "achieved_far": achieved, "tar": tar})
    search_t = next(x["threshold"] for x in tars if x["far"] == 1e-3)

    by_id: dict[str, list[np.ndarray]] = {}
    for p in found:
        by_id.setdefault(p["identity"], []).append(p["emb"])
    print(f"\ngroups: faces detected vs expected; listed identities found at cosine >= {search_t:.4f} (FAR 0.1%)")
    print(f"{'file':40s} {'expected':>8s} {'detected':>8s}  identities (best cosine)")
    gj = []
    for g in groups:
        ids = []
        for ident in g["identities"]:
            gal = by_id.get(ident)
            if not gal or not g["embs"]:
                ids.append((ident, None))
                continue
            best = max(float(e @ q) for e in g["embs"] for q in gal)
            ids.append((ident, best))
        txt = ", ".join(f"{i}={'-' if b is None else f'{b:.3f}' + ('' if b >= search_t else ' MISS')}" for i, b in ids)
        print(f"{g['file']:40s} {g['expected']:8d} {g['faces']:8d}  {txt}")
        gj.append({"file": g["file"], "expected": g["expected"], "detected": g["faces"],
                   "identities": [{"identity": i, "best_cosine": b} for i, b in ids]})
    tot_e = sum(g["expected"] for g in groups)
    tot_d = sum(g["faces"] for g in groups)
    print(f"{'total':40s} {tot_e:8d} {tot_d:8d}")

    if args.json:
        out = {"portraits": len(portraits), "portraits_with_face": len(found), "portraits_missed": missed,
               "genuine_pairs": int(gen_a.size), "impostor_pairs": int(imp_a.size),
               "genuine": qg, "impostor": qi, "eer": e, "eer_threshold": et, "tar_at_far": tars,
               "groups": gj, "exif_rotated": rotated, "retry_padded": args.retry_padded, "found_by_retry": retried,
               "score_threshold": args.score_threshold, "detector": pipe.detector_path.name,
               "recognizer": pipe.recognizer_path.name}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
