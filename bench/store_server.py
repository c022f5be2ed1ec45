"""A private MongoDB-compatible server for one benchmark run (the local FerretDB build on a
free port, its data in a temporary folder), so that other users of the shared local server
neither slow the figures down nor are slowed down by them."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cli.local_stack import ferretdb_binary
from shared.settings import CHECKOUT_ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the private store did not listen on {port} within {timeout} s")


@contextlib.contextmanager
def private_store() -> Iterator[str | None]:
    """Start a private FerretDB and yield its URL; yield None (use the configured store)
    when MONGODB_URL is set or no local build is cached."""
    binary = None if os.environ.get("MONGODB_URL") else ferretdb_binary()
    if binary is None:
        yield None
        return
    port = _free_port()
    # .local exists only once something was installed or started there (not in a fresh clone).
    state = CHECKOUT_ROOT / ".local"
    state.mkdir(exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="bench-store-", dir=state))
    with (data / "ferretdb.log").open("ab") as log:
        process = subprocess.Popen(
            [str(binary), "-listen", f"127.0.0.1:{port}", "-data-dir", str(data / "data")],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        _wait_port(port, 30)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(data, ignore_errors=True)
