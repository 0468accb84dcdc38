#!/usr/bin/env python3
"""Build the hard-light test sets of issue #24 (docs/THRESHOLDS.md, "Hard light") from
../shared/faceeval.

    python3 -m venv .data/venv-eval && .data/venv-eval/bin/pip install pillow numpy==2.2.6
    .data/venv-eval/bin/python scripts/faceeval-transforms.py .data/faceeval-sets \
        [--source ../shared/faceeval] [--sets original,dark,sidelit]
    for S in original dark sidelit; do facepass eval .data/faceeval-sets/$S --far 0.001; done

Run from the repository root; the default source is $FACEEVAL_DIR or ../shared/faceeval.

For every set it writes OUT/<set>/identities/<identity>/<file> (the layout `facepass eval`
reads) and OUT/<set>/groups/<file> (for counting faces at indexing with `facepass detect`):

  original  the source files, byte for byte.
  dark      low light: v' = 0.3 * v ** 2.5 on every channel, v in 0..1 (gamma 2.5, then
            brightness x0.3). Mid-grey 0.5 becomes 0.053; white becomes 0.3.
  sidelit   harsh side light: every channel multiplied by a horizontal ramp from x1.0 at the
            left edge to x0.15 at the right edge (linear in the column index).

The transforms work on the stored (gamma-encoded) 8-bit values, rounded to nearest. The EXIF
orientation is applied before the transform, so the transformed files (which carry no EXIF)
stay upright as the server sees them. Grayscale files stay grayscale; RGBA/palette files
become RGB (the server ignores alpha as well). Each file keeps its name and format: PNG
(lossless) for PNG sources, JPEG quality 95 without chroma subsampling for JPEG sources. The
source's labels.csv and README.md are not copied: the folders hold the derived photos only.

The photos are third-party images that must never be committed: OUT gets a `.gitignore`
holding `*`, so git ignores it wherever it is. The script refuses an OUT inside the source.

Idempotent: OUT/manifest.json records, per output file, the sha256 of its source and the
transform's version; a re-run rewrites only files whose source or transform changed (or that
are missing or were edited), removes files of the managed sets that the source no longer has,
and otherwise leaves OUT untouched. Output is deterministic: the same source and Pillow/numpy
give the same bytes. Writes go to a temporary file renamed into place, so an interrupted run
leaves no half-written photo.

Needs Python >= 3.9 with Pillow and numpy (not in scripts/pyenv.sh's venv, which has no
Pillow: use a venv of its own as above).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Tuple

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp"}
SUBDIRS = ("identities", "groups")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

DARK_GAMMA = 2.5
DARK_GAIN = 0.3
SIDELIT_RIGHT_GAIN = 0.15
JPEG_QUALITY = 95


def dark(pixels: np.ndarray) -> np.ndarray:
    """Low light: gamma 2.5, then brightness x0.3, on values scaled to 0..1."""
    v = pixels.astype(np.float64) / 255.0
    return DARK_GAIN * np.power(v, DARK_GAMMA) * 255.0


def sidelit(pixels: np.ndarray) -> np.ndarray:
    """Side light: a left-to-right ramp from x1.0 to x0.15 across the columns."""
    width = pixels.shape[1]
    ramp = np.linspace(1.0, SIDELIT_RIGHT_GAIN, num=width, dtype=np.float64)
    shape = (1, width) + (1,) * (pixels.ndim - 2)
    return pixels.astype(np.float64) * ramp.reshape(shape)


# name -> (transform or None for a byte copy, version). Bump a version when its output changes.
SETS: Dict[str, Tuple[Callable[[np.ndarray], np.ndarray] | None, str]] = {
    "original": (None, "copy-1"),
    "dark": (dark, f"dark-1:gamma={DARK_GAMMA}:gain={DARK_GAIN}:q={JPEG_QUALITY}"),
    "sidelit": (sidelit, f"sidelit-1:right={SIDELIT_RIGHT_GAIN}:q={JPEG_QUALITY}"),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_files(source: Path) -> List[Path]:
    """Image files under source/identities/<name>/ and source/groups/, relative, sorted."""
    found = []
    for sub in SUBDIRS:
        root = source / sub
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTS:
                found.append(path.relative_to(source))
    return sorted(found)


def transformed_bytes(src: Path, transform: Callable[[np.ndarray], np.ndarray]) -> bytes:
    with Image.open(src) as opened:
        fmt = opened.format
        img = ImageOps.exif_transpose(opened)
        img = img.convert("L" if img.mode in ("L", "I;16", "I", "1") else "RGB")
    out = np.clip(np.rint(transform(np.asarray(img))), 0, 255).astype(np.uint8)
    result = Image.fromarray(out, mode=img.mode)
    buf = io.BytesIO()
    if fmt == "PNG":
        result.save(buf, format="PNG", optimize=False, compress_level=6)
    elif fmt in ("JPEG", "MPO"):
        result.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    else:
        # WEBP and anything else keeps its format (decoders trust the extension), lossless.
        result.save(buf, format=fmt, lossless=True)
    return buf.getvalue()


def write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=dest.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_manifest(out: Path) -> Dict[str, Dict[str, str]]:
    try:
        data = json.loads((out / MANIFEST).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    if data.get("format") != MANIFEST_FORMAT:
        return {}
    return data.get("files", {})


def build(source: Path, out: Path, sets: Iterable[str]) -> Dict[str, int]:
    files = source_files(source)
    if not any(f.parts[0] == "identities" for f in files):
        raise SystemExit(f"no images under {source}/identities/<name>/")
    out.mkdir(parents=True, exist_ok=True)
    ignore = out / ".gitignore"
    if not ignore.exists() or ignore.read_text() != "*\n":
        ignore.write_text("*\n")

    old = load_manifest(out)
    new: Dict[str, Dict[str, str]] = {}
    source_hash = {f: sha256_file(source / f) for f in files}
    counts = {"written": 0, "unchanged": 0, "removed": 0}
    sets = list(sets)

    for name in sets:
        transform, version = SETS[name]
        for rel in files:
            key = f"{name}/{rel.as_posix()}"
            dest = out / name / rel
            entry = {"source_sha256": source_hash[rel], "version": version}
            prev = old.get(key)
            if (
                prev
                and prev.get("source_sha256") == entry["source_sha256"]
                and prev.get("version") == version
                and dest.is_file()
                and prev.get("sha256") == sha256_file(dest)
            ):
                new[key] = prev
                counts["unchanged"] += 1
                continue
            src = source / rel
            data = src.read_bytes() if transform is None else transformed_bytes(src, transform)
            write_atomic(dest, data)
            entry["sha256"] = hashlib.sha256(data).hexdigest()
            new[key] = entry
            counts["written"] += 1

    # Files of the managed sets that the source no longer has (or stray files in their folders).
    for name in sets:
        for sub in SUBDIRS:
            root = out / name / sub
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*"), reverse=True):
                key = f"{name}/{path.relative_to(out / name).as_posix()}"
                if path.is_file() and key not in new:
                    path.unlink()
                    counts["removed"] += 1
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
    # Sets not built this time keep their manifest entries (and files).
    for key, entry in old.items():
        if key.split("/", 1)[0] not in sets:
            new[key] = entry

    manifest = {
        "format": MANIFEST_FORMAT,
        "source": str(source),
        "sets": {n: SETS[n][1] for n in SETS if any(k.startswith(n + "/") for k in new)},
        "files": dict(sorted(new.items())),
    }
    text = json.dumps(manifest, indent=1) + "\n"
    if not (out / MANIFEST).is_file() or (out / MANIFEST).read_text() != text:
        write_atomic(out / MANIFEST, text.encode())
    return counts


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build faceeval test sets (original, dark, side-lit) for `facepass eval`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1] if __doc__ else None,
    )
    parser.add_argument("out", type=Path, help="output folder (created; git-ignored by itself)")
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(os.environ.get("FACEEVAL_DIR", "../shared/faceeval")),
        help="faceeval folder (default: $FACEEVAL_DIR or ../shared/faceeval)",
    )
    parser.add_argument(
        "--sets",
        default=",".join(SETS),
        help=f"comma-separated sets to build (default: all of {','.join(SETS)})",
    )
    args = parser.parse_args(argv)

    source = args.source.resolve()
    out = args.out.resolve()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        parser.error(f"unknown set(s) {unknown}; choose from {','.join(SETS)}")
    if not source.is_dir():
        parser.error(f"source {source} is not a folder")
    if out == source or source in out.parents:
        parser.error("OUT must not be inside the source folder")

    counts = build(source, out, sets)
    print(
        f"{out}: sets {','.join(sets)}: {counts['written']} written, "
        f"{counts['unchanged']} unchanged, {counts['removed']} removed",
        file=sys.stderr,
    )
    for name in sets:
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
