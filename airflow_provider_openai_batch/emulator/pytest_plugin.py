"""pytest plugin (loaded through the ``pytest11`` entry point): fixtures that run the OpenAI emulator.

- ``openai_emulator_server`` (session): starts the emulator as a subprocess once, stops it at session end.
- ``openai_emulator`` (function): the same :class:`~airflow_provider_openai_batch.emulator.testing.EmulatorClient`,
  reset before the test (no files, batches, journal or faults; settings back to the fast test defaults), then
  given the settings of the test's ``@pytest.mark.openai_emulator(...)`` marker, e.g.
  ``@pytest.mark.openai_emulator(enqueued_token_limits={"gpt-4o-mini": 2_000_000})``.

Only the standard library is imported here, so the plugin costs nothing in test runs that do not use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import EmulatorClient


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "openai_emulator(**settings): settings the openai_emulator fixture applies after its reset"
    )


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
def openai_emulator(openai_emulator_server: EmulatorClient, request: pytest.FixtureRequest) -> EmulatorClient:
    """The session's emulator, reset (then set as the test's ``openai_emulator`` marker says): give
    ``openai_emulator.base_url`` to ``OpenAI(base_url=...)``."""
    openai_emulator_server.reset()
    marker = request.node.get_closest_marker("openai_emulator")
    if marker is not None and marker.kwargs:
        openai_emulator_server.configure(**marker.kwargs)
    return openai_emulator_server
