"""Apache Airflow provider for the OpenAI Batch API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "output_format", "read_results"]


def __getattr__(name: str) -> Any:
    # Imported on first use: Airflow imports this package to discover the provider, which needs none of it.
    if name == "read_results":
        from airflow_provider_openai_batch.reader import read_results

        return read_results
    if name == "output_format":
        from airflow_provider_openai_batch.structured.formats import output_format

        return output_format
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
