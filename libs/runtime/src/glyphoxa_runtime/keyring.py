"""The deployment's own keys: made once, kept 0600, each process handed only those it needs.

- ``operator_key``: the admin API's operator bearer key (session-control only).
- ``secret_key``: Fernet key encrypting bot tokens and provider keys at rest (session-control).
- ``bus_key``: seals tenants' provider keys on their way to the stages (session-control, stages).
- ``edge_key``: seals bot tokens on their way to discord-edge (session-control, discord-edge).
- a NATS login per service and one for the operator's tools (``NATS_USER``/``NATS_PASSWORD``),
  and nats-server's ``nats/auth.conf`` with their hashes and permissions (docs/adr/0006).

``glyphoxa up`` keeps them in ``<home>/keys.json``. In containers ``python -m
glyphoxa_runtime.keyring init ROOT`` writes one directory per kind of process under ROOT,
each file named by the variable it sets (read by ``GLYPHOXA_SECRETS_DIR``,
``glyphoxa_runtime.settings``), so no key is in an image, a compose file or a log line.
Running it again keeps every key it finds and only adds what is missing.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from glyphoxa_bus import auth

KEY_NAMES = ("operator_key", "secret_key", "bus_key", "edge_key")

# the variable each key is handed to a service as
VARIABLES = {"operator_key": "SESSION_CONTROL_OPERATOR_KEY",
             "secret_key": "SESSION_CONTROL_SECRET_KEYS",
             "bus_key": "NATS_SECRETS_KEY", "edge_key": "NATS_EDGE_KEY"}

# ``init``'s directories: one per service (each holds its keys and its NATS login), the
# operator's NATS login, nats-server's authorization (``nats/auth.conf``), and PostgreSQL's
# own password
DIRS = {service: service for service in auth.SERVICES}
OPERATOR_DIR, NATS_DIR, NATS_AUTH = auth.OPERATOR, "nats", "auth.conf"
PG_PASSWORD = "POSTGRES_PASSWORD"


def new_key(name: str) -> str:
    if name == "operator_key":
        return "op_" + secrets.token_urlsafe(32)
    return base64.urlsafe_b64encode(os.urandom(32)).decode()  # a Fernet key


def complete(keys: dict[str, str]) -> list[str]:
    """Add the keys ``keys`` lacks (made anew); the names added."""
    added = [name for name in KEY_NAMES if not keys.get(name)]
    for name in added:
        keys[name] = new_key(name)
    return added


def service_keys(service: str, keys: dict[str, str]) -> dict[str, str]:
    """The keys one service is given, as variables, and no others (docs/operations.md, keys):
    the operator and at-rest keys stay in session-control; the bus secrets key (tenants'
    provider keys) goes to session-control and the stages, never to an edge; the edge key
    (bot tokens) to session-control and discord-edge only."""
    names = ["bus_key"] if service != "discord-edge" else []
    if service in ("session-control", "discord-edge"):
        names.append("edge_key")
    if service == "session-control":
        names += ["operator_key", "secret_key"]
    return {VARIABLES[name]: keys[name] for name in names}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (a temp file, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


def with_password(dsn: str, password: str) -> str:
    """A ``postgresql://user@host/db`` URL with ``password`` put in."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres") or not parts.username or not parts.hostname:
        raise ValueError("--pg-dsn must be a postgresql://user@host[:port]/db URL")
    if parts.password:
        raise ValueError("--pg-dsn must not carry a password: init makes it")
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{quote(password, safe='')}@{host}"))


def _read(directory: Path, name: str) -> str:
    path = directory / name
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def init(root: Path, pg_dsn: str | None = None, tenant_edges: tuple[str, ...] = ()
         ) -> tuple[list[str], list[str]]:
    """Make or complete the secrets directories under ``root``; (made, kept): the names of
    the keys made now and of those found and kept.

    The keys are read back from ``root/session-control`` (a key an operator put there, e.g. a
    second at-rest key for rotation, is kept as it is); the other directories are derived."""
    control = root / "session-control"
    keys = {name: _read(control, variable) for name, variable in VARIABLES.items()}
    added = complete(keys)
    made = [VARIABLES[name] for name in added]
    kept = [VARIABLES[name] for name in KEY_NAMES if name not in added]
    files: dict[str, dict[str, str]] = {d: service_keys(service, keys) for d, service in DIRS.items()}
    # each service's NATS login and the operator's, kept where found (ADR 0006)
    logins = {**{service: d for d, service in DIRS.items()}, auth.OPERATOR: OPERATOR_DIR}
    # a tenant's own edge (edge-<tenant>: its tenant's subjects only), asked for now or before
    earlier = [p.name for p in root.glob(f"{auth.TENANT_EDGE_PREFIX}*") if p.is_dir()]
    for user in sorted({*earlier, *(auth.tenant_edge_user(t) for t in tenant_edges)}):
        logins[user] = user
    passwords = {user: _read(root / d, "NATS_PASSWORD") for user, d in logins.items()}
    for user in logins:
        if not passwords[user]:
            passwords[user] = auth.new_password()
            made.append(f"NATS_PASSWORD ({user})")
    kept += [f"NATS_PASSWORD ({user})" for user in logins if f"NATS_PASSWORD ({user})" not in made]
    for user, d in logins.items():
        files.setdefault(d, {}).update({"NATS_USER": user, "NATS_PASSWORD": passwords[user]})
        if user.startswith(auth.TENANT_EDGE_PREFIX):  # its bot's key, not the shared edge key
            files[d]["NATS_EDGE_KEY"] = auth.tenant_edge_key(keys["edge_key"], user)
    if pg_dsn is not None:
        password = _read(root / "postgres", PG_PASSWORD)
        (kept if password else made).append(PG_PASSWORD)
        password = password or secrets.token_urlsafe(24)
        files["postgres"] = {PG_PASSWORD: password}
        files["session-control"]["PG_DSN"] = with_password(pg_dsn, password)
    for directory, variables in files.items():
        for variable, value in variables.items():
            path = root / directory / variable
            if _read(root / directory, variable) != value:
                write_private(path, value + "\n")
            else:
                path.chmod(0o600)  # a file an operator edited is readable by its owner only
    # nats-server's users, hashed: written anew each time (a new salt), from the logins above
    write_private(root / NATS_DIR / NATS_AUTH, auth.server_config_for(passwords))
    return made, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glyphoxa_runtime.keyring",
                                     description="make the deployment's keys (never printed)")
    sub = parser.add_subparsers(dest="command", required=True)
    init_cmd = sub.add_parser("init", help="make or complete the secrets directories under ROOT")
    init_cmd.add_argument("root", type=Path)
    init_cmd.add_argument("--tenant-edge", action="append", default=[], metavar="TENANT",
                          help="also a NATS login for TENANT's own edge (edge-TENANT, in "
                          "ROOT/edge-TENANT), limited to that tenant's subjects; repeatable, "
                          "kept on later runs")
    init_cmd.add_argument("--pg-dsn", help="session-control's PostgreSQL URL without a "
                          "password (postgresql://user@host:port/db): a password is made for "
                          "it, kept in ROOT/postgres/POSTGRES_PASSWORD and put into PG_DSN")
    args = parser.parse_args(argv)
    try:
        made, kept = init(args.root, args.pg_dsn, tuple(args.tenant_edge))
    except (OSError, ValueError) as exc:
        print(f"keyring: {exc}", file=sys.stderr)
        return 1
    print(f"keys in {args.root}: made {', '.join(made) or 'none'}; kept {', '.join(kept) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
