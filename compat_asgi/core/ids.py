"""Id and clock factories.

Injectable so that tests can make translated output exact: pass
``CountingIds()`` and ``FixedClock(...)`` and every id and timestamp is known.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

__all__ = ["IdFactory", "RandomIds", "CountingIds", "Clock", "system_clock", "FixedClock"]


class IdFactory(Protocol):
    def __call__(self, prefix: str) -> str: ...


class Clock(Protocol):
    def __call__(self) -> int: ...


class RandomIds:
    """``prefix_`` + 48 hex characters from the OS random source, like OpenAI's ids."""

    __slots__ = ()

    def __call__(self, prefix: str) -> str:
        return f"{prefix}_{os.urandom(24).hex()}"


class CountingIds:
    """Deterministic ids for tests: ``resp_0001``, ``msg_0002`` ..."""

    __slots__ = ("_n",)

    def __init__(self) -> None:
        self._n = 0

    def __call__(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n:04d}"


def system_clock() -> int:
    """Unix time in whole seconds, as OpenAI's ``created_at``."""
    return int(time.time())


class FixedClock:
    __slots__ = ("now",)

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now
