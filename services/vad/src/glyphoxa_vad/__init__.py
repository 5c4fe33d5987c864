"""Voice activity / end-of-turn detection per speaker."""
