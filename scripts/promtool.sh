#!/usr/bin/env bash
# promtool for the alert rules' tests (tests/unit/test_monitoring_files.py), from Debian's
# `prometheus` package: only the promtool binary is unpacked into .venv/bin, so no
# Prometheus server is installed or started. Run by `./task setup`; idempotent. Without
# apt (not Debian) it says how to get promtool and the tests that need it skip saying why.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/.venv/bin/promtool"
say() { echo "==> promtool: $*" >&2; }

if [ -x "$target" ] || command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    say "not a Debian machine: install promtool (it comes with Prometheus) to run the alert rules' tests; they skip without it"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        say "updating the package lists"
        apt-get update -qq >/dev/null 2>&1 || true
    fi
    if ! apt-get download prometheus >/dev/null 2>&1; then
        say "could not download Debian's prometheus package (no package lists? run apt-get update as root); the alert rules' tests skip without promtool"
        exit 0
    fi
fi
say "unpacking promtool from $(ls prometheus_*.deb) into .venv/bin"
dpkg-deb -x prometheus_*.deb unpacked
install -m 0755 unpacked/usr/bin/promtool "$target"
