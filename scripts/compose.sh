#!/usr/bin/env bash
# `./task compose-up` / `./task compose-down`: the composed stack on any machine with Docker
# and compose v2 (docs/deploy.md). Extra arguments go to docker compose, e.g.
#   ./task compose-up -- --scale stt=2        ./task compose-down -- --volumes
# The images build FROM glyphoxa/base:bookworm where `./task docker-here` made one (no
# registry), else from the official python:3.11-slim-bookworm; GLYPHOXA_BASE_IMAGE overrides.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
die() { echo "compose: error: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed (docs/deploy.md, requirements)"
docker compose version >/dev/null 2>&1 || die "docker compose v2 is missing (docs/deploy.md, requirements)"
timeout 10 docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running? on a Debian machine without a registry: ./task docker-here)"

if [ -z "${GLYPHOXA_BASE_IMAGE:-}" ] && docker image inspect glyphoxa/base:bookworm >/dev/null 2>&1; then
    export GLYPHOXA_BASE_IMAGE=glyphoxa/base:bookworm
fi
export GLYPHOXA_REVISION="${GLYPHOXA_REVISION:-$(git rev-parse --short HEAD 2>/dev/null || true)}"

case "${1:-}" in
    up)
        shift
        echo "==> building the images FROM ${GLYPHOXA_BASE_IMAGE:-python:3.11-slim-bookworm} and starting the stack"
        echo "    (the first build compiles llama.cpp and takes ~15 min on 2 cores; later ones take seconds)"
        start=$(date +%s)
        docker compose up -d --build --wait "$@"
        api="$(docker compose port session-control 8700)"
        nats="$(docker compose port nats 4222)"
        echo
        echo "ready in $(( $(date +%s) - start )) s. admin API: http://${api/0.0.0.0/127.0.0.1}  NATS: nats://${nats/0.0.0.0/127.0.0.1}"
        echo "operator key:  .venv/bin/glyphoxa keys --compose"
        echo "          or:  docker compose exec session-control cat /run/glyphoxa/secrets/SESSION_CONTROL_OPERATOR_KEY"
        echo "play a scene:  .venv/bin/glyphoxa scene play examples/scenes/smithy --campaign examples/campaign.yaml --out out/ --stack compose"
        echo "logs: docker compose logs -f    stop: ./task compose-down (data stays in the volumes)"
        ;;
    down)
        shift
        docker compose down "$@"
        ;;
    *)
        die "usage: scripts/compose.sh up|down [docker compose arguments]"
        ;;
esac
