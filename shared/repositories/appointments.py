"""Appointments: a lead's consultation or viewing with an agent, never overlapping another.

An appointment occupies fixed 15-minute granules of its agent's time (aligned to UTC, so to
the quarter hours of every time zone). Booking inserts one claim document per granule into
`appointment_slots`, its `_id` being the agent and the granule's start: a duplicate key means
another appointment holds that time, so the claims made so far are removed and the booking
fails. Every claim names its appointment, and removals filter on it, so nobody frees time
another appointment holds. No read-modify-write decides who gets a time, so this holds
across replicas on MongoDB and FerretDB alike.

A claim left behind by a crash (its appointment was never stored, was cancelled, or moved
elsewhere) is removed by the next booking that needs its time, once it is older than
`STRAY_AFTER`: long enough for the booking that made it to have finished.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared.crypto import new_token
from shared.metrics import APPOINTMENTS
from shared.models import utcnow
from shared.repositories.record import StoredRecord
from shared.store import Document, Store, is_duplicate, with_retry

AppointmentStatus = Literal["booked", "rescheduled", "cancelled", "done"]
ACTIVE: tuple[AppointmentStatus, ...] = ("booked", "rescheduled")
GRANULE = timedelta(minutes=15)
MAX_DURATION = timedelta(hours=12)
STRAY_AFTER = timedelta(minutes=15)
CALENDAR_PATH = "/v1/calendar/{token}.ics"


class InvalidAppointmentTime(ValueError):
    """Start and end are not timezone-aware, not in order, or too far apart."""


class UnknownAppointment(LookupError):
    """The organization has no appointment with that id."""


class AppointmentClosed(Exception):
    """The appointment is cancelled or done: it cannot be moved (or cancelled once done)."""


class Appointment(StoredRecord):
    """A stored appointment; times are timezone-aware UTC."""

    org_id: str
    agent_id: str
    lead_id: str
    thread_id: str
    start: datetime
    end: datetime
    status: AppointmentStatus
    # An unguessable random token (256 bits) naming the lead's calendar link; it grants
    # reading this one appointment's time and agent, nothing else.
    ics_token: str
    # RFC 5545 SEQUENCE: how many times the appointment was changed after booking.
    sequence: int = 0
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None

    @property
    def active(self) -> bool:
        """Booked or rescheduled (not cancelled, not done)."""
        return self.status in ACTIVE

    @property
    def calendar_path(self) -> str:
        """The path of the lead's calendar file on ingress's public listener."""
        return CALENDAR_PATH.format(token=self.ics_token)

    def public(self, public_base_url: str) -> dict[str, object]:
        """What the admin API shows of an appointment."""
        shown = self.model_dump(mode="json", exclude={"id", "ics_token"})
        return {
            "appointment_id": self.id,
            **shown,
            "calendar_url": public_base_url.rstrip("/") + self.calendar_path,
        }


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidAppointmentTime("appointment times must be timezone-aware")
    return moment.astimezone(UTC)


def _checked(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise InvalidAppointmentTime("an appointment must end after it starts")
    if end - start > MAX_DURATION:
        raise InvalidAppointmentTime(f"an appointment lasts at most {MAX_DURATION}")
    return start, end


def _now() -> datetime:
    # The store keeps milliseconds: what is returned then equals what is read back.
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def granules(start: datetime, end: datetime) -> list[datetime]:
    """The starts of the 15-minute granules that [start, end) touches."""
    step = int(GRANULE.total_seconds())
    first = math.floor(_utc(start).timestamp() / step) * step
    stop = math.ceil(_utc(end).timestamp() / step) * step
    return [datetime.fromtimestamp(t, UTC) for t in range(first, stop, step)]


def granule_id(agent_id: str, at: datetime) -> str:
    """The `_id` of the claim on one granule of an agent's time."""
    return f"{agent_id}:{at.astimezone(UTC).strftime('%Y-%m-%dT%H:%MZ')}"


class AppointmentRepository:
    """Book, move and cancel appointments; read them per organization."""

    def __init__(self, store: Store) -> None:
        self._appointments = store.db["appointments"]
        self._slots = store.db["appointment_slots"]

    async def get(self, org_id: str, appointment_id: str) -> Appointment | None:
        """One appointment of the organization."""
        doc = await with_retry(
            lambda: self._appointments.find_one({"_id": appointment_id, "org_id": org_id})
        )
        return Appointment.model_validate(doc) if doc else None

    async def by_ics_token(self, token: str) -> Appointment | None:
        """The appointment a lead's calendar link names."""
        doc = await with_retry(lambda: self._appointments.find_one({"ics_token": token}))
        return Appointment.model_validate(doc) if doc else None

    async def book(
        self,
        org_id: str,
        agent_id: str,
        lead_id: str,
        thread_id: str,
        start: datetime,
        end: datetime,
        appointment_id: str,
    ) -> Appointment | None:
        """Book the agent's time for the lead; None when any of it is taken.

        Idempotent: booking again with the same id returns the appointment that id already
        names (whatever its times and status), so a redelivered run finds its own booking.
        """
        start, end = _checked(start, end)
        existing = await self.get(org_id, appointment_id)
        if existing is not None:
            return existing
        if not await self._claim(org_id, agent_id, appointment_id, granules(start, end)):
            APPOINTMENTS.labels("taken").inc()
            return None
        now = _now()
        appointment = Appointment(
            id=appointment_id,
            org_id=org_id,
            agent_id=agent_id,
            lead_id=lead_id,
            thread_id=thread_id,
            start=start,
            end=end,
            status="booked",
            ics_token=new_token("cal"),
            created_at=now,
            updated_at=now,
        )
        doc = appointment.model_dump(by_alias=True)
        try:
            await with_retry(lambda: self._appointments.insert_one(doc))
        except Exception as exc:
            if not is_duplicate(exc):
                raise
            # A twin run with the same id stored it first: its booking is this one.
            twin = await self.get(org_id, appointment_id)
            if twin is None:  # the id is another organization's: give the time back
                await self._release(org_id, appointment_id, keep=())
                raise
            return twin
        APPOINTMENTS.labels("booked").inc()
        return appointment

    async def reschedule(
        self, org_id: str, appointment_id: str, start: datetime, end: datetime
    ) -> Appointment | None:
        """Move an appointment; None when the new time is taken (the old booking stays).

        The new time is claimed before the old one is released, so the agent's time is
        never double-booked and the lead never ends up with neither.
        """
        start, end = _checked(start, end)
        current = await self.get(org_id, appointment_id)
        if current is None:
            raise UnknownAppointment(appointment_id)
        if not current.active:
            raise AppointmentClosed(f"appointment {appointment_id} is {current.status}")
        wanted = granules(start, end)
        if (current.start, current.end) != (start, end):
            if not await self._claim(org_id, current.agent_id, appointment_id, wanted):
                APPOINTMENTS.labels("taken").inc()
                return None
            await with_retry(
                lambda: self._appointments.update_one(
                    {"_id": appointment_id, "org_id": org_id, "status": {"$in": list(ACTIVE)}},
                    {
                        "$set": {
                            "start": start,
                            "end": end,
                            "status": "rescheduled",
                            "sequence": current.sequence + 1,
                            "updated_at": _now(),
                        }
                    },
                )
            )
            APPOINTMENTS.labels("rescheduled").inc()
        after = await self.get(org_id, appointment_id)
        if after is None or not after.active:
            # Cancelled meanwhile: the cancellation wins and takes every claim with it.
            await self._release(org_id, appointment_id, keep=())
            raise AppointmentClosed(f"appointment {appointment_id} was cancelled")
        # Whatever else this appointment holds is its old time (or a crashed run's leftover).
        keep = [granule_id(after.agent_id, g) for g in wanted]
        await self._release(org_id, appointment_id, keep=keep)
        return after

    async def cancel(
        self, org_id: str, appointment_id: str, reason: str | None = None
    ) -> Appointment | None:
        """Cancel an appointment and free its time; None when the org has no such one.

        Cancelling a cancelled appointment changes nothing; a done one cannot be cancelled.
        """
        current = await self.get(org_id, appointment_id)
        if current is None:
            return None
        if current.status == "done":
            raise AppointmentClosed(f"appointment {appointment_id} is done")
        if current.status != "cancelled":
            now = _now()
            change = {
                "status": "cancelled",
                "cancelled_at": now,
                "cancel_reason": reason,
                "sequence": current.sequence + 1,
                "updated_at": now,
            }
            # The status goes first: time freed is never still shown as booked. Updates are
            # not atomic on the local store, so a reschedule racing this one could write its
            # status last; re-read and insist until the appointment stays cancelled.
            for _ in range(5):
                await with_retry(
                    lambda c=change: self._appointments.update_one(  # type: ignore[misc]
                        {"_id": appointment_id, "org_id": org_id}, {"$set": c}
                    )
                )
                await self._release(org_id, appointment_id, keep=())
                after = await self.get(org_id, appointment_id)
                if after is not None and after.status == "cancelled":
                    break
            APPOINTMENTS.labels("cancelled").inc()
        else:
            await self._release(org_id, appointment_id, keep=())
        return await self.get(org_id, appointment_id)

    async def active_for_thread(
        self, org_id: str, thread_id: str, now: datetime | None = None
    ) -> Appointment | None:
        """The thread's booked appointment that has not ended yet (the earliest, if several)."""
        moment = now or utcnow()
        doc = await with_retry(
            lambda: self._appointments.find_one(
                {
                    "org_id": org_id,
                    "thread_id": thread_id,
                    "status": {"$in": list(ACTIVE)},
                    "end": {"$gt": moment},
                },
                sort=[("start", 1)],
            )
        )
        return Appointment.model_validate(doc) if doc else None

    async def booked_between(
        self, org_id: str, agent_id: str, start: datetime, end: datetime
    ) -> list[Appointment]:
        """The agent's booked appointments overlapping [start, end), earliest first."""
        query = {
            "org_id": org_id,
            "agent_id": agent_id,
            "status": {"$in": list(ACTIVE)},
            "start": {"$lt": _utc(end)},
            "end": {"$gt": _utc(start)},
        }
        cursor = self._appointments.find(query).sort([("start", 1), ("_id", 1)])
        return [Appointment.model_validate(doc) async for doc in cursor]

    async def list_for_org(
        self,
        org_id: str,
        *,
        agent_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        status: AppointmentStatus | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[Appointment]:
        """The organization's appointments starting in [start, end), by start time.

        `after` (the start and id of the last one of the previous page) pages on.
        """
        query: Document = {"org_id": org_id}
        if agent_id is not None:
            query["agent_id"] = agent_id
        if status is not None:
            query["status"] = status
        bounds: Document = {}
        if start is not None:
            bounds["$gte"] = _utc(start)
        if end is not None:
            bounds["$lt"] = _utc(end)
        if bounds:
            query["start"] = bounds
        if after is not None:
            moment, last_id = _utc(after[0]), after[1]
            query["$or"] = [
                {"start": {"$gt": moment}},
                {"start": moment, "_id": {"$gt": last_id}},
            ]
        cursor = self._appointments.find(query).sort([("start", 1), ("_id", 1)]).limit(limit)
        return [Appointment.model_validate(doc) async for doc in cursor]

    async def _claim(
        self, org_id: str, agent_id: str, appointment_id: str, wanted: Iterable[datetime]
    ) -> bool:
        """Claim every granule for the appointment, or none (False: some are taken)."""
        inserted: list[str] = []
        for at in wanted:
            outcome = await self._claim_one(org_id, agent_id, appointment_id, at)
            if outcome == "taken":
                if inserted:
                    await with_retry(
                        lambda: self._slots.delete_many(
                            {
                                "_id": {"$in": inserted},
                                "org_id": org_id,
                                "appointment_id": appointment_id,
                            }
                        )
                    )
                return False
            if outcome == "inserted":
                inserted.append(granule_id(agent_id, at))
        return True

    async def _claim_one(
        self, org_id: str, agent_id: str, appointment_id: str, at: datetime
    ) -> Literal["inserted", "ours", "taken"]:
        claim_id = granule_id(agent_id, at)
        claim = {
            "_id": claim_id,
            "org_id": org_id,
            "agent_id": agent_id,
            "appointment_id": appointment_id,
            "at": at,
            "claimed_at": utcnow(),
        }
        for _ in range(3):
            try:
                await with_retry(lambda: self._slots.insert_one(dict(claim)))
                return "inserted"
            except Exception as exc:
                if not is_duplicate(exc):
                    raise
            holder = await with_retry(lambda: self._slots.find_one({"_id": claim_id}))
            if holder is None:
                continue  # freed since: try again
            if holder["appointment_id"] == appointment_id:
                return "ours"  # a re-run (or a write retried after it succeeded)
            if not await self._stray(holder):
                return "taken"
            await with_retry(
                lambda h=holder: self._slots.delete_one(  # type: ignore[misc]
                    {"_id": claim_id, "appointment_id": h["appointment_id"]}
                )
            )
        return "taken"

    async def _stray(self, claim: Document) -> bool:
        """True when a claim is old and its appointment does not hold that time."""
        claimed_at = claim.get("claimed_at")
        if claimed_at is None or utcnow() - claimed_at < STRAY_AFTER:
            return False
        holder = await self.get(claim["org_id"], claim["appointment_id"])
        if holder is None or not holder.active:
            return True
        return claim["at"] not in granules(holder.start, holder.end)

    async def _release(self, org_id: str, appointment_id: str, keep: Iterable[str]) -> None:
        """Remove the appointment's claims except `keep` (never another appointment's)."""
        kept = list(keep)
        query: Document = {"org_id": org_id, "appointment_id": appointment_id}
        if kept:
            query["_id"] = {"$nin": kept}
        await with_retry(lambda: self._slots.delete_many(query))
