"""What the figures were measured on: machine, load, versions; processes' CPU and RSS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import socket
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient

from shared.settings import Settings

PACKAGES = ("aiohttp", "aio-pika", "pymongo", "pydantic", "prometheus-client", "structlog")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_bytes() -> int:
    """Total memory of the machine."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


async def server_versions(settings: Settings) -> dict[str, str]:
    """RabbitMQ's and the store's versions, as the servers announce them."""
    versions: dict[str, str] = {}
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(str(settings.amqp_url), timeout=5)
        try:
            transport = connection.transport
            if transport is not None:
                properties = transport.connection.server_properties
                versions["rabbitmq"] = str(properties.get("version", "unknown"))
        finally:
            await connection.close()
    with contextlib.suppress(Exception):
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_url, serverSelectionTimeoutMS=3000
        )
        try:
            info = await client.admin.command("buildInfo")
            versions["store"] = str(info.get("version", "unknown"))
            ferret = info.get("ferretdbVersion")
            if ferret in (None, "unknown"):
                port = int(settings.mongodb_url.rsplit(":", 1)[-1].split("/")[0])
                ferret = _version_in_executable(port, "ferretdb")
            if ferret:
                versions["ferretdb"] = str(ferret)
        finally:
            await client.close()
    return versions


async def describe_machine(settings: Settings) -> dict[str, Any]:
    """CPU count and model, memory, load, Python and key package versions, server versions."""
    packages = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_bytes": memory_bytes(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": packages,
        "servers": await server_versions(settings),
        "commit": _commit(),
    }


def _version_in_executable(port: int, name: str) -> str | None:
    """The version in the path of the executable listening on `port` (a local build names
    its version there when the server does not announce it)."""
    pid = listening_pid(port)
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        found = re.search(rf"{name}-(\d+\.\d+\.\d+)", os.readlink(f"/proc/{pid}/exe"))
        if found:
            return found.group(1)
    return None


def _commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, check=True, text=True
        )
        return out.stdout.strip()
    return None


@dataclass(frozen=True)
class ProcessSample:
    """A process's CPU seconds (user + system) and resident memory at one moment."""

    cpu_seconds: float
    rss_bytes: int


def sample_process(pid: int) -> ProcessSample | None:
    """CPU and RSS of a live process from /proc; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime) counted from 1, i.e. 11 and 12 after the name.
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return ProcessSample(cpu, int(statm.split()[1]) * PAGE_BYTES)


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (RabbitMQ's, the store's), found in /proc."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, state = parts[1], parts[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inode = parts[9]
                    break
        if inode:
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == target:
                    return int(entry.name)
    return None


class CpuWatch:
    """Samples the given processes every `interval` seconds while running (CPU share, RSS)."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: list[tuple[float, dict[str, ProcessSample]]] = []
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> dict[str, ProcessSample]:
        """Every watched process's CPU seconds and RSS now."""
        found = {name: sample_process(pid) for name, pid in self.pids.items()}
        return {name: s for name, s in found.items() if s is not None}

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.samples.append((loop.time(), self.snapshot()))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start sampling in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling (one last sample is taken)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.samples.append((asyncio.get_running_loop().time(), self.snapshot()))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds each process used between the first and the last sample."""
        if len(self.samples) < 2:
            return {}
        first, last = self.samples[0][1], self.samples[-1][1]
        return {n: last[n].cpu_seconds - first[n].cpu_seconds for n in last if n in first}

    def peak_rss(self) -> dict[str, int]:
        """The largest RSS seen per process."""
        peak: dict[str, int] = {}
        for _, snapshot in self.samples:
            for name, sample in snapshot.items():
                peak[name] = max(peak.get(name, 0), sample.rss_bytes)
        return peak
