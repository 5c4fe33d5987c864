"""How often a repeated bad thing (a rejected message, a failed publish, a dropped frame) is
logged: every one is counted in a metric, but only the first ``LOGGED_FIRST`` and then every
100th get a log line (with the count so far), so a flood cannot flood the logs."""

LOGGED_FIRST = 20


def worth_logging(count: int) -> bool:
    """Whether the ``count``-th (from 1) of its kind gets a log line."""
    return count <= LOGGED_FIRST or count % 100 == 0
