"""Per-agent send rates hold across three outbound replicas; a throttled agent slows nobody."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from cli.local_stack import StackProcesses
from shared.broker import Broker
from shared.identity import WhatsAppUser
from shared.models import Bubble, SendCommand, utcnow
from shared.repositories.leads import LeadRepository, Sighting
from shared.repositories.threads import ThreadRepository
from tests.e2e.conftest import OnboardedAgent, Stack, free_port
from tests.e2e.test_pipeline import eventually, new_lead


async def backlog(stack: Stack, agent: OnboardedAgent, count: int) -> list[SendCommand]:
    """One reply each to `count` leads who wrote a moment ago."""
    leads, threads = LeadRepository(stack.store), ThreadRepository(stack.store)
    commands = []
    now = utcnow()
    for _ in range(count):
        phone = f"+{new_lead()}"
        lead, _ = await leads.resolve(
            WhatsAppUser(phone=phone),
            Sighting(
                org_id=agent.org.id,
                agent_id=agent.agent.id,
                portfolio=f"agent:{agent.agent.id}",
                at=now,
                name=None,
                source={"source": "organic"},
            ),
        )
        thread, _ = await threads.resolve(
            org_id=agent.org.id,
            agent_id=agent.agent.id,
            lead_id=lead.id,
            at=now,
            source={"source": "organic"},
        )
        await threads.touch_inbound(agent.org.id, thread.id, now)
        command_id = f"rpl_{uuid.uuid4().hex}"
        commands.append(
            SendCommand(
                event_id=command_id,
                command_id=command_id,
                org_id=agent.org.id,
                agent_id=agent.agent.id,
                thread_id=thread.id,
                lead_id=lead.id,
                destination=phone,
                bubbles=[Bubble(text="Thanks, noted!")],
                created_at=now,
            )
        )
    return commands


def achieved_rate(sent: list[dict[str, Any]]) -> float:
    """Messages per second between the first and the last send at the sandbox."""
    times = sorted(datetime.fromisoformat(m["at"].replace("Z", "+00:00")) for m in sent)
    return (len(times) - 1) / (times[-1] - times[0]).total_seconds()


async def test_agent_rates_hold_across_three_replicas_and_a_slow_agent_delays_nobody(
    stack: Stack,
) -> None:
    slow, steady, busy = [await stack.onboard() for _ in range(3)]
    limits = {slow.agent.id: 1.0, steady.agent.id: 5.0, busy.agent.id: 10.0}
    counts = {slow.agent.id: 12, steady.agent.id: 25, busy.agent.id: 50}
    agents = {a.agent.id: a for a in (slow, steady, busy)}
    for agent_id, rate in limits.items():
        await stack.admin(
            "PATCH", f"/v1/agents/{agent_id}", agents[agent_id].org_key, {"rate_per_second": rate}
        )
    commands = {
        agent_id: await backlog(stack, agents[agent_id], counts[agent_id]) for agent_id in limits
    }

    replicas = StackProcesses(
        {**stack.processes.env, "OUTBOUND_PORT": str(free_port())}, stack.processes.sandbox_port
    )
    replicas.start(("outbound",), sandbox=False)
    more = StackProcesses(
        {**stack.processes.env, "OUTBOUND_PORT": str(free_port())}, stack.processes.sandbox_port
    )
    more.start(("outbound",), sandbox=False)
    broker = Broker(stack.settings, "test")
    try:
        await replicas.wait_ready()
        await more.wait_ready()
        await broker.connect()
        # The slow agent's backlog goes first: it must not hold the others up.
        for agent_id in (slow.agent.id, steady.agent.id, busy.agent.id):
            for command in commands[agent_id]:
                await broker.publish(command, message_id=command.command_id)

        async def all_sent() -> dict[str, list[dict[str, Any]]]:
            return {
                agent_id: await stack.control(
                    "GET", "/sandbox/v1/messages", params={"app": agents[agent_id].app}
                )
                for agent_id in limits
            }

        sent = await eventually(
            all_sent, lambda s: all(len(s[a]) == counts[a] for a in limits), timeout=60
        )
    finally:
        await broker.close()
        replicas.stop()
        more.stop()

    for agent_id, rate in limits.items():
        metrics = await stack.control(
            "GET", "/sandbox/v1/metrics", params={"app": agents[agent_id].app}
        )
        achieved = achieved_rate(sent[agent_id])
        print(  # the figures the closing note reports (pytest -s)
            f"limit {rate}/s: most in any one-second window {metrics['max_in_any_second']}, "
            f"achieved {achieved:.2f}/s over {len(sent[agent_id])} sends"
        )
        assert metrics["max_in_any_second"] <= rate, (agent_id, metrics["max_in_any_second"])
        # Each agent keeps sending at a good part of its own limit, the slow one's backlog
        # (published first) notwithstanding; how close it gets is for the benchmark to
        # measure on a quiet machine (typically 90-97 %), not for a test on a busy one.
        assert achieved >= 0.25 * rate, (rate, achieved)
    # The throttled agent delays nobody: the others are done long before it.
    last = {a: max(m["at"] for m in sent[a]) for a in limits}
    assert max(last[steady.agent.id], last[busy.agent.id]) < last[slow.agent.id], last
