"""Money is exact in what syncs send: 0.1 + 0.2 summed in the warehouse arrives as 0.3, in every format.

The warehouse holds money as exact decimals (dbt_project/macros/cross_db/money.sql: decimal(18, 6) per
event, decimal(38, 6) for sums). A sync reads them as Arrow decimal128 / Python Decimal; JSON bodies
(webhook and vendor APIs, through reverse_etl.http.encode_json) write the decimal's digits as a JSON
number, CSV writes its text, Parquet keeps decimal128. Nothing goes through a float on the way.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from contract_helpers import FakeClock, fake_options, fast_config

from reverse_etl import CsvFileDestination, ParquetFileDestination, SyncSpec, run_sync
from reverse_etl.destinations.hubspot import property_value
from reverse_etl.destinations.webhook import WebhookDestination
from reverse_etl.emulators.webhook import WebhookEmulator
from reverse_etl.http import encode_json

SECRET = "whsec-exact-money-0123456789"
T0 = datetime(2026, 3, 1, 12, 0, 0)
# 18 significant digits: a double keeps ~16 (float(...) would send 123456789012.12346).
LARGE = "123456789012.123457"


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """Lifetime value summed in the warehouse from per-event amounts, with the project's types."""
    connection = duckdb.connect()
    connection.execute("create schema cohorts")
    connection.execute(
        """
        create table cohorts.buyers as
        select user_id, cast(sum(amount) as decimal(38, 6)) as ltv
        from (values
            ('u1', cast('0.1' as decimal(18, 6))), ('u1', cast('0.2' as decimal(18, 6))),
            ('u2', cast('123456789012.123456' as decimal(18, 6))), ('u2', cast('0.000001' as decimal(18, 6))),
            ('u3', cast('20' as decimal(18, 6)))
        ) as lines (user_id, amount)
        group by user_id
        """
    )
    yield connection
    connection.close()


def spec(name: str) -> SyncSpec:
    return SyncSpec(name=name, source_relation="cohorts.buyers", primary_key=["user_id"],
                    fields={"user_id": "user_id", "ltv": "ltv"}, identifiers={"user_id": "user_id"}, batch_size=10)


def test_the_webhook_payload_carries_the_exact_digits(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with WebhookEmulator(secret=SECRET) as receiver:
        dest = WebhookDestination(receiver.url + "/hooks", secret=SECRET, http=fast_config(),
                                  sender_options=fake_options(FakeClock()))
        result = run_sync(con, spec("buyers_to_webhook"), dest, now=T0, lock_dir=tmp_path)
        assert result.status == "succeeded" and result.rows_added == 3
        (request,) = receiver.batch_requests()
    body = request.body
    assert b'"user_properties":{"ltv":0.3}' in body
    assert b'"user_properties":{"ltv":' + LARGE.encode() + b"}" in body
    assert b'"user_properties":{"ltv":20}' in body  # integral amounts stay integers, as before
    assert b"0.30000000000000004" not in body and b"0.300000" not in body
    # Still a JSON number (not a string) for any parser; one that reads decimals gets the exact value.
    parsed = json.loads(body, parse_float=Decimal)
    assert {u["user_id"]: u["user_properties"]["ltv"] for u in parsed["users"]} == {
        "u1": Decimal("0.3"), "u2": Decimal(LARGE), "u3": 20}


def test_the_csv_file_holds_the_exact_text(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "buyers.csv"
    run_sync(con, spec("buyers_to_csv"), CsvFileDestination(out, write_changes=False), now=T0, lock_dir=tmp_path)
    text = out.read_text()
    assert "0.30000000000000004" not in text
    with open(out, newline="") as handle:
        cells = {row["user_id"]: row["ltv"] for row in csv.DictReader(handle)}
    # The decimal's own text at the warehouse's scale: 0.300000 is 0.3, digit for digit.
    assert cells == {"u1": "0.300000", "u2": LARGE, "u3": "20.000000"}


def test_the_parquet_file_keeps_decimal128(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "buyers.parquet"
    run_sync(con, spec("buyers_to_parquet"), ParquetFileDestination(out), now=T0, lock_dir=tmp_path)
    table = pq.read_table(out)
    assert table.schema.field("ltv").type == pa.decimal128(38, 6)
    assert dict(zip(table.column("user_id").to_pylist(), table.column("ltv").to_pylist())) == {
        "u1": Decimal("0.3"), "u2": Decimal(LARGE), "u3": Decimal("20")}


@pytest.mark.parametrize(("value", "expected"), [
    (Decimal("0.300000"), b"0.3"),
    (Decimal("0.1") + Decimal("0.2"), b"0.3"),
    (Decimal(LARGE), LARGE.encode()),
    (Decimal("-0.000001"), b"-0.000001"),
    (Decimal("20.000000"), b"20"),
    (Decimal("-0"), b"0"),
    (Decimal("1E+3"), b"1000"),
    (Decimal("12345678901234567890123456.123456"), b"12345678901234567890123456.123456"),
    (Decimal("1E-7"), b"1E-7"),  # still exact, and a valid JSON number
    (Decimal("NaN"), b"null"),  # JSON has no NaN, like float('nan')
    (Decimal("-Infinity"), b"null"),
], ids=str)
def test_encode_json_writes_a_decimal_as_its_exact_digits(value: Decimal, expected: bytes) -> None:
    assert encode_json({"v": value}) == b'{"v":' + expected + b"}"
    assert encode_json([value]) == b"[" + expected + b"]"
    assert encode_json(value) == expected


def test_encode_json_writes_everything_else_as_before() -> None:
    payload = {"f": 0.1 + 0.2, "tiny": 1e-05, "i": 7, "t": True, "n": None, "s": "héllo \u2028", "l": (1, 2),
               "nan": float("nan"), "at": datetime(2026, 3, 1, 12, 0, 0), "nested": [{"d": Decimal("2.50")}]}
    assert encode_json(payload) == (
        '{"f":0.30000000000000004,"tiny":1e-05,"i":7,"t":true,"n":null,"s":"héllo \u2028","l":[1,2],'
        '"nan":null,"at":"2026-03-01T12:00:00Z","nested":[{"d":2.5}]}').encode("utf-8")


def test_hubspot_property_text_of_a_decimal_is_exact() -> None:
    assert property_value(Decimal("0.300000")) == "0.3"
    assert property_value(Decimal(LARGE)) == LARGE
    assert property_value([Decimal("0.300000"), "a"]) == '[0.3,"a"]'
