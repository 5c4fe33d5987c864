"""Text to speech and opus encoding."""
