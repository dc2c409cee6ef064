"""What a server or stack only knows once it is started: an address, a port, a start time."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def once_started(value: T | None, not_started: Exception) -> T:
    """``value`` as a start set it; ``not_started`` is raised while it is still unset."""
    if value is None:
        raise not_started
    return value
