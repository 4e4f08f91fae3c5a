"""A local emulator of the OpenAI Files + Batch API, for tests, demos and benchmarks.

Run it with ``python -m airflow_provider_openai_batch.emulator`` (or ``openai-batch-emulator``); see
``docs/emulator.md``. Nothing heavy is imported here, because the pytest plugin imports this package in
every test run.
"""
