"""CSV mappings from command-line arguments and YAML files, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohortflow.ingest import CsvMapping, IngestError, load_csv_mapping, parse_mapping_args

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"


def test_args_map_fields_constants_and_properties() -> None:
    m = parse_mapping_args(["user_id=CustomerID", "event_time=InvoiceDate", "event_type=:purchase",
                            "properties.item_id=StockCode", "timezone=Europe/London", "time_format=%d/%m/%Y %H:%M"])
    assert dict(m.fields) == {"user_id": "CustomerID", "event_time": "InvoiceDate", "event_type": ":purchase"}
    assert dict(m.properties or {}) == {"item_id": "StockCode"}
    assert (m.timezone, m.time_format, m.entity) == ("Europe/London", "%d/%m/%Y %H:%M", None)


def test_args_without_properties_keep_all_other_columns() -> None:
    assert parse_mapping_args(["user_id=CustomerID"]).properties is None


@pytest.mark.parametrize(("args", "message"), [
    (["user_id"], "not of the form target=source"),
    (["=x"], "not of the form target=source"),
    (["colour=Colour"], "unknown field 'colour'"),
    (["user_id=A", "user_id=B"], "given twice"),
    (["user_id="], "must name a source column"),
    (["event_type=:"], "must name a source column"),
    (["timezone=Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
    (["entity=orders"], "unknown entity 'orders'"),
    (["time_format=dd/mm/yyyy"], "not a strptime format"),
])
def test_bad_args_raise_a_clear_error(args: list[str], message: str) -> None:
    with pytest.raises(IngestError, match=message):
        parse_mapping_args(args)


def test_fields_are_checked_against_the_entity() -> None:
    with pytest.raises(IngestError, match="unknown field 'event_type' for entity items"):
        parse_mapping_args(["event_type=:x"], entity="items")
    assert parse_mapping_args(["item_id=SKU"], entity="items").entity == "items"


def test_yaml_mapping_is_read(tmp_path: Path) -> None:
    m = load_csv_mapping(FIXTURES / "orders.yml")
    assert m == CsvMapping(entity="events",
                           fields={"user_id": "Customer", "event_time": "When", "event_type": ":purchase",
                                   "insert_id": "OrderNo"},
                           properties={"item_id": "Sku", "quantity": "Qty"},
                           time_format="%d/%m/%Y %H:%M", timezone="Europe/London")


@pytest.mark.parametrize(("text", "message"), [
    ("entity: events\nfields: [user_id]\n", "fields must be a mapping"),
    ("fields: {user_id: 12}\n", "fields.user_id must be a column name"),
    ("fields: {user_id: A}\ncolumns: {}\n", "unknown key"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("fields: {user_id: A\n", "not valid YAML"),
    ("entity: orders\n", "unknown entity"),
    ("fields: {colour: Colour}\n", "unknown field 'colour'"),
])
def test_bad_yaml_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mapping.yml"
    path.write_text(text)
    with pytest.raises(IngestError, match=message) as info:
        load_csv_mapping(path)
    assert str(path) in str(info.value)


def test_missing_yaml_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="mapping.yml: mapping file not found"):
        load_csv_mapping(tmp_path / "mapping.yml")


def test_mapping_cannot_be_changed_after_creation() -> None:
    m = parse_mapping_args(["user_id=A"])
    with pytest.raises(TypeError):
        m.fields["user_id"] = "B"  # type: ignore[index]
