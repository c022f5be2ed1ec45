"""API keys of the admin API: organization keys and platform-operator keys, stored hashed."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from shared.crypto import hash_token, new_token
from shared.ids import new_id
from shared.models import utcnow
from shared.repositories.record import StoredRecord
from shared.store import Store, with_retry

Scope = Literal["org", "platform"]


class ApiKey(StoredRecord):
    """A key as stored (its hash only); `org_id` is None for platform-operator keys."""

    scope: Scope
    org_id: str | None
    name: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    def public(self) -> dict[str, object]:
        """What the API shows of a key (never its hash)."""
        return {
            "key_id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


class ApiKeyRepository:
    """Issue, look up and revoke API keys."""

    def __init__(self, store: Store) -> None:
        self._keys = store.db["api_keys"]

    async def issue(self, scope: Scope, org_id: str | None, name: str) -> tuple[ApiKey, str]:
        """A new key; the plain key is returned once and never stored."""
        plain = new_token("rbp" if scope == "platform" else "rbk")
        key = ApiKey(
            id=new_id("key"),
            scope=scope,
            org_id=org_id,
            name=name,
            key_hash=hash_token(plain),
            created_at=utcnow(),
        )
        await with_retry(lambda: self._keys.insert_one(key.model_dump(by_alias=True)))
        return key, plain

    async def authenticate(self, plain: str) -> ApiKey | None:
        """The live key matching a presented token, or None."""
        doc = await with_retry(lambda: self._keys.find_one({"key_hash": hash_token(plain)}))
        if doc is None:
            return None
        key = ApiKey.model_validate(doc)
        return None if key.revoked_at is not None else key

    async def list_in_org(self, org_id: str) -> list[ApiKey]:
        """An organization's keys, revoked ones included."""
        cursor = self._keys.find({"org_id": org_id, "scope": "org"}).sort("created_at", 1)
        return [ApiKey.model_validate(doc) async for doc in cursor]

    async def revoke(self, org_id: str, key_id: str) -> ApiKey | None:
        """Revoke an organization's key; None when it has no such key."""
        result = await with_retry(
            lambda: self._keys.update_one(
                {"_id": key_id, "org_id": org_id, "scope": "org"},
                {"$set": {"revoked_at": utcnow()}},
            )
        )
        if result.matched_count != 1:
            return None
        doc = await self._keys.find_one({"_id": key_id, "org_id": org_id})
        return ApiKey.model_validate(doc) if doc else None
