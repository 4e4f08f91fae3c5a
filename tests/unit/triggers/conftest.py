import pytest

from tests.unit.triggers.fake_api import openai_connection  # noqa: F401


@pytest.fixture(autouse=True)
def _connection(openai_connection):  # noqa: F811
    yield
