"""Phone numbers: everything inside the platform is E.164 with a leading '+'."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

# Extensions are dropped: WhatsApp identifies a person by the line, not the desk.
_EXTENSION = re.compile(r"(?:ext\.?|extension|x|#)\s*\d+\s*$", re.IGNORECASE)
_ALLOWED = re.compile(r"[^\d+]")


class InvalidPhoneNumber(ValueError):
    """The text is not a valid phone number for its country."""


def normalize_phone(raw: str, default_region: str) -> str:
    """Return the E.164 form of a number as people and systems write it, or raise.

    Accepts WhatsApp ids (country code without '+'), national forms of `default_region`,
    '+' and '00' international forms, and the usual punctuation, Unicode spaces and digits.
    """
    if not isinstance(raw, str):
        raise InvalidPhoneNumber(f"expected text, got {type(raw).__name__}")
    text = unicodedata.normalize("NFKC", raw).strip()
    if text.lower().startswith("tel:"):
        text = text[4:]
    text = _EXTENSION.sub("", text)
    plus = text.lstrip().startswith("+")
    digits = _ALLOWED.sub("", text).lstrip("+")
    if not digits:
        raise InvalidPhoneNumber(f"{raw!r} contains no digits")
    if len(digits) > 17:
        raise InvalidPhoneNumber(f"{raw!r} has too many digits for a phone number")
    candidates = [f"+{digits}"] if plus else _candidates(digits)
    for candidate in candidates:
        number = _parse(candidate, default_region)
        if number is not None and phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhoneNumber(f"{raw!r} is not a valid phone number (region {default_region})")


def _candidates(digits: str) -> list[str]:
    # National form first: a local number must not be misread as a foreign one.
    found = [digits]
    if digits.startswith("00"):
        found.append("+" + digits[2:])
    found.append("+" + digits)
    return found


def _parse(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def wa_id(e164: str) -> str:
    """The WhatsApp/Gupshup form of an E.164 number: digits only, no '+'."""
    return e164.lstrip("+")
