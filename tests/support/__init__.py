"""Shared test helpers: builders, JSONL readers, the "each custom_id once" assertion, fakes and connections."""
