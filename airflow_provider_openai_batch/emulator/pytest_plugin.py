"""pytest plugin (loaded through the ``pytest11`` entry point): fixtures that run the OpenAI emulator.

- ``openai_emulator_server`` (session): starts the emulator as a subprocess once, stops it at session end.
- ``openai_emulator`` (function): the same :class:`~airflow_provider_openai_batch.emulator.testing.EmulatorClient`,
  reset before the test (no files, batches, journal or faults; settings back to the fast test defaults).

Only the standard library is imported here, so the plugin costs nothing in test runs that do not use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import EmulatorClient


@pytest.fixture(scope="session")
def openai_emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorClient]:
    """A running emulator shared by the session; use ``openai_emulator`` to get it reset."""
    from .testing import start_emulator, stop_emulator

    client = start_emulator(tmp_path_factory.mktemp("openai-emulator"))
    try:
        yield client
    finally:
        client.close()
        if client.process is not None:
            stop_emulator(client.process)


@pytest.fixture
def openai_emulator(openai_emulator_server: EmulatorClient) -> EmulatorClient:
    """The session's emulator, reset: give ``openai_emulator.base_url`` to ``OpenAI(base_url=...)``."""
    openai_emulator_server.reset()
    return openai_emulator_server
