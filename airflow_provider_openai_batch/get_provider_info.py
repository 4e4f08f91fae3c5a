"""What Airflow's ProvidersManager learns about this package (validated against provider_info.schema.json)."""

from __future__ import annotations

from typing import Any

from airflow_provider_openai_batch import __version__

_INTEGRATION = "OpenAI Batch"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-openai-batch",
        "name": "OpenAI Batch",
        "description": "Run OpenAI Batch API jobs from Apache Airflow: validated, streamed, sharded, idempotent and deferrable.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://platform.openai.com/docs/guides/batch",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_openai_batch.hooks.openai_batch"],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_openai_batch.operators.openai_batch"],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_openai_batch.triggers.openai_batch"],
            }
        ],
        # Not "openai": apache-airflow-providers-openai owns that type; our hook still reads such connections.
        "connection-types": [
            {
                "connection-type": "openai_batch",
                "hook-class-name": "airflow_provider_openai_batch.hooks.openai_batch.OpenAIBatchHook",
                "hook-name": "OpenAI Batch",
            }
        ],
        "extra-links": ["airflow_provider_openai_batch.links.openai_batch.OpenAIBatchLink"],
        "task-decorators": [
            {
                "name": "openai_batch",
                "class-name": "airflow_provider_openai_batch.decorators.openai_batch.openai_batch_task",
            }
        ],
    }
