-- A campaign's default LLM (provider, model, temperature); its NPCs may override it.
ALTER TABLE campaigns ADD COLUMN llm jsonb;
