"""The glyphoxa command: scene player, local stack, demo."""
