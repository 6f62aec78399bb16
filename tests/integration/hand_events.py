"""The hand-written event set and its hand-worked answers (tests/fixtures/hand_events/expected.yml).

Shared by the test that loads it with plain SQL (the dbt layer alone) and the one that goes through
`cohortflow ingest` + `cohortflow run` (the whole product).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from cohortflow.warehouse import connect

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "hand_events"
EXPECTED = yaml.safe_load((FIXTURE_DIR / "expected.yml").read_text())
MOMENTS = [EXPECTED, *EXPECTED["time_travel"]]


def normalise(value: Any) -> Any:
    """Database values in expected.yml's notation: 'YYYY-MM-DD HH:MM:SS' times; money exactly.

    Money is a decimal in the warehouse (Decimal('12.340000')); a number written in expected.yml (a
    float once YAML read it) is taken for the decimal it shows (12.34 -> Decimal('12.34')), and the two
    compare exactly: no rounding hides float noise.
    """
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


def read_table(warehouse: Path, relation: str) -> tuple[list[str], list[dict[str, Any]]]:
    con = connect(warehouse, read_only=True)
    try:
        cursor = con.execute(f"select * from {relation}")
        columns = [description[0] for description in cursor.description]
        rows = [dict(zip(columns, map(normalise, row))) for row in cursor.fetchall()]
    finally:
        con.close()
    return columns, rows


def expected_user_properties(moment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        user_id: {**{k: normalise(v) for k, v in values.items()}, "computed_at": moment["computed_at"]}
        for user_id, values in moment["user_properties"].items()
    }


def expected_members(moment: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """cohort_id -> sorted (user_id, entered_at) of its hand-worked members."""
    return {
        cohort_id: sorted((m["user_id"], m["entered_at"]) for m in members)
        for cohort_id, members in moment["cohorts"]["members"].items()
    }
