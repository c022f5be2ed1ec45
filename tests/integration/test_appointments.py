"""The appointment repository against the real store: an agent's booked time never overlaps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import combinations

import pytest
from pymongo.errors import DuplicateKeyError

from shared.repositories.appointments import (
    STRAY_AFTER,
    Appointment,
    AppointmentClosed,
    AppointmentRepository,
    InvalidAppointmentTime,
    UnknownAppointment,
    granule_id,
)
from shared.settings import Settings
from shared.store import Store

ORG, OTHER_ORG = "org_apt", "org_other"
DAY = datetime(2030, 1, 7, tzinfo=UTC)  # a Monday, far enough ahead to stay upcoming


def at(hour: int, minute: int = 0, day: int = 0) -> datetime:
    """A time on the test's day (UTC)."""
    return DAY + timedelta(days=day, hours=hour, minutes=minute)


def new_apt() -> str:
    """A fresh appointment id."""
    return f"apt_{uuid.uuid4().hex}"


@pytest.fixture
def agent() -> str:
    """An agent of the organization, unique to the test."""
    return f"agt_{uuid.uuid4().hex}"


async def book(
    repo: AppointmentRepository,
    agent_id: str,
    start: datetime,
    end: datetime,
    *,
    org_id: str = ORG,
    appointment_id: str | None = None,
    thread_id: str = "thr_1",
) -> Appointment | None:
    """Book for a lead of the organization."""
    return await repo.book(
        org_id, agent_id, "led_1", thread_id, start, end, appointment_id or new_apt()
    )


async def claims(store: Store, agent_id: str) -> dict[str, str]:
    """The agent's claimed granules: claim id -> the appointment holding it."""
    return {
        doc["_id"]: doc["appointment_id"]
        async for doc in store.db["appointment_slots"].find({"agent_id": agent_id})
    }


def ids_of(agent_id: str, *times: datetime) -> set[str]:
    """The claim ids of these granule starts."""
    return {granule_id(agent_id, t) for t in times}


async def test_booking_claims_each_quarter_hour_it_touches(store: Store, agent: str) -> None:
    repo = AppointmentRepository(store)
    booked = await book(repo, agent, at(10), at(10, 30))
    assert booked is not None
    assert booked.status == "booked" and (booked.start, booked.end) == (at(10), at(10, 30))
    assert booked.start.tzinfo is not None and booked.sequence == 0
    assert len(booked.ics_token) >= 32  # at least 128 bits of randomness, URL-safe
    assert await claims(store, agent) == dict.fromkeys(ids_of(agent, at(10), at(10, 15)), booked.id)
    assert await repo.get(ORG, booked.id) == booked
    assert await repo.by_ics_token(booked.ics_token) == booked


async def test_an_overlapping_booking_is_refused_and_leaves_no_claim(
    store: Store, agent: str
) -> None:
    repo = AppointmentRepository(store)
    first = await book(repo, agent, at(10), at(11))
    assert first is not None
    # Its first half is free, its second overlaps: nothing of it may stay claimed.
    assert await book(repo, agent, at(9, 30), at(10, 30)) is None
    assert await book(repo, agent, at(10, 45), at(11, 30)) is None
    assert await book(repo, agent, at(10, 10), at(10, 20)) is None
    held = await claims(store, agent)
    assert held == dict.fromkeys(
        ids_of(agent, at(10), at(10, 15), at(10, 30), at(10, 45)), first.id
    )
    # Back to back is no overlap; another agent's time is its own.
    assert await book(repo, agent, at(9, 30), at(10)) is not None
    assert await book(repo, agent, at(11), at(11, 30)) is not None
    assert await book(repo, f"agt_{uuid.uuid4().hex}", at(10), at(11)) is not None


async def test_booking_again_with_the_same_id_returns_the_same_appointment(
    store: Store, agent: str
) -> None:
    repo = AppointmentRepository(store)
    appointment_id = new_apt()
    first = await book(repo, agent, at(10), at(10, 30), appointment_id=appointment_id)
    again = await book(repo, agent, at(10), at(10, 30), appointment_id=appointment_id)
    assert first is not None and again == first
    # Twins racing with one id (a redelivered run beside the first): one appointment.
    twin_id = new_apt()
    twins = await asyncio.gather(
        *(book(repo, agent, at(12), at(12, 30), appointment_id=twin_id) for _ in range(5))
    )
    assert all(t is not None and t.id == twin_id for t in twins)
    assert len({t.ics_token for t in twins if t}) == 1
    assert await store.db["appointments"].count_documents({"_id": twin_id}) == 1
    # Even once cancelled, the id names that appointment: a re-run does not book again.
    await repo.cancel(ORG, appointment_id)
    rerun = await book(repo, agent, at(10), at(10, 30), appointment_id=appointment_id)
    assert rerun is not None and rerun.status == "cancelled"


@pytest.fixture
async def replicas(settings: Settings, store: Store) -> AsyncIterator[list[AppointmentRepository]]:
    """Repositories over separate clients of the test's database, as replicas would have."""
    stores = [Store(settings) for _ in range(4)]
    yield [AppointmentRepository(s) for s in stores]
    for s in stores:
        await s.close()


async def test_twenty_concurrent_bookings_of_overlapping_times_never_overlap(
    store: Store, agent: str, replicas: list[AppointmentRepository]
) -> None:
    # Five separate hours; four bookings want each, shifted by a quarter hour, so every
    # booking overlaps the other three of its hour and nothing else.
    wanted = [
        (at(9 + 2 * hour, shift), at(9 + 2 * hour, shift + 30))
        for hour in range(5)
        for shift in (0, 15, 0, 15)
    ]
    ids = [new_apt() for _ in wanted]
    results = await asyncio.gather(
        *(
            asyncio.create_task(
                book(replicas[n % len(replicas)], agent, start, end, appointment_id=ids[n])
            )
            for n, (start, end) in enumerate(wanted)
        )
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 5, [(r.start, r.end) for r in winners]
    for a, b in combinations(winners, 2):
        assert a.end <= b.start or b.end <= a.start, f"{a} overlaps {b}"
    stored = {doc["_id"] async for doc in store.db["appointments"].find({"agent_id": agent})}
    assert stored == {w.id for w in winners}
    held = await claims(store, agent)
    assert set(held.values()) == stored  # the losers left nothing claimed
    assert len(held) == 2 * len(winners)  # two quarter hours each


async def test_twenty_concurrent_bookings_of_one_time_have_one_winner(
    store: Store, agent: str, replicas: list[AppointmentRepository]
) -> None:
    results = await asyncio.gather(
        *(
            asyncio.create_task(book(replicas[n % len(replicas)], agent, at(15), at(16)))
            for n in range(20)
        )
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert set((await claims(store, agent)).values()) == {winners[0].id}


async def test_reschedule_claims_the_new_time_then_frees_the_old(store: Store, agent: str) -> None:
    repo = AppointmentRepository(store)
    booked = await book(repo, agent, at(10), at(10, 30))
    assert booked is not None
    moved = await repo.reschedule(ORG, booked.id, at(14), at(14, 30))
    assert moved is not None
    assert (moved.start, moved.end, moved.status) == (at(14), at(14, 30), "rescheduled")
    assert moved.sequence == 1 and moved.ics_token == booked.ics_token
    assert moved.updated_at >= booked.updated_at
    assert await claims(store, agent) == dict.fromkeys(ids_of(agent, at(14), at(14, 15)), booked.id)
    assert await book(repo, agent, at(10), at(10, 30)) is not None  # the old time is free
    # Moving by a quarter hour keeps the quarter it shares with the old time.
    shifted = await repo.reschedule(ORG, booked.id, at(14, 15), at(14, 45))
    assert shifted is not None and shifted.sequence == 2
    assert set(await claims(store, agent)) >= ids_of(agent, at(14, 15), at(14, 30))
    assert granule_id(agent, at(14)) not in await claims(store, agent)
    # The same move again (a redelivered run) changes nothing.
    assert await repo.reschedule(ORG, booked.id, at(14, 15), at(14, 45)) == shifted


async def test_reschedule_to_a_taken_time_keeps_the_old_booking(store: Store, agent: str) -> None:
    repo = AppointmentRepository(store)
    mine = await book(repo, agent, at(10), at(10, 30))
    theirs = await book(repo, agent, at(11), at(11, 30))
    assert mine is not None and theirs is not None
    before = await claims(store, agent)
    assert await repo.reschedule(ORG, mine.id, at(10, 45), at(11, 15)) is None
    assert await repo.get(ORG, mine.id) == mine
    assert await claims(store, agent) == before


async def test_cancel_frees_only_the_appointments_own_time(store: Store, agent: str) -> None:
    repo = AppointmentRepository(store)
    doomed = await book(repo, agent, at(10), at(10, 30))
    kept = await book(repo, agent, at(10, 30), at(11))
    assert doomed is not None and kept is not None
    cancelled = await repo.cancel(ORG, doomed.id, reason="lead is travelling")
    assert cancelled is not None and cancelled.status == "cancelled"
    assert cancelled.cancel_reason == "lead is travelling" and cancelled.cancelled_at is not None
    assert cancelled.sequence == 1
    assert await claims(store, agent) == dict.fromkeys(
        ids_of(agent, at(10, 30), at(10, 45)), kept.id
    )
    assert await repo.cancel(ORG, doomed.id) == cancelled  # again: nothing changes
    assert await book(repo, agent, at(10), at(10, 30)) is not None
    with pytest.raises(AppointmentClosed):
        await repo.reschedule(ORG, doomed.id, at(16), at(16, 30))
    with pytest.raises(UnknownAppointment):
        await repo.reschedule(ORG, new_apt(), at(16), at(16, 30))


async def test_a_done_appointment_cannot_be_cancelled(store: Store, agent: str) -> None:
    repo = AppointmentRepository(store)
    past = await book(repo, agent, at(10), at(10, 30))
    assert past is not None
    await store.db["appointments"].update_one({"_id": past.id}, {"$set": {"status": "done"}})
    with pytest.raises(AppointmentClosed):
        await repo.cancel(ORG, past.id)
    assert set((await claims(store, agent)).values()) == {past.id}


async def test_another_organization_sees_and_changes_nothing(store: Store, agent: str) -> None:
    repo = AppointmentRepository(store)
    booked = await book(repo, agent, at(10), at(10, 30), thread_id="thr_x")
    assert booked is not None
    assert await repo.get(OTHER_ORG, booked.id) is None
    assert await repo.cancel(OTHER_ORG, booked.id) is None
    with pytest.raises(UnknownAppointment):
        await repo.reschedule(OTHER_ORG, booked.id, at(12), at(12, 30))
    assert await repo.active_for_thread(OTHER_ORG, "thr_x", now=DAY) is None
    assert await repo.booked_between(OTHER_ORG, agent, at(0), at(23)) == []
    assert await repo.list_for_org(OTHER_ORG) == []
    # Booking with an id another organization holds takes nothing and shows nothing.
    with pytest.raises(DuplicateKeyError):
        await book(repo, agent, at(13), at(13, 30), org_id=OTHER_ORG, appointment_id=booked.id)
    assert await repo.get(ORG, booked.id) == booked
    assert set((await claims(store, agent)).values()) == {booked.id}
    assert granule_id(agent, at(13)) not in await claims(store, agent)


async def test_active_for_thread_is_the_upcoming_booked_one(store: Store, agent: str) -> None:
    repo = AppointmentRepository(store)
    past = await book(repo, agent, at(8), at(8, 30), thread_id="thr_a")
    cancelled = await book(repo, agent, at(10), at(10, 30), thread_id="thr_a")
    upcoming = await book(repo, agent, at(12), at(12, 30), thread_id="thr_a")
    await book(repo, agent, at(11), at(11, 30), thread_id="thr_b")
    assert past and cancelled and upcoming
    await repo.cancel(ORG, cancelled.id)
    assert await repo.active_for_thread(ORG, "thr_a", now=at(9)) == upcoming
    assert await repo.active_for_thread(ORG, "thr_a", now=at(13)) is None
    moved = await repo.reschedule(ORG, upcoming.id, at(15), at(15, 30))
    assert await repo.active_for_thread(ORG, "thr_a", now=at(13)) == moved


async def test_booked_between_lists_the_agents_active_overlapping_appointments(
    store: Store, agent: str
) -> None:
    repo = AppointmentRepository(store)
    early = await book(repo, agent, at(9), at(10))
    late = await book(repo, agent, at(16), at(17))
    gone = await book(repo, agent, at(12), at(13))
    tomorrow = await book(repo, agent, at(9, day=1), at(10, day=1))
    assert early and late and gone and tomorrow
    await repo.cancel(ORG, gone.id)
    assert await repo.booked_between(ORG, agent, at(9, 30), at(16, 30)) == [early, late]
    assert await repo.booked_between(ORG, agent, at(10), at(16)) == []
    assert await repo.booked_between(ORG, agent, at(0), at(0, day=2)) == [early, late, tomorrow]


async def test_list_for_org_filters_by_agent_time_and_status_and_pages(
    store: Store, agent: str
) -> None:
    repo = AppointmentRepository(store)
    other_agent = f"agt_{uuid.uuid4().hex}"
    mine = [await book(repo, agent, at(9 + n), at(9 + n, 30)) for n in range(5)]
    theirs = await book(repo, other_agent, at(9), at(9, 30))
    assert all(mine) and theirs is not None
    everything = sorted([a for a in [*mine, theirs] if a], key=lambda a: (a.start, a.id))
    assert await repo.list_for_org(ORG) == everything
    only = await repo.list_for_org(ORG, agent_id=agent, start=at(10), end=at(13))
    assert [a.start for a in only] == [at(10), at(11), at(12)]
    first = await repo.list_for_org(ORG, agent_id=agent, limit=2)
    rest = await repo.list_for_org(ORG, agent_id=agent, after=(first[-1].start, first[-1].id))
    assert [a.start for a in first + rest] == [at(9 + n) for n in range(5)]
    assert mine[0] is not None
    await repo.cancel(ORG, mine[0].id)
    cancelled = await repo.list_for_org(ORG, status="cancelled")
    assert [a.id for a in cancelled] == [mine[0].id]


async def test_a_claim_left_by_a_crash_is_taken_over_once_it_is_old(
    store: Store, agent: str
) -> None:
    repo = AppointmentRepository(store)

    async def left_behind(start: datetime, age: timedelta) -> None:
        # A booking that claimed its time and died before storing the appointment.
        await store.db["appointment_slots"].insert_one(
            {
                "_id": granule_id(agent, start),
                "org_id": ORG,
                "agent_id": agent,
                "appointment_id": new_apt(),
                "at": start,
                "claimed_at": datetime.now(UTC) - age,
            }
        )

    await left_behind(at(10), timedelta(minutes=1))
    assert await book(repo, agent, at(10), at(10, 30)) is None  # it may still be finishing
    await left_behind(at(11), STRAY_AFTER + timedelta(minutes=1))
    taken_over = await book(repo, agent, at(11), at(11, 30))
    assert taken_over is not None
    assert set((await claims(store, agent)).values()) >= {taken_over.id}
    # An old claim of a live appointment is no stray.
    booked = await book(repo, agent, at(14), at(14, 30))
    assert booked is not None
    await store.db["appointment_slots"].update_many(
        {"appointment_id": booked.id},
        {"$set": {"claimed_at": datetime.now(UTC) - 2 * STRAY_AFTER}},
    )
    assert await book(repo, agent, at(14), at(14, 30)) is None


async def test_times_must_be_aware_ordered_and_bounded(store: Store, agent: str) -> None:
    repo = AppointmentRepository(store)
    naive = datetime(2030, 1, 7, 10)
    with pytest.raises(InvalidAppointmentTime):
        await book(repo, agent, naive, naive + timedelta(minutes=30))
    with pytest.raises(InvalidAppointmentTime):
        await book(repo, agent, at(11), at(10))
    with pytest.raises(InvalidAppointmentTime):
        await book(repo, agent, at(0), at(13))
    assert await claims(store, agent) == {}
