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
        "config": {
            "openai_batch": {
                "description": "Settings of the OpenAI Batch provider.",
                "options": {
                    "coalesce": {
                        "description": (
                            "Poll batch statuses on the triggerer through shared `GET /batches` list pages, "
                            "one status board per connection for every deferred task. Off, each batch is "
                            "retrieved on its own every poll interval."
                        ),
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "list_page_size": {
                        "description": "Batches per list page the status board reads (`limit`, 1 to 100).",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "50",
                        "default": "100",
                    },
                    "max_list_pages": {
                        "description": (
                            "How deep, in list pages from the newest batch, the status board reads and "
                            "remembers the list; watched batches older than that are retrieved one by one."
                        ),
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "20",
                        "default": "100",
                    },
                    "summary_log_interval": {
                        "description": "Seconds between the status board's one-line summaries in the triggerer log.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "60",
                        "default": "300",
                    },
                    "progress_log_interval": {
                        "description": (
                            "A deferred task logs a batch whenever its status changes; request counts that "
                            "changed without the status are logged at most this often (seconds)."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "60",
                        "default": "300",
                    },
                    "page_refresh_seconds": {
                        "description": (
                            "How old (seconds) the API's answers on the batch pages may be: the API server lists "
                            "each connection's batches at most once per this interval, whatever the number of "
                            "views, and the pages reload themselves as often."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "60",
                        "default": "30",
                    },
                    "upload_concurrency": {
                        "description": (
                            "How many shard files a task uploads at once when it submits (each is streamed "
                            "from its spooled file, so memory does not grow with it). A failed upload fails "
                            "the try before any batch is created; the retry uploads only the missing shards."
                        ),
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "8",
                        "default": "4",
                    },
                    "assumed_output_tokens": {
                        "description": (
                            "Typical output tokens per request, by model, for cost estimates and max_cost_usd "
                            "when a request sets no max_completion_tokens / max_tokens / max_output_tokens: a JSON "
                            'object such as {"gpt-4o-mini": 400, "*": 1000} ("*": any other model). Without a '
                            "figure such requests count at the model's maximum output from the price table "
                            "(16,384 tokens for gpt-4o-mini), an upper bound often far above the real cost; with "
                            "one, the estimate says it is not an upper bound."
                        ),
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": '{"gpt-4o-mini": 400, "*": 1000}',
                        "default": "",
                    },
                    "enqueued_token_limits": {
                        "description": (
                            "The organisation's batch queue limits (the account's limits page, 'Batch Queue "
                            "Limit'), as a JSON object of model to prompt tokens, '*' for any other model. "
                            "Shards are cut so that each fits, and shards that do not fit beside the task's "
                            "own queued batches wait for room without a failed create. Unset: a limit is "
                            "learned from the first batch a full queue refuses."
                        ),
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": '{"gpt-4o-mini": 2000000, "gpt-4o": 90000}',
                        "default": "",
                    },
                    "landing_part_size_mb": {
                        "description": (
                            "Landing streams each output and error file from OpenAI straight to its destination "
                            "(no local copy for object storage): the size, in MiB, of each upload part (at least "
                            "5, S3's smallest part). Peak memory of a landing is set by landing_part_size_mb x "
                            "landing_concurrency (docs/results.md)."
                        ),
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "16",
                        "default": "8",
                    },
                    "landing_concurrency": {
                        "description": (
                            "Files (shards, follow-up rounds) downloaded at once while landing, and upload "
                            "parts in flight at once."
                        ),
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "4",
                        "default": "8",
                    },
                    "price_table": {
                        "description": (
                            "Prices for cost estimates and max_cost_usd, merged model by model over the dated "
                            "table shipped with the provider: a JSON object, or the path or URL of a JSON file, "
                            'of the form {"as_of": "YYYY-MM-DD", "source": "...", "batch_discount": 0.5, '
                            '"models": {"<model>": {"input": USD, "cached_input": USD, "output": USD, '
                            '"max_output_tokens": N}}}, prices in USD per 1M tokens. Costs are estimates '
                            "labelled with as_of and source, never an invoice."
                        ),
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": (
                            '{"as_of": "2026-12-01", "source": "our contract", '
                            '"models": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}}'
                        ),
                        "default": "",
                    },
                },
            }
        },
    }
