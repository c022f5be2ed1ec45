"""`realtybot`: onboarding and operations from the command line.

Every command prints exactly one JSON object on stdout and exits 0 on success; logs go to
stderr; a failure exits non-zero with a readable message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.broker import STAGE_BINDINGS, Broker
from shared.crypto import KeyRing
from shared.gupshup.partner import partner_from_settings
from shared.identity import InvalidPortfolioId, validate_portfolio_id
from shared.logs import configure_logging, get_logger
from shared.onboarding import (
    InvalidAgentNumber,
    NewAgent,
    add_agent,
    announce_agent_change_once,
    callback_url,
    turn_on_bsuid,
)
from shared.repositories.agents import AgentConflict, AgentRepository, Persona
from shared.repositories.api_keys import ApiKeyRepository
from shared.repositories.audit import AuditLog
from shared.repositories.organizations import (
    OrganizationExists,
    OrganizationRepository,
    OrganizationSettings,
)
from shared.settings import ConfigError, Settings, load_settings
from shared.store import Store

log = get_logger("cli")


class CommandError(Exception):
    """A failure to report to the operator in one readable line."""


@contextlib.asynccontextmanager
async def opened_store(settings: Settings) -> AsyncIterator[Store]:
    """The store, closed when the command ends."""
    store = Store(settings)
    try:
        yield store
    finally:
        await store.close()


def cli_actor() -> str:
    """Who runs the command, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a container user without a passwd entry
        return "cli"


async def audit(
    store: Store, org_id: str | None, action: str, target: str, after: dict[str, Any] | None = None
) -> None:
    """Record a CLI write in the audit log."""
    await AuditLog(store).record(
        org_id=org_id, actor=cli_actor(), action=action, target=target, after=after
    )


async def org_create(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Create an organization and its first admin API key."""
    async with opened_store(settings) as store:
        try:
            org, api_key = await OrganizationRepository(store).create(
                args.name, OrganizationSettings(region=args.region, timezone=args.timezone)
            )
        except OrganizationExists as exc:
            raise CommandError(str(exc)) from None
        await audit(store, org.id, "organization.create", org.id, {"name": org.name})
    return {"org_id": org.id, "name": org.name, "slug": org.slug, "api_key": api_key}


async def agent_add(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Add an agent to an organization and print its callback URL."""
    partner = partner_from_settings(settings)
    try:
        async with opened_store(settings) as store:
            org = await OrganizationRepository(store).get(args.org)
            if org is None:
                raise CommandError(f"no organization {args.org}")
            new = NewAgent(
                org_id=org.id,
                name=args.name,
                number=args.number,
                gupshup_app=args.gupshup_app,
                gupshup_api_key=args.gupshup_api_key,
                gupshup_app_id=args.gupshup_app_id,
                business_portfolio_id=args.business_portfolio_id,
                persona=Persona(bot_name=args.bot_name),
                rate_per_second=args.rate,
                notify_number=args.notify_number,
                timezone=args.timezone or org.settings.timezone,
            )
            try:
                onboarded = await add_agent(
                    new,
                    region=org.settings.region,
                    agents=AgentRepository(store, KeyRing.from_settings(settings)),
                    audit=AuditLog(store),
                    partner=partner,
                    settings=settings,
                    actor=cli_actor(),
                )
            except (InvalidAgentNumber, AgentConflict) as exc:
                raise CommandError(str(exc)) from None
    finally:
        if partner is not None:
            await partner.close()
    return {
        "agent_id": onboarded.agent.id,
        "org_id": org.id,
        "number": onboarded.agent.number,
        "callback_url": onboarded.callback_url,
        "callback_subscription": onboarded.callback_subscription,
        "business_portfolio_id": onboarded.agent.business_portfolio_id,
        "bsuid_enabled": onboarded.agent.bsuid_enabled,
        "bsuid_reason": onboarded.agent.bsuid_reason,
    }


async def agent_enable_bsuid(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Turn the BSUID flags of an agent's Gupshup app on (again), e.g. after a failure; the
    outcome is recorded on the agent either way, and a failure exits non-zero."""
    partner = partner_from_settings(settings)
    try:
        async with opened_store(settings) as store:
            agents = AgentRepository(store)
            agent = await agents.get_in_org(args.org, args.agent)
            if agent is None:
                raise CommandError(f"no agent {args.agent} in organization {args.org}")
            agent = await turn_on_bsuid(partner, agents, agent)
            outcome = {"bsuid_enabled": agent.bsuid_enabled, "bsuid_reason": agent.bsuid_reason}
            await audit(store, args.org, "agent.bsuid", agent.id, outcome)
    finally:
        if partner is not None:
            await partner.close()
    if not agent.bsuid_enabled:  # recorded on the agent; the operator is told here
        raise CommandError(f"BSUIDs not enabled for agent {agent.id}: {agent.bsuid_reason}")
    return {"agent_id": agent.id, "gupshup_app_id": agent.gupshup_app_id, **outcome}


async def agent_rotate_key(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Issue a new callback key; the old URL stops working."""
    async with opened_store(settings) as store:
        try:
            key = await AgentRepository(store).rotate_callback_key(args.org, args.agent)
        except LookupError:
            raise CommandError(f"no agent {args.agent} in organization {args.org}") from None
        await audit(store, args.org, "agent.callback_key", args.agent)
    await announce_agent_change_once(settings, args.org, args.agent)
    return {"agent_id": args.agent, "callback_url": callback_url(settings, key)}


async def agent_set_status(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Suspend an agent (inbound kept, nothing answered or sent) or reactivate it."""
    status = "suspended" if args.action == "suspend" else "active"
    async with opened_store(settings) as store:
        changed = await AgentRepository(store).update(args.org, args.agent, {"status": status})
        if changed is None:
            raise CommandError(f"no agent {args.agent} in organization {args.org}")
        await audit(store, args.org, f"agent.{args.action}", args.agent, {"status": status})
    await announce_agent_change_once(settings, args.org, args.agent)
    return {"agent_id": args.agent, "status": status}


async def platform_key_create(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Issue a platform-operator key (it can create organizations)."""
    async with opened_store(settings) as store:
        key, plain = await ApiKeyRepository(store).issue("platform", None, args.name)
        await audit(store, None, "platform_key.create", key.id, key.public())
    return {"key_id": key.id, "api_key": plain}


async def api_key_create(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Issue another API key of an organization."""
    async with opened_store(settings) as store:
        if await OrganizationRepository(store).get(args.org) is None:
            raise CommandError(f"no organization {args.org}")
        key, plain = await ApiKeyRepository(store).issue("org", args.org, args.name)
        await audit(store, args.org, "api_key.create", key.id, key.public())
    return {"key_id": key.id, "org_id": args.org, "api_key": plain}


async def api_key_revoke(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Revoke an organization's API key."""
    async with opened_store(settings) as store:
        key = await ApiKeyRepository(store).revoke(args.org, args.key)
        if key is None:
            raise CommandError(f"no API key {args.key} in organization {args.org}")
        await audit(store, args.org, "api_key.revoke", key.id, key.public())
    return {"key_id": key.id, "revoked": True}


async def keys_rotate(settings: Settings, _args: argparse.Namespace) -> dict[str, Any]:
    """Re-encrypt every stored credential under the active key of CREDENTIALS_KEYS."""
    ring = KeyRing.from_settings(settings)
    async with opened_store(settings) as store:
        agents, credentials = await AgentRepository(store, ring).reencrypt_all()
        await audit(
            store,
            None,
            "credentials.rotate",
            ring.active_id,
            {"agents": agents, "credentials": credentials},
        )
    return {"active_key": ring.active_id, "agents": agents, "credentials": credentials}


async def migrate(settings: Settings, _args: argparse.Namespace) -> dict[str, Any]:
    """Create or update the store's collections and indexes."""
    async with opened_store(settings) as store:
        applied = await store.migrate()
    return {"database": settings.mongodb_db, "applied": applied}


async def topology_declare(settings: Settings, _args: argparse.Namespace) -> dict[str, Any]:
    """Declare the broker's exchanges and queues."""
    broker = Broker(settings, "cli")
    await broker.connect()
    try:
        await broker.declare_topology()
    finally:
        await broker.close()
    return {"prefix": settings.broker_prefix, "exchange": broker.topology.exchange}


async def dlq_stats(settings: Settings, _args: argparse.Namespace) -> dict[str, Any]:
    """How many messages wait in each stage's dead-letter queue."""
    broker = Broker(settings, "cli")
    await broker.connect()
    try:
        depths = {
            stage: await broker.queue_depth(broker.topology.dead_letter_queue(stage))
            for stage in STAGE_BINDINGS
        }
    finally:
        await broker.close()
    return {"dead_letters": depths}


async def dlq_replay(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Send a stage's dead-lettered messages through the stage again (after a fix)."""
    broker = Broker(settings, "cli")
    await broker.connect()
    try:
        count = await broker.replay_dead_letters(args.stage, args.limit)
    finally:
        await broker.close()
    return {"stage": args.stage, "replayed": count}


def _positive_rate(value: str) -> float:
    rate = float(value)
    if not 0 < rate <= 1000:
        raise argparse.ArgumentTypeError("must be between 0 and 1000 messages per second")
    return rate


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {value!r}") from None
    return value


def _portfolio_id(value: str) -> str:
    try:
        return validate_portfolio_id(value)
    except InvalidPortfolioId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = argparse.ArgumentParser(prog="realtybot", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    org = commands.add_parser("org", help="organizations").add_subparsers(
        dest="action", required=True
    )
    create = org.add_parser("create", help="create an organization and its first API key")
    create.add_argument("--name", required=True)
    create.add_argument("--region", default="SG")
    create.add_argument("--timezone", type=_time_zone, default="Asia/Singapore")
    create.set_defaults(run=org_create)

    agent = commands.add_parser("agent", help="agents").add_subparsers(dest="action", required=True)
    add = agent.add_parser("add", help="add an agent and print its callback URL")
    add.add_argument("--org", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--number", required=True)
    add.add_argument("--gupshup-app", required=True)
    add.add_argument("--gupshup-api-key", required=True)
    add.add_argument("--gupshup-app-id")
    add.add_argument(
        "--business-portfolio-id",
        type=_portfolio_id,
        help="Meta business portfolio of the number (its agents share leads' user IDs)",
    )
    add.add_argument("--bot-name", default="Ava")
    add.add_argument("--rate", type=_positive_rate, default=20.0)
    add.add_argument("--notify-number")
    add.add_argument(
        "--timezone", type=_time_zone, help="IANA time zone (default: the organization's)"
    )
    add.set_defaults(run=agent_add)
    bsuid = agent.add_parser(
        "enable-bsuid", help="turn on business-scoped user IDs in the agent's Gupshup webhooks"
    )
    bsuid.add_argument("--org", required=True)
    bsuid.add_argument("--agent", required=True)
    bsuid.set_defaults(run=agent_enable_bsuid)
    rotate = agent.add_parser("rotate-key", help="issue a new callback URL for an agent")
    rotate.add_argument("--org", required=True)
    rotate.add_argument("--agent", required=True)
    rotate.set_defaults(run=agent_rotate_key)
    for action, text in (
        ("suspend", "stop answering and sending for an agent"),
        ("activate", "let a suspended agent work again"),
    ):
        status = agent.add_parser(action, help=text)
        status.add_argument("--org", required=True)
        status.add_argument("--agent", required=True)
        status.set_defaults(run=agent_set_status)

    platform = commands.add_parser("platform-key", help="platform-operator keys").add_subparsers(
        dest="action", required=True
    )
    platform_create = platform.add_parser("create", help="issue a key that creates organizations")
    platform_create.add_argument("--name", default="platform operator")
    platform_create.set_defaults(run=platform_key_create)

    api_key = commands.add_parser("api-key", help="organization API keys").add_subparsers(
        dest="action", required=True
    )
    key_create = api_key.add_parser("create", help="issue another key of an organization")
    key_create.add_argument("--org", required=True)
    key_create.add_argument("--name", default="admin")
    key_create.set_defaults(run=api_key_create)
    key_revoke = api_key.add_parser("revoke", help="revoke a key")
    key_revoke.add_argument("--org", required=True)
    key_revoke.add_argument("--key", required=True, help="the key id")
    key_revoke.set_defaults(run=api_key_revoke)

    keys = commands.add_parser("keys", help="the credentials key ring").add_subparsers(
        dest="action", required=True
    )
    keys.add_parser("rotate", help="re-encrypt every credential under the active key").set_defaults(
        run=keys_rotate
    )

    commands.add_parser("migrate", help="create the store's indexes").set_defaults(run=migrate)
    topology = commands.add_parser("topology", help="broker topology").add_subparsers(
        dest="action", required=True
    )
    topology.add_parser("declare", help="declare exchanges and queues").set_defaults(
        run=topology_declare
    )

    dlq = commands.add_parser("dlq", help="dead-letter queues").add_subparsers(
        dest="action", required=True
    )
    dlq.add_parser("stats", help="messages waiting per stage").set_defaults(run=dlq_stats)
    replay = dlq.add_parser("replay", help="re-process a stage's dead letters")
    replay.add_argument("--stage", required=True, choices=sorted(STAGE_BINDINGS))
    replay.add_argument("--limit", type=int, default=None)
    replay.set_defaults(run=dlq_replay)

    run = commands.add_parser("run", help="run the whole local stack in the foreground")
    run.set_defaults(run=None, local="run")
    chat = commands.add_parser("chat", help="talk to the local bot as a lead")
    chat.add_argument("--from", dest="lead", default="6598887777", help="the lead's number")
    chat.add_argument("--name", default="Rachel Lim")
    chat.set_defaults(run=None, local="chat")
    return parser


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `realtybot` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"realtybot: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, "console" if sys.stderr.isatty() else "json")
    if args.run is None:
        from cli import local_stack  # the local stack is only for development machines

        raise SystemExit(local_stack.main(settings, args))
    command: Command = args.run
    try:
        result = asyncio.run(command(settings, args))
    except (CommandError, ConfigError) as exc:
        print(f"realtybot: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as exc:
        print(f"realtybot: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
