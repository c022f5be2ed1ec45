"""Configuration from environment variables, validated once at start-up."""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import AnyUrl, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

CHECKOUT_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(Exception):
    """An environment variable is missing or invalid; the message names it."""


class Settings(BaseSettings):
    """Every setting of every service; each field is the upper-cased variable name."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    environment: Literal["development", "production"] = "development"
    amqp_url: AnyUrl = AnyUrl("amqp://guest:guest@127.0.0.1:5672/")
    # Every exchange and queue name starts with this prefix (tests use their own).
    broker_prefix: str = Field(default="realtybot", pattern=r"^[a-z0-9][a-z0-9_.-]{0,60}$")
    broker_prefetch: int = Field(default=32, ge=1, le=1000)
    mongodb_url: str = "mongodb://127.0.0.1:27017"
    mongodb_db: str = Field(default="realtybot", pattern=r"^[A-Za-z0-9_-]{1,60}$")
    # Key ring "kid:base64key[,kid:base64key...]"; the first key is the active one.
    credentials_keys: str | None = None
    public_base_url: AnyUrl = AnyUrl("http://127.0.0.1:8080")
    gupshup_base_url: AnyUrl = AnyUrl("http://127.0.0.1:8090")
    gupshup_partner_base_url: AnyUrl = AnyUrl("http://127.0.0.1:8090")
    gupshup_partner_email: str | None = None
    gupshup_partner_password: str | None = None
    gupshup_timeout_seconds: float = Field(default=10.0, gt=0)
    anthropic_api_key: str | None = None
    anthropic_base_url: AnyUrl | None = None
    anthropic_model: str = "claude-sonnet-5-5"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    http_host: str = "127.0.0.1"
    ingress_port: int = Field(default=8080, ge=0, le=65535)
    admin_port: int = Field(default=8081, ge=0, le=65535)
    router_port: int = Field(default=9101, ge=0, le=65535)
    dedup_port: int = Field(default=9102, ge=0, le=65535)
    brain_port: int = Field(default=9103, ge=0, le=65535)
    outbound_port: int = Field(default=9104, ge=0, le=65535)
    # What one client may take of a listener (every service's; aiohttp enforces them). A
    # connection that has not sent a complete request head for `http_idle_timeout_seconds`
    # (idle between requests, or dribbling its headers) is closed: keep it above the idle
    # timeout of any proxy in front (ingress-nginx keeps upstream connections for 60 s).
    http_idle_timeout_seconds: float = Field(default=75.0, gt=0)
    # A request body that has not fully arrived this long after its head is answered 408.
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)
    # The request line and each header line at most this long, at most this many headers:
    # beyond either, 400 and the connection is closed.
    http_max_header_bytes: int = Field(default=8190, ge=1024, le=65536)
    http_max_headers: int = Field(default=64, ge=16, le=1000)
    # Connections the kernel queues for the listener before it accepts them.
    http_backlog: int = Field(default=1024, ge=16, le=65535)

    webhook_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    # Ingress publishes the webhooks that arrive while confirms are due as one message of
    # up to this many (1: every webhook on its own).
    ingress_publish_batch: int = Field(default=64, ge=1, le=1000)
    agent_cache_seconds: float = Field(default=30.0, ge=0)
    agent_negative_cache_seconds: float = Field(default=1.0, ge=0, le=2)
    # An address that presents this many wrong admin API keys within
    # `admin_auth_lockout_seconds` is refused (429) for that long, even with a right key.
    admin_auth_max_failures: int = Field(default=10, ge=1)
    admin_auth_lockout_seconds: float = Field(default=300.0, gt=0)
    # Delays of the retry tiers, in milliseconds; their count is the retry budget.
    retry_delays_ms: list[int] = Field(default=[1_000, 5_000, 30_000, 120_000, 600_000])
    lease_seconds: float = Field(default=60.0, gt=0)
    lease_busy_retry_ms: int = Field(default=500, ge=10)
    # Messages claimed by a reply that was never stored are free again after this long (the
    # run died); longer than any reply takes to compose.
    answer_claim_stale_seconds: float = Field(default=120.0, gt=0)
    # A burst of a lead's messages is answered once, after this long without a new one.
    burst_quiet_seconds: float = Field(default=3.0, ge=0, le=60)
    # On SIGTERM: how long in-flight messages (consumers) and requests (ingress) may take.
    shutdown_grace_seconds: float = Field(default=25.0, ge=0)
    # On SIGTERM ingress answers /readyz with 503 at once but keeps serving this long before
    # it closes its listeners, for load balancers that learn of the stop from readiness.
    # Kubernetes needs none: the preStop pause covers the time endpoints take to drop a pod.
    ingress_drain_seconds: float = Field(default=0.0, ge=0, le=60)
    default_region: str = "SG"
    # Outbound pacing: the pause between two messages to the same lead, and how long a send
    # may wait for its rate slot in a handler before it is deferred through the broker.
    lead_pause_seconds: float = Field(default=1.0, ge=0)
    send_max_wait_seconds: float = Field(default=1.0, gt=0)
    # An unfinished earlier reply of the same thread holds later ones back this long at most.
    ordering_wait_seconds: float = Field(default=300.0, gt=0)
    # A send whose outcome is unknown (Gupshup timed out after reading it, or the process
    # died mid-call) is sent again only if no status callback names it for this long.
    ambiguous_resolve_seconds: float = Field(default=120.0, gt=0)
    # Gupshup throttling (429 without Retry-After): the agent pauses 0.5-1 x this, doubling
    # each time up to a minute; a reply Gupshup has not taken after
    # `gupshup_outage_max_seconds` goes to the dead-letter queue for an operator to replay.
    gupshup_backoff_base_seconds: float = Field(default=1.0, gt=0)
    gupshup_outage_max_seconds: float = Field(default=3600.0, gt=0)
    # A business-initiated message held by quiet hours is looked at again at least this often.
    quiet_hours_recheck_seconds: float = Field(default=600.0, gt=0)
    # Follow-ups of a lead who went quiet: step k goes this many hours after the bot's reply
    # the lead left unanswered (days 3, 7, 14 and 30 by default); [] turns them off.
    follow_up_delays_hours: list[float] = Field(default=[72.0, 168.0, 336.0, 720.0])
    # Appointment reminders, this many hours before the start (a day and an hour).
    reminder_hours_before: list[float] = Field(default=[24.0, 1.0])
    # How often the brain looks for follow-ups and reminders that are due, and how many
    # of them it takes per look.
    scheduler_interval_seconds: float = Field(default=30.0, gt=0)
    scheduler_batch_size: int = Field(default=100, ge=1, le=10_000)

    @field_validator("retry_delays_ms")
    @classmethod
    def _delays_positive(cls, value: list[int]) -> list[int]:
        if not value or any(d <= 0 for d in value):
            raise ValueError("must be a non-empty list of positive milliseconds")
        return value

    @field_validator("follow_up_delays_hours")
    @classmethod
    def _delays_increasing(cls, value: list[float]) -> list[float]:
        if any(d <= 0 for d in value) or any(b <= a for a, b in pairwise(value)):
            raise ValueError("must be positive hours in increasing order")
        return value

    @field_validator("reminder_hours_before")
    @classmethod
    def _reminders_positive(cls, value: list[float]) -> list[float]:
        if any(h <= 0 for h in value) or len(set(value)) != len(value):
            raise ValueError("must be distinct positive hours")
        return value

    def service_port(self, service: str) -> int:
        """The health and metrics port of a consumer service."""
        port: int = getattr(self, f"{service}_port")
        return port


def load_settings() -> Settings:
    """Read and validate the environment; raise ConfigError naming the bad variable."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    except SettingsError as exc:  # a list or object setting that is not JSON
        named = re.search(r'field "(\w+)"', str(exc))
        variable = named.group(1).upper() if named else "a setting"
        raise ConfigError(f"invalid configuration: {variable}: not valid JSON") from None
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (validated on first use)."""
    return load_settings()
