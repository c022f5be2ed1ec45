"""The admin API's failed-authentication lockout: counting, expiry and bounded memory."""

from __future__ import annotations

from services.ingress.admin.lockout import AuthLockout


class FakeClock:
    """Monotonic seconds that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_locked_out_at_the_limit_for_the_window() -> None:
    clock = FakeClock()
    lockout = AuthLockout(3, 60, clock=clock)
    assert [lockout.record_failure("10.0.0.1") for _ in range(3)] == [False, False, True]
    assert lockout.retry_after("10.0.0.1") == 60
    assert lockout.retry_after("10.0.0.2") is None
    clock.now += 59.5
    assert lockout.retry_after("10.0.0.1") == 0.5
    clock.now += 0.5
    assert lockout.retry_after("10.0.0.1") is None
    # Counting starts afresh after the lockout.
    assert lockout.record_failure("10.0.0.1") is False


def test_failures_spread_over_more_than_the_window_lock_nothing_out() -> None:
    clock = FakeClock()
    lockout = AuthLockout(3, 60, clock=clock)
    for _ in range(10):
        assert lockout.record_failure("10.0.0.1") is False
        assert lockout.record_failure("10.0.0.1") is False
        clock.now += 61
    assert lockout.retry_after("10.0.0.1") is None


def test_memory_is_bounded_however_many_addresses_fail() -> None:
    clock = FakeClock()
    lockout = AuthLockout(3, 60, max_addresses=100, clock=clock)
    for n in range(10_000):
        lockout.record_failure(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        assert len(lockout) <= 100
    # The most recent failures are the ones remembered.
    for _ in range(2):
        lockout.record_failure("10.0.39.15")  # the 10 000th address: its third failure
    assert lockout.retry_after("10.0.39.15") == 60


def test_expired_records_are_forgotten() -> None:
    clock = FakeClock()
    lockout = AuthLockout(3, 60, clock=clock)
    for n in range(50):
        lockout.record_failure(f"10.0.0.{n}")
    clock.now += 61
    lockout.record_failure("10.0.1.1")
    assert len(lockout) == 1
