"""Normalising and hashing personal data for ad destinations (Facebook Custom Audiences and the like).

Ad platforms match people on SHA-256 hashes of *normalised* identifiers, so two spellings of one
address must give one hash:

* e-mail: trimmed and lower-cased (``"  Jane.Doe@Example.COM "`` -> ``"jane.doe@example.com"``);
* phone: digits only, with the country code and without a trunk prefix
  (``"+44 (0)20 7946 0958"`` -> ``"442079460958"``; ``"090-1234-5678"`` with default country code
  ``"81"`` -> ``"819012345678"``);
* a value that already is a SHA-256 hex digest (64 hex characters) is passed through lower-cased,
  never hashed a second time;
* a value that is empty or unusable after normalising gives ``None``: the destination then leaves the
  record out (``BatchResult.skipped``) with a reason, it never fails the batch.

Nothing here logs or keeps a value.
"""

from __future__ import annotations

import hashlib
import re

_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
# One @, something on each side, no whitespace: enough to refuse "n/a", "" or "unknown" without
# pretending to validate every address the RFC allows.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# Formatting characters people put in phone numbers; anything else (letters) makes it unusable.
_PHONE_FORMATTING = re.compile(r"[\s\-./()\u00a0\u2010-\u2015]")
_PHONE_EXTENSION = re.compile(r"\s*(?:ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.IGNORECASE)
_TRUNK_IN_PARENS = re.compile(r"\(\s*0\s*\)")
_COUNTRY_CODE = re.compile(r"^[1-9][0-9]{0,2}$")
# E.164: at most 15 digits with the country code; nothing real is shorter than 7.
MIN_PHONE_DIGITS = 7
MAX_PHONE_DIGITS = 15


def is_sha256_hex(value: object) -> bool:
    """True for a string of exactly 64 hexadecimal characters (an already-hashed identifier)."""
    return isinstance(value, str) and bool(_SHA256_HEX.match(value.strip()))


def sha256_hex(text: str) -> str:
    """SHA-256 of the UTF-8 text, as 64 lower-case hex characters."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_country_code(value: object, *, setting: str = "default_country_code") -> str:
    """Check a country calling code setting (``"81"``, ``"+44"``, ``1``) and return its digits.

    Raises
    ------
    ValueError
        Naming ``setting`` when the value is not 1-3 digits not starting with 0.
    """
    text = str(value).strip().lstrip("+") if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not _COUNTRY_CODE.match(text):
        raise ValueError(f"setting {setting!r} must be a country calling code of 1-3 digits like '81' or '44', got {value!r}")
    return text


def normalise_email(value: object) -> str | None:
    """Trim and lower-case an e-mail address; ``None`` when nothing usable is left.

    Examples
    --------
    >>> normalise_email("  Jane.Doe@Example.COM ")
    'jane.doe@example.com'
    >>> normalise_email("n/a") is None
    True
    """
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if not text or not _EMAIL.match(text):
        return None
    return text


def normalise_phone(value: object, *, default_country_code: str | None = None) -> str | None:
    """Digits only, with the country code; ``None`` when no usable number is left.

    Parameters
    ----------
    value
        The phone number as stored (text, or an integer column).
    default_country_code
        Country calling code for numbers written nationally (without ``+`` or ``00``), e.g. ``"81"``
        for Japan: a leading ``0`` trunk prefix is dropped and the code put in front
        (``"090-1234-5678"`` -> ``"819012345678"``). Without it, a number without ``+`` / ``00`` is
        taken to already start with its country code, unless it starts with ``0`` (then it is a
        national number whose country is unknown: ``None``).

    Notes
    -----
    ``+`` and a leading international prefix ``00`` both mark an international number; a trunk
    prefix written as ``(0)`` after the country code (``+44 (0)20 ...``) is dropped; an extension
    (``x123``, ``ext. 12``) is ignored. The result has 7 to 15 digits (E.164), else ``None``.

    Examples
    --------
    >>> normalise_phone("+1 (650) 555-1234")
    '16505551234'
    >>> normalise_phone("0044 20 7946 0958")
    '442079460958'
    >>> normalise_phone("090-1234-5678", default_country_code="81")
    '819012345678'
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    text = _PHONE_EXTENSION.sub("", text)
    international = False
    if text.startswith("+"):
        international, text = True, text[1:]
    text = _TRUNK_IN_PARENS.sub("", text) if international else text
    digits = _PHONE_FORMATTING.sub("", text)
    if not digits.isdigit():
        return None
    if not international and digits.startswith("00"):
        international, digits = True, digits[2:]
    if international:
        if digits.startswith("0"):
            return None
    elif default_country_code is not None:
        code = validate_country_code(default_country_code)
        if code == "1" and len(digits) == 11 and digits.startswith("1"):
            pass  # North American number written with its country code but no +
        else:
            digits = code + (digits[1:] if digits.startswith("0") else digits)
    elif digits.startswith("0"):
        return None  # national number, country unknown
    if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        return None
    return digits


def hash_email(value: object) -> str | None:
    """SHA-256 hex of the normalised e-mail; an already-hashed value is returned lower-cased.

    ``None`` when the value is empty or not an address after normalising.
    """
    if is_sha256_hex(value):
        return str(value).strip().lower()
    normalised = normalise_email(value)
    return sha256_hex(normalised) if normalised is not None else None


def hash_phone(value: object, *, default_country_code: str | None = None) -> str | None:
    """SHA-256 hex of the normalised phone number (see :func:`normalise_phone`).

    An already-hashed value is returned lower-cased; ``None`` when no usable number is left.
    """
    if is_sha256_hex(value):
        return str(value).strip().lower()
    normalised = normalise_phone(value, default_country_code=default_country_code)
    return sha256_hex(normalised) if normalised is not None else None
