"""Follow-up and reminder wording, and the settings that time them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.brain.followups.texts import describe_search, follow_up_text, reminder_text
from services.brain.reply.model import Profile
from shared.repositories.agents import Agent, Persona
from shared.settings import ConfigError, load_settings

AGENT = Agent.model_validate(
    {
        "_id": "agt_1",
        "org_id": "org_1",
        "name": "Jason Tan",
        "number": "+6591110001",
        "gupshup_app": "TanHomesSG",
        "callback_key_hash": "0" * 64,
        "persona": Persona(bot_name="Mia", signature="- Mia, for Jason").model_dump(),
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
)


def test_follow_up_delays_are_read_as_hours_and_may_be_fractions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOLLOW_UP_DELAYS_HOURS", "[0.01, 0.5, 2]")
    monkeypatch.setenv("SCHEDULER_INTERVAL_SECONDS", "0.5")
    settings = load_settings()
    assert settings.follow_up_delays_hours == [0.01, 0.5, 2.0]
    assert settings.scheduler_interval_seconds == 0.5
    assert settings.reminder_hours_before == [24.0, 1.0]


@pytest.mark.parametrize("value", ["[72, 24]", "[0, 1]", "[1, 1]", "three days"])
def test_follow_up_delays_must_increase(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FOLLOW_UP_DELAYS_HOURS", value)
    with pytest.raises(ConfigError, match="FOLLOW_UP_DELAYS_HOURS"):
        load_settings()


def test_what_the_lead_looks_for_comes_from_their_profile() -> None:
    assert describe_search(Profile()) == "your property search"
    assert describe_search(Profile(area="Tampines")) == "your search for a home in Tampines"
    wanted = Profile(intent="rent", bedrooms=2, property_type="condo", area="Orchard")
    assert describe_search(wanted) == "your search for a 2-bedroom condo to rent in Orchard"
    assert describe_search(Profile(property_type="hdb")) == "your search for an HDB flat"


def test_each_follow_up_step_reads_differently_and_asks_nothing() -> None:
    profile = Profile(property_type="condo", area="Bishan")
    texts = [follow_up_text(step, 4, AGENT, "Rachel Lim", profile) for step in (1, 2, 3, 4)]
    assert len(set(texts)) == 4
    assert all(t.startswith("Hi Rachel,") and t.endswith("\n- Mia, for Jason") for t in texts)
    assert all("condo in Bishan" in t and "?" not in t for t in texts)
    assert "won't keep checking in" in texts[3]
    assert follow_up_text(1, 4, AGENT, None, profile).startswith("Hi, just checking in")


@pytest.mark.parametrize(
    ("now", "said"),
    [
        (datetime(2026, 12, 2, 1, 0, tzinfo=UTC), "today at 10:00 am"),  # 9 am in Singapore
        (datetime(2026, 12, 1, 2, 0, tzinfo=UTC), "tomorrow, Wed 2 Dec at 10:00 am"),
        (datetime(2026, 11, 29, 2, 0, tzinfo=UTC), "on Wed 2 Dec at 10:00 am"),
    ],
)
def test_a_reminder_says_the_day_as_the_lead_reads_it(now: datetime, said: str) -> None:
    start = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # Wed 2 Dec, 10:00 am in Singapore
    text = reminder_text(AGENT, "Wei Ling Tan", start, now)
    assert text.startswith(f"Hi Wei, a reminder: your appointment with Jason Tan is {said}.")
