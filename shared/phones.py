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
        # RFC 3966 parameters (";ext=12", ";phone-context=...") are not part of the number.
        text = text[4:].partition(";")[0]
    text = _EXTENSION.sub("", text)
    kept = _ALLOWED.sub("", text)
    # Judge the '+' after dropping punctuation and invisible marks: "(+65) ..." and
    # "\u202a+65 ...\u202c" (as WhatsApp copies numbers) are international forms.
    plus = kept.startswith("+")
    digits = kept.lstrip("+")
    if not digits:
        raise InvalidPhoneNumber(f"{raw!r} contains no digits")
    if len(digits) > 17:
        raise InvalidPhoneNumber(f"{raw!r} has too many digits for a phone number")
    region = default_region.upper()  # phonenumbers only knows upper-case region codes
    candidates = [f"+{digits}"] if plus else _candidates(digits, region)
    for candidate in candidates:
        number = _parse(candidate, region)
        if number is not None and phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhoneNumber(f"{raw!r} is not a valid phone number (region {default_region})")


def _candidates(digits: str, region: str) -> list[str]:
    # National form first: a local number must not be misread as a foreign one. But digits
    # that start with the region's own country code are read as an international number
    # first: a WhatsApp id such as German 4915123456789 is also a valid (different)
    # national number, and national forms with a trunk prefix never start that way.
    found = [digits]
    country_code = phonenumbers.country_code_for_region(region)
    if country_code and digits.startswith(str(country_code)):
        found.insert(0, "+" + digits)
    if digits.startswith("00"):
        # "00" is how people everywhere write the international prefix, and no national
        # number starts with it; read nationally, Singapore's carrier prefixes (001, 006 ...)
        # would turn "0065 9747 4996" into a number in Suriname.
        found.insert(0, "+" + digits[2:])
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
