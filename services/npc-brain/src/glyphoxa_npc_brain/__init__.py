"""Address routing, the LLM turn and NPC memory."""
