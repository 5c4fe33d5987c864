"""testcontainers, where a Docker engine exists (none does on the development machine,
where the embedded binaries are used instead; see tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PG_IMAGE = "pgvector/pgvector:pg18"


def docker_available() -> bool:
    if os.environ.get("GLYPHOXA_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: use the binaries
        return False


@contextlib.contextmanager
def postgres_container() -> Iterator[str]:
    """An admin DSN of a PostgreSQL 18 + pgvector container, removed afterwards."""
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer(PG_IMAGE, username="postgres", password="postgres",
                           dbname="postgres", driver=None) as pg:
        yield pg.get_connection_url()
