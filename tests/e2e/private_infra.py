"""A RabbitMQ node and a FerretDB server of one test's own, which it may kill and restart.

The local RabbitMQ (5672) and FerretDB (27017) serve every other test and benchmark running
on the machine, so a test that restarts its broker or store runs against these instead:
each on free ports, with its state in a directory of its own that outlives a restart (a
restarted node finds its quorum queues and their messages, a restarted store its data), and
removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import string
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from cli.local_stack import ferretdb_binary as local_ferretdb_binary
from cli.local_stack import port_open
from tests.e2e.conftest import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
PLUGINS = ("rabbitmq_consistent_hash_exchange",)


class InfraError(RuntimeError):
    """A private server could not be started or stopped."""


async def _wait_port(port: int, timeout: float, what: str, *, open_: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) != open_:
        if time.monotonic() > deadline:
            state = "listen" if open_ else "close its port"
            raise InfraError(f"{what} did not {state} on {port} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and wait for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()


def _members(session: int, name: str) -> list[int]:
    """The processes called `name` in the session a child of ours leads."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if comm == name and int(fields[3]) == session:  # fields: state ppid pgrp session
                found.append(int(entry.name))
    return found


class PrivateRabbitMQ:
    """A RabbitMQ node (`chaos<hex>@localhost`) with its own ports, state, logs and cookie."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.node = f"chaos{uuid.uuid4().hex[:8]}@localhost"
        self.env = {
            **os.environ,
            # rabbitmqctl finds the node's Erlang cookie in $HOME, as the node does.
            "HOME": str(base),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The node's AMQP URL."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _prepare(self) -> None:
        for folder in ("mnesia", "log", "plugins-expand"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            "loopback_users = none\nlog.console = false\nlog.file.level = warning\n"
        )
        (self.base / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        cookie = self.base / ".erlang.cookie"
        cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
        cookie.chmod(0o400)

    async def start(self, timeout: float = 120) -> None:
        """Start the node (first time: prepare its directory) and wait until it serves AMQP."""
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise InfraError("rabbitmq-server is not installed (make test installs it)")
        if self.starts == 0:
            self._prepare()
        output = (self.base / "log" / "server-stdout.log").open("ab")
        with output:
            self.process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self.env,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        await _wait_port(self.port, timeout, f"RabbitMQ node {self.node}")
        await self._ctl("await_startup", timeout=max(5.0, deadline - time.monotonic()))

    async def _ctl(self, *args: str, timeout: float = 60) -> str:
        """Run rabbitmqctl against this node; its stdout, or InfraError with its stderr."""
        ctl = await asyncio.create_subprocess_exec(
            str(RABBITMQ_BIN / "rabbitmqctl"),
            "-q",
            "-n",
            self.node,
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(ctl.communicate(), timeout)
        except TimeoutError:
            ctl.kill()
            await ctl.wait()
            raise InfraError(
                f"rabbitmqctl {' '.join(args)}: no answer in {timeout:.0f} s"
            ) from None
        if ctl.returncode != 0:
            raise InfraError(f"rabbitmqctl {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    async def save_queue_registry(self) -> None:
        """Write the node's quorum-queue registry to disk now, as it does every few minutes.

        RabbitMQ 3.10 keeps which Raft server holds each quorum queue in DETS tables that are
        saved periodically (about every three minutes): a node SIGKILLed sooner after a queue
        was declared comes back with that queue unavailable for good (every basic.get and
        publish times out). Call this once the topology is declared, before killing the node.
        """
        await self._ctl("eval", "[dets:sync(Table) || Table <- dets:all()].")

    async def queues(self) -> str:
        """Each queue's ready and unacknowledged messages and consumers, for a failure report."""
        return await self._ctl(
            "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers"
        )

    async def kill(self) -> None:
        """SIGKILL the node, as a crashed machine or OOM killer would.

        `rabbitmq-server` is a shell script whose child is the Erlang VM: the VM is what
        gets the signal (by its id; epmd, shared with the other nodes, is left alone).
        """
        if self.process is not None:
            for pid in _members(self.process.pid, "beam.smp"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                _kill(self.process)
            self.process = None
        await _wait_port(self.port, 30, f"RabbitMQ node {self.node}", open_=False)

    async def stop(self) -> None:
        """Stop the node gracefully (`rabbitmqctl stop`), or kill it if that fails."""
        if self.process is None:
            return
        with contextlib.suppress(InfraError):
            await self._ctl("stop", timeout=60)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.process.wait, 30)
        await self.kill()

    async def restart(self, *, hard: bool) -> None:
        """Kill (`hard`) or stop the node, then start it again on the same state."""
        await (self.kill() if hard else self.stop())
        await self.start()


class PrivateFerretDB:
    """The local FerretDB build on a free port, its SQLite files in a directory of its own."""

    def __init__(self, base: Path, binary: Path) -> None:
        self.base = base
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's MongoDB URL."""
        return f"mongodb://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the server on its port and data directory; wait until it listens."""
        (self.base / "data").mkdir(parents=True, exist_ok=True)
        with (self.base / "ferretdb.log").open("ab") as output:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "-listen",
                    f"127.0.0.1:{self.port}",
                    "-data-dir",
                    str(self.base / "data"),
                ],
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        await _wait_port(self.port, 30, "FerretDB")

    async def kill(self) -> None:
        """SIGKILL the server (its WAL keeps every acknowledged write)."""
        if self.process is not None:
            _kill(self.process)
            self.process = None
        await _wait_port(self.port, 30, "FerretDB", open_=False)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ten seconds."""
        if self.process is None:
            return
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.process.wait, 10)
        await self.kill()


def ferretdb_binary() -> Path:
    """The local FerretDB build (see `cli.local_stack.ferretdb_binary`); fails if there is none."""
    path = local_ferretdb_binary()
    if path is None:
        raise InfraError("no FerretDB build: `bash infra/local-infra.sh ferretdb-binary` failed")
    return path


@contextlib.asynccontextmanager
async def private_infra(base: Path) -> AsyncIterator[tuple[PrivateRabbitMQ, PrivateFerretDB]]:
    """A started private RabbitMQ node and FerretDB; both stopped and their state removed."""
    rabbitmq = PrivateRabbitMQ(base / "rabbitmq")
    ferretdb = PrivateFerretDB(base / "ferretdb", ferretdb_binary())
    try:
        await asyncio.gather(rabbitmq.start(), ferretdb.start())
        yield rabbitmq, ferretdb
    finally:
        await asyncio.gather(rabbitmq.stop(), ferretdb.stop(), return_exceptions=True)
        shutil.rmtree(base, ignore_errors=True)
