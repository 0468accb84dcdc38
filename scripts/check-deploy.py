#!/usr/bin/env python3
"""Checks the deployment files against the code, without Docker.

    python3 scripts/check-deploy.py        # exit 0: consistent; 1: problems (listed); 2: cannot run

- Every variable in .env.example is set for the facepass service (docker-compose.yml), set by the
  image (Dockerfile ENV) or listed in DEFAULT_OK below with the reason its default is right.
- Compose sets no variable the server does not read (a typo there is silently ignored).
- .env.example lists every variable src/config.rs reads, so the checks above see them all.
- Every metric the alerts and the dashboard query exists in src/metrics.rs (or comes from
  Prometheus or node-exporter), with _bucket/_sum/_count only on histograms.
- The routes the alerts and the dashboard filter on exist in src/http/routes/.
- The YAML and JSON files parse.

Needs PyYAML (`pip install pyyaml`, or Debian's python3-yaml).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("check-deploy: needs PyYAML (pip install pyyaml, or apt-get install python3-yaml)")

REPO = Path(__file__).resolve().parent.parent

# Variables the compose stack leaves to their defaults on purpose.
DEFAULT_OK = {
    "APP_NAME": "FacePass is the name /api/v2/health should report",
    "APP_VERSION": "defaults to the crate version, which is what /api/v2/health should report",
    "RUST_LOG": "the default filter (info; debug with DEBUG=true) is right; set it to debug one run",
    "MIMALLOC_PURGE_DELAY": "unset, the server keeps freed memory for reuse (src/main.rs), the faster way",
    "DATABASE_URL": "built from the POSTGRES_* variables, which compose sets",
    "REDIS_URL": "built from the REDIS_* variables, which compose sets",
    "REDIS_PASSWORD": "the stack's Redis has no password and is reachable only on its network",
    "IVFFLAT_PROBES": "the default (10) fits the default lists=100 of the IVFFlat index",
    "S3_KEY_PREFIX": "the stack has a bucket of its own, so keys need no prefix",
    "VERIFY_TOP_K": "the face-pipeline's name for v1 search's default top_k; the default (50) is its",
    "VERIFY_HNSW_EF": "the face-pipeline's setting, mapped onto IVFFLAT_PROBES only when that is unset",
    "VECTOR_DIM": "the face-pipeline's name for EMBEDDING_DIMENSION, which the model already fixes",
    "IDENTITY_COLLECTION": "the face-pipeline's setting; ignored here (with a start-up warning)",
}

# Variables that are not read by src/config.rs but by a library.
READ_ELSEWHERE = {
    "RUST_LOG": "tracing-subscriber's EnvFilter (src/telemetry.rs)",
    "MIMALLOC_PURGE_DELAY": "mimalloc itself, and src/main.rs to leave it be when set",
}

# What `facepass migrate` reads (DatabaseConfig); the migrate service needs nothing else.
DATABASE_VARS = {
    "DATABASE_URL", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_HOST",
    "POSTGRES_PORT", "DB_MAX_CONNECTIONS", "DB_TIMEOUT_SECS", "IVFFLAT_PROBES",
}

# Metrics that the deployment files may use without FacePass defining them.
EXTERNAL_METRICS = {
    "up",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_readonly",
}

# Route templates the alerts and the dashboard name, as written in the #[get]/#[post] macros.
ROUTES_USED = [
    "/health", "/ready", "/metrics", "/index", "/search", "/identities/{identity_id}/verify",
]

PROMQL_FUNCTIONS_AND_KEYWORDS = {
    "sum", "rate", "increase", "histogram_quantile", "by", "without", "and", "or", "unless",
    "on", "ignoring", "label_values", "le",
}

problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


def env_example_vars() -> set[str]:
    names = set()
    for line in (REPO / ".env.example").read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def config_rs_vars() -> set[str]:
    text = (REPO / "src/config.rs").read_text()
    text = text.split("#[cfg(test)]", 1)[0]
    text = re.sub(r'env!\("[A-Z_]+"\)', "", text)  # compile-time, e.g. CARGO_PKG_VERSION
    # Names are passed as string literals to the readers (v.parse("PORT", ..), v.raw("DEBUG")..).
    return set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|DEBUG|HOST|PORT)"', text))


def dockerfile_env() -> dict[str, str]:
    """ENV of the last stage of the Dockerfile."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM\s", text, flags=re.M)
    env = {}
    for line in stages[-1].splitlines():
        m = re.match(r"^ENV\s+(.*)$", line.strip())
        if m:
            for k, v in re.findall(r"([A-Z][A-Z0-9_]*)=(\S*)", m.group(1)):
                env[k] = v
    return env


def load_yaml(rel: str):
    try:
        return yaml.safe_load((REPO / rel).read_text())
    except (OSError, yaml.YAMLError) as e:
        problem(f"{rel}: does not parse: {e}")
        return None


def metric_definitions() -> tuple[set[str], set[str]]:
    """(all metric names, histogram names) from src/metrics.rs."""
    text = (REPO / "src/metrics.rs").read_text()
    consts = dict(re.findall(r'pub const ([A-Z0-9_]+): &str = "([a-z_:][a-z0-9_:]*)";', text))
    histograms = {consts[c] for c in re.findall(r"describe_histogram!\(\s*([A-Z0-9_]+)", text) if c in consts}
    return set(consts.values()), histograms


def check_metrics(where: str, exprs: list[str], names: set[str], histograms: set[str]) -> int:
    used = 0
    for expr in exprs:
        # Keep only metric names and functions: drop strings, label matchers, ranges and the
        # label lists of by/without/on/ignoring.
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        bare = re.sub(r"\{[^}]*\}", " ", bare)
        bare = re.sub(r"\[[^\]]*\]", " ", bare)
        bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
        for name in re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare):
            if name in PROMQL_FUNCTIONS_AND_KEYWORDS or name.startswith("__"):
                continue
            used += 1
            if name in EXTERNAL_METRICS or name in names:
                if name in histograms:
                    problem(f"{where}: {name} is a histogram; query {name}_bucket, _sum or _count")
                continue
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if base != name and base in names:
                if base not in histograms:
                    problem(f"{where}: {name}: {base} is not a histogram")
                continue
            problem(f"{where}: metric {name} is not defined in src/metrics.rs")
    return used


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"panel {p.get('title')!r}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if q:
            inner = re.match(r"label_values\((.*?)(?:,\s*\w+)?\)$", q)
            if inner:
                out.append((f"variable {v.get('name')}", inner.group(1)))
    return out


def main() -> int:
    documented = env_example_vars()
    read = config_rs_vars()
    image_env = dockerfile_env()

    for name in sorted(read - documented):
        problem(f"src/config.rs reads {name}, which .env.example does not list")
    for name in sorted(documented - read - set(READ_ELSEWHERE)):
        problem(f".env.example lists {name}, which src/config.rs does not read")

    compose = load_yaml("docker-compose.yml")
    services = (compose or {}).get("services", {})
    app_env = services.get("facepass", {}).get("environment") or {}
    migrate_env = services.get("migrate", {}).get("environment") or {}
    if not isinstance(app_env, dict) or not isinstance(migrate_env, dict):
        problem("docker-compose.yml: write `environment:` as a mapping (VAR: value)")
        app_env, migrate_env = {}, {}
    if not app_env:
        problem("docker-compose.yml: the facepass service sets no environment")

    for name in sorted(set(app_env) - documented):
        problem(f"docker-compose.yml: facepass sets {name}, which the server does not read")
    for name in sorted(set(migrate_env) - DATABASE_VARS):
        problem(f"docker-compose.yml: migrate sets {name}, which `facepass migrate` does not read")
    for name in sorted(set(image_env) - documented):
        problem(f"Dockerfile: ENV {name} is not a variable the server reads")
    for name, why in sorted(DEFAULT_OK.items()):
        if name not in documented:
            problem(f"check-deploy.py: DEFAULT_OK lists {name}, which .env.example does not")
        if name in app_env:
            problem(f"docker-compose.yml sets {name}, which DEFAULT_OK says is left to its default")

    covered = {}
    for name in sorted(documented):
        if name in app_env:
            covered[name] = "compose"
        elif name in image_env:
            covered[name] = "image"
        elif name in DEFAULT_OK:
            covered[name] = "default"
        else:
            problem(f"{name} is neither set for facepass (compose or image) nor listed in DEFAULT_OK")

    # Cross-file agreement on the port the server listens on.
    port = str(app_env.get("PORT", image_env.get("PORT", "")))
    if port != image_env.get("PORT"):
        problem(f"docker-compose.yml PORT={port} but the image (EXPOSE, HEALTHCHECK) uses {image_env.get('PORT')}")
    ports = services.get("facepass", {}).get("ports", [])
    if not any(str(p).endswith(f":{port}") for p in ports):
        problem(f"docker-compose.yml: facepass publishes {ports}, not container port {port}")
    prom = load_yaml("deploy/prometheus/prometheus.yml") or {}
    targets = [t for job in prom.get("scrape_configs", []) if job.get("job_name") == "facepass"
               for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    if targets != [f"facepass:{port}"]:
        problem(f"deploy/prometheus/prometheus.yml scrapes {targets}, expected facepass:{port}")

    # Metrics and routes used by the alerts and the dashboard.
    names, histograms = metric_definitions()
    exprs: list[tuple[str, str]] = []
    alerts = load_yaml("deploy/prometheus/alerts.yml") or {}
    for group in alerts.get("groups", []):
        for rule in group.get("rules", []):
            exprs.append((f"alerts.yml {rule.get('alert') or rule.get('record')}", str(rule.get("expr", ""))))
            for key in ("summary", "description"):
                if not rule.get("annotations", {}).get(key):
                    problem(f"alerts.yml {rule.get('alert')}: no {key} annotation")
    for rel in ("deploy/grafana/provisioning/datasources/prometheus.yml",
                "deploy/grafana/provisioning/dashboards/dashboards.yml"):
        load_yaml(rel)
    dash_path = REPO / "deploy/grafana/dashboards/facepass.json"
    try:
        dash = json.loads(dash_path.read_text())
        exprs += dashboard_exprs(dash)
    except (OSError, json.JSONDecodeError) as e:
        problem(f"{dash_path.relative_to(REPO)}: does not parse: {e}")
    used = 0
    for where, expr in exprs:
        used += check_metrics(where, [expr], names, histograms)

    routes = set()
    for f in (REPO / "src/http/routes").glob("*.rs"):
        routes |= set(re.findall(r'#\[(?:get|post|put|delete)\("([^"]+)"\)\]', f.read_text()))
    for r in ROUTES_USED:
        if r not in routes:
            problem(f"the alerts/dashboard filter on route {r}, which src/http/routes/ no longer defines")

    counts = {k: sum(1 for v in covered.values() if v == k) for k in ("compose", "image", "default")}
    print(f"check-deploy: {len(documented)} variables in .env.example: {counts['compose']} set by compose, "
          f"{counts['image']} by the image, {counts['default']} left to their defaults")
    print(f"check-deploy: {len(exprs)} PromQL expressions, {used} metric references, "
          f"{len(ROUTES_USED)} routes checked")
    if problems:
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print(f"check-deploy: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("check-deploy: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
