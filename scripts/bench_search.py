#!/usr/bin/env python3
"""Benchmark face search in PostgreSQL + pgvector: exact per-session search vs IVFFlat.

    python3 scripts/bench_search.py            # 1M faces: one 100k session, one 10k, rest 1-5k
    python3 scripts/bench_search.py --small    # 60k faces (20k + 5k sessions), < 1 minute

Needs the private cluster (scripts/services.sh up). Uses DATABASE_URL (role facepass, which has
CREATEDB; when unset, reads `scripts/services.sh env`). Creates the database facepass_bench
(--db), applies migrations/000N_*.up.sql with psql, loads synthetic 512-d unit embeddings with
binary COPY, measures, prints a Markdown report and drops the database (unless --keep).
Runs itself in a venv with numpy + psycopg under ${FACEPASS_CACHE:-~/.cache/facepass}/venv-bench,
created on first use.

What it measures (see docs/BENCHMARKS.md):
  * load time, VACUUM ANALYZE time, IVFFlat build time at lists=100 (the migration) and at
    lists=rows/1000, table/index/TOAST sizes, attstorage of face.embedding;
  * session search: the server's exact query (src/store/catalog.rs search_session, threshold 0.5,
    top_k 50) on the big and the mid session: latency, plan (must be face_tenant_session_idx,
    never ivfflat), recall against a sequential-scan ground truth;
  * the approximate alternative: the same query with its candidates taken from
    `order by embedding <=> q limit 50` through IVFFlat, post-filtered to the session,
    at several probes, with and without ivfflat.iterative_scan = relaxed_order;
  * tenant-wide search over all rows: exact (parallel seq scan) vs IVFFlat probes, recall@50;
  * optionally (--storage-test) the big-session query on copies of that session with
    STORAGE PLAIN vs the default EXTENDED (TOASTed) embedding column.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("FACEPASS_CACHE") or Path.home() / ".cache" / "facepass")
VENV = CACHE / "venv-bench"
REQUIREMENTS = ["numpy==2.2.6", "psycopg[binary]==3.3.9"]


def ensure_venv() -> None:
    """Re-exec inside the bench venv (created on first use) unless numpy + psycopg import."""
    try:
        import numpy  # noqa: F401
        import psycopg  # noqa: F401
        return
    except ImportError:
        pass
    py = VENV / "bin" / "python"
    if os.environ.get("FACEPASS_BENCH_VENV") == "1":
        sys.exit(f"bench_search: numpy/psycopg still missing in {VENV}")
    stamp = VENV / ".facepass-requirements"
    want = "\n".join(REQUIREMENTS)
    if not (py.exists() and stamp.exists() and stamp.read_text() == want):
        print(f"bench_search: creating venv at {VENV}", file=sys.stderr)
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-input", "--only-binary", ":all:", *REQUIREMENTS], check=True)
        stamp.write_text(want)
    os.environ["FACEPASS_BENCH_VENV"] = "1"
    os.execv(str(py), [str(py), *sys.argv])


ensure_venv()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from psycopg.types.numeric import Int8  # noqa: E402

DIM = 512
TENANT = "bench"
MODEL_ID = "w600k_r50-0123456789ab"
THRESHOLD = 0.5
TOP_K = 50

# The benchmark's baseline: the server's query before top_k moved ahead of the join to photo
# (reported as "server" in the JSON, the name it had when these figures were first taken).
SESSION_SQL = (
    "with scored as ( "
    "    select f.photo_pk, f.face_id, f.bbox, 1 - (f.embedding <=> $1) as similarity "
    "    from face f "
    "    where f.tenant_id = $2 and f.session_pk = $3 and f.model_id = $4 "
    "), best as ( "
    "    select distinct on (photo_pk) * from scored "
    "    where similarity >= $5 "
    "    order by photo_pk, similarity desc "
    ") "
    "select p.photo_id, p.s3_key, b.face_id, b.bbox, b.similarity "
    "from best b join photo p using (photo_pk) "
    "order by b.similarity desc, p.photo_id "
    "limit $6"
)

# The approximate alternative: candidates from the IVFFlat index (nearest top_k faces, filtered
# to the session after the index scan), then the same threshold / one-hit-per-photo / ranking.
SESSION_ANN_SQL = (
    "with scored as ( "
    "    select f.photo_pk, f.face_id, f.bbox, 1 - (f.embedding <=> $1) as similarity "
    "    from face f "
    "    where f.tenant_id = $2 and f.session_pk = $3 and f.model_id = $4 "
    "    order by f.embedding <=> $1 limit $6 "
    "), best as ( "
    "    select distinct on (photo_pk) * from scored "
    "    where similarity >= $5 "
    "    order by photo_pk, similarity desc "
    ") "
    "select p.photo_id, p.s3_key, b.face_id, b.bbox, b.similarity "
    "from best b join photo p using (photo_pk) "
    "order by b.similarity desc, p.photo_id "
    "limit $6"
)

# The server's query today, verbatim from src/store/catalog.rs search_session: the top_k cut
# before the join to photo (ties at the cut broken by photo_pk instead of photo_id), so the
# planner knows only top_k rows reach the join.
SESSION_LIMIT_FIRST_SQL = (
    "with scored as ( "
    "    select f.photo_pk, f.face_id, f.bbox, 1 - (f.embedding <=> $1) as similarity "
    "    from face f "
    "    where f.tenant_id = $2 and f.session_pk = $3 and f.model_id = $4 "
    "), best as ( "
    "    select distinct on (photo_pk) * from scored "
    "    where similarity >= $5 "
    "    order by photo_pk, similarity desc "
    "), top as ( "
    "    select * from best order by similarity desc, photo_pk limit $6 "
    ") "
    "select p.photo_id, p.s3_key, t.face_id, t.bbox, t.similarity "
    "from top t join photo p using (photo_pk) "
    "order by t.similarity desc, p.photo_id"
)

# Tenant-wide nearest faces (all sessions of the tenant).
TENANT_SQL = (
    "select f.face_id, 1 - (f.embedding <=> $1) as similarity "
    "from face f where f.tenant_id = $2 and f.model_id = $3 "
    "order by f.embedding <=> $1 limit $4"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- connection helpers

def database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    out = subprocess.run([str(REPO / "scripts" / "services.sh"), "env"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("export DATABASE_URL="):
            return line.split("=", 1)[1].strip().strip("'\"")
    sys.exit("bench_search: DATABASE_URL not set and not given by scripts/services.sh env")


def with_db(url: str, db: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + db, p.query, p.fragment))


def vec_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in v.tolist()) + "]"


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def lat_summary(secs: list[float]) -> dict:
    ms = [s * 1000 for s in secs]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(pct(ms, 0.95), 2), "min_ms": round(min(ms), 2),
            "max_ms": round(max(ms), 2)}


def plan_nodes(plan: dict) -> list[tuple[str, str]]:
    """(node type, index or relation name) of every node in an EXPLAIN (FORMAT JSON) plan."""
    out = [(plan.get("Node Type", ""), plan.get("Index Name") or plan.get("Relation Name", ""))]
    for child in plan.get("Plans", []):
        out.extend(plan_nodes(child))
    return out


def explain(cur, sql: str, params) -> dict:
    cur.execute("explain (analyze, buffers, format json) " + sql, params)
    return cur.fetchone()[0][0]


def plan_summary(ex: dict) -> dict:
    nodes = plan_nodes(ex["Plan"])
    scans = [f"{t} on {i}" if i else t for t, i in nodes if "Scan" in t]
    uses = sorted({i for t, i in nodes if i and "Index" in t})
    jit = ex.get("JIT", {}).get("Timing", {}).get("Total")
    return {"scans": scans, "indexes": uses, "execution_ms": round(ex["Execution Time"], 2),
            "planning_ms": round(ex["Planning Time"], 2),
            "jit_ms": round(jit, 2) if jit is not None else None,
            "shared_hit": ex["Plan"].get("Shared Hit Blocks"),
            "shared_read": ex["Plan"].get("Shared Read Blocks")}


# ---------------------------------------------------------------- synthetic data

class Gen:
    """Synthetic ArcFace-like embeddings.

    Identity centres: unit vectors, normalise(a * g_k + u) with g_k one of G shared unit "group"
    directions (demographics, pose, lighting: what makes real impostor cosines spread a little
    and gives the data some cluster structure) and u a random unit vector. A face:
    normalise(c + s * n), n a random unit vector, s^2 drawn per face (most faces easy, some
    hard: profile, blur, small). Two faces of one identity then have cosine ~
    1/sqrt((1+s1^2)(1+s2^2)) ~ 0.55-0.8, faces of different identities ~0 (sd ~0.05).
    """

    GROUPS = 32
    GROUP_WEIGHT = 0.35

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.groups = self.unit(self.rng.standard_normal((self.GROUPS, DIM)))

    @staticmethod
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def centres(self, n: int) -> np.ndarray:
        g = self.groups[self.rng.integers(0, self.GROUPS, n)]
        u = self.unit(self.rng.standard_normal((n, DIM)))
        return self.unit(self.GROUP_WEIGHT * g + u).astype(np.float32)

    def noise_scale(self, n: int) -> np.ndarray:
        s2 = self.rng.uniform(0.15, 0.9, n)
        hard = self.rng.random(n) < 0.08
        s2[hard] = self.rng.uniform(0.9, 2.2, hard.sum())
        return np.sqrt(s2)

    def faces(self, centres: np.ndarray) -> np.ndarray:
        n = len(centres)
        noise = self.unit(self.rng.standard_normal((n, DIM)))
        x = centres + self.noise_scale(n)[:, None] * noise
        return self.unit(x).astype(np.float32)

    def query(self, centre: np.ndarray) -> np.ndarray:
        """A fresh selfie of an identity: a clean-ish sample (s^2 = 0.5)."""
        noise = self.unit(self.rng.standard_normal(DIM))
        return self.unit(centre + np.sqrt(0.5) * noise).astype(np.float32)


def plan_sessions(total: int, big: int, mid: int, rng) -> list[int]:
    sizes = [big, mid]
    left = total - big - mid
    while left > 0:
        n = int(rng.integers(1000, 5001))
        if left - n < 1000:
            n = left
        sizes.append(n)
        left -= n
    return sizes


# Binary COPY rows for face. All fields fixed width, so one numpy structured array per chunk.
def face_dtype(tenant_len: int, model_len: int) -> np.dtype:
    f4pair = np.dtype([("l", ">i4"), ("v", ">f4")])
    return np.dtype([
        ("nf", ">i2"),
        ("l_pk", ">i4"), ("face_pk", ">i8"),
        ("l_fid", ">i4"), ("face_id", "V16"),
        ("l_ppk", ">i4"), ("photo_pk", ">i8"),
        ("l_ten", ">i4"), ("tenant", f"S{tenant_len}"),
        ("l_spk", ">i4"), ("session_pk", ">i8"),
        ("l_bbox", ">i4"), ("bbox_hdr", ">i4", (5,)), ("bbox", f4pair, (4,)),
        ("l_lm", ">i4"), ("lm_hdr", ">i4", (5,)), ("lm", f4pair, (10,)),
        ("l_det", ">i4"), ("det", ">f4"),
        ("l_size", ">i4"), ("size", ">f4"),
        ("l_sharp", ">i4"), ("sharp", ">f4"),
        ("l_model", ">i4"), ("model", f"S{model_len}"),
        ("l_emb", ">i4"), ("emb_dim", ">i2"), ("emb_unused", ">i2"), ("emb", ">f4", (DIM,)),
    ])


FACE_COLUMNS = ("face_pk, face_id, photo_pk, tenant_id, session_pk, bbox, landmarks, det_score, "
                "size_px, sharpness, model_id, embedding")
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
FLOAT4_OID = 700


def face_rows(rng, face_pk0: int, photo_pk: np.ndarray, session_pk: int, emb: np.ndarray):
    n = len(emb)
    dt = face_dtype(len(TENANT), len(MODEL_ID))
    r = np.zeros(n, dtype=dt)
    r["nf"] = 12
    r["l_pk"], r["face_pk"] = 8, np.arange(face_pk0, face_pk0 + n)
    r["l_fid"] = 16
    r["face_id"] = np.frombuffer(rng.bytes(16 * n), dtype="V16")
    r["l_ppk"], r["photo_pk"] = 8, photo_pk
    r["l_ten"], r["tenant"] = len(TENANT), TENANT.encode()
    r["l_spk"], r["session_pk"] = 8, session_pk
    r["l_bbox"], r["bbox_hdr"] = 20 + 4 * 8, (1, 0, FLOAT4_OID, 4, 1)
    x1 = rng.uniform(0, 3000, n)
    y1 = rng.uniform(0, 2000, n)
    side = rng.uniform(40, 400, n)
    r["bbox"]["l"] = 4
    r["bbox"]["v"] = np.stack([x1, y1, x1 + side, y1 + side * 1.2], axis=1)
    r["l_lm"], r["lm_hdr"] = 20 + 10 * 8, (1, 0, FLOAT4_OID, 10, 1)
    r["lm"]["l"] = 4
    r["lm"]["v"] = (x1[:, None] + rng.uniform(0, 1, (n, 10)) * side[:, None])
    r["l_det"], r["det"] = 4, rng.uniform(0.6, 0.99, n)
    r["l_size"], r["size"] = 4, side
    r["l_sharp"], r["sharp"] = 4, rng.uniform(10, 500, n)
    r["l_model"], r["model"] = len(MODEL_ID), MODEL_ID.encode()
    r["l_emb"], r["emb_dim"], r["emb_unused"] = 4 + 4 * DIM, DIM, 0
    r["emb"] = emb
    return r.tobytes()


class Session:
    def __init__(self, pk: int, n_faces: int):
        self.pk = pk
        self.n_faces = n_faces
        self.centres: np.ndarray | None = None
        self.id_counts: np.ndarray | None = None


def load(conn, gen: Gen, sizes: list[int], stats: dict) -> list[Session]:
    """Sessions, photos (~3 faces each) and faces, by COPY. Keeps each session's identity
    centres and face counts per identity (for queries)."""
    rng = gen.rng
    sessions = []
    with conn.cursor() as cur:
        cur.execute("insert into tenant (tenant_id) values ($1)", (TENANT,))
        with cur.copy("copy session (session_pk, tenant_id, session_id) from stdin") as cp:
            for i, n in enumerate(sizes, start=1):
                cp.write_row((i, TENANT, f"event-{i:05d}"))
                sessions.append(Session(i, n))
    conn.commit()

    photo_pk0 = 1
    face_pk0 = 1
    same, diff = [], []
    t_gen = t_copy = 0.0
    for s in sessions:
        t0 = time.perf_counter()
        n = s.n_faces
        # Photos: 1 + Poisson(2) faces each (mean 3).
        counts = []
        total = 0
        while total < n:
            c = int(rng.poisson(2)) + 1
            c = min(c, n - total)
            counts.append(c)
            total += c
        counts = np.array(counts)
        n_photos = len(counts)
        photo_of_face = np.repeat(np.arange(photo_pk0, photo_pk0 + n_photos), counts)
        # Identities: ~25 faces each on average, popularity log-normal (a few people in many
        # photos, most in a handful).
        n_ids = max(8, n // 25)
        s.centres = gen.centres(n_ids)
        w = rng.lognormal(0.0, 1.0, n_ids)
        ident = rng.choice(n_ids, size=n, p=w / w.sum())
        s.id_counts = np.bincount(ident, minlength=n_ids)
        t_gen += time.perf_counter() - t0

        t0 = time.perf_counter()
        photo_lines = []
        sha = rng.bytes(32 * n_photos)
        for j in range(n_photos):
            pk = photo_pk0 + j
            photo_lines.append(
                f"{pk}\t{s.pk}\t{TENANT}\tIMG_{j:06d}.jpg\t{TENANT}/event-{s.pk:05d}/{pk}.jpg\t"
                f"\\\\x{sha[32 * j:32 * j + 32].hex()}\t{2_000_000 + j % 3_000_000}\timage/jpeg\t"
                f"4000\t3000\n")
        with conn.cursor() as cur:
            with cur.copy("copy photo (photo_pk, session_pk, tenant_id, photo_id, s3_key, sha256, "
                          "size_bytes, content_type, width, height) from stdin") as cp:
                cp.write("".join(photo_lines))
        t_copy += time.perf_counter() - t0

        chunk = 20000
        with conn.cursor() as cur:
            with cur.copy(f"copy face ({FACE_COLUMNS}) from stdin (format binary)") as cp:
                cp.write(COPY_HEADER)
                for a in range(0, n, chunk):
                    t0 = time.perf_counter()
                    b = min(n, a + chunk)
                    emb = gen.faces(s.centres[ident[a:b]])
                    if len(same) < 20000 and b - a > 100:
                        # Sample cosine statistics of the generated data.
                        ids = ident[a:b]
                        order = np.argsort(ids, kind="stable")
                        srt = ids[order]
                        pairs = np.nonzero(srt[1:] == srt[:-1])[0][:500]
                        same.extend(np.einsum("ij,ij->i", emb[order[pairs]],
                                              emb[order[pairs + 1]]).tolist())
                        k = min(500, b - a - 1)
                        dmask = ids[:k] != ids[1:k + 1]
                        diff.extend(np.einsum("ij,ij->i", emb[:k][dmask],
                                              emb[1:k + 1][dmask]).tolist())
                    rows = face_rows(rng, face_pk0 + a, photo_of_face[a:b], s.pk, emb)
                    t1 = time.perf_counter()
                    cp.write(rows)
                    t2 = time.perf_counter()
                    t_gen += t1 - t0
                    t_copy += t2 - t1
                cp.write(COPY_TRAILER)
                t0 = time.perf_counter()
            t_copy += time.perf_counter() - t0
        conn.commit()
        photo_pk0 += n_photos
        face_pk0 += n
        if s.pk <= 2 or s.pk % 50 == 0:
            log(f"  session {s.pk}/{len(sessions)}: {n} faces, {n_photos} photos, {n_ids} identities")
    with conn.cursor() as cur:
        for table, col in (("session", "session_pk"), ("photo", "photo_pk"), ("face", "face_pk")):
            cur.execute(f"select setval(pg_get_serial_sequence('{table}', '{col}'), "
                        f"(select max({col}) from {table}))")
    conn.commit()
    same_a, diff_a = np.array(same), np.array(diff)
    stats["data"] = {
        "sessions": len(sessions), "faces": int(sum(sizes)), "photos": photo_pk0 - 1,
        "identities": int(sum(len(s.centres) for s in sessions)),
        "same_identity_cos": {"mean": round(float(same_a.mean()), 3),
                              "p5": round(float(np.percentile(same_a, 5)), 3),
                              "p95": round(float(np.percentile(same_a, 95)), 3),
                              "share_below_0.5": round(float((same_a < 0.5).mean()), 3)},
        "diff_identity_cos": {"mean": round(float(diff_a.mean()), 3),
                              "sd": round(float(diff_a.std()), 3),
                              "max": round(float(diff_a.max()), 3),
                              "p99.9": round(float(np.percentile(diff_a, 99.9)), 3)},
    }
    stats["timing"]["generate_s"] = round(t_gen, 1)
    stats["timing"]["copy_s"] = round(t_copy, 1)
    return sessions


# ---------------------------------------------------------------- measurements

def pick_queries(gen: Gen, s: Session, n: int) -> list[np.ndarray]:
    """Fresh noisy samples of identities present in the session (with >= 3 faces)."""
    eligible = np.nonzero(s.id_counts >= 3)[0]
    ids = gen.rng.choice(eligible, size=n, replace=len(eligible) < n)
    return [gen.query(s.centres[i]) for i in ids]


def timed_loop(cur, sql: str, params, queries: list[str], truth: list[set] | None,
               prepare: bool, warmup: int = 3) -> dict:
    """Runs each query once (after `warmup` untimed runs): latency, and recall against `truth`
    (sets of photo_id) when given."""
    for q in queries[:warmup]:
        cur.execute(sql, params(q), prepare=prepare)
        cur.fetchall()
    secs, recalls, nres = [], [], []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        cur.execute(sql, params(q), prepare=prepare)
        rows = cur.fetchall()
        secs.append(time.perf_counter() - t0)
        got = {r[0] for r in rows}
        nres.append(len(got))
        if truth is not None and truth[i]:
            recalls.append(len(got & truth[i]) / len(truth[i]))
    out = {"latency": lat_summary(secs), "mean_results": round(float(np.mean(nres)), 1)}
    if recalls:
        out["recall"] = round(float(np.mean(recalls)), 4)
        out["min_recall"] = round(float(np.min(recalls)), 4)
    return out


def run_session_exact(conn, s: Session, queries: list[str]) -> tuple[dict, list[set]]:
    """The server's query, as a server-side prepared statement like sqlx's (int8 for the
    session and top_k), with the custom plan (a connection's first 5 executions) and the
    generic plan (what PostgreSQL's plan cache normally settles on after that); plus its
    ground truth by sequential scan."""
    res = {}
    cur = conn.cursor()
    params = lambda q: (q, TENANT, Int8(s.pk), MODEL_ID, THRESHOLD, Int8(TOP_K))  # noqa: E731
    # Ground truth: no index at all, the whole table scanned. Never prepared: a cached plan
    # would keep the seq scan after the settings are reset.
    cur.execute("set enable_indexscan = off; set enable_bitmapscan = off")
    truth = []
    res["ground_truth_plan"] = plan_summary(explain(cur, SESSION_SQL, params(queries[0])))["scans"]
    for q in queries:
        cur.execute(SESSION_SQL, params(q), prepare=False)
        truth.append({r[0] for r in cur.fetchall()})
    cur.execute("reset enable_indexscan; reset enable_bitmapscan")
    res["mean_true_matches"] = round(float(np.mean([len(t) for t in truth])), 1)

    for variant, sql in (("server", SESSION_SQL), ("limit_first", SESSION_LIMIT_FIRST_SQL)):
        v = {}
        # Plans: custom (parameter values known) and generic (a cached plan for any session).
        v["plan_custom"] = plan_summary(explain(cur, sql, params(queries[0])))
        qlit = queries[0].replace("'", "")
        cur.execute("prepare s_exact(vector, text, bigint, text, float8, bigint) as " + sql)
        cur.execute("set plan_cache_mode = force_generic_plan")
        cur.execute("explain (analyze, buffers, format json) execute s_exact("
                    f"'{qlit}', '{TENANT}', {s.pk}, '{MODEL_ID}', {THRESHOLD}, {TOP_K})")
        v["plan_generic"] = plan_summary(cur.fetchone()[0][0])
        cur.execute("reset plan_cache_mode; deallocate s_exact")
        for mode in ("custom", "generic"):
            cur.execute(f"set plan_cache_mode = force_{mode}_plan")
            v[mode] = timed_loop(cur, sql, params, queries, truth, prepare=True)
            if variant == "server" and mode == "custom":
                # jit = on is PostgreSQL's default; a big session's custom plan passes
                # jit_above_cost.
                cur.execute("set jit = off")
                v["custom_jit_off"] = timed_loop(cur, sql, params, queries, truth, prepare=True)
                cur.execute("reset jit")
            cur.execute("reset plan_cache_mode")
        res[variant] = v
    conn.commit()
    cur.close()
    return res, truth


def run_session_ann(conn, s: Session, queries: list[str], truth: list[set], probes: list[int],
                    iterative: bool) -> dict:
    """Candidates from IVFFlat (post-filtered to the session). The session B-tree is dropped
    inside a rolled-back transaction so the planner cannot avoid the IVFFlat scan."""
    out = {}
    params = lambda q: (q, TENANT, Int8(s.pk), MODEL_ID, THRESHOLD, Int8(TOP_K))  # noqa: E731
    with conn.cursor() as cur:
        # What the planner picks for this query shape when every index is there.
        cur.execute("set ivfflat.probes = 10")
        out["natural_plan"] = plan_summary(explain(cur, SESSION_ANN_SQL, params(queries[0])))["scans"]
        cur.execute("reset ivfflat.probes")
    conn.commit()
    for p in probes:
        with conn.cursor() as cur:
            # One transaction, rolled back: the index comes back untouched.
            cur.execute("drop index face_tenant_session_idx")
            cur.execute("set local enable_seqscan = off")
            cur.execute(f"set local ivfflat.probes = {p}")
            if iterative:
                cur.execute("set local ivfflat.iterative_scan = relaxed_order")
            plan = plan_summary(explain(cur, SESSION_ANN_SQL, params(queries[0])))
            out[p] = timed_loop(cur, SESSION_ANN_SQL, params, queries, truth, prepare=False)
            out[p]["plan"] = plan["scans"]
        conn.rollback()
        log(f"    probes={p} iterative={iterative}: recall {out[p]['recall']:.3f} "
            f"median {out[p]['latency']['median_ms']} ms")
    return out


def run_tenant(conn, queries: list[str], probes: list[int], exact: list | None) -> tuple[dict, list]:
    out = {}
    params = lambda q: (q, TENANT, MODEL_ID, Int8(TOP_K))  # noqa: E731
    with conn.cursor() as cur:
        if exact is None:
            cur.execute("set enable_indexscan = off; set enable_bitmapscan = off")
            plan = plan_summary(explain(cur, TENANT_SQL, params(queries[0])))
            exact, secs = [], []
            cur.execute(TENANT_SQL, params(queries[0]))
            cur.fetchall()
            for q in queries:
                t0 = time.perf_counter()
                cur.execute(TENANT_SQL, params(q))
                rows = cur.fetchall()
                secs.append(time.perf_counter() - t0)
                exact.append(rows)
            cur.execute("reset enable_indexscan; reset enable_bitmapscan")
            out["exact"] = {"latency": lat_summary(secs), "plan": plan["scans"],
                            "jit_ms": plan["jit_ms"], "recall": 1.0}
            log(f"    tenant exact: median {out['exact']['latency']['median_ms']} ms")
        for p in probes:
            cur.execute(f"set ivfflat.probes = {p}")
            plan = plan_summary(explain(cur, TENANT_SQL, params(queries[0])))
            cur.execute(TENANT_SQL, params(queries[0]))
            cur.fetchall()
            secs, r50, rmatch = [], [], []
            for q, ex in zip(queries, exact):
                t0 = time.perf_counter()
                cur.execute(TENANT_SQL, params(q))
                rows = cur.fetchall()
                secs.append(time.perf_counter() - t0)
                got = {r[0] for r in rows}
                r50.append(len(got & {r[0] for r in ex}) / len(ex))
                matches = {r[0] for r in ex if r[1] >= THRESHOLD}
                if matches:
                    rmatch.append(len(got & matches) / len(matches))
            out[p] = {"latency": lat_summary(secs), "recall": round(float(np.mean(r50)), 4),
                      "match_recall": round(float(np.mean(rmatch)), 4) if rmatch else None,
                      "plan": plan["scans"]}
            log(f"    tenant probes={p}: recall@{TOP_K} {out[p]['recall']:.3f} "
                f"median {out[p]['latency']['median_ms']} ms")
        cur.execute("reset ivfflat.probes")
    conn.commit()
    return out, exact


def build_ivfflat(conn, lists: int, stats: dict, key: str) -> None:
    with conn.cursor() as cur:
        cur.execute("drop index if exists face_embedding_ivfflat_idx")
        conn.commit()
        try:
            # First with the server's maintenance_work_mem, to see whether it is enough.
            _, dt = timed(cur.execute, "create index face_embedding_ivfflat_idx on face using "
                          f"ivfflat (embedding vector_cosine_ops) with (lists = {lists})")
            conn.commit()
            stats[key] = {"lists": lists, "build_s": round(dt, 1), "maintenance_work_mem": "default"}
        except psycopg.Error as e:
            conn.rollback()
            msg = str(e).strip().splitlines()[0]
            log(f"  lists={lists} with default maintenance_work_mem failed: {msg}")
            cur.execute("set maintenance_work_mem = '1GB'")
            _, dt = timed(cur.execute, "create index face_embedding_ivfflat_idx on face using "
                          f"ivfflat (embedding vector_cosine_ops) with (lists = {lists})")
            conn.commit()
            cur.execute("reset maintenance_work_mem")
            stats[key] = {"lists": lists, "build_s": round(dt, 1), "maintenance_work_mem": "1GB",
                          "default_error": msg}
        cur.execute("select pg_relation_size('face_embedding_ivfflat_idx')")
        stats[key]["size_mb"] = round(cur.fetchone()[0] / 2**20, 1)
        cur.execute("analyze face")
    conn.commit()
    log(f"  ivfflat lists={lists}: {stats[key]['build_s']} s, {stats[key]['size_mb']} MB")


def storage_test(conn, s: Session, queries: list[str]) -> dict:
    """The big session's rows copied into a PLAIN and an EXTENDED (default) table."""
    out = {}
    params = lambda q: (q, TENANT, Int8(s.pk), MODEL_ID, THRESHOLD, Int8(TOP_K))  # noqa: E731
    with conn.cursor() as cur:
        for storage in ("plain", "extended", "plain_target"):
            t = f"face_{storage}"
            cur.execute(f"drop table if exists {t}")
            cur.execute(f"create table {t} (like face including defaults)")
            cur.execute(f"alter table {t} alter column embedding set storage "
                        f"{storage.removesuffix('_target')}")
            if storage == "plain_target":
                # Rows of ~2.2 kB pass TOAST_TUPLE_THRESHOLD (~2 kB): without this the toaster
                # moves bbox and landmarks out of line, since the vector itself cannot move.
                cur.execute(f"alter table {t} set (toast_tuple_target = 8160)")
            cur.execute(f"insert into {t} select * from face where session_pk = $1", (s.pk,))
            cur.execute(f"create index on {t} (tenant_id, session_pk)")
            conn.commit()
            conn.autocommit = True
            cur.execute(f"vacuum analyze {t}")
            conn.autocommit = False
            cur.execute(f"select pg_relation_size('{t}'), coalesce(pg_relation_size(reltoastrelid), 0) "
                        f"from pg_class where relname = '{t}'")
            heap, toast = cur.fetchone()
            sql = SESSION_SQL.replace("from face f", f"from {t} f")
            plan = plan_summary(explain(cur, sql, params(queries[0])))
            lat = timed_loop(cur, sql, params, queries, None, prepare=False)["latency"]
            out[storage] = {"latency": lat, "heap_mb": round(heap / 2**20, 1),
                            "toast_mb": round(toast / 2**20, 1), "plan": plan["scans"],
                            "shared_blocks": (plan["shared_hit"] or 0) + (plan["shared_read"] or 0)}
            log(f"    storage {storage}: median {out[storage]['latency']['median_ms']} ms, "
                f"heap {out[storage]['heap_mb']} MB, toast {out[storage]['toast_mb']} MB")
            conn.commit()
        for storage in ("plain", "extended", "plain_target"):
            cur.execute(f"drop table face_{storage}")
    conn.commit()
    return out


# ---------------------------------------------------------------- report

def machine_info(conn) -> dict:
    info = {"nproc": os.cpu_count(), "python": platform.python_version()}
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                           if l.startswith("model name"))
        info["mem_gib"] = round(int(next(l.split()[1] for l in open("/proc/meminfo")
                                         if l.startswith("MemTotal"))) / 2**20, 1)
        info["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    except (OSError, StopIteration):
        pass
    with conn.cursor() as cur:
        cur.execute("select version(), (select extversion from pg_extension where extname = 'vector')")
        info["postgres"], info["pgvector"] = cur.fetchone()
        settings = {}
        for name in ("shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size",
                     "max_parallel_workers_per_gather", "max_parallel_maintenance_workers", "jit",
                     "random_page_cost", "synchronous_commit", "max_wal_size"):
            cur.execute(f"show {name}")
            settings[name] = cur.fetchone()[0]
        info["settings"] = settings
    return info


def sizes(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute("select attstorage from pg_attribute where attrelid = 'face'::regclass "
                    "and attname = 'embedding'")
        attstorage = cur.fetchone()[0]
        cur.execute("select reltoastrelid::regclass::text, pg_relation_size(reltoastrelid) "
                    "from pg_class where oid = 'face'::regclass")
        toast_name, toast = cur.fetchone()
        cur.execute("select pg_relation_size('face'), pg_table_size('face'), "
                    "pg_indexes_size('face'), pg_database_size(current_database())")
        heap, table, idx, db = cur.fetchone()
        cur.execute("select indexrelid::regclass::text, pg_relation_size(indexrelid) "
                    "from pg_index where indrelid = 'face'::regclass order by 1")
        indexes = {n: round(b / 2**20, 1) for n, b in cur.fetchall()}
        cur.execute("select pg_relation_size('photo'), count(*) from photo")
        photo_bytes, photos = cur.fetchone()
    return {"attstorage": attstorage, "toast_table": toast_name, "toast_bytes": toast,
            "face_heap_mb": round(heap / 2**20, 1), "face_table_mb": round(table / 2**20, 1),
            "face_indexes_mb": round(idx / 2**20, 1), "indexes_mb": indexes,
            "photo_heap_mb": round(photo_bytes / 2**20, 1), "database_mb": round(db / 2**20, 1)}


def fmt_lat(l: dict) -> str:
    return f"{l['median_ms']:.1f} / {l['p95_ms']:.1f}"


def report(r: dict) -> str:
    out = []
    w = out.append
    d = r["data"]
    w(f"faces {d['faces']:,} in {d['sessions']} sessions, {d['photos']:,} photos, "
      f"{d['identities']:,} identities")
    w(f"same-identity cosine mean {d['same_identity_cos']['mean']} (p5 {d['same_identity_cos']['p5']}, "
      f"p95 {d['same_identity_cos']['p95']}, below 0.5: {d['same_identity_cos']['share_below_0.5']:.1%}); "
      f"different-identity mean {d['diff_identity_cos']['mean']} sd {d['diff_identity_cos']['sd']} "
      f"max {d['diff_identity_cos']['max']}")
    w("")
    w("| step | seconds |")
    w("|---|---:|")
    for k, v in r["timing"].items():
        w(f"| {k} | {v} |")
    for key in ("ivf_default", "ivf_big"):
        if key in r:
            b = r[key]
            extra = f" (maintenance_work_mem {b['maintenance_work_mem']})" if b["maintenance_work_mem"] != "default" else ""
            w(f"| build ivfflat lists={b['lists']}{extra} | {b['build_s']} |")
    w("")
    s = r["sizes"]
    w(f"face heap {s['face_heap_mb']} MB, TOAST {s['toast_bytes']} bytes ({s['toast_table']}), "
      f"embedding attstorage '{s['attstorage']}', indexes {s['indexes_mb']}, "
      f"photo heap {s['photo_heap_mb']} MB, database {s['database_mb']} MB")
    w("")
    w("| case | index | probes | latency median / p95 (ms) | recall | plan |")
    w("|---|---|---:|---:|---:|---|")
    for name, sess in r["sessions"].items():
        ex = sess["exact"]
        for variant, vlabel in (("server", "server query (exact)"),
                                ("limit_first", "exact, top_k cut before the photo join")):
            v = ex[variant]
            rows = [("custom plan", v["custom"], v["plan_custom"]["scans"]),
                    ("generic plan", v["generic"], v["plan_generic"]["scans"])]
            if "custom_jit_off" in v:
                rows.insert(1, ("custom plan, jit = off", v["custom_jit_off"], ["same"]))
            for mlabel, m, plan in rows:
                w(f"| session {name}: {vlabel}, {mlabel} | exact | - | "
                  f"{fmt_lat(m['latency'])} | {m['recall']:.1%} | {'; '.join(plan)} |")
        for key, label in (("ann", "IVFFlat, post-filtered"),
                           ("ann_iter", "IVFFlat, iterative_scan=relaxed_order")):
            for lists_key, runs in sess.get(key, {}).items():
                for p, v in runs.items():
                    if p == "natural_plan":
                        continue
                    w(f"| session {name}: {label} | {lists_key} | {p} | {fmt_lat(v['latency'])} | "
                      f"{v['recall']:.1%} (min {v['min_recall']:.0%}) | {'; '.join(v['plan'])} |")
    t = r.get("tenant", {})
    for lists_key, runs in t.items():
        for p, v in runs.items():
            rec = f"{v['recall']:.1%}"
            if v.get("match_recall") is not None:
                rec += f" (matches {v['match_recall']:.1%})"
            w(f"| tenant-wide {d['faces']:,}: {'exact' if p == 'exact' else 'IVFFlat'} | "
              f"{lists_key} | {'-' if p == 'exact' else p} | {fmt_lat(v['latency'])} | {rec} | "
              f"{'; '.join(v['plan'])} |")
    w("")
    for name, sess in r["sessions"].items():
        ex = sess["exact"]
        sv = ex["server"]
        w(f"session {name} server query: EXPLAIN ANALYZE custom plan "
          f"{sv['plan_custom']['execution_ms']} ms (JIT {sv['plan_custom']['jit_ms']} ms), "
          f"generic plan {sv['plan_generic']['execution_ms']} ms; plan with the bigger IVFFlat "
          f"{ex.get('plan_with_big_lists')}; ground truth {ex['ground_truth_plan']}; "
          f"mean true matches {ex['mean_true_matches']}")
        for lk, runs in sess.get("ann", {}).items():
            w(f"session {name} IVFFlat-shaped query, {lk}, planner's own choice with all indexes "
              f"(probes 10): {runs['natural_plan']}")
    if "storage" in r:
        w("")
        w("| storage (big session copy) | latency median / p95 (ms) | heap MB | TOAST MB | buffers |")
        w("|---|---:|---:|---:|---:|")
        for k, v in r["storage"].items():
            w(f"| {k} | {fmt_lat(v['latency'])} | {v['heap_mb']} | {v['toast_mb']} | {v['shared_blocks']} |")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true",
                    help="60k faces (sessions 20k + 5k + 1-5k), 10 queries: < 1 minute")
    ap.add_argument("--faces", type=int, help="total faces (default 1000000)")
    ap.add_argument("--big", type=int, help="faces in the big session (default 100000)")
    ap.add_argument("--mid", type=int, help="faces in the mid session (default 10000)")
    ap.add_argument("--queries", type=int, help="queries per case (default 30)")
    ap.add_argument("--probes", default="1,10,40", help="ivfflat.probes to try (default 1,10,40)")
    ap.add_argument("--big-lists", type=int, help="second IVFFlat build: lists (default rows/1000)")
    ap.add_argument("--no-iterative", action="store_true", help="skip ivfflat.iterative_scan runs")
    ap.add_argument("--storage-test", action="store_true",
                    help="also compare STORAGE PLAIN vs EXTENDED on a copy of the big session")
    ap.add_argument("--db", default="facepass_bench", help="database to create and drop")
    ap.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    ap.add_argument("--json", help="also write all results as JSON to this file")
    ap.add_argument("--seed", type=int, default=20240601)
    a = ap.parse_args()
    if a.small:
        faces, big, mid, nq = a.faces or 60_000, a.big or 20_000, a.mid or 5_000, a.queries or 10
    else:
        faces, big, mid, nq = a.faces or 1_000_000, a.big or 100_000, a.mid or 10_000, a.queries or 30
    if a.db in ("facepass", "postgres", "template0", "template1") or a.db.startswith("_sqlx_test"):
        sys.exit(f"bench_search: refusing to use database {a.db}")
    probes = [int(p) for p in a.probes.split(",")]
    big_lists = a.big_lists or max(10, faces // 1000)

    url = database_url()
    admin = with_db(url, "postgres")
    bench_url = with_db(url, a.db)
    r: dict = {"params": {"faces": faces, "big": big, "mid": mid, "queries": nq,
                          "probes": probes, "big_lists": big_lists, "seed": a.seed},
               "timing": {}}
    drop_database(admin, a.db)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'create database "{a.db}"')
    t_start = time.perf_counter()
    try:
        log(f"database {a.db}: applying migrations")
        env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
        for m in sorted((REPO / "migrations").glob("000*_*.up.sql")):
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", bench_url, "-f", str(m)],
                           check=True, env=env)
        # RawCursor: $1-style placeholders, the same query text as the server sends.
        conn = psycopg.connect(bench_url, cursor_factory=psycopg.RawCursor)
        # No automatic server-side prepare: statements are prepared only where asked, so no
        # plan cached under the ground truth's enable_* settings leaks into other cases.
        conn.prepare_threshold = None
        r["machine"] = machine_info(conn)
        # The migration's IVFFlat index was built on an empty table (its lists mean nothing);
        # it is dropped for the load and rebuilt on the data, as `facepass db reindex` would.
        conn.execute("drop index face_embedding_ivfflat_idx")
        conn.commit()

        gen = Gen(a.seed)
        sizes_ = plan_sessions(faces, big, mid, gen.rng)
        log(f"loading {faces:,} faces in {len(sizes_)} sessions (B-tree indexes and FKs live)")
        sessions, dt = timed(load, conn, gen, sizes_, r)
        r["timing"]["load_total_s"] = round(dt, 1)
        log(f"  loaded in {dt:.1f} s")
        conn.autocommit = True
        _, dt = timed(conn.execute, "vacuum analyze")
        conn.autocommit = False
        r["timing"]["vacuum_analyze_s"] = round(dt, 1)
        log(f"  vacuum analyze {dt:.1f} s")

        big_s, mid_s = sessions[0], sessions[1]
        qs = {"big": [vec_text(v) for v in pick_queries(gen, big_s, nq)],
              "mid": [vec_text(v) for v in pick_queries(gen, mid_s, nq)]}
        sess_of = {"big": big_s, "mid": mid_s}
        # Tenant-wide queries: identities from random sessions.
        tq = []
        for s in gen.rng.choice(len(sessions), size=nq):
            tq.append(vec_text(pick_queries(gen, sessions[s], 1)[0]))

        names = {"big": f"{big // 1000}k", "mid": f"{mid // 1000}k"}
        r["sessions"] = {names[k]: {} for k in ("big", "mid")}
        r["tenant"] = {}
        truth = {}

        build_ivfflat(conn, 100, r, "ivf_default")
        r["sizes"] = sizes(conn)
        for k in ("big", "mid"):
            log(f"session {names[k]}: exact (server query)")
            ex, truth[k] = run_session_exact(conn, sess_of[k], qs[k])
            r["sessions"][names[k]]["exact"] = ex
            sv = ex["server"]
            log(f"    custom plan median {sv['custom']['latency']['median_ms']} ms, generic "
                f"{sv['generic']['latency']['median_ms']} ms, recall {sv['custom']['recall']:.3f}"
                f"/{sv['generic']['recall']:.3f}, plans {sv['plan_custom']['scans']} / "
                f"{sv['plan_generic']['scans']}")
        builds = [(100, "ivf_default")] + ([(big_lists, "ivf_big")] if big_lists != 100 else [])
        exact_tenant = None
        for lists, key in builds:
            if key != "ivf_default":
                build_ivfflat(conn, lists, r, key)
                r["sizes_" + key] = sizes(conn)
            lk = f"lists={lists}"
            for k in ("big", "mid"):
                log(f"session {names[k]}, {lk}: IVFFlat post-filtered")
                r["sessions"][names[k]].setdefault("ann", {})[lk] = run_session_ann(
                    conn, sess_of[k], qs[k], truth[k], probes, iterative=False)
                if not a.no_iterative:
                    r["sessions"][names[k]].setdefault("ann_iter", {})[lk] = run_session_ann(
                        conn, sess_of[k], qs[k], truth[k], probes, iterative=True)
            log(f"tenant-wide, {lk}")
            r["tenant"][lk], exact_tenant = run_tenant(conn, tq, probes, exact_tenant)
            if "exact" in r["tenant"][lk]:
                r["tenant"]["exact"] = {"exact": r["tenant"][lk].pop("exact")}
        # The server's query must still avoid IVFFlat with the bigger index in place.
        with conn.cursor() as cur:
            p = plan_summary(explain(cur, SESSION_SQL, (qs["big"][0], TENANT, Int8(big_s.pk),
                                                        MODEL_ID, THRESHOLD, Int8(TOP_K))))
            r["sessions"][names["big"]]["exact"]["plan_with_big_lists"] = p["scans"]
        conn.commit()
        if a.storage_test:
            log("storage PLAIN vs EXTENDED on the big session")
            r["storage"] = storage_test(conn, big_s, qs["big"])
        with open("/proc/loadavg") as f:
            r["machine"]["loadavg_end"] = f.read().split()[:3]
        conn.close()
    finally:
        if not a.keep:
            drop_database(admin, a.db)
            log(f"dropped database {a.db}")
    r["timing"]["total_s"] = round(time.perf_counter() - t_start, 1)
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2, default=str))
    print(report(r))


def drop_database(admin: str, db: str, timeout_s: float = 120.0) -> None:
    """Drops `db` as its non-superuser owner, reliably. `DROP DATABASE ... WITH (FORCE)` fails
    for a non-superuser while an autovacuum worker runs in the database ("must be a member of the
    role whose process is being terminated"); a plain DROP DATABASE asks autovacuum workers to
    exit itself. So: refuse new connections, end our own role's stragglers, and retry the plain
    drop while the database is still in use."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    with psycopg.connect(admin, autocommit=True) as c:
        while c.execute("select 1 from pg_database where datname = %s", (db,)).fetchone():
            try:
                c.execute(f'alter database "{db}" with allow_connections false')
                c.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                          "where datname = %s and pid <> pg_backend_pid() "
                          "and usename = current_user", (db,))
                c.execute(f'drop database if exists "{db}"')
            except (psycopg.errors.ObjectInUse, psycopg.errors.InsufficientPrivilege) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not drop database {db}: {e}") from e
                log(f"drop database {db}: {e.diag.message_primary}; retrying")
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


if __name__ == "__main__":
    main()
