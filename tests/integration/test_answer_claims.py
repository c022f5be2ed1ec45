"""A lead's message is answered by one reply, even when two runs read overlapping sets."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from shared.models import Bubble, SendCommand, utcnow
from shared.repositories.replies import AnsweredElsewhere, ReplyRepository
from shared.store import Store


async def test_overlapping_runs_answer_each_message_once(store: Store) -> None:
    replies = ReplyRepository(store)
    runs = {
        "rpl_slow": ["msg_1", "msg_2"],  # the run that lost its lease, still working
        "rpl_new": ["msg_1", "msg_2", "msg_3"],  # the run that took the lease over
    }
    outcomes = await asyncio.gather(
        *(
            replies.claim_answers("org_1", reply, answers, timedelta(minutes=2))
            for reply, answers in runs.items()
        ),
        return_exceptions=True,
    )
    winners = [r for r, o in zip(runs, outcomes, strict=True) if o is None]
    assert len(winners) <= 1, outcomes
    claims = await store.db["answer_claims"].find({}).to_list()
    # Nothing is half-claimed by the loser: every claim belongs to the one winner.
    assert {c["reply_id"] for c in claims} <= set(winners)
    # Either way a later attempt of the same reply is fine and another one is refused.
    if winners:
        await replies.claim_answers("org_1", winners[0], runs[winners[0]], timedelta(minutes=2))
        with pytest.raises(AnsweredElsewhere):
            await replies.claim_answers("org_1", "rpl_other", ["msg_1"], timedelta(minutes=2))


async def test_a_dead_runs_claim_is_taken_over_once_stale(store: Store) -> None:
    replies = ReplyRepository(store)
    await store.db["answer_claims"].insert_one(
        {
            "_id": "msg_9",
            "org_id": "org_1",
            "reply_id": "rpl_dead",
            "at": utcnow() - timedelta(minutes=5),
        }
    )
    await replies.claim_answers("org_1", "rpl_alive", ["msg_9"], timedelta(minutes=2))
    claim = await store.db["answer_claims"].find_one({"_id": "msg_9"})
    assert claim is not None and claim["reply_id"] == "rpl_alive"


async def test_a_stored_replys_claim_is_never_taken_over(store: Store) -> None:
    replies = ReplyRepository(store)
    command = SendCommand(
        event_id="rpl_done",
        command_id="rpl_done",
        org_id="org_1",
        agent_id="agt_1",
        thread_id="thr_1",
        lead_id="lead_1",
        destination="+6591234567",
        bubbles=[Bubble(text="Hi")],
        created_at=utcnow() - timedelta(minutes=10),
    )
    await replies.claim_answers("org_1", "rpl_done", ["msg_7"], timedelta(minutes=2))
    await replies.create(command, ["msg_7"], "rules")
    await store.db["answer_claims"].update_one(
        {"_id": "msg_7"}, {"$set": {"at": utcnow() - timedelta(minutes=10)}}
    )
    with pytest.raises(AnsweredElsewhere):
        await replies.claim_answers("org_1", "rpl_late", ["msg_7"], timedelta(minutes=2))
