"""Failed-authentication limiting for the admin API.

An address that presents too many wrong keys within a window is refused for a while, even
with a right key, so keys cannot be guessed at speed (they are 256-bit random, so this is
about noise and abuse more than about odds). The state is per process: each replica limits
on its own, and nothing else needs it. Memory is bounded: the addresses whose failures are
oldest are forgotten first once `max_addresses` are tracked.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_TRACKED_ADDRESSES = 10_000


@dataclass
class _Failures:
    window_start: float
    count: int
    locked_until: float  # 0 while not locked out

    def expires_at(self, window: float) -> float:
        return max(self.window_start + window, self.locked_until)


class AuthLockout:
    """Counts failed authentications per client address and locks out the persistent."""

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._window = window_seconds
        self._max_addresses = max_addresses
        self._clock = clock
        # Ordered by last failure, oldest first, so expired records gather at the front.
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str) -> float | None:
        """Seconds the address is still locked out for, or None when it may try."""
        record = self._failures.get(address)
        if record is None:
            return None
        remaining = record.locked_until - self._clock()
        return remaining if remaining > 0 else None

    def record_failure(self, address: str) -> bool:
        """Count a wrong key presented from the address; True when this locked it out."""
        now = self._clock()
        self._forget_expired(now)
        record = self._failures.pop(address, None)
        if record is None or record.expires_at(self._window) <= now:
            record = _Failures(window_start=now, count=0, locked_until=0.0)
        record.count += 1
        locked = record.count >= self._max_failures and record.locked_until <= now
        if locked:
            record.locked_until = now + self._window
        self._failures[address] = record
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)
        return locked

    def _forget_expired(self, now: float) -> None:
        while self._failures:
            oldest = next(iter(self._failures.values()))
            if oldest.expires_at(self._window) > now:
                return
            self._failures.popitem(last=False)
