"""The repositories of a thread's data that both brain workers (the reply handler and the
follow-up sweeper) read and write, opened together from the store."""

from __future__ import annotations

from dataclasses import dataclass

from shared.repositories.appointments import AppointmentRepository
from shared.repositories.consents import ConsentRepository
from shared.repositories.leads import LeadRepository
from shared.repositories.messages import MessageRepository
from shared.repositories.templates import TemplateRepository
from shared.repositories.threads import ThreadRepository
from shared.store import Store


@dataclass(frozen=True)
class ThreadData:
    """A thread's records: the thread, its lead, messages, consent, appointments, templates."""

    threads: ThreadRepository
    leads: LeadRepository
    messages: MessageRepository
    consents: ConsentRepository
    appointments: AppointmentRepository
    templates: TemplateRepository

    @classmethod
    def open(cls, store: Store) -> ThreadData:
        """Each repository over `store`."""
        return cls(
            threads=ThreadRepository(store),
            leads=LeadRepository(store),
            messages=MessageRepository(store),
            consents=ConsentRepository(store),
            appointments=AppointmentRepository(store),
            templates=TemplateRepository(store),
        )
