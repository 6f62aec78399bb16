"""The real UCI Online Retail file (541,909 lines) through `ingest --format online-retail`."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from test_dbt_project import run_dbt

from cohortflow.ingest import ingest_files
from cohortflow.warehouse import connect

pytestmark = pytest.mark.slow  # about 6 s: the whole real file (+ ~10 s of dbt for one customer)



@pytest.fixture(scope="module")
def loaded(shared_data: Path) -> tuple[duckdb.DuckDBPyConnection, object]:
    # shared_data (tests/conftest.py) fails in CI and skips elsewhere when ../shared/data is missing.
    data = shared_data / "online_retail" / "online_retail.csv.gz"
    con = duckdb.connect()
    summary = ingest_files(con, [data], "online-retail", now=datetime(2024, 1, 1))
    return con, summary


def test_every_line_is_accounted_for(loaded: tuple) -> None:
    con, summary = loaded
    result = summary.files[0]
    assert result.rows_read == 541_909
    assert result.rows_loaded + result.rows_rejected == 541_909
    assert result.rows_duplicate == 0  # repeated identical lines are distinct purchases, all loaded
    assert result.rejected_by_reason == {"missing_customer_id": 135_080}
    assert con.execute("select count(*) from raw.events").fetchone()[0] == 406_829
    assert con.execute("select count(*) from raw.rejected_events").fetchone()[0] == 135_080


def test_customers_land_once_each(loaded: tuple) -> None:
    con, summary = loaded
    assert con.execute("select count(distinct user_id) from raw.events").fetchone()[0] == 4_372
    assert summary.files[0].users_loaded == 4_372
    assert con.execute("select count(*), count(distinct user_id) from raw.users").fetchone() == (4_372, 4_372)
    assert con.execute("select count(*) from raw.users where contains(user_id, '.')").fetchone()[0] == 0


def test_cancellations_are_typed(loaded: tuple) -> None:
    con, _ = loaded
    got = dict(con.execute("select starts_with(event_id, 'C'), count(*) from raw.events "
                           "where event_type = 'cancel_purchase' group by 1").fetchall())
    assert got == {True: 8_905}  # the 9,288 'C' lines minus those without a customer
    assert con.execute("select count(*) from raw.events where event_type = 'purchase' and "
                       "starts_with(event_id, 'C')").fetchone()[0] == 0


def test_summer_invoice_is_converted_from_bst(loaded: tuple) -> None:
    con, _ = loaded
    # Invoice 556021 was written on 2011-06-08 at 12:03 London time (BST, UTC+1).
    times = con.execute("select distinct event_time from raw.events where json_extract_string(event_properties, "
                        "'$.invoice_no') = '556021'").fetchall()
    assert times == [(datetime(2011, 6, 8, 11, 3),)]
    # ...and a winter one stays as written (GMT = UTC)
    assert con.execute("select distinct event_time from raw.events where event_id like '536365-%'").fetchall() == [
        (datetime(2010, 12, 1, 8, 26),)]


def test_items_catalogue(loaded: tuple) -> None:
    con, summary = loaded
    assert summary.files[0].items_loaded == con.execute("select count(distinct item_id) from raw.items").fetchone()[0]
    assert con.execute("select item_name from raw.items where item_id = '85123A'").fetchone()[0] == \
        "WHITE HANGING HEART T-LIGHT HOLDER"
    non_products = {r[0] for r in con.execute("select item_id from raw.items where category = 'non_product'").fetchall()}
    assert {"POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE", "gift_0001_20"} <= non_products
    assert "85123A" not in non_products


def test_customer_17768_spent_exactly_1000_in_the_90_days_to_2011_12_01(loaded: tuple, tmp_path: Path) -> None:
    """Money is exact: customer 17768's 58 purchase lines of (2011-09-02, 2011-12-01] add up to exactly
    1,000.00 (DuckDB's double sum said 1000.0000000000002). `total('revenue') > 1000` must not admit
    them, `>= 1000` must. Only their rows go through dbt, which keeps the test quick."""
    con, _ = loaded
    warehouse = tmp_path / "retail.duckdb"
    connect(warehouse).close()  # the raw DDL
    con.execute(f"attach '{warehouse}' as retail")
    try:
        con.execute("insert into retail.raw.events select * from raw.events where user_id = '17768'")
        con.execute("insert into retail.raw.users select * from raw.users where user_id = '17768'")
    finally:
        con.execute("detach retail")
    as_of = json.dumps({"as_of": "2011-12-01"})
    built = run_dbt(["build", "--select", "+int_events_as_of", "+int_users_seen", "--vars", as_of], warehouse, tmp_path / "build")
    assert built.returncode == 0, built.stdout[-6000:]

    check = connect(warehouse, read_only=True)
    try:
        total, lines, type_name = check.execute(
            "select sum(revenue), count(*), any_value(typeof(revenue)) from intermediate.int_events_as_of "
            "where event_type = 'purchase' and event_at > timestamp '2011-09-02 00:00:00'").fetchone()
    finally:
        check.close()
    assert (total, lines, type_name) == (Decimal("1000.00"), 58, "DECIMAL(18,6)")

    cohorts = ("select 'over_1000' as cohort, user_id from ({{ cohort(all_of=[performed('purchase', measure=total('revenue'), "
               "operator='>', value=1000, within=last(90, 'days'))]) }}) as over_1000 union all "
               "select 'at_least_1000' as cohort, user_id from ({{ cohort(all_of=[performed('purchase', "
               "measure=total('revenue'), operator='>=', value=1000, within=last(90, 'days'))]) }}) as at_least_1000")
    shown = run_dbt(["show", "--inline", cohorts, "--limit", "-1", "--output", "json", "--log-format", "json",
                     "--vars", as_of], warehouse, tmp_path / "show")
    assert shown.returncode == 0, shown.stdout[-4000:]
    preview = next(json.loads(line)["data"]["preview"] for line in shown.stdout.splitlines()
                   if line.startswith("{") and json.loads(line)["info"]["name"] == "ShowNode")
    assert json.loads(preview) == [{"cohort": "at_least_1000", "user_id": "17768"}]
