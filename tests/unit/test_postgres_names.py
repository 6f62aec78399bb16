"""Names that Postgres would refuse fail here, on a machine without Postgres, before the parity test.

dbt-postgres refuses a relation name longer than 63 bytes (Postgres' identifier limit); a unit test
runs as a relation named after the test, so its name counts too. DuckDB has no such limit.
"""

from __future__ import annotations

import json
from pathlib import Path

POSTGRES_MAX_IDENTIFIER_BYTES = 63


def test_every_relation_and_unit_test_name_fits_postgres(dbt_manifest: Path) -> None:
    manifest = json.loads(dbt_manifest.read_text())
    names = {
        unique_id: node.get("alias") or node["name"]
        for unique_id, node in {**manifest["nodes"], **manifest.get("unit_tests", {})}.items()
        if node["resource_type"] in ("model", "seed", "snapshot", "unit_test")
    }
    too_long = {uid: name for uid, name in names.items() if len(name.encode()) > POSTGRES_MAX_IDENTIFIER_BYTES}
    assert too_long == {}, f"longer than {POSTGRES_MAX_IDENTIFIER_BYTES} bytes (Postgres): {too_long}"
    assert any(uid.startswith("unit_test.") for uid in names)
