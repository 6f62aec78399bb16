"""The manifest Dagster loads is re-parsed when the project changes or when runs target another warehouse.

dbt reuses its partial parse only while the rendered profile is the same, so a parse made for one
warehouse must not serve runs on another (they would pay a full parse every time).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cohortflow.dbt_manifest import manifest_is_stale


def project(tmp_path: Path, parsed_for: str | None) -> Path:
    root = tmp_path / "dbt_project"
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: x\n")
    (root / "models" / "a.sql").write_text("select 1 as a\n")
    time.sleep(0.01)
    (root / "target").mkdir()
    (root / "target" / "manifest.json").write_text("{}")
    if parsed_for is not None:
        (root / "target" / "cohortflow_parsed_for_warehouse.txt").write_text(parsed_for)
    return root


def test_fresh_manifest_for_this_warehouse_is_reused(tmp_path, monkeypatch):
    warehouse = str((tmp_path / "w.duckdb").resolve())
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", warehouse)
    assert not manifest_is_stale(project(tmp_path, warehouse))


def test_another_warehouse_or_no_record_means_parse_again(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", str(tmp_path / "other.duckdb"))
    assert manifest_is_stale(project(tmp_path, str((tmp_path / "w.duckdb").resolve())))
    assert manifest_is_stale(project(tmp_path / "second", None))


def test_an_edited_model_means_parse_again(tmp_path, monkeypatch):
    warehouse = str((tmp_path / "w.duckdb").resolve())
    monkeypatch.setenv("COHORTFLOW_WAREHOUSE", warehouse)
    root = project(tmp_path, warehouse)
    later = time.time() + 5
    os.utime(root / "models" / "a.sql", (later, later))
    assert manifest_is_stale(root)
