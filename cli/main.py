"""`realtybot`: onboarding and operations from the command line.

Every command prints exactly one JSON object on stdout and exits 0 on success; logs go to
stderr; a failure exits non-zero with a readable message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from shared.broker import STAGE_BINDINGS, Broker
from shared.crypto import KeyRing
from shared.logs import configure_logging
from shared.phones import InvalidPhoneNumber, normalize_phone
from shared.repositories.agents import AgentNumberTaken, AgentRepository, Persona
from shared.repositories.organizations import (
    OrganizationExists,
    OrganizationRepository,
    OrganizationSettings,
)
from shared.settings import ConfigError, Settings, load_settings
from shared.store import Store


class CommandError(Exception):
    """A failure to report to the operator in one readable line."""


def callback_url(settings: Settings, callback_key: str) -> str:
    """The URL Gupshup must post the agent's events to."""
    return f"{str(settings.public_base_url).rstrip('/')}/v1/webhooks/gupshup/{callback_key}"


async def org_create(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Create an organization and its first admin API key."""
    store = Store(settings)
    try:
        org, api_key = await OrganizationRepository(store).create(
            args.name, OrganizationSettings(region=args.region, timezone=args.timezone)
        )
    except OrganizationExists as exc:
        raise CommandError(str(exc)) from None
    finally:
        await store.close()
    return {"org_id": org.id, "name": org.name, "slug": org.slug, "api_key": api_key}


async def agent_add(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Add an agent to an organization and print its callback URL."""
    store = Store(settings)
    try:
        org = await OrganizationRepository(store).get(args.org)
        if org is None:
            raise CommandError(f"no organization {args.org}")
        try:
            number = normalize_phone(args.number, org.settings.region)
            notify = (
                normalize_phone(args.notify_number, org.settings.region)
                if args.notify_number
                else None
            )
        except InvalidPhoneNumber as exc:
            raise CommandError(str(exc)) from None
        repository = AgentRepository(store, KeyRing.from_settings(settings))
        try:
            agent, key = await repository.create(
                org_id=org.id,
                name=args.name,
                number=number,
                gupshup_app=args.gupshup_app,
                gupshup_api_key=args.gupshup_api_key,
                gupshup_app_id=args.gupshup_app_id,
                persona=Persona(bot_name=args.bot_name),
                rate_per_second=args.rate,
                notify_number=notify,
            )
        except AgentNumberTaken as exc:
            raise CommandError(str(exc)) from None
    finally:
        await store.close()
    return {
        "agent_id": agent.id,
        "org_id": org.id,
        "number": agent.number,
        "callback_url": callback_url(settings, key),
    }


async def agent_rotate_key(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Issue a new callback key; the old URL stops working."""
    store = Store(settings)
    try:
        key = await AgentRepository(store).rotate_callback_key(args.org, args.agent)
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    finally:
        await store.close()
    return {"agent_id": args.agent, "callback_url": callback_url(settings, key)}


async def migrate(settings: Settings, _args: argparse.Namespace) -> dict[str, Any]:
    """Create or update the store's collections and indexes."""
    store = Store(settings)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
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
    create.add_argument("--timezone", default="Asia/Singapore")
    create.set_defaults(run=org_create)

    agent = commands.add_parser("agent", help="agents").add_subparsers(dest="action", required=True)
    add = agent.add_parser("add", help="add an agent and print its callback URL")
    add.add_argument("--org", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--number", required=True)
    add.add_argument("--gupshup-app", required=True)
    add.add_argument("--gupshup-api-key", required=True)
    add.add_argument("--gupshup-app-id")
    add.add_argument("--bot-name", default="Ava")
    add.add_argument("--rate", type=_positive_rate, default=20.0)
    add.add_argument("--notify-number")
    add.set_defaults(run=agent_add)
    rotate = agent.add_parser("rotate-key", help="issue a new callback URL for an agent")
    rotate.add_argument("--org", required=True)
    rotate.add_argument("--agent", required=True)
    rotate.set_defaults(run=agent_rotate_key)

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
