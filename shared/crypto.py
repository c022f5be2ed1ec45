"""Credentials encryption: AES-256-GCM under a key ring, bound to agent and field.

A ciphertext records the id of the key that made it, so keys rotate without downtime,
and uses "<agent id>/<field>" as associated data, so a ciphertext copied to another agent
or field fails to decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.logs import get_logger
from shared.settings import CHECKOUT_ROOT, ConfigError, Settings

log = get_logger(__name__)

DEV_KEY_RING_FILE = CHECKOUT_ROOT / ".local" / "dev-credentials-keys"


class DecryptionFailed(Exception):
    """The ciphertext is corrupt, bound to another agent or field, or its key is gone."""


@dataclass(frozen=True)
class KeyRing:
    """AES-256 keys by id; the first is the active one used for new ciphertexts."""

    keys: dict[str, bytes]
    active_id: str

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Parse "kid:base64key[,kid:base64key...]"; errors name CREDENTIALS_KEYS."""
        keys: dict[str, bytes] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kid, sep, encoded = part.partition(":")
            if not sep or not kid:
                raise ConfigError("CREDENTIALS_KEYS: each entry must be 'key_id:base64key'")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise ConfigError(f"CREDENTIALS_KEYS: key {kid!r} is not base64") from None
            if len(key) != 32:
                raise ConfigError(f"CREDENTIALS_KEYS: key {kid!r} must be 32 bytes (AES-256)")
            # A reused id would make the ciphertexts of one of the two keys undecryptable.
            if kid in keys:
                raise ConfigError(f"CREDENTIALS_KEYS: key id {kid!r} appears more than once")
            keys[kid] = key
        if not keys:
            raise ConfigError("CREDENTIALS_KEYS: no key given")
        return cls(keys, next(iter(keys)))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The configured key ring, or the checkout's development ring outside production.

        Only processes that encrypt or decrypt credentials build one (ingress, outbound, the
        CLI's credential commands), so only they need CREDENTIALS_KEYS in production.
        """
        if settings.credentials_keys:
            return cls.parse(settings.credentials_keys)
        if settings.environment == "production":
            raise ConfigError(
                "CREDENTIALS_KEYS is required in production (ENVIRONMENT=production): "
                "this process encrypts or decrypts agents' Gupshup credentials"
            )
        return cls.parse(_development_key_ring(DEV_KEY_RING_FILE))

    def encrypt(self, plaintext: str, *, agent_id: str, field: str) -> dict[str, str]:
        """Encrypt with the active key; the result is what the store keeps."""
        nonce = os.urandom(12)
        ciphertext = AESGCM(self.keys[self.active_id]).encrypt(
            nonce, plaintext.encode(), _associated_data(agent_id, field)
        )
        return {
            "kid": self.active_id,
            "nonce": base64.b64encode(nonce).decode(),
            "ct": base64.b64encode(ciphertext).decode(),
        }

    def decrypt(self, sealed: dict[str, str], *, agent_id: str, field: str) -> str:
        """Decrypt a stored ciphertext made for this agent and field."""
        key = self.keys.get(sealed.get("kid", ""))
        if key is None:
            raise DecryptionFailed(f"key {sealed.get('kid')!r} is not in the key ring")
        try:
            plaintext = AESGCM(key).decrypt(
                base64.b64decode(sealed["nonce"]),
                base64.b64decode(sealed["ct"]),
                _associated_data(agent_id, field),
            )
        except (InvalidTag, KeyError, ValueError):
            raise DecryptionFailed(f"cannot decrypt {field} of agent {agent_id}") from None
        return plaintext.decode()


def _associated_data(agent_id: str, field: str) -> bytes:
    return f"{agent_id}/{field}".encode()


def _development_key_ring(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        kid = "dev-" + hashlib.sha256(key.encode()).hexdigest()[:8]
        # Write then link: concurrent first starts agree on one ring and never read half a file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{kid}:{key}\n")
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
            log.warning("CREDENTIALS_KEYS not set: created a development key ring", path=str(path))
        except FileExistsError:
            pass  # another process created it first
        finally:
            tmp.unlink()
    return path.read_text().strip()


def hash_token(token: str) -> str:
    """The stored form of a callback or API key (unguessable tokens need no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    """A fresh unguessable token, URL-safe, with a readable prefix."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"
