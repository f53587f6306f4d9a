# syntax=docker/dockerfile:1
#
# dispatch-engine container image.
#
#   docker build -t dispatch-engine:0.1.0 .
#   docker run --rm -p 8000:8000 --env-file prod.env dispatch-engine:0.1.0   # migrate + serve
#   docker run --rm -p 8000:8000 dispatch-engine:0.1.0   # embedded default: SQLite and dev keys
#                                    in /var/lib/dispatch-engine (mount a volume to keep them)
#
# The default command applies migrations, then runs `serve` (API + worker in one process).
# Production runs one image in three roles and overrides the command per role:
#   dispatch-engine migrate              (one-shot, before the others)
#   dispatch-engine api                  (HTTP only, scale on CPU)
#   dispatch-engine worker --grace 30    (scheduler + claim loop + outbox relay)
# See deploy/README.md and docs/operations.md.
#
# Base image: pinned by exact version tag. A digest pin is stronger (the tag is rebuilt for
# Debian security updates); it could not be resolved where this file was written. Pin it in
# your pipeline:  docker buildx imagetools inspect python:3.11.14-slim-bookworm
# then use  FROM python:3.11.14-slim-bookworm@sha256:<digest>  in both stages.

############################ builder: compilers, wheels ############################
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Build dependencies, for any dependency that has no wheel for the target platform.
# They stay in this stage: the runtime stage installs wheels only. Not version-pinned
# (Debian drops superseded versions from its mirrors); nothing from them reaches the image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src

# The project's wheel and a wheel for every dependency, into /wheels.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

############################ runtime: slim, non-root ############################
FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="dispatch-engine" \
      org.opencontainers.image.description="Survey-invitation dispatch under Delivery Policies" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DISPATCH_HOST=0.0.0.0 \
    DISPATCH_PORT=8000 \
    DISPATCH_DATA_DIR=/var/lib/dispatch-engine \
    DISPATCH_MIGRATIONS_DIR=/app/migrations

# Non-root user with a fixed uid/gid (Kubernetes runAsUser: 10001), no login shell, no home.
RUN groupadd --system --gid 10001 dispatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin dispatch \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/dispatch-engine

# Install from the builder's wheels only (--no-index: nothing is compiled or downloaded here).
# The wheels are bind-mounted, not copied, so they do not stay in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/dispatch_engine-*.whl

WORKDIR /app
# Alembic scripts (read through DISPATCH_MIGRATIONS_DIR); owned by root, read-only for the app.
COPY migrations /app/migrations

USER 10001:10001

EXPOSE 8000

# Liveness of the HTTP process (slim has no curl). Roles without HTTP (worker, migrate)
# disable it in compose; Kubernetes ignores HEALTHCHECK and uses its own probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DISPATCH_PORT', '8000'), timeout=4)"]

# `exec` hands PID 1 to the service so it receives SIGTERM itself.
CMD ["sh", "-c", "dispatch-engine migrate && exec dispatch-engine serve"]
