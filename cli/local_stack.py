"""The local stack: infrastructure, the five services and the Gupshup sandbox, in the foreground.

`realtybot run` starts what is not running (RabbitMQ and FerretDB through
`infra/local-infra.sh`), migrates, declares the topology, starts every process, makes sure
a demo organization and agent exist, and stops everything it started on Ctrl-C.
`realtybot chat` lets a person type as a lead and prints the bot's replies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from shared.crypto import KeyRing
from shared.logs import get_logger
from shared.onboarding import callback_url
from shared.phones import wa_id
from shared.repositories.agents import Agent, AgentRepository, Persona
from shared.repositories.organizations import OrganizationRepository, OrganizationSettings
from shared.settings import CHECKOUT_ROOT, Settings
from shared.store import Store

log = get_logger(__name__)

SERVICES = ("ingress", "router", "dedup", "brain", "outbound")
RESTART_BASE_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0
DEMO_FILE = CHECKOUT_ROOT / ".local" / "demo.json"
DEMO_ORG = "Demo Realty"
DEMO_APP = "DemoRealtySG"
DEMO_NUMBER = "+6591110001"
DEMO_API_KEY = "demo-gupshup-key"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on the port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class StackProcesses:
    """The services and the sandbox as child processes with their own environment."""

    env: dict[str, str]
    sandbox_port: int
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    # Supervision: when each dead process may start again, and its consecutive restarts.
    restart_at: dict[str, float] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    started_at: dict[str, float] = field(default_factory=dict)

    def start(self, names: tuple[str, ...] = SERVICES, sandbox: bool = True) -> None:
        """Start the given services (and the sandbox)."""
        if sandbox:
            self._spawn(
                "sandbox",
                [
                    sys.executable,
                    "-m",
                    "sandbox",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.sandbox_port),
                ],
            )
        for name in names:
            self._spawn(name, [sys.executable, "-m", f"services.{name}"])

    def supervise(self) -> list[str]:
        """Restart processes that died, as Kubernetes would: after 1, 2, 4 ... 30 s.

        A process that ran for a minute starts its backoff afresh. Returns the names
        restarted by this call.
        """
        now = time.monotonic()
        restarted = []
        for name, process in list(self.processes.items()):
            if process.poll() is None:
                if now - self.started_at.get(name, now) > HEALTHY_AFTER_SECONDS:
                    self.restarts.pop(name, None)
                continue
            if name not in self.restart_at:
                count = self.restarts.get(name, 0)
                delay = min(RESTART_BASE_SECONDS * 2**count, RESTART_MAX_SECONDS)
                self.restart_at[name] = now + delay
                log.warning(
                    "process exited: restarting it",
                    process=name,
                    code=process.returncode,
                    in_seconds=delay,
                    restarts=count + 1,
                )
                continue
            if now >= self.restart_at[name]:
                del self.restart_at[name]
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self._spawn(name, self.commands[name])
                restarted.append(name)
        return restarted

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.commands[name] = argv
        self.started_at[name] = time.monotonic()
        output: Any = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv,
            env=self.env,
            cwd=CHECKOUT_ROOT,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )

    def ready_urls(self) -> dict[str, str]:
        """The readiness endpoint of every started process."""
        urls = {"sandbox": f"http://127.0.0.1:{self.sandbox_port}/healthz"}
        for name in SERVICES:
            port = self.env[f"{name.upper()}_PORT"]
            urls[name] = f"http://127.0.0.1:{port}/readyz"
        return {k: v for k, v in urls.items() if k in self.processes}

    async def wait_ready(self, timeout: float = 60) -> None:
        """Wait until every process answers its readiness check."""
        deadline = time.monotonic() + timeout
        pending = dict(self.ready_urls())
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while pending:
                for name, url in list(pending.items()):
                    process = self.processes[name]
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited with code {process.returncode}")
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with http.get(url) as response:
                            if response.status == 200:
                                del pending[name]
                if pending and time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(pending)}")
                await asyncio.sleep(0.2)

    def stop(self, names: tuple[str, ...] | None = None, grace: float = 15) -> dict[str, int]:
        """SIGTERM, then SIGKILL after `grace` seconds; returns each process's exit code."""
        codes: dict[str, int] = {}
        chosen = {n: p for n, p in self.processes.items() if names is None or n in names}
        for process in chosen.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, process in chosen.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("did not stop in time: killed", process=name)
                process.kill()
                process.wait()
            if process.returncode not in (0, -signal.SIGTERM):
                log.warning("exited with an error", process=name, code=process.returncode)
            codes[name] = process.returncode
            del self.processes[name]
        return codes


def stack_env(settings: Settings, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the services run with: the current one plus the stack's settings."""
    env = dict(os.environ)
    env.update(
        {
            "AMQP_URL": str(settings.amqp_url),
            "MONGODB_URL": settings.mongodb_url,
            "MONGODB_DB": settings.mongodb_db,
            "BROKER_PREFIX": settings.broker_prefix,
            "PUBLIC_BASE_URL": str(settings.public_base_url),
            "GUPSHUP_BASE_URL": str(settings.gupshup_base_url),
            "INGRESS_PORT": str(settings.ingress_port),
            "ADMIN_PORT": str(settings.admin_port),
            "ROUTER_PORT": str(settings.router_port),
            "DEDUP_PORT": str(settings.dedup_port),
            "BRAIN_PORT": str(settings.brain_port),
            "OUTBOUND_PORT": str(settings.outbound_port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["GUPSHUP_PARTNER_BASE_URL"] = str(settings.gupshup_partner_base_url)
    optional = {
        "CREDENTIALS_KEYS": settings.credentials_keys,
        "GUPSHUP_PARTNER_EMAIL": settings.gupshup_partner_email,
        "GUPSHUP_PARTNER_PASSWORD": settings.gupshup_partner_password,
    }
    env.update({name: value for name, value in optional.items() if value})
    env.update(overrides or {})
    return env


async def create_demo_agent(
    agents: AgentRepository,
    org_id: str,
    number: str,
    app: str,
    api_key: str,
    *,
    rate_per_second: float = 20.0,
) -> tuple[Agent, str]:
    """An agent as the demo and the benchmarks have it (Jason Tan, his bot Ava), and its
    callback key."""
    return await agents.create(
        org_id=org_id,
        name="Jason Tan",
        number=number,
        gupshup_app=app,
        gupshup_api_key=api_key,
        persona=Persona(bot_name="Ava"),
        rate_per_second=rate_per_second,
    )


async def ensure_demo(settings: Settings, sandbox_url: str) -> dict[str, Any]:
    """The demo organization and agent (reused across runs) registered with the sandbox."""
    store = Store(settings)
    try:
        await store.migrate()
        orgs = OrganizationRepository(store)
        agents = AgentRepository(store, KeyRing.from_settings(settings))
        saved = json.loads(DEMO_FILE.read_text()) if DEMO_FILE.exists() else {}
        org = await orgs.get_by_slug("demo-realty")
        if org is None:
            org, api_key = await orgs.create(DEMO_ORG, OrganizationSettings())
            saved = {"api_key": api_key}
        agent = await agents.find_by_number(DEMO_NUMBER)
        if agent is None:
            agent, callback_key = await create_demo_agent(
                agents, org.id, DEMO_NUMBER, DEMO_APP, DEMO_API_KEY
            )
        elif saved.get("agent_id") == agent.id and saved.get("callback_key"):
            callback_key = saved["callback_key"]
        else:  # the key is only known at creation: issue a new one
            callback_key = await agents.rotate_callback_key(org.id, agent.id)
        saved.update(org_id=org.id, agent_id=agent.id, callback_key=callback_key)
        DEMO_FILE.parent.mkdir(parents=True, exist_ok=True)
        DEMO_FILE.write_text(json.dumps(saved))
        DEMO_FILE.chmod(0o600)
    finally:
        await store.close()
    url = callback_url(settings, callback_key)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{sandbox_url}/sandbox/v1/apps",
            json={
                "app": DEMO_APP,
                "api_key": DEMO_API_KEY,
                "number": wa_id(DEMO_NUMBER),
                "callback_url": url,
                "format": "v2",
            },
        ) as response,
    ):
        response.raise_for_status()
    return {
        "org_id": org.id,
        "agent_id": agent.id,
        "app": DEMO_APP,
        "api_key": saved.get("api_key"),
        "callback_url": url,
    }


def _infra(action: str) -> None:
    subprocess.run(
        ["bash", str(CHECKOUT_ROOT / "infra" / "local-infra.sh"), action],
        check=True,
    )


def ferretdb_binary() -> Path | None:
    """The FerretDB build `infra/local-infra.sh` caches (building it once if needed), or None
    when it cannot be built; for tests and benchmarks that run a store of their own."""
    found = subprocess.run(
        ["bash", str(CHECKOUT_ROOT / "infra" / "local-infra.sh"), "ferretdb-binary"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = Path(found.stdout.strip()) if found.returncode == 0 and found.stdout.strip() else None
    return path if path is not None and path.exists() else None


def run(settings: Settings) -> int:
    """Run the local stack until Ctrl-C."""
    if not settings.gupshup_partner_email:  # the sandbox accepts any Partner login
        settings = settings.model_copy(
            update={"gupshup_partner_email": "local@sandbox", "gupshup_partner_password": "sandbox"}
        )
    started_infra: list[str] = []
    default_amqp = str(settings.amqp_url) == "amqp://guest:guest@127.0.0.1:5672/"
    if default_amqp and not port_open(5672):
        _infra("rabbitmq-up")
        started_infra.append("rabbitmq-down")
    if settings.mongodb_url == "mongodb://127.0.0.1:27017" and not port_open(27017):
        _infra("ferretdb-up")
        started_infra.append("ferretdb-down")
    # Ctrl-C and SIGTERM stop the stack in order, even when started from a script that
    # ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sandbox_port = int(str(settings.gupshup_base_url).rstrip("/").rsplit(":", 1)[-1])
    stack = StackProcesses(
        stack_env(settings), sandbox_port, log_dir=CHECKOUT_ROOT / ".local" / "logs"
    )
    try:
        stack.start()
        asyncio.run(stack.wait_ready())
        demo = asyncio.run(ensure_demo(settings, f"http://127.0.0.1:{sandbox_port}"))
        print(
            json.dumps({"status": "ready", **demo, "logs": str(CHECKOUT_ROOT / ".local" / "logs")})
        )
        print(
            "\nThe stack is up. Talk to the bot as a lead, in another terminal:\n"
            "  make chat\n"
            "or send one message with the sandbox:\n"
            f"  curl -s localhost:{sandbox_port}/sandbox/v1/inbound -H 'content-type: "
            "application/json' \\\n"
            f'    -d \'{{"app": "{DEMO_APP}", "from": "6598887777", "name": "Rachel", '
            '"text": "Hi, any 3-bedroom condo in Tampines?"}\'\n'
            f"  curl -s 'localhost:{sandbox_port}/sandbox/v1/messages?app={DEMO_APP}'\n"
            "Ctrl-C stops everything.",
            file=sys.stderr,
        )
        while True:  # a process that dies is restarted, as in the cluster
            for name in stack.supervise():
                print(f"{name} restarted (see .local/logs/{name}.log)", file=sys.stderr)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...", file=sys.stderr)
        return 0
    finally:
        stack.stop()
        for action in started_infra:
            _infra(action)


async def chat(settings: Settings, lead: str, name: str) -> int:
    """Read lines as the lead's messages and print the bot's replies."""
    base = str(settings.gupshup_base_url).rstrip("/")
    messages_url = f"{base}/sandbox/v1/messages"
    query = {"app": DEMO_APP, "destination": lead}
    print(
        f"You are {name} ({lead}) writing to {DEMO_APP}. Type a message, Ctrl-D to quit.",
        file=sys.stderr,
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(messages_url, params=query) as response:
            seen = len(await response.json())
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return 0
            if not line.strip():
                continue
            async with http.post(
                f"{base}/sandbox/v1/inbound",
                json={"app": DEMO_APP, "from": lead, "name": name, "text": line.strip()},
            ) as response:
                result = await response.json()
                if response.status != 200 or result.get("callback_status") != 200:
                    print(f"(not delivered: {result})", file=sys.stderr)
                    continue
            deadline = time.monotonic() + 15
            got_reply = False
            while time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                async with http.get(messages_url, params=query) as response:
                    sent = await response.json()
                for message in sent[seen:]:
                    body = message.get("text") or (message.get("message") or {}).get("body")
                    print(f"bot: {body}")
                    for row in _list_rows(message):
                        print(f"     - {row}")
                    got_reply = True
                seen = len(sent)
                if got_reply:
                    await asyncio.sleep(0.5)  # a reply may have more bubbles on the way
                    async with http.get(messages_url, params=query) as response:
                        sent = await response.json()
                    for message in sent[seen:]:
                        print(f"bot: {message.get('text')}")
                    seen = len(sent)
                    break
            if not got_reply:
                print("(no reply yet; is `make run` up?)", file=sys.stderr)


def main(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch `realtybot run` and `realtybot chat`."""
    if args.local == "run":
        return run(settings)
    try:
        return asyncio.run(chat(settings, args.lead, args.name))
    except KeyboardInterrupt:
        return 0


def _list_rows(message: dict[str, Any]) -> list[str]:
    """The rows of a list message, as the lead would see them."""
    items = (message.get("message") or {}).get("items") or []
    return [str(o.get("title")) for item in items for o in item.get("options", [])]
