#!/usr/bin/env bash
# .venv-peer: Pipecat for the bench's peer (issue 17, cli/src/glyphoxa_cli/peer_bench.py),
# apart from the workspace lock. pipecat-ai 1.14.0 needs protobuf 6 and soxr < 1.1 where the
# workspace resolves protobuf 7 and soxr 1.1; in uv.lock it would move them back for every
# service image too. Here Pipecat and the packages it needs beyond .venv's are installed
# --no-deps (cli/peer-bench-requirements.txt), and a .pth file puts .venv's site-packages
# (the workspace, numpy, opuslib, ...) after .venv-peer's own, so its pins win only in the
# peer's process. Run by `./task setup` (`./task peer-venv`); idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
base="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
workspace="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
.venv/bin/uv venv --quiet --allow-existing --python "$base" .venv-peer
.venv/bin/uv pip install --quiet --python .venv-peer/bin/python --no-deps -r cli/peer-bench-requirements.txt
own="$(.venv-peer/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$workspace')" > "$own/zz_glyphoxa_workspace.pth"
if ! out="$(.venv-peer/bin/python -c 'import google.protobuf, pipecat.pipeline.worker, glyphoxa_tts.frames' 2>&1)"; then
    echo "==> peer-venv: .venv-peer cannot import Pipecat and the workspace:" >&2
    echo "$out" >&2
    exit 1
fi
touch .venv-peer/.glyphoxa-synced
