"""The old import path: every name importable from ``batch_input`` before the split still is, and is the same object."""

from __future__ import annotations

from airflow_provider_openai_batch import batch_input
from airflow_provider_openai_batch.requests_input import codec, reading, shards, spool, validation


def test_batch_input_reexports_the_split_modules():
    assert set(batch_input.__all__) == {
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
    }
    for name in batch_input.__all__:
        assert getattr(batch_input, name) is getattr(
            next(m for m in (validation, shards, spool, reading) if hasattr(m, name)), name
        )
    assert batch_input.CHUNK_SIZE == reading.CHUNK_SIZE == 1 << 20
    assert batch_input.EMBEDDINGS_ENDPOINT == "/v1/embeddings"
    assert batch_input._read_line_batches is reading.read_line_batches
    assert batch_input._item_batches is reading.item_batches
    assert (batch_input._loads, batch_input._dumps) == (codec.loads, codec.dumps)
    assert (batch_input._stdlib_loads, batch_input._stdlib_dumps) == (codec.stdlib_loads, codec.stdlib_dumps)
