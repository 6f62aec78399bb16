"""Sync declarations (dbt exposures with meta.sync) are checked when the definitions load."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.sync_declarations import (
    DeclarationError,
    DestinationConfig,
    load_destinations,
    load_sync_declarations,
)
from reverse_etl import CsvFileDestination

DESTINATIONS = {"local_files": DestinationConfig(name="local_files", type="csv", settings={"directory": "out"})}


def manifest(sync: dict | None = None, depends_on: list[str] | None = None, **exposure) -> dict:
    meta = {} if sync is None else {"sync": sync}
    return {
        "nodes": {
            "model.cohortflow.cart_abandoners_24h": {
                "name": "cart_abandoners_24h",
                "schema": "cohorts",
                "alias": "cart_abandoners_24h",
                "columns": {"user_id": {}, "entered_at": {}},
            }
        },
        "exposures": {
            "exposure.cohortflow.cart_to_files": {
                "name": "cart_to_files",
                "original_file_path": "models/syncs/file_syncs.yml",
                "config": {"meta": meta},
                "depends_on": {"nodes": depends_on if depends_on is not None else ["model.cohortflow.cart_abandoners_24h"]},
                **exposure,
            }
        },
    }


GOOD = {"destination": "local_files", "mode": "mirror", "primary_key": ["user_id"], "schedule": "hourly"}


def test_a_good_declaration_becomes_a_spec_on_the_models_relation():
    [declaration] = load_sync_declarations(manifest(GOOD), DESTINATIONS)
    assert declaration.spec.name == "cart_to_files"
    assert declaration.spec.source_relation == "cohorts.cart_abandoners_24h"
    assert list(declaration.spec.primary_key) == ["user_id"]
    assert declaration.schedule == "hourly"
    assert declaration.model_name == "cart_abandoners_24h"


def test_exposures_without_meta_sync_are_not_syncs():
    assert load_sync_declarations(manifest(None), DESTINATIONS) == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"destination": "braze_prod"}, r"destination 'braze_prod' is not in destinations.yml"),
        ({"schedule": "fortnightly"}, r"schedule 'fortnightly'"),
        ({"primary_key": ["email"]}, r"column 'email' is not documented on model cart_abandoners_24h"),
        ({"fields": {"id": "user_id", "mail": "email"}}, r"column 'email'"),
        ({"mode": "overwrite"}, r"mode 'overwrite'"),
        ({"primary_key": []}, r"primary_key is required"),
    ],
)
def test_bad_declarations_name_the_file_the_exposure_and_the_field(change, message):
    with pytest.raises(DeclarationError, match=message) as error:
        load_sync_declarations(manifest({**GOOD, **change}), DESTINATIONS)
    assert "models/syncs/file_syncs.yml: exposure cart_to_files" in str(error.value)


def test_a_sync_ships_exactly_one_model():
    with pytest.raises(DeclarationError, match="exactly one model"):
        load_sync_declarations(manifest(GOOD, depends_on=[]), DESTINATIONS)


def test_destinations_file_needs_known_types_and_reads_secrets_from_the_environment(tmp_path: Path, monkeypatch):
    path = tmp_path / "destinations.yml"
    path.write_text("destinations:\n  files:\n    type: csv\n    directory: \"{{ env_var('EXPORT_DIR') }}\"\n")
    monkeypatch.setenv("EXPORT_DIR", "/srv/exports")
    assert load_destinations(path)["files"].settings == {"directory": "/srv/exports"}

    monkeypatch.delenv("EXPORT_DIR")
    with pytest.raises(DeclarationError, match=r"destinations.files.directory: environment variable EXPORT_DIR is not set"):
        load_destinations(path)

    path.write_text("destinations:\n  crm:\n    type: carrier_pigeon\n")
    with pytest.raises(DeclarationError, match=r"destinations.crm.type: 'carrier_pigeon'"):
        load_destinations(path)


def test_file_destinations_land_beside_the_warehouse_unless_absolute(tmp_path: Path):
    destination = DESTINATIONS["local_files"].build(tmp_path / "w.duckdb", "cart_to_files")
    assert isinstance(destination, CsvFileDestination)
    assert destination.path == (tmp_path / "out" / "cart_to_files.csv").resolve()
    absolute = DestinationConfig(name="x", type="csv", settings={"directory": str(tmp_path / "elsewhere")})
    assert absolute.build(tmp_path / "w.duckdb", "s").path == (tmp_path / "elsewhere" / "s.csv").resolve()
