"""The Discord bot that owns voice."""
