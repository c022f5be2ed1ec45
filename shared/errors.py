"""Exceptions whose meaning the broker layer decides: dead-letter, defer or retry."""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying cannot help: the message goes straight to the stage's dead-letter queue."""


class UnknownAgent(PermanentError):
    """No active agent matches the event's callback key or app identity."""


class Defer(Exception):
    """Not now, without counting an attempt (for example, the thread's lease is held)."""

    def __init__(self, reason: str, delay_ms: int | None = None) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


class TransientError(Exception):
    """Worth retrying later (a dependency is briefly unavailable)."""
