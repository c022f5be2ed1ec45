"""Who a WhatsApp user is: a phone number, a business-scoped user ID (BSUID), or both.

Since 2026 WhatsApp may withhold a user's number (users can adopt a username) and identifies
every user to a business by a BSUID instead: a two-letter country code, a dot and up to 128
letters and digits (`SG.1349120865530274`), scoped to one business portfolio. A parent BSUID
(`SG.ENT.…`) is shared by the linked portfolios of one business. A username is for display
and may change; it never identifies anyone.

A number WhatsApp itself reports (`wa_id`, `source`, `sender.phone`) is the user's number
even when the phone library does not know its range yet: it is taken as reported. What
people type (imports, the admin API, the CLI) goes through `shared.phones.normalize_phone`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from shared.phones import InvalidPhoneNumber

_BSUID = re.compile(r"^[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}$")
_PARENT_BSUID = re.compile(r"^[A-Z]{2}\.ENT\.[A-Za-z0-9]{1,128}$")
_WHATSAPP_DIGITS = re.compile(r"^\+?\d{6,15}$")
_USERNAME = re.compile(r"^@?[\w.\-]{1,64}$")
# Meta's business portfolio ids are digits; letters, `_` and `-` are allowed so that an
# operator may name a portfolio of their own while Meta's id is not known yet.
_PORTFOLIO_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PORTFOLIO_ID_PATTERN = _PORTFOLIO_ID.pattern


class InvalidUserId(ValueError):
    """The text is not a business-scoped user ID."""


class InvalidPortfolioId(ValueError):
    """The text is not a business portfolio id."""


def is_bsuid(value: str) -> bool:
    """Whether `value` is written as a BSUID (a parent BSUID counts)."""
    return bool(_BSUID.match(value))


def is_parent_bsuid(value: str) -> bool:
    """Whether `value` is a parent BSUID (`CC.ENT.…`), shared by linked portfolios."""
    return bool(_PARENT_BSUID.match(value))


def validate_bsuid(value: str) -> str:
    """`value` if it is a BSUID, else InvalidUserId (never run through phone normalization)."""
    text = value.strip()
    if not is_bsuid(text):
        raise InvalidUserId(f"{value!r} is not a business-scoped user ID (CC.alphanumerics)")
    return text


def validate_portfolio_id(value: str) -> str:
    """`value` if it is a business portfolio id (1 to 64 of `A-Z a-z 0-9 _ -`), else
    InvalidPortfolioId."""
    text = value.strip()
    if not _PORTFOLIO_ID.fullmatch(text):
        raise InvalidPortfolioId(
            f"{value!r} is not a business portfolio id (1 to 64 letters, digits, _ or -)"
        )
    return text


def whatsapp_number(wa_id: str) -> str:
    """The E.164 form of a number WhatsApp reported (`6591234567`, `+6591234567`).

    WhatsApp only reports numbers it delivers to, so a range the phone library does not know
    yet is still a real number: it is kept as reported rather than refused.
    """
    text = wa_id.strip()
    if not _WHATSAPP_DIGITS.match(text):
        raise InvalidPhoneNumber(f"{wa_id!r} is not a WhatsApp phone number (6 to 15 digits)")
    e164 = "+" + text.lstrip("+")
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def known_number(wa_id: str) -> bool:
    """Whether the phone library knows the range of a WhatsApp-reported number."""
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(whatsapp_number(wa_id), None))
    except (phonenumbers.NumberParseException, InvalidPhoneNumber):
        return False


def clean_username(value: str | None) -> str | None:
    """A username as WhatsApp shows it (`@name`), or None when absent or not a username."""
    if not value:
        return None
    text = value.strip()
    if not _USERNAME.match(text):
        return None
    return text if text.startswith("@") else f"@{text}"


@dataclass(frozen=True)
class WhatsAppUser:
    """The identifiers one event gives a WhatsApp user; at least a phone or a BSUID.

    `phone` is E.164; `user_id` the BSUID in the portfolio of the agent the event came
    through; `parent_user_id` the parent BSUID; `username` for display only.
    """

    phone: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    username: str | None = None

    def __post_init__(self) -> None:
        if self.phone is None and self.user_id is None and self.parent_user_id is None:
            raise ValueError("a WhatsApp user needs a phone number or a business-scoped user ID")

    @property
    def address(self) -> str:
        """Where replies go: the number when known, else the BSUID (the number wins)."""
        return self.phone or self.user_id or self.parent_user_id or ""


def recipient(address: str) -> str:
    """The form Gupshup's send API takes for an address: a number's digits, or the BSUID."""
    return address if is_bsuid(address) else address.lstrip("+")
