"""What one emulator process holds, and how a route reaches it."""

from __future__ import annotations

import dataclasses

from starlette.requests import Request

from .faults import Faults, Journal
from .settings import Settings
from .store import Store


@dataclasses.dataclass
class Emulator:
    """Everything one emulator process holds.

    :param store: files and batches.
    :param settings: the settings in force; replaced (never mutated) by ``POST /_emulator/config``.
    :param defaults: the settings a reset returns to.
    :param faults: the armed faults.
    :param journal: the API calls received.
    """

    store: Store
    settings: Settings
    defaults: Settings
    faults: Faults
    journal: Journal


def emulator_of(request: Request) -> Emulator:
    """The emulator serving ``request``."""
    emulator: Emulator = request.app.state.emulator
    return emulator
