"""npc-brain: who is addressed, the LLM turn, NPC memory.

Layout: ``routing`` (+ ``names``, ``tabletalk``) decides who is addressed; ``core`` is the
per-session handler; ``turn`` streams one reply as sentence chunks (``sentences``,
``cleaning``); ``memory`` and ``prompt`` hold and render the conversation; ``llm/`` the
providers, the pool a replica keeps them in (``llm/pool``) and the fallback chain of a turn
(``llm/chain``); ``models`` prepares the default GGUF; ``config``, ``metrics``, ``__main__``.
"""
