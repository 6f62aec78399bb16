from datetime import datetime, timedelta, timezone

import pytest

from cohortflow.as_of import format_as_of, parse_as_of

FIXED_NOW = datetime(2026, 11, 22, 10, 30, 15, 123456, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2011-12-09", datetime(2011, 12, 9)),
        ("2011-12-09 12:50:00", datetime(2011, 12, 9, 12, 50)),
        ("2011-12-09T12:50:00Z", datetime(2011, 12, 9, 12, 50)),
        ("2011-06-01T13:00:00+01:00", datetime(2011, 6, 1, 12, 0)),  # offsets become UTC
        ("2011-12-09 12:50:00.999", datetime(2011, 12, 9, 12, 50)),  # second precision
    ],
)
def test_as_of_strings_become_naive_utc(text, expected):
    assert parse_as_of(text) == expected


@pytest.mark.parametrize("value", [None, "", "now", "NOW"])
def test_as_of_defaults_to_now(value):
    assert parse_as_of(value, now=FIXED_NOW) == datetime(2026, 11, 22, 10, 30, 15)


def test_aware_datetime_is_converted():
    moment = datetime(2026, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))
    assert parse_as_of(moment) == datetime(2026, 1, 1, 0, 0)


def test_bad_as_of_names_the_setting_and_value():
    with pytest.raises(ValueError, match=r"as_of: 'yesterday-ish'"):
        parse_as_of("yesterday-ish")


def test_format_is_what_dbt_receives():
    assert format_as_of(datetime(2011, 12, 9, 12, 50, 7, 500)) == "2011-12-09 12:50:07"
