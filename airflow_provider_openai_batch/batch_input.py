"""Pre-flight for Batch API input (validate, spool to shard files, fingerprint), under the import path the
operator, the exceptions and existing user code use: the implementation lives in
:mod:`airflow_provider_openai_batch.requests_input`, one module per concern, and this module only re-exports
its names. To patch a setting in a test (``CHUNK_SIZE``, the JSON functions), patch the module that defines it.
"""

from __future__ import annotations

from airflow_provider_openai_batch.requests_input import codec, reading, validation
from airflow_provider_openai_batch.requests_input.reading import iter_jsonl_lines
from airflow_provider_openai_batch.requests_input.shards import Limits, Shard
from airflow_provider_openai_batch.requests_input.spool import SpoolResult, spool_requests
from airflow_provider_openai_batch.requests_input.validation import (
    MAX_PROBLEMS,
    MODEL_OPTIONAL_ENDPOINTS,
    InvalidRequestsError,
    Problem,
    count_embedding_inputs,
)

__all__ = [
    "MAX_PROBLEMS",
    "MODEL_OPTIONAL_ENDPOINTS",
    "InvalidRequestsError",
    "Limits",
    "Problem",
    "Shard",
    "SpoolResult",
    "count_embedding_inputs",
    "iter_jsonl_lines",
    "spool_requests",
]

# Importable from here before the split though not in __all__; kept so that such imports still work.
CHUNK_SIZE = reading.CHUNK_SIZE
EMBEDDINGS_ENDPOINT = validation.EMBEDDINGS_ENDPOINT
_loads, _dumps = codec.loads, codec.dumps
_stdlib_loads, _stdlib_dumps = codec.stdlib_loads, codec.stdlib_dumps
_read_line_batches = reading.read_line_batches
_item_batches = reading.item_batches
