"""Outbound: the only caller of Gupshup's send API; each bubble is sent at most once.

Read from `__main__`, whose `wire` table names the handler of each message outbound
consumes; the modules are split by what arrives:

- `sending`: a `SendCommand`, planned under WhatsApp's rules, each bubble claimed, paced, sent.
- `statuses`: a `DeliveryStatus`, attached to its send, and what a failure triggers.
- `provider_events`: a `TemplateEvent` or `BillingEvent`, recorded.
- `rules`: every decision (window, plan, templates, tier, quiet hours, claim ambiguity,
  failure codes) as a pure function; `pacing`: rate slots, pauses, backoff; `payloads`:
  Gupshup's request for a bubble.

Errors keep the service-wide split: `Defer` waits without spending a retry, a transient error
is retried on the delay tiers, a `PermanentError` is dead-lettered.
"""
