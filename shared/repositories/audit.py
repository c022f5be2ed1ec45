"""The audit log: who changed what, when, with the state before and after (secrets masked)."""

from __future__ import annotations

from typing import Any

from shared.ids import new_id
from shared.logs import REDACTED, SECRET_KEY
from shared.models import utcnow
from shared.store import Document, Store, with_retry


def mask_secrets(value: Any) -> Any:
    """A copy with every secret-looking field (and every credential) replaced."""
    if isinstance(value, dict):
        return {k: _mask_field(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def _mask_field(key: str, value: Any) -> Any:
    # A list of field names ("credentials_set") says which secrets exist, not what they are.
    names_only = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if (SECRET_KEY.search(key) or key == "credentials") and not names_only:
        return REDACTED
    return mask_secrets(value)


class AuditLog:
    """Append-only record of every write made through the admin API or the CLI."""

    def __init__(self, store: Store) -> None:
        self._entries = store.db["audit_log"]

    async def record(
        self,
        *,
        org_id: str | None,
        actor: str,
        action: str,
        target: str,
        before: Document | None = None,
        after: Document | None = None,
    ) -> None:
        """Record one write."""
        entry: Document = {
            "_id": new_id("aud"),
            "org_id": org_id,
            "actor": actor,
            "action": action,
            "target": target,
            "before": mask_secrets(before),
            "after": mask_secrets(after),
            "at": utcnow(),
        }
        await with_retry(lambda: self._entries.insert_one(entry))

    async def list_in_org(self, org_id: str, limit: int = 100) -> list[Document]:
        """An organization's latest audit entries, newest first."""
        cursor = self._entries.find({"org_id": org_id}, {"_id": 0}).sort("at", -1).limit(limit)
        return [doc async for doc in cursor]
