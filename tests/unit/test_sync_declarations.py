"""Sync declarations (dbt exposures with meta.sync) and destinations.yml are checked when the definitions load.

The manifests here are small hand-written dicts shaped like dbt's; the real project's declarations are
loaded in tests/integration/test_definitions.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cohortflow.sync_declarations import (
    DeclarationError,
    DestinationConfig,
    load_destinations,
    load_sync_declarations,
    unique_column_sets,
)
from reverse_etl import CsvFileDestination, ParquetFileDestination, RecordDestination
from reverse_etl.destinations import DESTINATION_TYPES
from reverse_etl.spec import Operation

CART = "model.cohortflow.cart_abandoners_24h"


class AppendOnlyDestination(RecordDestination):
    """A destination type that can only add (an event stream): for the mode check."""

    kind: ClassVar[str] = "append_only"
    supported_operations = frozenset({Operation.ADD})

    def __init__(self, target: str) -> None:
        self.target = target

    @classmethod
    def from_settings(cls, settings, *, sync_name, base_dir):
        unknown = set(settings) - {"target"}
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; allowed: ['target']")
        if not str(settings.get("target", "")).startswith("queue://"):
            raise ValueError(f"setting 'target' must be a queue:// address, got {settings.get('target')!r}")
        return cls(settings["target"])

    @property
    def location(self) -> str:
        return self.target

    def send_batch(self, run, batch):
        return None


class MarketingDestination(AppendOnlyDestination):
    """A marketing destination: needs consent and an e-mail or a phone number."""

    kind: ClassVar[str] = "marketing"
    supported_operations = frozenset(Operation)
    requires_consent = True
    any_identifier_of = frozenset({"email", "phone"})


@pytest.fixture
def test_types(monkeypatch):
    """Register the two classes above as destination types, as a destination module would be."""
    monkeypatch.setitem(DESTINATION_TYPES, "append_only", f"{__name__}:AppendOnlyDestination")
    monkeypatch.setitem(DESTINATION_TYPES, "marketing", f"{__name__}:MarketingDestination")
    monkeypatch.setitem(DESTINATION_TYPES, "not_written_yet", "reverse_etl.destinations.no_such_module:Nothing")


def destinations(**extra: DestinationConfig) -> dict[str, DestinationConfig]:
    return {"local_files": DestinationConfig(name="local_files", type="csv", settings={"directory": "out"}), **extra}


def unique_test(model: str, column: str, **config: Any) -> dict:
    return {
        "resource_type": "test",
        "attached_node": model,
        "column_name": column,
        "test_metadata": {"name": "unique", "kwargs": {"column_name": column}},
        "config": {"enabled": True, **config},
        "depends_on": {"nodes": [model]},
    }


def manifest(sync: dict | None = None, depends_on: list[str] | None = None, **exposure) -> dict:
    meta = {} if sync is None else {"sync": sync}
    return {
        "nodes": {
            CART: {
                "resource_type": "model",
                "name": "cart_abandoners_24h",
                "schema": "cohorts",
                "alias": "cart_abandoners_24h",
                "columns": {"user_id": {}, "entered_at": {}, "email": {}},
            },
            "model.cohortflow.user_properties": {
                "resource_type": "model",
                "name": "user_properties",
                "schema": "marts",
                "alias": "user_properties",
                "columns": {"user_id": {}, "has_marketing_consent": {}, "email": {}},
            },
            "model.cohortflow.unsubscribed": {
                "resource_type": "model",
                "name": "unsubscribed",
                "schema": "cohorts",
                "alias": "unsubscribed",
                "columns": {"user_id": {}},
            },
            "test.cohortflow.unique_cart_user_id": unique_test(CART, "user_id"),
        },
        "exposures": {
            "exposure.cohortflow.cart_to_files": {
                "name": "cart_to_files",
                "original_file_path": "models/syncs/file_syncs.yml",
                "config": {"meta": meta},
                "depends_on": {"nodes": depends_on if depends_on is not None else [CART]},
                **exposure,
            }
        },
    }


GOOD = {"destination": "local_files", "mode": "mirror", "primary_key": ["user_id"], "schedule": "hourly"}


def load_one(sync: dict, dests: dict | None = None):
    [declaration] = load_sync_declarations(manifest(sync), dests or destinations())
    return declaration


def test_a_good_declaration_becomes_a_spec_on_the_models_relation():
    declaration = load_one({**GOOD, "batch_size": 500, "fields": {"user_id": "user_id", "mail": "email"}})
    assert declaration.spec.name == "cart_to_files"
    assert declaration.spec.source_relation == "cohorts.cart_abandoners_24h"
    assert list(declaration.spec.primary_key) == ["user_id"]
    assert declaration.spec.batch_size == 500
    assert dict(declaration.spec.fields) == {"user_id": "user_id", "mail": "email"}
    assert (declaration.schedule, declaration.cron) == ("hourly", "0 * * * *")
    assert declaration.model_name == "cart_abandoners_24h"
    assert declaration.max_rejected_share == 0.05
    # A file is not a marketing destination: no consent filter unless the sync asks for one.
    assert declaration.spec.consent_relation is None


def test_exposures_without_meta_sync_are_not_syncs():
    assert load_sync_declarations(manifest(None), destinations()) == []


@pytest.mark.parametrize(
    "schedule, label, cron",
    [
        (None, "on_demand", None),
        ("on_demand", "on_demand", None),
        ("daily", "daily", "0 0 * * *"),
        ("every_minute", "every_minute", "* * * * *"),
        ({"cron": "15  3 * * MON"}, "15 3 * * MON", "15 3 * * MON"),
        ({"cron": "0 * * * *"}, "hourly", "0 * * * *"),  # the same cadence as hourly: one schedule
    ],
)
def test_schedules(schedule, label, cron):
    sync = {k: v for k, v in GOOD.items() if k != "schedule"}
    if schedule is not None:
        sync["schedule"] = schedule
    declaration = load_one(sync)
    assert (declaration.schedule, declaration.cron) == (label, cron)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"destination": "braze_prod"}, r"meta.sync.destination 'braze_prod' is not in destinations.yml \(declared: local_files\)"),
        ({"destination": "local_file"}, r"did you mean 'local_files'"),
        ({"schedule": "fortnightly"}, r"meta.sync.schedule 'fortnightly' is not one of on_demand, hourly, daily, every_minute"),
        ({"schedule": {"cron": "61 * * * *"}}, r"meta.sync.schedule.cron '61 \* \* \* \*' is not a valid cron expression"),
        ({"schedule": {"crn": "0 * * * *"}}, r"meta.sync.schedule as a mapping takes one key, cron"),
        ({"primary_key": ["email"]}, r"meta.sync.primary_key \['email'\] is not declared unique on model cart_abandoners_24h"),
        ({"primary_key": ["phone"]}, r"meta.sync.primary_key: column 'phone' is not documented on model cart_abandoners_24h"),
        ({"fields": {"id": "user_id", "mail": "e_mail"}}, r"meta.sync.fields: column 'e_mail' is not documented"),
        ({"mode": "overwrite"}, r"meta.sync.mode 'overwrite' is not one of: mirror, upsert"),
        ({"primary_key": []}, r"meta.sync.primary_key is required"),
        ({"shedule": "hourly"}, r"meta.sync.shedule: unknown key \(did you mean 'schedule'\?\)"),
        ({"paused": True}, r"meta.sync.paused: pausing is state.*cohortflow sync pause cart_to_files"),
        ({"suppress": ["unsubscribd"]}, r"meta.sync.suppress: 'unsubscribd' is not a model of this project \(did you mean 'unsubscribed'\?\)"),
        ({"consent": {"model": "user_props"}}, r"meta.sync.consent.model 'user_props' is not a model"),
        ({"consent": {"model": "user_properties", "column": "opted_in"}}, r"meta.sync.consent.column: column 'opted_in' is not documented on model user_properties"),
        ({"consent": "yes"}, r"meta.sync.consent must be `none`"),
        ({"consent": None}, r"meta.sync.consent must be `none`"),
        ({"max_rejected_share": 5}, r"meta.sync.max_rejected_share must be a number from 0 to 1"),
        ({"identifiers": {"mail": "email"}}, r"meta.sync.identifiers.mail: unknown identifier kind"),
        ({"identifiers": {"email": "e_mail"}}, r"meta.sync.identifiers.email: column 'e_mail' is not documented"),
        ({"batch_size": "lots"}, r"meta.sync: sync 'cart_to_files': batch_size must be an integer"),
        ({"destination": None}, r"meta.sync.destination is required"),
    ],
)
def test_bad_declarations_name_the_file_the_exposure_and_the_field(change, message):
    sync = {**GOOD, **change}
    if change.get("destination", "") is None:
        del sync["destination"]
    with pytest.raises(DeclarationError, match=message) as error:
        load_sync_declarations(manifest(sync), destinations())
    assert str(error.value).startswith("models/syncs/file_syncs.yml: exposure cart_to_files: ")


def test_a_sync_ships_exactly_one_model():
    with pytest.raises(DeclarationError, match="exactly one model"):
        load_sync_declarations(manifest(GOOD, depends_on=[]), destinations())


def test_a_primary_key_is_unique_by_a_test_a_combination_test_or_a_constraint():
    base = manifest(GOOD)
    assert unique_column_sets(base, CART) == [frozenset({"user_id"})]

    # A unique test with a `where` only proves part of the table; a disabled one proves nothing.
    conditional = copy.deepcopy(base)
    conditional["nodes"]["test.cohortflow.unique_cart_user_id"] = unique_test(CART, "user_id", where="entered_at is not null")
    conditional["nodes"]["test.cohortflow.unique_cart_email"] = unique_test(CART, "email", enabled=False)
    assert unique_column_sets(conditional, CART) == []
    with pytest.raises(DeclarationError, match="is not declared unique"):
        load_sync_declarations(conditional, destinations())

    combination = copy.deepcopy(base)
    del combination["nodes"]["test.cohortflow.unique_cart_user_id"]
    combination["nodes"]["test.cohortflow.combo"] = {
        "resource_type": "test",
        "attached_node": CART,
        "test_metadata": {"name": "unique_combination_of_columns", "kwargs": {"combination_of_columns": ["user_id", "entered_at"]}},
        "config": {"enabled": True},
    }
    combination["exposures"]["exposure.cohortflow.cart_to_files"]["config"]["meta"]["sync"]["primary_key"] = ["entered_at", "user_id"]
    assert load_sync_declarations(combination, destinations())[0].spec.primary_key == ("entered_at", "user_id")

    constrained = copy.deepcopy(base)
    del constrained["nodes"]["test.cohortflow.unique_cart_user_id"]
    constrained["nodes"][CART]["constraints"] = [{"type": "primary_key", "columns": ["user_id"]}]
    assert unique_column_sets(constrained, CART) == [frozenset({"user_id"})]
    constrained["nodes"][CART]["constraints"] = []
    constrained["nodes"][CART]["columns"]["email"] = {"constraints": [{"type": "unique"}]}
    assert unique_column_sets(constrained, CART) == [frozenset({"email"})]


def test_suppression_models_resolve_to_their_relations():
    declaration = load_one({**GOOD, "suppress": ["unsubscribed"], "consent": {"model": "user_properties"}})
    assert declaration.spec.suppress_relations == ("cohorts.unsubscribed",)
    assert declaration.suppress_models == ("unsubscribed",)
    # A consent filter can be asked for on any destination; its column defaults to has_marketing_consent.
    assert (declaration.spec.consent_relation, declaration.spec.consent_column) == ("marts.user_properties", "has_marketing_consent")


def test_marketing_destinations_default_to_marketing_consent_unless_the_sync_says_none(test_types):
    marketing = DestinationConfig(name="crm", type="marketing", settings={"target": "queue://crm"})
    sync = {**GOOD, "destination": "crm", "identifiers": {"email": "email"}}
    declaration = load_one(sync, destinations(crm=marketing))
    assert declaration.consent_model == "user_properties"
    assert (declaration.spec.consent_relation, declaration.spec.consent_column) == ("marts.user_properties", "has_marketing_consent")

    declaration = load_one({**sync, "consent": "none"}, destinations(crm=marketing))
    assert declaration.spec.consent_relation is None and declaration.consent_model is None

    with pytest.raises(DeclarationError, match=r"meta.sync.identifiers: .*at least one of .*'email', 'phone'"):
        load_one({**GOOD, "destination": "crm"}, destinations(crm=marketing))


def test_a_mode_the_destination_type_cannot_do_fails_at_load(test_types):
    stream = DestinationConfig(name="stream", type="append_only", settings={"target": "queue://s"})
    assert load_one({**GOOD, "destination": "stream", "mode": "insert_only"}, destinations(stream=stream)).spec.mode.value == "insert_only"
    with pytest.raises(DeclarationError, match=r"meta.sync.mode 'mirror' needs \['change', 'remove'\], which append_only "
                                               r"destination 'stream' cannot do \(modes it supports: insert_only\)"):
        load_one({**GOOD, "destination": "stream"}, destinations(stream=stream))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_destination_types_must_be_known(tmp_path: Path):
    path = write(tmp_path / "destinations.yml", "destinations:\n  crm:\n    type: carrier_pigeon\n")
    with pytest.raises(DeclarationError, match=r"destinations.crm.type: unknown destination type 'carrier_pigeon'; known: .*braze, csv"):
        load_destinations(path, base_dir=tmp_path)
    write(path, "destinations:\n  crm:\n    directory: x\n")
    with pytest.raises(DeclarationError, match=r"destinations.crm: needs a 'type'"):
        load_destinations(path, base_dir=tmp_path)


def test_a_typo_in_a_setting_fails_at_load_naming_it(tmp_path: Path):
    path = write(tmp_path / "destinations.yml", "destinations:\n  files:\n    type: csv\n    directroy: out\n")
    with pytest.raises(DeclarationError, match=rf"{path}: destinations.files: unknown setting\(s\) 'directroy' for a csv destination"):
        load_destinations(path, base_dir=tmp_path)


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("type: postgres\n    host: db\n    dbname: crm\n    port: abc", "postgres destination: port must be a whole number, got 'abc'"),
        ("type: postgres\n    host: db\n    dbname: crm\n    port: 70000", "postgres destination: port must be between 1 and 65535"),
        ("type: postgres\n    host: db\n    dbname: crm\n    batch_log: maybe", "postgres destination: batch_log must be true or false"),
        ("type: postgres\n    host: db\n    dbnam: crm", "postgres destination: unknown setting(s) ['dbnam']"),
        ("type: webhook\n    url: http://x\n    secret: s\n    timeout: abc", "webhook destination: setting 'timeout' must be a number"),
        ("type: braze\n    api_key: k\n    rest_endpoint: http://x\n    max_attempts: 0", "braze destination: setting 'max_attempts'"),
        ("type: facebook_custom_audience\n    audience_id: '1'\n    access_token: t\n    default_country_code: ZZZ",
         "facebook_custom_audience destination:"),
        ("type: klaviyo\n    api_key: k\n    default_country_code: ZZZ", "klaviyo destination:"),
    ],
)
def test_a_bad_setting_is_named_once_with_its_destination_type(tmp_path: Path, entry: str, expected: str):
    # Reported: "postgres destination: postgres destination: port must be a whole number, got ...".
    path = write(tmp_path / "destinations.yml", f"destinations:\n  target:\n    {entry}\n")
    with pytest.raises(DeclarationError) as info:
        load_destinations(path, base_dir=tmp_path)
    message = str(info.value)
    assert expected in message, message
    kind = expected.split(" destination")[0]
    assert message.count(f"{kind} destination") == 1, message


def test_an_unset_secret_fails_the_sync_that_uses_it_not_the_loading(tmp_path: Path, monkeypatch, test_types):
    path = write(
        tmp_path / "destinations.yml",
        "destinations:\n"
        "  stream:\n    type: append_only\n    target: \"{{ env_var('STREAM_TARGET') }}\"\n"
        "  files:\n    type: csv\n    directory: \"{{ env_var('EXPORT_DIR', 'exports') }}\"\n",
    )
    monkeypatch.delenv("STREAM_TARGET", raising=False)
    loaded = load_destinations(path, base_dir=tmp_path)
    assert "STREAM_TARGET" in loaded["stream"].unchecked
    # The settings stay as written: they are rendered when a sync builds its destination.
    assert loaded["files"].settings == {"directory": "{{ env_var('EXPORT_DIR', 'exports') }}"}
    assert loaded["files"].build(tmp_path / "w.duckdb", "s").path == (tmp_path / "exports" / "s.csv").resolve()
    with pytest.raises(DeclarationError, match=r"destinations.stream.target: environment variable STREAM_TARGET is not set"):
        loaded["stream"].build(tmp_path / "w.duckdb", "s")

    monkeypatch.setenv("STREAM_TARGET", "queue://events")
    assert loaded["stream"].build(tmp_path / "w.duckdb", "s").location == "queue://events"
    # A misspelt setting beside the unset one is still a load error, though the message names 'target'.
    write(path, "destinations:\n  stream:\n    type: append_only\n    target: \"{{ env_var('STREAM_TARGET') }}\"\n    tagret: x\n")
    monkeypatch.delenv("STREAM_TARGET")
    with pytest.raises(DeclarationError, match=r"destinations.stream: unknown setting\(s\) \['tagret'\]"):
        load_destinations(path, base_dir=tmp_path)
    # Set but wrong: that is a load error again.
    write(path, "destinations:\n  stream:\n    type: append_only\n    target: \"{{ env_var('STREAM_TARGET') }}\"\n")
    monkeypatch.setenv("STREAM_TARGET", "http://nope")
    with pytest.raises(DeclarationError, match=r"destinations.stream: setting 'target' must be a queue:// address"):
        load_destinations(path, base_dir=tmp_path)


def test_a_destination_whose_module_is_missing_loads_and_fails_its_syncs_runs(tmp_path: Path, test_types):
    path = write(tmp_path / "destinations.yml", "destinations:\n  later:\n    type: not_written_yet\n    key: x\n")
    loaded = load_destinations(path, base_dir=tmp_path)
    assert "No module named 'reverse_etl.destinations.no_such_module'" in loaded["later"].unavailable
    declaration = load_one({**GOOD, "destination": "later"}, destinations(later=loaded["later"]))
    # Class unknown, so the sync keeps the safe side: marketing consent applies.
    assert declaration.spec.consent_relation == "marts.user_properties"
    with pytest.raises(DeclarationError, match=r"destinations.later: destination type 'not_written_yet' cannot be loaded"):
        declaration.destination.build(tmp_path / "w.duckdb", declaration.spec.name)


def test_file_destinations_land_beside_the_warehouse_unless_absolute(tmp_path: Path):
    destination = destinations()["local_files"].build(tmp_path / "w.duckdb", "cart_to_files")
    assert isinstance(destination, CsvFileDestination)
    assert destination.path == (tmp_path / "out" / "cart_to_files.csv").resolve()
    absolute = DestinationConfig(name="x", type="parquet", settings={"directory": str(tmp_path / "elsewhere")})
    built = absolute.build(tmp_path / "w.duckdb", "s")
    assert isinstance(built, ParquetFileDestination)
    assert built.path == (tmp_path / "elsewhere" / "s.parquet").resolve()
    assert not (tmp_path / "elsewhere").exists()  # building creates nothing; the run's check() does


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({}, ("destinations/s.csv", True)),
        ({"directory": "exports", "filename": "vip.csv", "write_changes": False}, ("exports/vip.csv", False)),
    ],
)
def test_file_destination_settings(tmp_path: Path, settings, expected):
    destination = CsvFileDestination.from_settings(settings, sync_name="s", base_dir=tmp_path)
    assert (destination.path, destination.write_changes) == ((tmp_path / expected[0]).resolve(), expected[1])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"dir": "x"}, r"unknown setting\(s\) 'dir' for a parquet destination; known: directory, filename, write_changes"),
        ({"filename": "a/b.parquet"}, r"setting 'filename' must be a plain file name"),
        ({"filename": ""}, r"setting 'filename' must be a file name"),
        ({"directory": ""}, r"setting 'directory' must be a folder path"),
        ({"write_changes": "no"}, r"setting 'write_changes' must be true or false"),
    ],
)
def test_bad_file_destination_settings_name_the_setting(tmp_path: Path, settings, message):
    with pytest.raises(ValueError, match=message):
        ParquetFileDestination.from_settings(settings, sync_name="s", base_dir=tmp_path)
