"""Service runtime: settings, structured logs, metrics/health endpoint, process life."""
