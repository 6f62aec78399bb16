"""The UCI Online Retail CSV: one purchase / cancellation event per invoice line.

Besides events it lands one ``raw.users`` row per customer and one ``raw.items`` row per
stock code, derived in SQL from the same file. See ../shared/data/online_retail/SOURCE.md
for the quirks handled here.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from cohortflow.ingest.csv_reader import load_csv_records
from cohortflow.ingest.sources import DEFAULT_BLOCK_BYTES
from cohortflow.ingest.sql import (Check, blank_to_null, detail_of, failed_check, field_checks, json_number, lit,
                                   local_to_utc, reason_of, strip_nul, time_checks)
from cohortflow.ingest.stage import Counts, FileContext, create_stage, write_stage
from cohortflow.warehouse import RAW_SCHEMA

COLUMNS: tuple[str, ...] = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                            "CustomerID", "Country")
#: Stock codes that are charges, fees or adjustments rather than products (compared upper-case).
NON_PRODUCT_CODES: tuple[str, ...] = ("POST", "DOT", "M", "C2", "D", "S", "B", "AMAZONFEE", "BANK CHARGES", "CRUK", "PADS")
#: Gift vouchers (gift_0001_10, gift_0001_20, ...) are not products either.
NON_PRODUCT_PREFIX = "gift_0001_"
#: The shop is in the UK: invoice times are local London time (GMT / BST).
SOURCE_TIMEZONE = "Europe/London"
# The UCI download has 'YYYY-MM-DD HH:MM:SS'; the original spreadsheet export 'M/D/YYYY H:MM'.
_TIME_FORMATS = "['%Y-%m-%d %H:%M:%S', '%Y-%m-%d %H:%M', '%m/%d/%Y %H:%M']"


def ingest_online_retail(con: duckdb.DuckDBPyConnection, path: Path, ctx: FileContext, *,
                         block_bytes: int = DEFAULT_BLOCK_BYTES) -> Counts:
    """Stage and write the Online Retail file: events, then customers and stock codes.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Warehouse connection, inside the file's transaction.
    path : Path
        ``online_retail.csv`` or ``.csv.gz``.
    ctx : FileContext
        Format, file, clock, temp-table prefix, field-size limit.
    block_bytes : int
        Decompressed bytes read per block; bounds memory on very large files.

    Returns
    -------
    Counts
        Events as rows (lines that are not CSV rows at all included, as rejections);
        ``users_loaded`` / ``items_loaded`` count the derived rows.
    """
    recs = load_csv_records(con, path, ctx.prefix, max_field_bytes=ctx.max_field_bytes, block_bytes=block_bytes)
    missing = [c for c in COLUMNS if c not in recs.columns]
    parsed, stage = f"{ctx.prefix}_parsed", f"{ctx.prefix}_stage"
    col = {c: (f'"{c}"' if c in recs.columns else "null::varchar") for c in COLUMNS}

    invoice, stock, customer = (blank_to_null(col[c]) for c in ("InvoiceNo", "StockCode", "CustomerID"))
    quantity, price, when = (blank_to_null(col[c]) for c in ("Quantity", "UnitPrice", "InvoiceDate"))
    checks: list[Check] = []
    if missing:
        checks.append(("true", "'missing_column'",
                       lit(f"column {missing[0]!r} is not in the file; Online Retail needs {', '.join(COLUMNS)} "
                           f"(found: {', '.join(recs.columns)})")))
    checks += [
        # The same rules as every format, under this file's column names.
        *field_checks("insert_id", col["InvoiceNo"], label="InvoiceNo"),
        *field_checks("item_id", col["StockCode"], label="StockCode"),
        *field_checks("user_id", col["CustomerID"], label="CustomerID"),
        (f"{stock} is null", "'missing_item_id'", "'StockCode is missing or empty'"),
        *time_checks(when, "event_time", ctx.now, "InvoiceDate"),
        (f"{quantity} is null", "'invalid_number'", "'Quantity is missing'"),
        *field_checks("quantity", quantity, label="Quantity"),
        (f"{price} is null", "'invalid_number'", "'UnitPrice is missing'"),
        *field_checks("price", price, label="UnitPrice"),
        # Last, so that guest lines still count for the item catalogue (they passed every other check).
        (f"{customer} is null", "'missing_customer_id'", "'CustomerID is empty (guest checkout)'"),
    ]
    payload = recs.payload_sql()
    con.execute(f"""
        create temp table {parsed} as
        with t as (
            select *,
                   {local_to_utc(f"try_strptime({when}, {_TIME_FORMATS})", SOURCE_TIMEZONE)} as event_time,
                   row_number() over (partition by {col['InvoiceNo']} order by __source_row) as line_in_invoice
            from {recs.table}
        )
        select __source_row as source_row, {failed_check(checks)} as failed,
               {invoice} as invoice_no, {stock} as stock_code,
               {strip_nul(blank_to_null(col['Description']))} as description,
               try_cast({quantity} as double) as quantity, try_cast({price} as double) as unit_price,
               -- CustomerID comes as a float string ('17850.0')
               regexp_replace({customer}, '\\.0+$', '') as user_id, {strip_nul(blank_to_null(col['Country']))} as country,
               event_time, line_in_invoice, {quantity} as quantity_text, {price} as price_text,
               {reason_of('failed', checks)} as reason, {detail_of('failed', checks)} as detail,
               {payload} as payload
        from t""")
    # Lines that are not rows at all (broken quoting, wrong width, oversized values) are rejected
    # events too: every line is accounted for.
    create_stage(con, stage, f"""
        select source_row, target, reason, detail,
               case when reason is not null then payload end as payload,
               case when reason is null then invoice_no || '-' || line_in_invoice end as insert_id,
               case when reason is null then user_id end as user_id,
               case when reason is null then
                    case when starts_with(upper(invoice_no), 'C') then 'cancel_purchase' else 'purchase' end end as event_type,
               case when reason is null then event_time end as event_time,
               case when reason is null then json_object(
                    'item_id', stock_code, 'description', description,
                    'quantity', {json_number('quantity_text')}::json, 'price', {json_number('price_text')}::json,
                    -- Exact: the product of the two texts as decimals (0.001 x 3 = 0.003, not a rounded double).
                    'revenue', cast(try_cast(quantity_text as decimal(18, 6)) * try_cast(price_text as decimal(18, 6))
                                    as decimal(18, 6)),
                    'order_id', invoice_no, 'invoice_no', invoice_no,
                    'country', country) end as event_properties
        from (select *, 'events' as target from {parsed})
        union all by name
        select source_row, 'events' as target, reason, detail, payload from {recs.rejected}""",
                 ["source_row", "target", "reason", "detail", "payload", "insert_id", "user_id", "event_type",
                  "event_time", "event_properties"])
    counts = write_stage(con, stage, ctx)
    counts.users_loaded += _write_customers(con, parsed, ctx)
    counts.items_loaded += _write_stock_codes(con, parsed, ctx)
    return counts


def _write_customers(con: duckdb.DuckDBPyConnection, parsed: str, ctx: FileContext) -> int:
    """One raw.users row per customer: country of their first invoice, updated_at = its time."""
    return con.execute(f"""
        insert into {RAW_SCHEMA}.users
        select user_id, json_object('country', country), event_time, {lit(ctx.fmt)}, {lit(ctx.source_file)},
               source_row, timestamp '{ctx.now.isoformat(sep=' ')}'
        from {parsed} where failed is null
        qualify row_number() over (partition by user_id order by event_time, source_row) = 1""").fetchone()[0]


def _write_stock_codes(con: duckdb.DuckDBPyConnection, parsed: str, ctx: FileContext) -> int:
    """One raw.items row per stock code, from every line that is valid apart from a missing customer.

    item_name = most frequent non-empty Description (ties: alphabetically first); price = the
    latest positive UnitPrice; category 'non_product' for fees, postage and vouchers.
    """
    codes = ", ".join(lit(c) for c in NON_PRODUCT_CODES)
    return con.execute(f"""
        insert into {RAW_SCHEMA}.items
        with lines as (
            select * from {parsed} where failed is null or reason = 'missing_customer_id'
        ),
        names as (
            select stock_code, description from lines where description is not null
            group by stock_code, description
            qualify row_number() over (partition by stock_code order by count(*) desc, description) = 1
        ),
        prices as (
            select stock_code, unit_price from lines where unit_price > 0
            qualify row_number() over (partition by stock_code order by event_time desc, source_row desc) = 1
        ),
        codes as (
            select stock_code, max(event_time) as updated_at, min(source_row) as source_row from lines group by 1
        )
        select c.stock_code, n.description,
               case when upper(c.stock_code) in ({codes}) or starts_with(c.stock_code, {lit(NON_PRODUCT_PREFIX)})
                    then 'non_product' end,
               p.unit_price, null, '{{}}', c.updated_at, {lit(ctx.fmt)}, {lit(ctx.source_file)}, c.source_row,
               timestamp '{ctx.now.isoformat(sep=' ')}'
        from codes c left join names n using (stock_code) left join prices p using (stock_code)""").fetchone()[0]
