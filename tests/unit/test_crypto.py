"""Credentials at rest: AES-GCM under a key ring, bound to the agent and the field."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from shared import crypto
from shared.crypto import DecryptionFailed, KeyRing, hash_token
from shared.settings import ConfigError, Settings

OLD_KEY = base64.b64encode(bytes(range(32))).decode()
NEW_KEY = base64.b64encode(bytes(range(100, 132))).decode()
API_KEY = "sk_live_7f3a9c0e4b2d4e8f"


def sealed_copy(sealed: dict[str, str], **changes: str) -> dict[str, str]:
    return {**sealed, **changes}


def flip_last_byte(encoded: str) -> str:
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_credential_decrypts_for_the_agent_and_field_it_was_sealed_for() -> None:
    ring = KeyRing.parse(f"k1:{OLD_KEY}")
    sealed = ring.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")
    assert ring.decrypt(sealed, agent_id="agent-1", field="gupshup_api_key") == API_KEY


def test_unicode_credential_survives_the_round_trip() -> None:
    ring = KeyRing.parse(f"k1:{OLD_KEY}")
    secret = "pässwörd-密码-🔑"
    sealed = ring.encrypt(secret, agent_id="agent-1", field="password")
    assert ring.decrypt(sealed, agent_id="agent-1", field="password") == secret


@pytest.mark.parametrize(
    ("agent_id", "field"),
    [("agent-2", "gupshup_api_key"), ("agent-1", "partner_token"), ("agent-1/gupshup", "api_key")],
    ids=["another-agent", "another-field", "shifted-separator"],
)
def test_ciphertext_copied_to_another_agent_or_field_does_not_decrypt(
    agent_id: str, field: str
) -> None:
    ring = KeyRing.parse(f"k1:{OLD_KEY}")
    sealed = ring.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")
    with pytest.raises(DecryptionFailed) as caught:
        ring.decrypt(sealed, agent_id=agent_id, field=field)
    assert API_KEY not in str(caught.value)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: sealed_copy(s, ct=flip_last_byte(s["ct"])),
        lambda s: sealed_copy(s, nonce=flip_last_byte(s["nonce"])),
        lambda s: sealed_copy(s, ct=base64.b64encode(base64.b64decode(s["ct"])[:-1]).decode()),
        lambda s: sealed_copy(s, ct=""),
        lambda s: sealed_copy(s, nonce=""),
        lambda s: sealed_copy(s, ct="not base64 at all!"),
        lambda s: {"kid": s["kid"], "nonce": s["nonce"]},
    ],
    ids=[
        "flipped-ciphertext-bit",
        "flipped-nonce-bit",
        "truncated",
        "empty-ciphertext",
        "empty-nonce",
        "garbage",
        "missing-ciphertext",
    ],
)
def test_tampered_ciphertext_does_not_decrypt(
    tamper: Callable[[dict[str, str]], dict[str, str]],
) -> None:
    ring = KeyRing.parse(f"k1:{OLD_KEY}")
    sealed = ring.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")
    with pytest.raises(DecryptionFailed):
        ring.decrypt(tamper(sealed), agent_id="agent-1", field="gupshup_api_key")


def test_after_rotation_old_ciphertexts_decrypt_and_new_ones_use_the_new_key() -> None:
    before = KeyRing.parse(f"old:{OLD_KEY}")
    sealed_before = before.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")

    after = KeyRing.parse(f"new:{NEW_KEY},old:{OLD_KEY}")
    sealed_after = after.encrypt("rotated-secret", agent_id="agent-1", field="gupshup_api_key")

    assert sealed_before["kid"] == "old"
    assert sealed_after["kid"] == "new"
    assert after.decrypt(sealed_before, agent_id="agent-1", field="gupshup_api_key") == API_KEY
    assert (
        after.decrypt(sealed_after, agent_id="agent-1", field="gupshup_api_key") == "rotated-secret"
    )
    # Once the old key is retired, only re-encrypted credentials can be read.
    retired = KeyRing.parse(f"new:{NEW_KEY}")
    assert (
        retired.decrypt(sealed_after, agent_id="agent-1", field="gupshup_api_key")
        == "rotated-secret"
    )
    with pytest.raises(DecryptionFailed, match="'old' is not in the key ring"):
        retired.decrypt(sealed_before, agent_id="agent-1", field="gupshup_api_key")


def test_ciphertext_relabelled_with_another_known_key_id_does_not_decrypt() -> None:
    ring = KeyRing.parse(f"new:{NEW_KEY},old:{OLD_KEY}")
    sealed = ring.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")
    with pytest.raises(DecryptionFailed):
        ring.decrypt(sealed_copy(sealed, kid="old"), agent_id="agent-1", field="gupshup_api_key")


@pytest.mark.parametrize("kid", ["k9", None], ids=["unknown-key-id", "no-key-id"])
def test_ciphertext_whose_key_is_not_in_the_ring_does_not_decrypt(kid: str | None) -> None:
    ring = KeyRing.parse(f"k1:{OLD_KEY}")
    sealed = ring.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")
    del sealed["kid"]
    if kid is not None:
        sealed["kid"] = kid
    with pytest.raises(DecryptionFailed, match="is not in the key ring"):
        ring.decrypt(sealed, agent_id="agent-1", field="gupshup_api_key")


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "no key given"),
        (" , ", "no key given"),
        (f"k1{OLD_KEY}", "must be 'key_id:base64key'"),
        (f":{OLD_KEY}", "must be 'key_id:base64key'"),
        ("k1:not*base64!", "'k1' is not base64"),
        ("k1:" + base64.b64encode(bytes(16)).decode(), "'k1' must be 32 bytes"),
        ("k1:" + base64.b64encode(bytes(33)).decode(), "'k1' must be 32 bytes"),
        ("k1:", "'k1' must be 32 bytes"),
        (f"k1:{NEW_KEY},k1:{OLD_KEY}", "'k1' appears more than once"),
    ],
    ids=[
        "empty",
        "only-separators",
        "missing-colon",
        "missing-key-id",
        "not-base64",
        "too-short",
        "too-long",
        "empty-key",
        "duplicate-key-id",
    ],
)
def test_bad_key_ring_is_a_config_error_naming_the_variable(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KeyRing.parse(spec)
    message = str(caught.value)
    assert message.startswith("CREDENTIALS_KEYS")
    assert problem in message
    # The operator sees what is wrong, never the key material itself.
    assert OLD_KEY not in message and NEW_KEY not in message


def test_production_without_a_key_ring_is_a_config_error() -> None:
    settings = Settings(environment="production", credentials_keys=None)
    with pytest.raises(ConfigError, match="CREDENTIALS_KEYS is required in production"):
        KeyRing.from_settings(settings)


def test_development_key_ring_is_created_once_and_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring_file = tmp_path / ".local" / "dev-credentials-keys"
    monkeypatch.setattr(crypto, "DEV_KEY_RING_FILE", ring_file)
    settings = Settings(environment="development", credentials_keys=None)

    cli_ring = KeyRing.from_settings(settings)
    sealed = cli_ring.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")
    service_ring = KeyRing.from_settings(settings)

    assert service_ring.decrypt(sealed, agent_id="agent-1", field="gupshup_api_key") == API_KEY
    assert stat.S_IMODE(ring_file.stat().st_mode) == 0o600


def test_stored_form_never_contains_the_plaintext() -> None:
    ring = KeyRing.parse(f"k1:{OLD_KEY}")
    first = ring.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")
    second = ring.encrypt(API_KEY, agent_id="agent-1", field="gupshup_api_key")
    for sealed in (first, second):
        stored = json.dumps(sealed)
        assert set(sealed) == {"kid", "nonce", "ct"}
        assert API_KEY not in stored
        assert base64.b64encode(API_KEY.encode()).decode() not in stored
    # A fresh nonce each time: equal credentials do not look equal in the store.
    assert first["ct"] != second["ct"] and first["nonce"] != second["nonce"]


def test_token_hash_is_stable_across_releases() -> None:
    # Stored callback and API key hashes must keep matching after an upgrade.
    assert hash_token("cbk_example") == (
        "3336cf65de18576a667484c013af3417f2867956690cd1f8d4b0b33963617fce"
    )


def test_token_hash_differs_per_token_and_never_contains_the_token() -> None:
    hashes = {hash_token(f"cbk_{n}") for n in range(100)}
    assert len(hashes) == 100
    assert all("cbk_" not in h for h in hashes)
    assert hash_token("cbk_1") == hash_token("cbk_1")
