"""pytest plugin: the OpenAI emulator fixtures (filled in by the emulator work)."""
