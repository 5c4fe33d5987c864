"""PostgreSQL for Glyphoxa: ``PG_*`` settings, an async pool, versioned migrations."""
