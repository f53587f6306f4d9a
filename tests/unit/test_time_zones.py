"""Whose time zone a window is read in (issue 22, item 5), pure: the zone of a mobile
number's country exactly as phonenumbers gives it, resolved at ingest with its source, and
the policy's side applied on top."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers.timezone import time_zones_for_number

from dispatch_engine.ingest.rows import ContactIn, parse_contact
from dispatch_engine.rules.zones import contact_zone, window_zone
from dispatch_engine.security.phone_validity import is_geographical_e164
from dispatch_engine.security.phone_zones import phone_time_zone

CALLING_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
FRANCE_MOBILE = "+33612345678"
NEW_YORK = "+12125550123"  # area code 212: one zone
IDAHO = "+12085550123"  # area code 208: Boise and Los Angeles
US_TOLL_FREE = "+18005551234"  # not geographical: every zone of +1
UK_MOBILE = "+447911123456"  # London, Jersey, Guernsey, the Isle of Man


def library_zone(e164: str) -> str | None:
    """What the issue asks for: time_zones_for_number, used only when it names one zone."""
    zones = time_zones_for_number(phonenumbers.parse(e164, None))
    return zones[0] if len(zones) == 1 and zones[0] != "Etc/Unknown" else None


def e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def example_numbers() -> list[str]:
    """The library's valid example number of every region and type."""
    examples = []
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None and phonenumbers.is_valid_number(number):
                examples.append(e164(number))
    return examples


# --- the zone of a mobile number's country --------------------------------------------------


@pytest.mark.parametrize(
    ("number", "zone"),
    [
        (FRANCE_MOBILE, "Europe/Paris"),
        ("+4915112345678", "Europe/Berlin"),
        ("+819012345678", "Asia/Tokyo"),
        (NEW_YORK, "America/New_York"),  # geographic +1 numbers get their area's zone
        (IDAHO, None),  # an area over two zones: none
        (US_TOLL_FREE, None),
        (UK_MOBILE, None),
        ("+34612345678", None),  # Spain: Madrid and the Canaries
        ("+390612345678", "Europe/Rome"),  # a leading zero: the library's own parse
    ],
)
def test_known_numbers(number: str, zone: str | None) -> None:
    assert phone_time_zone(number) == zone == library_zone(number)


def test_every_example_number_gets_the_library_answer() -> None:
    examples = example_numbers()
    assert len(examples) > 1000
    ones = 0
    for number in examples:
        expected = library_zone(number)
        assert phone_time_zone(number) == expected, number
        ones += expected is not None
    assert ones > 500  # the comparison covers numbers with one zone, not only refusals


@pytest.mark.parametrize("country_code", CALLING_CODES)
def test_random_valid_numbers_of_every_calling_code_get_the_library_answer(
    country_code: int,
) -> None:
    draw = random.Random(country_code)
    for _ in range(200):
        national = str(draw.randint(1, 9)) + "".join(
            str(draw.randint(0, 9)) for _ in range(draw.randint(3, 13))
        )
        number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
        if phonenumbers.is_valid_number(number):
            assert phone_time_zone(e164(number)) == library_zone(e164(number)), e164(number)


@settings(max_examples=300, deadline=None)
@given(area=st.integers(min_value=200, max_value=999), rest=st.integers(2_000_000, 9_999_999))
def test_any_nanp_number_gets_the_library_answer(area: int, rest: int) -> None:
    """+1 is where the number's type and area decide: the costly case, compared widely."""
    number = phonenumbers.PhoneNumber(country_code=1, national_number=int(f"{area}{rest}"))
    if phonenumbers.is_valid_number(number):
        assert phone_time_zone(e164(number)) == library_zone(e164(number))


def test_geographical_type_is_the_librarys() -> None:
    for text in example_numbers():
        number = phonenumbers.parse(text, None)
        national = phonenumbers.national_significant_number(number)
        answer = is_geographical_e164(number.country_code, national)
        if answer is None or national.startswith("0"):
            continue
        expected = phonenumbers.is_number_type_geographical(
            phonenumbers.number_type(number), number.country_code
        )
        assert answer is expected, text


# --- resolved at ingest, with its source ------------------------------------------------------


def parsed(row: dict[str, object]) -> ContactIn:
    contact = parse_contact(1, row, channels=frozenset({"email", "sms"}), uuid_field="email")
    assert isinstance(contact, ContactIn), contact
    return contact


def test_a_french_mobile_gives_paris_from_the_phone_country() -> None:
    contact = parsed({"email": "a@example.com", "mobile": "+33 6 12 34 56 78"})
    assert (contact.time_zone, contact.time_zone_source) == ("Europe/Paris", "phone_country")


def test_a_contact_time_zone_wins_over_the_phone() -> None:
    contact = parsed(
        {"email": "a@example.com", "mobile": FRANCE_MOBILE, "time_zone": "America/Toronto"}
    )
    assert (contact.time_zone, contact.time_zone_source) == ("America/Toronto", "contact")


@pytest.mark.parametrize("row", [{"mobile": US_TOLL_FREE}, {"mobile": IDAHO}, {}])
def test_several_zones_or_no_mobile_give_no_contact_zone(row: dict[str, object]) -> None:
    contact = parsed({"email": "a@example.com", **row})
    assert (contact.time_zone, contact.time_zone_source) == (None, None)


def test_contact_zone_prefers_the_file_then_the_phone() -> None:
    assert contact_zone("Asia/Tokyo", "Europe/Paris") == ("Asia/Tokyo", "contact")
    assert contact_zone(None, "Europe/Paris") == ("Europe/Paris", "phone_country")
    assert contact_zone(None, None) == (None, None)


# --- the policy's side --------------------------------------------------------------------


def test_with_use_contact_time_zone_the_stored_zone_and_source() -> None:
    assert window_zone("UTC", True, "Europe/Paris", "phone_country") == (
        "Europe/Paris",
        "phone_country",
    )
    assert window_zone("UTC", True, "Asia/Tokyo", "contact") == ("Asia/Tokyo", "contact")
    # Invites stored before sources were: a zone was always the contact file's.
    assert window_zone("UTC", True, "Asia/Tokyo", None) == ("Asia/Tokyo", "contact")


def test_a_us_number_with_several_zones_falls_back_to_the_policy_zone() -> None:
    zone, source = contact_zone(None, phone_time_zone(IDAHO))
    assert window_zone("Europe/Berlin", True, zone, source) == ("Europe/Berlin", "policy")


def test_without_use_contact_time_zone_the_policy_zone() -> None:
    for zone, source in (("Europe/Paris", "phone_country"), ("Asia/Tokyo", "contact")):
        assert window_zone("Europe/Berlin", False, zone, source) == ("Europe/Berlin", "policy")
