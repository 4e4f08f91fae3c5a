"""Structured outputs: building ``response_format`` / ``text.format`` from a Pydantic model, checking that OpenAI
would accept a schema in strict mode, and validating each answer against the schema it was asked for.

The reader (``read_results(..., schema=...)``) and landing (``output_schema=``) share one validator, so a
record the reader calls ``invalid_output`` is one the operator counted. No Airflow import.
"""
