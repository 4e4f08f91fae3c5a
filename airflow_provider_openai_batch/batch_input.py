"""The public names of Batch API pre-flight, for user code: the limits a shard is written under, the spooler, and
the error bad input raises. They are defined in :mod:`airflow_provider_openai_batch.requests_input`, one module per
concern, which the provider's own modules import from directly.
"""

from __future__ import annotations

from airflow_provider_openai_batch.requests_input.problems import InvalidRequestsError, Problem
from airflow_provider_openai_batch.requests_input.shards import Limits, Shard
from airflow_provider_openai_batch.requests_input.spool import SpoolResult, spool_requests

__all__ = ["InvalidRequestsError", "Limits", "Problem", "Shard", "SpoolResult", "spool_requests"]
