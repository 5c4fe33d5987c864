-- Which LLM provider spoke a turn's reply (a fallback when the NPC's own failed).
ALTER TABLE turns ADD COLUMN llm_provider text;
