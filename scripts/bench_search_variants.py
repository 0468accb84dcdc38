#!/usr/bin/env python3
"""Benchmark exact in-session face search variants in PostgreSQL + pgvector (issue #20 part 1).

    scripts/bench_search_variants.py --migrations migrations            # 3M rows: 1M + 100k + 10k sessions
    scripts/bench_search_variants.py --migrations migrations --small    # 200k rows, ~2 minutes

Connection: DATABASE_URL (a libpq URL or key=value string) or, when unset, the libpq PG*
variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, ...). The role needs CREATEDB, and the vector
extension must already be in template1 (scripts/services.sh and a DBA both do that). The script
creates its own database (--db, default facepass_bench_variants), applies the migrations with
psql, loads synthetic data, measures, prints a Markdown report (progress on stderr) and drops
the database, also on error or SIGINT/SIGTERM (unless --keep).

Dropping the database: `DROP DATABASE ... WITH (FORCE)` run by a non-superuser fails with "must
be a member of the role whose process is being terminated or member of pg_signal_backend" when an
autovacuum worker is working in the database (FORCE tries to SIGTERM it with the caller's
rights). A plain `DROP DATABASE` instead asks autovacuum workers to exit itself and waits up to
5 s for them. So `drop_database` closes our own connections, blocks new ones, terminates any
leftover backend of our own role, and then retries a plain DROP DATABASE while the server
reports the database in use (SQLSTATE 55006). Autovacuum is also disabled on the benchmark's
tables (the script runs VACUUM ANALYZE itself), so no worker competes with the measurements.

What it measures, for each measured session size (default 1,000,000, 100,000 and 10,000 faces;
the other sessions fill the table to --total rows), over the same --queries queries:
  * today: the server's query verbatim (src/store/catalog.rs search_session), exact cosine on
    face.embedding vector(512), parallel workers on (2) and off (0);
  * halfvec: an exact prefilter on a narrow side table face_half (halfvec(512) + keys) with a
    rigorous margin for the float16 rounding, then the exact float cosine on face;
  * bit top-K: binary_quantize(embedding)::bit(512) in a narrow side table face_code, the K
    nearest codes by Hamming distance (<~>), exact cosine re-rank on face;
  * bit radius: the same first stage as a filter `code <~> q <= H` (no sort);
  * app codes: the first stage in the client (numpy popcount over the session's codes kept in
    memory), the exact re-rank in PostgreSQL by face_pk = any($ids);
  * optionally (--cluster) CLUSTER face on (tenant_id, session_pk) and today's query again.
Recall is against a float32 numpy brute force of the same result (threshold, one face per photo,
top_k); the code error is measured as the Hamming distance and rank of every true match.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

try:
    import numpy as np
    import psycopg
    from psycopg import errors, sql
    from psycopg.conninfo import make_conninfo
    from psycopg.types.numeric import Int8
except ImportError:  # pragma: no cover
    sys.exit("bench_search_variants: needs numpy and psycopg (pip install numpy 'psycopg[binary]')")

DIM = 512
THRESHOLD = 0.40
TOP_K = 50
TENANT = "acme"
OTHER_TENANTS = ("beta", "gamma", "delta", "epsilon")
MODEL_ID = "w600k_r50-0123456789ab"
# float16 keeps 11 significant bits: each component of q and x is off by <= 2^-11 relative, so
# |q.x - q16.x16| <= 2 * 2^-11 * sum|q_i x_i| <= 2^-10 for unit vectors (Cauchy-Schwarz), plus
# float32 accumulation error (~1e-6). 0.002 is a strict bound with room to spare.
HALFVEC_MARGIN = 0.002


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- the queries

# Shared tail: one hit per photo, the top_k cut before the join to photo (as the server does).
TAIL = (
    "best as ( "
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

# The server's query today, verbatim from src/store/catalog.rs search_session.
TODAY_SQL = (
    "with scored as ( "
    "    select f.photo_pk, f.face_id, f.bbox, 1 - (f.embedding <=> $1) as similarity "
    "    from face f "
    "    where f.tenant_id = $2 and f.session_pk = $3 and f.model_id = $4 "
    "), " + TAIL
)

# Re-rank: exact cosine on face.embedding for the candidates; the tenant/session/model filter is
# repeated on face so that a wrong candidate can never leak across sessions or tenants.
RERANK = (
    "scored as ( "
    "    select f.photo_pk, f.face_id, f.bbox, 1 - (f.embedding <=> $1) as similarity "
    "    from cand c join face f on f.face_pk = c.face_pk "
    "    where f.tenant_id = $2 and f.session_pk = $3 and f.model_id = $4 "
    "), "
)

# Exact prefilter on float16 copies: inner product (= cosine for unit vectors) >= threshold -
# margin, with the margin a strict bound on the float16 error. $7 = -(threshold - margin).
# The query's conversions run once, in an InitPlan (a generic plan would otherwise evaluate
# them per row).
HALFVEC_SQL = (
    "with cand as ( "
    "    select h.face_pk from face_half h "
    "    where h.tenant_id = $2 and h.session_pk = $3 and h.model_id = $4 "
    "      and h.embedding <#> (select $1::vector::halfvec(512)) <= $7 "
    "), " + RERANK + TAIL
)

# Two-stage: the K nearest binary codes by Hamming distance, then exact re-rank.
BIT_TOPK_SQL = (
    "with cand as ( "
    "    select c.face_pk from face_code c "
    "    where c.tenant_id = $2 and c.session_pk = $3 and c.model_id = $4 "
    "    order by c.code <~> (select binary_quantize($1::vector)::bit(512)) "
    "    limit $7 "
    "), " + RERANK + TAIL
)

# Two-stage: every code within Hamming radius H, then exact re-rank.
BIT_RADIUS_SQL = (
    "with cand as ( "
    "    select c.face_pk from face_code c "
    "    where c.tenant_id = $2 and c.session_pk = $3 and c.model_id = $4 "
    "      and c.code <~> (select binary_quantize($1::vector)::bit(512)) <= $7 "
    "), " + RERANK + TAIL
)

# Re-rank only: candidates chosen by the application ($7 bigint[] of face_pk).
APP_RERANK_SQL = (
    "with cand as (select unnest($7::bigint[]) as face_pk), " + RERANK + TAIL
)

SIDE_TABLES_SQL = [
    # Narrow side tables, written in (tenant, session) order: a session's rows are contiguous.
    "create table face_code with (autovacuum_enabled = false) as "
    "select face_pk, photo_pk, tenant_id, session_pk, model_id, "
    "       binary_quantize(embedding)::bit(512) as code "
    "from face order by tenant_id, session_pk, face_pk",
    "alter table face_code add primary key (face_pk)",
    "create index face_code_session_idx on face_code (tenant_id, session_pk, model_id) "
    "include (face_pk, code)",
    "create table face_half with (autovacuum_enabled = false) as "
    "select face_pk, photo_pk, tenant_id, session_pk, model_id, "
    "       embedding::halfvec(512) as embedding "
    "from face order by tenant_id, session_pk, face_pk",
    "alter table face_half alter column embedding set storage plain",
    "alter table face_half add primary key (face_pk)",
    "create index face_half_session_idx on face_half (tenant_id, session_pk, model_id)",
]


# ------------------------------------------------------------------------------ connections

def base_conninfo() -> str:
    """DATABASE_URL if set, else an empty conninfo (libpq reads PGHOST, PGPORT, ...)."""
    return os.environ.get("DATABASE_URL", "")


def conninfo_for(db: str) -> str:
    return make_conninfo(base_conninfo(), dbname=db)


_stop_requested = False


def _on_signal(signum, _frame):
    global _stop_requested
    _stop_requested = True
    raise KeyboardInterrupt(f"signal {signum}")


def drop_database(db: str, timeout_s: float = 120.0) -> None:
    """Drop `db` reliably as a non-superuser owner (see the module docstring)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    with psycopg.connect(conninfo_for("postgres"), autocommit=True) as c:
        while True:
            exists = c.execute("select 1 from pg_database where datname = %s", (db,)).fetchone()
            if not exists:
                return
            try:
                c.execute(sql.SQL("alter database {} with allow_connections false")
                          .format(sql.Identifier(db)))
                # Our own role's stragglers (e.g. a connection of a killed earlier run).
                c.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                          "where datname = %s and pid <> pg_backend_pid() "
                          "and usename = current_user", (db,))
                # Plain DROP DATABASE: the server itself signals autovacuum workers and waits.
                c.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(db)))
                return
            except (errors.ObjectInUse, errors.InsufficientPrivilege) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not drop database {db}: {e}") from e
                log(f"drop database {db}: {e.diag.message_primary}; retrying")
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def create_database(db: str) -> None:
    drop_database(db)
    with psycopg.connect(conninfo_for("postgres"), autocommit=True) as c:
        c.execute(sql.SQL("create database {}").format(sql.Identifier(db)))


def apply_migrations(db: str, migrations: Path) -> None:
    files = sorted(migrations.glob("[0-9][0-9][0-9][0-9]_*.up.sql"))
    if not files:
        sys.exit(f"bench_search_variants: no NNNN_*.up.sql in {migrations}")
    env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning")
    for f in files:
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo_for(db),
                        "-f", str(f)], check=True, env=env)


# ---------------------------------------------------------------------------- synthetic data

class Gen:
    """Clustered synthetic embeddings with look-alikes.

    A centre is normalise(A*g + B*f + u): g one of GROUPS global directions (shared structure),
    f the direction of a "family" of FAMILY identities (look-alikes, the near misses) and u the
    identity's own random unit vector. A face is normalise(centre + s*n), n a random unit vector,
    s^2 ~ U(0.15, 0.9) and for HARD_SHARE of faces U(0.9, 3.0) (profile, blur, small). A query
    (a selfie) is a sample with s^2 = 0.5. Resulting cosines, query to face: same identity
    ~0.66 (hard faces down to ~0.4), same family ~0.29 +- 0.05 (a tail reaching 0.40), others
    ~0.05 or ~0.
    """

    GROUPS = 32
    A = 0.35
    B = 0.8
    FAMILY = 8
    HARD_SHARE = 0.10

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.groups = self.unit(self.rng.standard_normal((self.GROUPS, DIM)))

    @staticmethod
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def centres(self, n: int) -> np.ndarray:
        n_fam = -(-n // self.FAMILY)
        fam = self.unit(self.rng.standard_normal((n_fam, DIM)))
        fam_group = self.rng.integers(0, self.GROUPS, n_fam)
        idx = np.arange(n) // self.FAMILY
        u = self.unit(self.rng.standard_normal((n, DIM)))
        c = self.A * self.groups[fam_group[idx]] + self.B * fam[idx] + u
        return self.unit(c).astype(np.float32)

    def faces(self, centres: np.ndarray) -> np.ndarray:
        n = len(centres)
        s2 = self.rng.uniform(0.15, 0.9, n)
        hard = self.rng.random(n) < self.HARD_SHARE
        s2[hard] = self.rng.uniform(0.9, 3.0, hard.sum())
        noise = self.unit(self.rng.standard_normal((n, DIM)).astype(np.float32))
        return self.unit(centres + np.sqrt(s2).astype(np.float32)[:, None] * noise).astype(np.float32)

    def query(self, centre: np.ndarray) -> np.ndarray:
        noise = self.unit(self.rng.standard_normal(DIM))
        return self.unit(centre + math.sqrt(0.5) * noise).astype(np.float32)


@dataclass
class Session:
    pk: int
    tenant: str
    n: int
    measured: bool
    photo_counts: np.ndarray = None   # faces per photo, in session order
    ident: np.ndarray = None          # identity of each face (session-local index)
    centres: np.ndarray = None
    # measured sessions only, by session-local face index:
    emb: np.ndarray = None
    face_pk: np.ndarray = None
    face_uuid: list = field(default_factory=list)
    photo_pk: np.ndarray = None


def plan_sessions(total: int, measured: list[int], rng) -> list[tuple[int, bool]]:
    sizes = [(n, True) for n in measured]
    left = total - sum(measured)
    if left < 0:
        sys.exit("bench_search_variants: --total is smaller than the measured sessions")
    while left > 0:
        n = int(rng.integers(2_000, 60_001))
        if left - n < 2_000:
            n = left
        sizes.append((n, False))
        left -= n
    return sizes


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
FLOAT4_OID = 700
FACE_COLUMNS = ("face_pk, face_id, photo_pk, tenant_id, session_pk, bbox, landmarks, det_score, "
                "size_px, sharpness, model_id, embedding")


def face_dtype(tenant_len: int) -> np.dtype:
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
        ("l_model", ">i4"), ("model", f"S{len(MODEL_ID)}"),
        ("l_emb", ">i4"), ("emb_dim", ">i2"), ("emb_unused", ">i2"), ("emb", ">f4", (DIM,)),
    ])


def face_rows(rng, face_pk: np.ndarray, face_id: bytes, photo_pk: np.ndarray, s: Session,
              emb: np.ndarray) -> bytes:
    n = len(emb)
    r = np.zeros(n, dtype=face_dtype(len(s.tenant)))
    r["nf"] = 12
    r["l_pk"], r["face_pk"] = 8, face_pk
    r["l_fid"], r["face_id"] = 16, np.frombuffer(face_id, dtype="V16")
    r["l_ppk"], r["photo_pk"] = 8, photo_pk
    r["l_ten"], r["tenant"] = len(s.tenant), s.tenant.encode()
    r["l_spk"], r["session_pk"] = 8, s.pk
    r["l_bbox"], r["bbox_hdr"] = 20 + 4 * 8, (1, 0, FLOAT4_OID, 4, 1)
    x1, y1, side = rng.uniform(0, 3000, n), rng.uniform(0, 2000, n), rng.uniform(40, 400, n)
    r["bbox"]["l"] = 4
    r["bbox"]["v"] = np.stack([x1, y1, x1 + side, y1 + side * 1.2], axis=1)
    r["l_lm"], r["lm_hdr"] = 20 + 10 * 8, (1, 0, FLOAT4_OID, 10, 1)
    r["lm"]["l"] = 4
    r["lm"]["v"] = x1[:, None] + rng.uniform(0, 1, (n, 10)) * side[:, None]
    r["l_det"], r["det"] = 4, rng.uniform(0.6, 0.99, n)
    r["l_size"], r["size"] = 4, side
    r["l_sharp"], r["sharp"] = 4, rng.uniform(10, 500, n)
    r["l_model"], r["model"] = len(MODEL_ID), MODEL_ID.encode()
    r["l_emb"], r["emb_dim"], r["emb_unused"] = 4 + 4 * DIM, DIM, 0
    r["emb"] = emb
    return r.tobytes()


def drop_load_constraints(conn) -> list[str]:
    """Drops the face/photo indexes and constraints (except photo's primary key); returns the
    DDL that recreates them. Foreign keys come back NOT VALID (the data is generated
    consistent; validating 3M rows would only cost time)."""
    ddl = []
    with conn.cursor() as cur:
        cur.execute(
            "select conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype "
            "from pg_constraint where conrelid in ('face'::regclass, 'photo'::regclass) "
            "and contype in ('p', 'u', 'f') and not (conrelid = 'photo'::regclass and contype = 'p') "
            "order by contype = 'f'")
        cons = cur.fetchall()
        cur.execute(
            "select i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) from pg_index i "
            "where i.indrelid in ('face'::regclass, 'photo'::regclass) and not exists ("
            "  select 1 from pg_constraint c where c.conindid = i.indexrelid)")
        idx = cur.fetchall()
        for rel, name, definition, contype in sorted(cons, key=lambda c: c[3] != "f"):
            cur.execute(f'alter table {rel} drop constraint "{name}"')
        for name, _ in idx:
            cur.execute(f"drop index {name}")
    for rel, name, definition, contype in cons:
        ddl.append(f'alter table {rel} add constraint "{name}" {definition}'
                   + (" not valid" if contype == "f" else ""))
    ddl.extend(d for n, d in idx if "ivfflat" not in d)  # IVFFlat: tenant-wide only, not rebuilt
    conn.commit()
    return sorted(ddl, key=lambda d: " foreign key " in d.lower())


def load(conn, gen: Gen, sizes: list[tuple[int, bool]], stats: dict) -> list[Session]:
    """Sessions, photos and faces by COPY, the sessions' uploads interleaved in chunks of
    100-1500 faces (events upload concurrently), so a session's rows are spread over the heap
    as in production."""
    rng = gen.rng
    sessions: list[Session] = []
    tenants = (TENANT,) + OTHER_TENANTS
    with conn.cursor() as cur:
        for t in tenants:
            cur.execute("insert into tenant (tenant_id) values ($1)", (t,))
        with cur.copy("copy session (session_pk, tenant_id, session_id) from stdin") as cp:
            for i, (n, measured) in enumerate(sizes, start=1):
                tenant = TENANT if measured else tenants[i % len(tenants)]
                cp.write_row((i, tenant, f"event-{i:05d}"))
                sessions.append(Session(i, tenant, n, measured))
    conn.commit()

    # Photos (1 + Poisson(2) faces), identities (~20 faces each, log-normal popularity) and the
    # upload chunks of every session.
    chunks = []  # per session: list of (first photo index, end photo index)
    for s in sessions:
        counts, total = [], 0
        while total < s.n:
            c = min(int(rng.poisson(2)) + 1, s.n - total)
            counts.append(c)
            total += c
        s.photo_counts = np.array(counts)
        n_ids = max(8, s.n // 20)
        s.centres = gen.centres(n_ids)
        w = rng.lognormal(0.0, 1.0, n_ids)
        s.ident = rng.choice(n_ids, size=s.n, p=w / w.sum())
        cum = np.concatenate([[0], np.cumsum(s.photo_counts)])
        bounds, p = [], 0
        while p < len(counts):
            target = cum[p] + int(rng.integers(100, 1501))
            q = max(p + 1, int(np.searchsorted(cum, target, side="left")))
            q = min(q, len(counts))
            bounds.append((p, q))
            p = q
        chunks.append(bounds)
        if s.measured:
            s.emb = np.empty((s.n, DIM), dtype=np.float32)
            s.face_pk = np.empty(s.n, dtype=np.int64)
            s.photo_pk = np.empty(s.n, dtype=np.int64)
    # Interleave: pick the next session at random, weighted by its remaining faces.
    order, nxt = [], [0] * len(sessions)
    remaining = np.array([s.n for s in sessions], dtype=np.float64)
    while remaining.sum() > 0:
        i = int(rng.choice(len(sessions), p=remaining / remaining.sum()))
        p, q = chunks[i][nxt[i]]
        nxt[i] += 1
        cum = sessions[i].photo_counts
        remaining[i] -= cum[p:q].sum()
        order.append((i, p, q))

    t_gen = t_copy = 0.0
    photo_pk, face_pk = 1, 1
    face_pos = [0] * len(sessions)
    photo_lines = []
    plan = []  # (session index, first face local index, photo_pk per face)
    for i, p, q in order:
        s = sessions[i]
        counts = s.photo_counts[p:q]
        pks = np.arange(photo_pk, photo_pk + len(counts))
        for j, pk in enumerate(pks):
            photo_lines.append(
                f"{pk}\t{s.pk}\t{s.tenant}\tIMG_{p + j:07d}.jpg\t{s.tenant}/event-{s.pk:05d}/"
                f"{uuid.UUID(bytes=rng.bytes(16))}.jpg\t\\\\x{rng.bytes(32).hex()}\t"
                f"{2_000_000 + (pk * 7919) % 3_000_000}\timage/jpeg\t4000\t3000\n")
        plan.append((i, face_pos[i], np.repeat(pks, counts)))
        face_pos[i] += int(counts.sum())
        photo_pk += len(counts)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        with cur.copy("copy photo (photo_pk, session_pk, tenant_id, photo_id, s3_key, sha256, "
                      "size_bytes, content_type, width, height) from stdin") as cp:
            for a in range(0, len(photo_lines), 50_000):
                cp.write("".join(photo_lines[a:a + 50_000]))
    conn.commit()
    t_copy += time.perf_counter() - t0
    del photo_lines
    log(f"  {photo_pk - 1:,} photos loaded; faces next")

    done = 0
    total_faces = sum(s.n for s in sessions)
    next_report = total_faces // 10
    with conn.cursor() as cur:
        with cur.copy(f"copy face ({FACE_COLUMNS}) from stdin (format binary)") as cp:
            cp.write(COPY_HEADER)
            for i, a, photo_of_face in plan:
                t0 = time.perf_counter()
                s = sessions[i]
                b = a + len(photo_of_face)
                emb = gen.faces(s.centres[s.ident[a:b]])
                pks = np.arange(face_pk, face_pk + (b - a))
                fid = rng.bytes(16 * (b - a))
                if s.measured:
                    s.emb[a:b], s.face_pk[a:b], s.photo_pk[a:b] = emb, pks, photo_of_face
                    s.face_uuid.extend(uuid.UUID(bytes=fid[16 * k:16 * k + 16]) for k in range(b - a))
                rows = face_rows(rng, pks, fid, photo_of_face, s, emb)
                t1 = time.perf_counter()
                cp.write(rows)
                t_copy += time.perf_counter() - t1
                t_gen += t1 - t0
                face_pk += b - a
                done += b - a
                if done >= next_report:
                    log(f"  {done:,}/{total_faces:,} faces")
                    next_report += total_faces // 10
            cp.write(COPY_TRAILER)
    conn.commit()
    with conn.cursor() as cur:
        for table, col in (("session", "session_pk"), ("photo", "photo_pk"), ("face", "face_pk")):
            cur.execute(f"select setval(pg_get_serial_sequence('{table}', '{col}'), "
                        f"(select max({col}) from {table}))")
    conn.commit()
    stats["data"] = {"sessions": len(sessions), "faces": total_faces, "photos": photo_pk - 1,
                     "tenants": len(tenants), "upload_chunks": len(order),
                     "identities": int(sum(len(s.centres) for s in sessions))}
    stats["timing"]["generate_s"] = round(t_gen, 1)
    stats["timing"]["copy_s"] = round(t_copy, 1)
    return sessions


# ----------------------------------------------------------------- ground truth and codes

def pack_codes(x: np.ndarray) -> np.ndarray:
    """pgvector's binary_quantize: bit i set iff x_i > 0, bit 0 first (big-endian in a byte);
    as uint64 words for popcount (the word byte order does not matter for Hamming distance)."""
    return np.packbits(x > 0, axis=-1).view(np.uint64)


def hamming(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.bitwise_count(codes ^ q).sum(axis=1, dtype=np.int32)


@dataclass
class Truth:
    faces: list            # per query: face_ids (uuid) that the exact server query returns
    ordered: list          # per query: [(photo_pk, face uuid)] in result order
    n_above: list          # per query: faces with cosine >= threshold in the session
    match_hamming: list    # Hamming distance of every face with cosine >= threshold (all queries)
    match_cos: list
    match_rank: list       # worst-case rank (count of faces with Hamming <= its own)
    worst_rank: list       # per query: max over its true matches
    worst_dist: list       # per query: max Hamming over its true matches
    nonmatch_hamming_hist: np.ndarray = None


def ground_truth(s: Session, queries: np.ndarray) -> Truth:
    codes = pack_codes(s.emb)
    t = Truth([], [], [], [], [], [], [], [])
    hist = np.zeros(DIM + 1, dtype=np.int64)
    for q in queries:
        sims = s.emb @ q
        ham = hamming(codes, pack_codes(q[None, :])[0])
        above = np.nonzero(sims >= THRESHOLD)[0]
        t.n_above.append(len(above))
        # server semantics: best face per photo, by similarity desc then photo_pk, top_k
        best = {}
        for k in above[np.argsort(-sims[above], kind="stable")]:
            best.setdefault(int(s.photo_pk[k]), k)
        hits = sorted(best.items(), key=lambda kv: (-float(sims[kv[1]]), kv[0]))[:TOP_K]
        t.faces.append({s.face_uuid[k] for _, k in hits})
        t.ordered.append([(pk, s.face_uuid[k]) for pk, k in hits])
        cnt = np.bincount(ham, minlength=DIM + 1)
        cum = np.cumsum(cnt)
        hist += cnt
        if len(above):
            d = ham[above]
            hist -= np.bincount(d, minlength=DIM + 1)
            t.match_hamming.extend(d.tolist())
            t.match_cos.extend(sims[above].tolist())
            ranks = cum[d]
            t.match_rank.extend(ranks.tolist())
            t.worst_rank.append(int(ranks.max()))
            t.worst_dist.append(int(d.max()))
    t.nonmatch_hamming_hist = hist
    return t


def binomial_tail_above(n: int, p: float, h: int) -> float:
    """P(X > h) for X ~ Binomial(n, p), exact (log-space sum)."""
    total = 0.0
    for k in range(h + 1, n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                          + k * math.log(p) + (n - k) * math.log1p(-p))
    return total


def code_error_model(truth: Truth, n_faces: int) -> dict:
    """Sign codes of a random rotation: Hamming ~ Binomial(512, angle/pi). Compares the measured
    distances of true matches with the model and derives radii H and candidate counts K."""
    d = np.array(truth.match_hamming)
    c = np.array(truth.match_cos)
    out = {"true_matches": int(len(d))}
    if len(d):
        out["hamming_of_matches"] = {"min": int(d.min()), "p50": float(np.percentile(d, 50)),
                                     "p99": float(np.percentile(d, 99)), "max": int(d.max())}
        lo = (c >= THRESHOLD) & (c < THRESHOLD + 0.05)
        if lo.any():
            expected = DIM * math.acos(THRESHOLD + 0.025) / math.pi
            out["borderline_0.40_0.45"] = {"n": int(lo.sum()), "mean": round(float(d[lo].mean()), 1),
                                           "sd": round(float(d[lo].std()), 1),
                                           "max": int(d[lo].max()),
                                           "model_mean": round(expected, 1)}
        r = np.array(truth.match_rank)
        out["rank_of_matches"] = {"p50": float(np.percentile(r, 50)), "p99": float(np.percentile(r, 99)),
                                  "max": int(r.max())}
        out["worst_rank_per_query"] = {"p50": float(np.percentile(truth.worst_rank, 50)),
                                       "p95": float(np.percentile(truth.worst_rank, 95)),
                                       "max": int(max(truth.worst_rank))}
    p = math.acos(THRESHOLD) / math.pi
    hist = truth.nonmatch_hamming_hist
    cum = np.cumsum(hist) / max(1, len(truth.faces))
    radii = {}
    for eps in (1e-3, 1e-4, 1e-6, 1e-9):
        h = next(h for h in range(DIM + 1) if binomial_tail_above(DIM, p, h) <= eps)
        radii[f"{eps:g}"] = {"H": h, "mean_candidates_at_H": round(float(cum[h]), 1),
                             "share_of_session": round(float(cum[h]) / n_faces, 5)}
    out["radius_for_miss_probability"] = radii
    return out


# --------------------------------------------------------------------------- measurement

def pct(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def vec_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in v.tolist()) + "]"


def plan_of(cur, query: str, params) -> dict:
    cur.execute("explain (analyze, buffers, format json) " + query, params)
    ex = cur.fetchone()[0][0]
    nodes = []

    def walk(n):
        name = n.get("Node Type", "")
        rel = n.get("Index Name") or n.get("Relation Name")
        workers = n.get("Workers Launched")
        nodes.append(name + (f" on {rel}" if rel else "") + (f" ({workers} workers)" if workers else ""))
        for ch in n.get("Plans", []):
            walk(ch)
    walk(ex["Plan"])
    return {"nodes": [x for x in nodes if "Scan" in x or "Gather" in x],
            "execution_ms": round(ex["Execution Time"], 2),
            "shared_hit": ex["Plan"].get("Shared Hit Blocks"),
            "shared_read": ex["Plan"].get("Shared Read Blocks")}


@dataclass
class Variant:
    name: str
    query: str
    extra: object = None          # value of $7 (K, H, margin) or None
    workers: int = 2
    app_k: int | None = None      # first stage in the client with this K


def run_variant(conn, v: Variant, s: Session, qvecs: np.ndarray, qtexts: list[str], truth: Truth,
                max_seconds: float, min_queries: int, app_codes: np.ndarray | None) -> dict:
    def params(i: int, extra=v.extra):
        p = [qtexts[i], s.tenant, Int8(s.pk), MODEL_ID, THRESHOLD, Int8(TOP_K)]
        if extra is not None:
            p.append(extra)
        return p

    def app_candidates(i: int):
        ham = hamming(app_codes, pack_codes(qvecs[i][None, :])[0])
        k = min(v.app_k, len(ham))
        idx = np.argpartition(ham, k - 1)[:k]
        return [int(x) for x in s.face_pk[idx]]

    cur = conn.cursor()
    backend_pid = cur.execute("select pg_backend_pid()").fetchone()[0]
    cur.execute(f"set max_parallel_workers_per_gather = {v.workers}")
    for i in range(3):  # warm-up: caches and the prepared statement
        cur.execute(v.query, params(i, app_candidates(i) if v.app_k else v.extra), prepare=True)
        cur.fetchall()
    pl = plan_of(cur, v.query, params(0, app_candidates(0) if v.app_k else v.extra))
    secs, recalls, exact_order, first_stage_ms, first_stage_cpu = [], [], 0, [], 0.0
    cpu0 = backend_cpu_s(backend_pid)
    t_start = time.perf_counter()
    for i in range(len(qtexts)):
        if i >= min_queries and time.perf_counter() - t_start > max_seconds:
            break
        t0 = time.perf_counter()
        extra = v.extra
        if v.app_k:
            c0 = time.process_time()
            extra = app_candidates(i)
            first_stage_cpu += time.process_time() - c0
            first_stage_ms.append((time.perf_counter() - t0) * 1000)
        cur.execute(v.query, params(i, extra), prepare=True)
        rows = cur.fetchall()
        secs.append(time.perf_counter() - t0)
        got = [r[2] for r in rows]
        want = truth.faces[i]
        recalls.append(len(set(got) & want) / len(want) if want else 1.0)
        exact_order += int(got == [f for _, f in truth.ordered[i]])
    cpu1 = backend_cpu_s(backend_pid)
    cur.execute("reset max_parallel_workers_per_gather")
    conn.commit()
    cur.close()
    ms = [x * 1000 for x in secs]
    out = {"variant": v.name, "workers": v.workers, "extra": v.extra if not v.app_k else v.app_k,
           "queries": len(ms), "p50_ms": round(statistics.median(ms), 2),
           "p95_ms": round(pct(ms, 0.95), 2), "mean_ms": round(statistics.fmean(ms), 2),
           "recall_mean": round(float(np.mean(recalls)), 5),
           "recall_min": round(float(np.min(recalls)), 4),
           "queries_all_matches": int(sum(r == 1.0 for r in recalls)),
           "identical_results": exact_order, "plan": pl["nodes"],
           "explain_ms": pl["execution_ms"],
           "loadavg": open("/proc/loadavg").read().split()[0]}
    if cpu0 is not None and cpu1 is not None:
        # leader only: CPU of parallel workers is not included
        out["backend_cpu_ms_mean"] = round((cpu1 - cpu0) * 1000 / len(ms), 1)
    if first_stage_ms:
        out["client_first_stage_p50_ms"] = round(statistics.median(first_stage_ms), 2)
        out["client_first_stage_cpu_ms_mean"] = round(first_stage_cpu * 1000 / len(ms), 2)
    return out


def backend_cpu_s(pid: int) -> float | None:
    """utime + stime of a local backend from /proc (None when the server is elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def variants_for(n: int, ks: list[int], radii: list[int], workers: list[int]) -> list[Variant]:
    vs = []
    for w in workers:
        vs.append(Variant("today", TODAY_SQL, None, w))
        vs.append(Variant("halfvec prefilter", HALFVEC_SQL, -(THRESHOLD - HALFVEC_MARGIN), w))
        vs.extend(Variant("bit top-K", BIT_TOPK_SQL, Int8(k), w) for k in ks if k < n)
        vs.extend(Variant("bit radius", BIT_RADIUS_SQL, h, w) for h in radii)
    # The first stage runs in the client; the re-rank is a handful of index lookups (serial).
    vs.extend(Variant("app codes + re-rank", APP_RERANK_SQL, None, 0, app_k=k) for k in ks[:2] if k < n)
    return vs


# ----------------------------------------------------------------------------------- report

def machine_info(conn) -> dict:
    info = {"nproc": os.cpu_count(), "python": platform.python_version(),
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                           if l.startswith("model name"))
        info["mem_gib"] = round(int(next(l.split()[1] for l in open("/proc/meminfo")
                                         if l.startswith("MemTotal"))) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    with conn.cursor() as cur:
        cur.execute("select version(), (select extversion from pg_extension where extname = 'vector')")
        info["postgres"], info["pgvector"] = cur.fetchone()
        info["settings"] = {}
        for name in ("shared_buffers", "work_mem", "maintenance_work_mem", "effective_cache_size",
                     "max_parallel_workers_per_gather", "max_parallel_workers", "jit",
                     "random_page_cost", "fsync", "synchronous_commit"):
            cur.execute(f"show {name}")
            info["settings"][name] = cur.fetchone()[0]
    conn.commit()
    return info


def table_sizes(conn) -> dict:
    out = {}
    with conn.cursor() as cur:
        for rel in ("face", "face_code", "face_half", "photo", "face_tenant_session_idx",
                    "face_code_session_idx", "face_half_session_idx", "face_pkey"):
            cur.execute("select pg_relation_size(to_regclass($1))", (rel,))
            b = cur.fetchone()[0]
            if b is not None:
                out[rel] = round(b / 2**20, 1)
    conn.commit()
    return out


def report(r: dict) -> str:
    out = []
    w = out.append
    w(f"data: {r['data']}")
    w(f"sizes (MB): {r.get('sizes')}")
    w(f"timing (s): {r['timing']}")
    w("")
    w("| session | variant | param | workers | p50 ms | p95 ms | recall (mean / min) | identical | queries | load | backend CPU ms | plan |")
    w("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    for name, sess in r["sessions"].items():
        for m in sess["results"]:
            w(f"| {name} | {m['variant']} | {m['extra'] if m['extra'] is not None else '-'} | "
              f"{m['workers']} | {m['p50_ms']} | {m['p95_ms']} | {m['recall_mean']:.2%} / "
              f"{m['recall_min']:.0%} | {m['identical_results']}/{m['queries']} | {m['queries']} | "
              f"{m['loadavg']} | {m.get('backend_cpu_ms_mean', '-')} | {'; '.join(m['plan'])}"
              + (f" (client first stage p50 {m['client_first_stage_p50_ms']} ms, "
                    f"CPU {m['client_first_stage_cpu_ms_mean']} ms)"
                 if "client_first_stage_p50_ms" in m else "") + " |")
    for name, sess in r["sessions"].items():
        w("")
        w(f"{name}: true matches per query {sess['true_matches']}; code error {json.dumps(sess['code_error'])}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--migrations", type=Path,
                    default=Path(__file__).resolve().parent.parent / "migrations",
                    help="directory with NNNN_*.up.sql (default: ../migrations)")
    ap.add_argument("--total", type=int, default=3_000_000, help="rows in face")
    ap.add_argument("--sizes", default="1000000,100000,10000", help="measured session sizes")
    ap.add_argument("--small", action="store_true", help="--total 200000 --sizes 100000,10000 --queries 50")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ks", default="1000,2000,5000,10000", help="K of the bit top-K first stage")
    ap.add_argument("--radii", default="", help="Hamming radii H (default: from the code error model)")
    ap.add_argument("--max-seconds", type=float, default=90.0,
                    help="time box per variant; slow variants stop after it (>= --min-queries)")
    ap.add_argument("--min-queries", type=int, default=40)
    ap.add_argument("--workers", default="2,0",
                    help="max_parallel_workers_per_gather values to measure (default 2,0)")
    ap.add_argument("--cluster", action="store_true", help="also CLUSTER face and re-measure today's query")
    ap.add_argument("--db", default="facepass_bench_variants")
    ap.add_argument("--keep", action="store_true", help="keep the database")
    ap.add_argument("--json", type=Path, help="write all results as JSON")
    ap.add_argument("--seed", type=int, default=20)
    a = ap.parse_args()
    if a.small:
        a.total, a.sizes, a.queries = 200_000, "100000,10000", min(a.queries, 50)
    if a.db in ("postgres", "template0", "template1", "facepass") or a.db.startswith("_sqlx_test"):
        sys.exit(f"bench_search_variants: refusing to use database {a.db}")
    measured = [int(x) for x in a.sizes.split(",")]
    ks = [int(x) for x in a.ks.split(",")]

    signal.signal(signal.SIGTERM, _on_signal)
    r: dict = {"params": vars(a) | {"migrations": str(a.migrations), "json": str(a.json)},
               "timing": {}, "sessions": {}}
    t_all = time.perf_counter()
    create_database(a.db)
    conn = None
    try:
        log(f"database {a.db}: migrations from {a.migrations}")
        apply_migrations(a.db, a.migrations)
        conn = psycopg.connect(conninfo_for(a.db), cursor_factory=psycopg.RawCursor)
        conn.prepare_threshold = None  # prepare only where asked (prepare=True)
        r["machine"] = machine_info(conn)
        for t in ("face", "photo", "session"):
            conn.execute(f"alter table {t} set (autovacuum_enabled = false)")
        recreate = drop_load_constraints(conn)

        gen = Gen(a.seed)
        sizes = plan_sessions(a.total, measured, gen.rng)
        log(f"loading {a.total:,} faces in {len(sizes)} sessions (interleaved uploads)")
        t0 = time.perf_counter()
        sessions = load(conn, gen, sizes, r)
        r["timing"]["load_s"] = round(time.perf_counter() - t0, 1)
        log(f"  loaded in {r['timing']['load_s']} s; indexes and constraints")
        t0 = time.perf_counter()
        for ddl in recreate:
            conn.execute(ddl)
        conn.commit()
        r["timing"]["indexes_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        for ddl in SIDE_TABLES_SQL:
            conn.execute(ddl)
        conn.commit()
        r["timing"]["side_tables_s"] = round(time.perf_counter() - t0, 1)
        conn.autocommit = True
        t0 = time.perf_counter()
        conn.execute("vacuum (analyze, freeze) face, photo, session, face_code, face_half")
        conn.autocommit = False
        r["timing"]["vacuum_s"] = round(time.perf_counter() - t0, 1)
        r["sizes"] = table_sizes(conn)
        log(f"  indexes {r['timing']['indexes_s']} s, side tables {r['timing']['side_tables_s']} s, "
            f"vacuum {r['timing']['vacuum_s']} s; sizes {r['sizes']}")

        for s in (x for x in sessions if x.measured):
            name = f"{s.n // 1000}k" if s.n < 1_000_000 else f"{s.n // 1_000_000}M"
            eligible = np.nonzero(np.bincount(s.ident, minlength=len(s.centres)) >= 3)[0]
            ids = gen.rng.choice(eligible, size=a.queries, replace=len(eligible) < a.queries)
            qvecs = np.stack([gen.query(s.centres[i]) for i in ids])
            qtexts = [vec_text(q) for q in qvecs]
            log(f"session {name}: ground truth and code error ({a.queries} queries)")
            truth = ground_truth(s, qvecs)
            err = code_error_model(truth, s.n)
            radii = ([int(x) for x in a.radii.split(",")] if a.radii else
                     sorted({err["radius_for_miss_probability"][e]["H"] for e in ("0.0001", "1e-06")}))
            sess = {"n": s.n, "session_pk": s.pk, "code_error": err, "results": [],
                    "true_matches": {"mean_above_threshold": round(float(np.mean(truth.n_above)), 1),
                                     "min": int(min(truth.n_above)), "max": int(max(truth.n_above)),
                                     "mean_result_photos": round(float(np.mean([len(f) for f in truth.faces])), 1)}}
            r["sessions"][name] = sess
            log(f"  matches/query {sess['true_matches']}; Hamming of matches "
                f"{err.get('hamming_of_matches')}; worst rank {err.get('worst_rank_per_query')}")
            app_codes = pack_codes(s.emb)
            for v in variants_for(s.n, ks, radii, [int(x) for x in a.workers.split(",")]):
                m = run_variant(conn, v, s, qvecs, qtexts, truth, a.max_seconds, a.min_queries, app_codes)
                sess["results"].append(m)
                log(f"  {v.name} [{m['extra']}] workers={v.workers}: p50 {m['p50_ms']} p95 {m['p95_ms']} ms, "
                    f"recall {m['recall_mean']:.4f} (min {m['recall_min']:.3f}), identical "
                    f"{m['identical_results']}/{m['queries']}; {m['plan']}")
            sess["queries"] = (qvecs, qtexts, truth)  # kept for --cluster, removed before JSON

        if a.cluster:
            log("CLUSTER face using face_tenant_session_idx")
            t0 = time.perf_counter()
            conn.execute("cluster face using face_tenant_session_idx")
            conn.commit()
            conn.autocommit = True
            conn.execute("vacuum analyze face")
            conn.autocommit = False
            r["timing"]["cluster_s"] = round(time.perf_counter() - t0, 1)
            log(f"  clustered in {r['timing']['cluster_s']} s")
            for name, sess in r["sessions"].items():
                s = next(x for x in sessions if x.pk == sess["session_pk"])
                qvecs, qtexts, truth = sess["queries"]
                ks_mid = Int8(min(ks[1], s.n))
                for v in (Variant("today, clustered", TODAY_SQL, None, 2),
                          Variant("today, clustered", TODAY_SQL, None, 0),
                          Variant("bit top-K, clustered", BIT_TOPK_SQL, ks_mid, 2)):
                    m = run_variant(conn, v, s, qvecs, qtexts, truth, a.max_seconds, a.min_queries, None)
                    sess["results"].append(m)
                    log(f"  {name} {v.name} workers={v.workers}: p50 {m['p50_ms']} p95 {m['p95_ms']} ms, "
                        f"recall {m['recall_mean']:.4f}; {m['plan']}")
        r["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    finally:
        if conn is not None:
            conn.close()
        if not a.keep:
            drop_database(a.db)
            log(f"dropped database {a.db}")
    for sess in r["sessions"].values():
        sess.pop("queries", None)
    r["timing"]["total_s"] = round(time.perf_counter() - t_all, 1)
    if a.json:
        a.json.write_text(json.dumps(r, indent=2, default=str))
    print(report(r))


if __name__ == "__main__":
    main()
