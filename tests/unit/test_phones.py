"""normalize_phone: every way people and Gupshup write a number gives the same E.164 id."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.phones import InvalidPhoneNumber, normalize_phone

SG_LEAD = "+6598887777"
FORMATS = {
    "E164": phonenumbers.PhoneNumberFormat.E164,
    "INTERNATIONAL": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    "NATIONAL": phonenumbers.PhoneNumberFormat.NATIONAL,
}


def _example_mobiles() -> dict[str, phonenumbers.PhoneNumber]:
    found = {}
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if number is not None and phonenumbers.is_valid_number(number):
            found[region] = number
    return found


EXAMPLE_MOBILES = _example_mobiles()
REGIONS = sorted(EXAMPLE_MOBILES)


def e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def written(number: phonenumbers.PhoneNumber, style: str) -> str:
    """The number as a person or Gupshup writes it; DIGITS is a WhatsApp id."""
    if style == "DIGITS":
        return e164(number).lstrip("+")
    return phonenumbers.format_number(number, FORMATS[style])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("6598887777", id="whatsapp-id"),
        pytest.param("9888 7777", id="national"),
        pytest.param("98887777", id="national-digits"),
        pytest.param("+65 9888-7777", id="international-dash"),
        pytest.param("(+65) 9888.7777", id="parenthesised-country-code"),
        pytest.param("tel:+6598887777", id="tel-uri"),
        pytest.param("TEL:+65-9888-7777", id="tel-uri-upper-case"),
        pytest.param("tel:+65-9888-7777;ext=12", id="tel-uri-with-extension"),
        pytest.param("0065 9888 7777", id="00-international-prefix"),
        pytest.param("+65\u00a09888\u00a07777", id="non-breaking-spaces"),
        pytest.param("+65\u20099888\u20097777", id="thin-spaces"),
        pytest.param("+65\u20119888\u20117777", id="non-breaking-hyphens"),
        pytest.param("\uff19\uff18\uff18\uff18\uff17\uff17\uff17\uff17", id="full-width-digits"),
        pytest.param(
            "\uff0b\uff16\uff15 \uff19\uff18\uff18\uff18 \uff17\uff17\uff17\uff17",
            id="full-width-international",
        ),
        pytest.param("\u202a+65 9888 7777\u202c", id="copied-from-whatsapp-with-bidi-marks"),
        pytest.param("9888 7777 ext 12", id="ext"),
        pytest.param("9888 7777 ext. 12", id="ext-dot"),
        pytest.param("+65 9888 7777 x12", id="x-extension"),
        pytest.param("+65 9888 7777 #12", id="hash-extension"),
        pytest.param("  +65 9888 7777\n", id="surrounding-whitespace"),
    ],
)
def test_singapore_number_written_any_way_gives_one_e164(raw: str) -> None:
    assert normalize_phone(raw, "SG") == SG_LEAD


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("07911 123456", "GB", "+447911123456"),
        ("+44 (0) 7911 123456", "SG", "+447911123456"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("1 (415) 555-2671", "US", "+14155552671"),
        ("+1 415 555 2671", "SG", "+14155552671"),
        ("00 44 7911 123456", "SG", "+447911123456"),
        ("447911123456", "SG", "+447911123456"),  # a British lead's WhatsApp id, SG agent
        ("6598887777", "GB", SG_LEAD),  # a Singapore lead's WhatsApp id, British agent
        ("9888 7777", "sg", SG_LEAD),  # region codes are case-insensitive
    ],
)
def test_numbers_of_other_regions_normalize(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("wa_id", "region"),
    [
        ("4915123456789", "DE"),
        ("62812345678", "ID"),
        ("919876543210", "IN"),
        ("14155552671", "US"),
        ("447911123456", "GB"),
    ],
)
def test_whatsapp_id_of_a_lead_in_the_agents_own_country_keeps_its_country_code(
    wa_id: str, region: str
) -> None:
    # 4915123456789 is also a valid German national number (+49 4915...): a WhatsApp id
    # must not be read that way, or the lead gets a second, wrong identity.
    assert normalize_phone(wa_id, region) == "+" + wa_id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "contains no digits"),
        ("   ", "contains no digits"),
        ("call me", "contains no digits"),
        ("+", "contains no digits"),
        ("123", "is not a valid phone number (region SG)"),
        ("9888 777", "is not a valid phone number (region SG)"),
        ("+65 1234 5678", "is not a valid phone number (region SG)"),  # no SG number starts 1
        ("+44 7911 1234567", "is not a valid phone number (region SG)"),
        ("6598887777 6598887777", "has too many digits"),
        ("+65 9888 7777 1234 5678 90", "has too many digits"),
    ],
)
def test_rejection_names_the_input_and_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_phone(raw, "SG")
    assert str(caught.value).startswith(f"{raw!r} {reason}")


def test_rejection_is_a_value_error_for_callers_that_validate_input() -> None:
    with pytest.raises(ValueError, match="not a valid phone number"):
        normalize_phone("+65 1234 5678", "SG")


def test_a_number_that_is_not_text_is_rejected_with_its_type() -> None:
    with pytest.raises(InvalidPhoneNumber, match="expected text, got int"):
        normalize_phone(6598887777, "SG")  # type: ignore[arg-type]


def test_every_regions_example_mobile_normalizes_from_every_written_form() -> None:
    mismatches = []
    for region, number in EXAMPLE_MOBILES.items():
        for style in ("E164", "INTERNATIONAL", "NATIONAL", "DIGITS"):
            raw = written(number, style)
            try:
                got = normalize_phone(raw, region)
            except InvalidPhoneNumber as exc:
                got = str(exc)
            if got != e164(number):
                mismatches.append((region, style, raw, got))
    assert len(EXAMPLE_MOBILES) > 200
    assert mismatches == []


SEPARATORS = st.sampled_from([" ", "-", ".", "", "\u00a0", "\u2009", "  "])


@st.composite
def written_mobiles(draw: st.DrawFn) -> tuple[str, str, str]:
    """(text, default region, expected E.164) for a real mobile number, written some way."""
    region = draw(st.sampled_from(REGIONS))
    number = EXAMPLE_MOBILES[region]
    style = draw(st.sampled_from(["E164", "INTERNATIONAL", "NATIONAL", "DIGITS"]))
    raw = written(number, style)
    if style in ("E164", "INTERNATIONAL"):
        # A '+' form means the same number whatever the agent's region.
        region = draw(st.sampled_from(REGIONS))
    raw = raw.replace(" ", draw(SEPARATORS))
    if draw(st.booleans()):
        raw = raw.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789+"})  # full width
    raw = draw(st.sampled_from(["", " ", "\t"])) + raw + draw(st.sampled_from(["", " ", "\n"]))
    return raw, region, e164(number)


@settings(max_examples=200, deadline=None)
@given(written_mobiles())
@example(("4915123456789", "DE", "+4915123456789"))
@example(("62812345678", "ID", "+62812345678"))
@example(("+65 9888\u00a07777", "US", SG_LEAD))
def test_written_mobile_numbers_normalize_to_their_e164(case: tuple[str, str, str]) -> None:
    raw, region, expected = case
    assert normalize_phone(raw, region) == expected


PHONE_ALPHABET = st.sampled_from(
    [*"0123456789+()-. x#;=:/etlEXT", "\u00a0", "\u2009", "\u202a", "\uff19", "\uff0b", "\n"]
)
ANY_REGION = st.sampled_from(["SG", "US", "GB", "DE", "IN", "ID", "MY", "AU"])


@settings(max_examples=200, deadline=None)
@given(st.one_of(written_mobiles().map(lambda case: case[0]), st.text(PHONE_ALPHABET)), ANY_REGION)
def test_normalizing_a_normalized_number_changes_nothing(raw: str, region: str) -> None:
    try:
        once = normalize_phone(raw, region)
    except InvalidPhoneNumber:
        return
    assert once.startswith("+") and once[1:].isdigit()
    assert normalize_phone(once, region) == once
    assert normalize_phone(once, "SG") == once


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.text(PHONE_ALPHABET, max_size=40)), ANY_REGION)
def test_arbitrary_text_gives_an_e164_number_or_invalid_phone_number(raw: str, region: str) -> None:
    try:
        result = normalize_phone(raw, region)
    except InvalidPhoneNumber as exc:
        assert repr(raw) in str(exc)
    else:
        assert phonenumbers.is_valid_number(phonenumbers.parse(result))


@pytest.mark.parametrize(
    "raw", ["0065 9747-4996", "006597474996", "00 65 9747 4996", "+65 9747 4996"]
)
def test_00_prefix_is_international_even_where_local_carrier_prefixes_start_with_00(
    raw: str,
) -> None:
    # Read nationally in Singapore, "006" is a carrier's international prefix: +597 (Suriname).
    assert normalize_phone(raw, "SG") == "+6597474996"
