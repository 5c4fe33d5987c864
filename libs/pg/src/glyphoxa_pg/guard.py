"""The test-database guard: tests refuse to touch a database that is not obviously theirs."""

from __future__ import annotations

import re

from psycopg.conninfo import conninfo_to_dict

_TEST_NAME = re.compile(r"^(test_|glyphoxa_test_)[a-z0-9_]+$|^[a-z0-9_]+_test$")


def require_test_database(dsn: str) -> str:
    """Return the database name of ``dsn``; raise unless it looks like a test database."""
    name = conninfo_to_dict(dsn).get("dbname", "")
    if not _TEST_NAME.match(name or ""):
        raise RuntimeError(
            f"refusing to run tests against database {name!r}: test databases are named "
            "test_*, glyphoxa_test_* or *_test (set PG_DSN to one of those)")
    return name
