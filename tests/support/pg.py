"""Test databases: fresh ones, named so that the guard accepts them."""

from __future__ import annotations

import uuid


def fresh_database(admin_dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from glyphoxa_cli.postgres import create_database
    from glyphoxa_pg.guard import require_test_database

    name = f"glyphoxa_test_{uuid.uuid4().hex[:10]}"
    create_database(admin_dsn, name)
    dsn = make_conninfo(**{**conninfo_to_dict(admin_dsn), "dbname": name})
    require_test_database(dsn)
    return dsn
