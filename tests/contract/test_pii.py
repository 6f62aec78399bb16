"""PII normalising and hashing for ad destinations, on real-looking values."""

from __future__ import annotations

import hashlib

import pytest

from reverse_etl.pii import (
    hash_email,
    hash_phone,
    is_sha256_hex,
    normalise_email,
    normalise_phone,
    validate_country_code,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("\tBOB@mail.example.co.jp\n", "bob@mail.example.co.jp"),
        ("ÉLODIE@exemple.fr", "élodie@exemple.fr"),
        ("", None),
        ("   ", None),
        ("n/a", None),
        ("two@@example.com", None),
        ("no spaces@example.com", None),
        (None, None),
        (42, None),
    ],
)
def test_email_is_trimmed_and_lower_cased_or_refused(raw: object, expected: str | None) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+1 (650) 555-1234", None, "16505551234"),
        ("+44 (0)20 7946 0958", None, "442079460958"),  # trunk 0 in parentheses dropped
        ("0044 20 7946 0958", None, "442079460958"),  # 00 international prefix
        ("+81 90-1234-5678", None, "819012345678"),
        ("090-1234-5678", "81", "819012345678"),  # Japanese national number, trunk 0 dropped
        ("03.1234.5678", "81", "81312345678"),
        ("(650) 555-1234", "1", "16505551234"),
        ("1-650-555-1234", "1", "16505551234"),  # NANP number with its 1 but no +
        ("+1 650 555 1234 ext. 12", None, "16505551234"),  # extension ignored
        ("650.555.1234 x99", "+1", "16505551234"),
        (16505551234, None, "16505551234"),  # an integer column
        ("16505551234", None, "16505551234"),  # digits taken to start with the country code
        ("090-1234-5678", None, None),  # national number, country unknown
        ("+0 123 4567", None, None),
        ("12345", None, None),  # too short
        ("+1234567890123456", None, None),  # too long for E.164
        ("call me", None, None),
        ("", "81", None),
        (None, "81", None),
        (True, None, None),
    ],
)
def test_phone_is_digits_with_country_code_or_refused(raw: object, country: str | None, expected: str | None) -> None:
    assert normalise_phone(raw, default_country_code=country) == expected


def test_the_same_person_written_two_ways_hashes_the_same() -> None:
    assert hash_email(" Jane.Doe@Example.COM") == hash_email("jane.doe@example.com") == sha("jane.doe@example.com")
    assert hash_phone("090-1234-5678", default_country_code="81") == hash_phone("+81 90 1234 5678") == sha("819012345678")


def test_an_already_hashed_value_is_passed_through_lower_cased_never_hashed_again() -> None:
    digest = sha("jane.doe@example.com")
    assert is_sha256_hex(digest.upper())
    assert hash_email(digest.upper()) == digest
    assert hash_email(f"  {digest} ") == digest
    assert hash_phone(digest) == digest
    assert not is_sha256_hex(digest[:-1]) and not is_sha256_hex(digest + "0") and not is_sha256_hex("g" * 64)


def test_unusable_values_hash_to_none_not_to_the_hash_of_nothing() -> None:
    assert hash_email("") is None and hash_email("   ") is None and hash_email(None) is None
    assert hash_phone("n/a") is None and hash_phone("") is None
    assert sha("") not in {hash_email("x"), hash_phone("0")}


@pytest.mark.parametrize("value", ["0", "1234", "abc", "", "+", True, 3.5])
def test_country_code_setting_is_checked_and_named(value: object) -> None:
    with pytest.raises(ValueError, match="default_country_code"):
        validate_country_code(value)


def test_country_code_forms_accepted() -> None:
    assert validate_country_code("+81") == "81" and validate_country_code(44) == "44" and validate_country_code(" 1 ") == "1"
