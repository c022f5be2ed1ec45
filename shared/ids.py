"""Identifiers: random ones for new entities, derived ones where idempotency needs them."""

from __future__ import annotations

import hashlib
import uuid


def new_id(prefix: str) -> str:
    """A new random id such as `org_3f9c...`."""
    return f"{prefix}_{uuid.uuid4().hex}"


def derived_id(prefix: str, *parts: str) -> str:
    """The same id for the same parts, so a re-run finds what an earlier run made."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return f"{prefix}_{digest}"
