"""The local stack restarts a process that dies, with a growing backoff, as Kubernetes does."""

from __future__ import annotations

import itertools
import os
import sys
import time

import pytest

from cli import local_stack
from cli.local_stack import StackProcesses


def test_a_dead_process_is_restarted_with_backoff_and_logged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local_stack, "RESTART_BASE_SECONDS", 0.2)
    stack = StackProcesses(env=dict(os.environ), sandbox_port=0)
    stack._spawn("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"])
    restarted_at: list[float] = []
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        if stack.supervise():
            restarted_at.append(time.monotonic() - started)
        time.sleep(0.02)
    # Backoff 0.2, 0.4, 0.8 s (plus the process's own start): three restarts in 2 s, not more.
    assert 2 <= len(restarted_at) <= 3, restarted_at
    gaps = [b - a for a, b in itertools.pairwise(restarted_at)]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert "process exited: restarting it" in capsys.readouterr().out
    stack.stop()
    assert stack.supervise() == [] and stack.processes == {}


def test_a_healthy_process_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = StackProcesses(env=dict(os.environ), sandbox_port=0)
    stack._spawn("steady", [sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for _ in range(10):
            assert stack.supervise() == []
            time.sleep(0.05)
    finally:
        codes = stack.stop(grace=5)
    assert codes["steady"] != 0  # stopped by us, not exited on its own
