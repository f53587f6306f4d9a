"""The compiled validity check decides exactly as `phonenumbers.is_valid_number` does."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch_engine.security.phone_validity import is_valid_e164

CALLING_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def library_says(country_code: int, national: str) -> bool:
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    return bool(phonenumbers.is_valid_number(number))


def example_numbers() -> list[tuple[int, str]]:
    """The library's example number of every region and type: mostly valid numbers."""
    examples = []
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None and not number.italian_leading_zero:
                examples.append((number.country_code, str(number.national_number)))
    return examples


def test_every_example_number_gets_the_library_answer() -> None:
    examples = example_numbers()
    assert len(examples) > 1000
    valid = 0
    for code, national in examples:
        expected = library_says(code, national)
        assert is_valid_e164(code, national) is expected, (code, national)
        valid += expected
    assert valid > 1000  # the comparison covers valid numbers, not only refusals


@pytest.mark.parametrize("country_code", CALLING_CODES)
def test_random_numbers_of_every_calling_code_get_the_library_answer(country_code: int) -> None:
    draw = random.Random(country_code)
    for _ in range(60):
        national = str(draw.randint(1, 9)) + "".join(
            str(draw.randint(0, 9)) for _ in range(draw.randint(3, 13))
        )
        assert is_valid_e164(country_code, national) is library_says(country_code, national)


@settings(max_examples=400, deadline=None)
@given(
    country_code=st.sampled_from(CALLING_CODES),
    national=st.from_regex(r"[1-9][0-9]{3,13}", fullmatch=True),
)
def test_any_digits_get_the_library_answer(country_code: int, national: str) -> None:
    assert is_valid_e164(country_code, national) is library_says(country_code, national)


def test_shared_calling_code_picks_the_region_like_the_library() -> None:
    # +1 is shared by the US, Canada and the Caribbean; +44 by the UK and crown dependencies.
    assert is_valid_e164(1, "2015550123") is True  # US
    assert is_valid_e164(1, "6135550123") is True  # Canada
    assert is_valid_e164(1, "1234567890") is False
    assert is_valid_e164(44, "7400123456") is True
    assert is_valid_e164(44, "1624456789") is library_says(44, "1624456789")  # Isle of Man
