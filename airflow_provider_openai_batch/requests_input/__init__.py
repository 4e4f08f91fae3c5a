"""Pre-flight for Batch API input, one module per concern: reading lines, validating them, finding repeated
``custom_id`` values, writing shard files under OpenAI's per-file limits, fingerprinting what was written, and
:mod:`.spool`, which runs them together in one streaming pass. Pure: no Airflow import, no network. User code
imports the public names from :mod:`airflow_provider_openai_batch.batch_input`.
"""
