"""The tracking plan file (dbt_project/models/staging/tracking_plan.yml): loading, checking, drafting.

- ``cohortflow.tracking_plan.load_tracking_plan`` reads ``config.meta.tracking_plan`` of the
  ``tracking_plan`` model and refuses a plan that cannot work with the file and the key named (and
  "did you mean" for a misspelt key or type).
- ``cohortflow tracking-plan draft`` reads raw.events (read-only) and writes every event type and
  property it finds, with counts and JSON types, into the plan: new entries marked ``drafted``, hand-written
  descriptions kept, entries no longer seen kept with ``seen: 0``.
- The shipped plan covers the demo generator's and Online Retail's events.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
import yaml
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.tracking_plan import (
    BUILTIN_PROPERTIES,
    DEFAULT_PLAN_FILE,
    PROPERTY_TYPES,
    TrackingPlanError,
    draft_tracking_plan,
    load_tracking_plan,
)
from cohortflow.warehouse import connect


def plan_file(path: Path, plan_yaml: str) -> Path:
    """A dbt properties file whose tracking_plan model holds ``plan_yaml`` under config.meta.tracking_plan."""
    path.write_text(
        "version: 2\n\nmodels:\n  - name: tracking_plan\n    description: test plan\n    config:\n"
        "      materialized: table\n      meta:\n        tracking_plan:\n"
        + textwrap.indent(textwrap.dedent(plan_yaml).strip("\n"), " " * 10)
        + "\n"
    )
    return path


# ------------------------------------------------------------------------------------------ the shipped plan


def test_the_shipped_plan_loads_and_knows_every_generated_and_online_retail_event() -> None:
    from cohortflow.generate import EVENT_TYPES

    plan = load_tracking_plan(DEFAULT_PLAN_FILE)
    assert set(EVENT_TYPES) <= set(plan.events)
    for event_type, spec in plan.events.items():
        assert spec.description.strip(), f"{event_type} has no description"
        assert not spec.drafted, f"{event_type} is still marked drafted"
        for name, prop in spec.properties.items():
            assert prop.description.strip() and not prop.drafted, f"{event_type}.{name}"
    # the properties the generator writes (docs/data-model.md) and Online Retail adds
    assert set(plan.events["session_start"].properties) == {"platform"}
    assert {"item_id", "category", "price", "quantity", "revenue", "order_id", "invoice_no", "country",
            "description"} <= set(plan.events["purchase"].properties)
    assert {"item_id", "price", "quantity", "revenue", "order_id"} <= set(plan.events["cancel_purchase"].properties)
    assert set(plan.events["start_subscription"].properties) == {"plan", "price"}


# ------------------------------------------------------------------------------------------ loading and errors


def test_a_plan_loads_with_defaults_and_type_lists(tmp_path: Path) -> None:
    plan = load_tracking_plan(plan_file(tmp_path / "tp.yml", """
        events:
          purchase:
            description: One line.
            properties:
              price: {type: number, description: Unit price.}
              discount: {type: [number, string]}
          session_start:
            description: A visit.
    """))
    assert list(plan.events) == ["purchase", "session_start"]
    assert plan.events["purchase"].properties["price"].types == ("number",)
    assert plan.events["purchase"].properties["discount"].types == ("number", "string")
    assert plan.events["session_start"].properties == {}
    assert plan.knows("purchase", "price") and not plan.knows("purchase", "platform") and not plan.knows("x")


@pytest.mark.parametrize(
    ("plan_yaml", "key", "message"),
    [
        ("events:\n  purchase: {descripton: x}", "events.purchase.descripton",
         "unknown key 'descripton' (did you mean 'description'?)"),
        ("events:\n  purchase:\n    properties:\n      price: {type: numbr}", "events.purchase.properties.price.type",
         "unknown type 'numbr' (did you mean 'number'?)"),
        ("events:\n  purchase:\n    properties:\n      price: {type: [number, txt]}",
         "events.purchase.properties.price.type", "unknown type 'txt'"),
        ("events:\n  purchase:\n    properties:\n      price: {description: no type}",
         "events.purchase.properties.price.type", "missing"),
        ("events:\n  purchase:\n    properties: [price]", "events.purchase.properties", "expected a mapping"),
        ("event:\n  purchase: {}", "event", "unknown key 'event' (did you mean 'events'?)"),
        ("events:\n  purchase:\n    properties:\n      \"it's\": {type: string}",
         "events.purchase.properties.it's", "a property name cannot contain a quote"),
        ("events:\n  purchase: {seen: -1}", "events.purchase.seen", "greater than or equal to 0"),
    ],
    ids=["event_key_typo", "type_typo", "type_in_list", "missing_type", "properties_not_mapping", "top_level_typo",
         "quote_in_name", "negative_seen"],
)
def test_a_broken_plan_is_refused_naming_file_and_key(tmp_path: Path, plan_yaml: str, key: str, message: str) -> None:
    path = plan_file(tmp_path / "tp.yml", plan_yaml)
    with pytest.raises(TrackingPlanError) as error:
        load_tracking_plan(path)
    text = str(error.value)
    assert text.startswith(f"{path}: config.meta.tracking_plan.{key}: "), text
    assert message in text, text


def test_a_file_without_the_model_or_not_yaml_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.yml"
    other.write_text("version: 2\nmodels:\n  - name: something_else\n")
    with pytest.raises(TrackingPlanError, match=r"other\.yml: no model named tracking_plan"):
        load_tracking_plan(other)
    broken = tmp_path / "broken.yml"
    broken.write_text("models: [\n")
    with pytest.raises(TrackingPlanError, match=r"broken\.yml: not valid YAML"):
        load_tracking_plan(broken)
    with pytest.raises(TrackingPlanError, match=r"missing\.yml: no such file"):
        load_tracking_plan(tmp_path / "missing.yml")


def test_the_vocabulary_and_built_in_names_match_the_macros() -> None:
    """The dbt macros (macros/tracking_plan.sql) and this module name the same types, built-ins and file."""
    from cohortflow import cli

    macros = (DEFAULT_PLAN_FILE.parents[2] / "macros" / "tracking_plan.sql").read_text()
    assert PROPERTY_TYPES == ("string", "number", "integer", "boolean", "timestamp", "object", "array")
    assert "return(['" + "', '".join(PROPERTY_TYPES) + "'])" in macros
    for name, kind in BUILTIN_PROPERTIES.items():
        assert f"'{name}': '{kind}'" in macros, name
    assert cli.DEFAULT_TRACKING_PLAN == DEFAULT_PLAN_FILE


# ------------------------------------------------------------------------------------------ drafting


def small_warehouse(path: Path) -> Path:
    """raw.events with three event types and properties of every JSON type."""
    con = connect(path)
    rows = [
        ("e1", "purchase", '{"item_id": "sku-1", "price": 9.5, "quantity": 2, "coupon": "SPRING"}'),
        ("e2", "purchase", '{"item_id": 4711, "price": 10, "quantity": 1, "gift": true}'),
        ("e3", "purchase", '{"item_id": "sku-3", "price": "12.50", "quantity": 1, "tags": ["a"], "meta": {"x": 1}}'),
        ("e4", "session_start", '{"platform": "ios", "started_at": "2024-05-01T10:00:00Z"}'),
        ("e5", "session_start", '{"platform": null, "started_at": "2024-05-02 11:00:00"}'),
        ("e6", "page_view", "{}"),
    ]
    try:
        for index, (event_id, event_type, properties) in enumerate(rows, start=1):
            con.execute(
                "insert into raw.events values (?, ?, 'user-1', null, ?, timestamp '2024-05-01 10:00:00', null, ?, '{}', "
                "'amplitude', 'f.jsonl', ?, timestamp '2024-06-01 00:00:00')",
                [event_id, event_id, event_type, properties, index],
            )
    finally:
        con.close()
    return path


def test_draft_lists_every_event_type_and_property_with_counts_and_json_types(tmp_path: Path) -> None:
    warehouse = small_warehouse(tmp_path / "w.duckdb")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        draft = draft_tracking_plan(con, tmp_path / "new.yml")
    finally:
        con.close()
    plan = draft.plan
    assert list(plan.events) == ["page_view", "purchase", "session_start"]  # by name
    purchase = plan.events["purchase"]
    assert (purchase.seen, purchase.drafted, purchase.description) == (3, True, "")
    types = {name: (p.types, p.seen, p.drafted) for name, p in purchase.properties.items()}
    assert types == {
        "coupon": (("string",), 1, True),
        "gift": (("boolean",), 1, True),
        "item_id": (("integer", "string"), 3, True),
        "meta": (("object",), 1, True),
        "price": (("number", "string"), 3, True),   # 9.5 and 10 are numbers (integer folds into number)
        "quantity": (("integer",), 3, True),
        "tags": (("array",), 1, True),
    }
    session = plan.events["session_start"].properties
    assert (session["platform"].types, session["platform"].seen) == (("string",), 2)  # a null adds no type
    assert session["started_at"].types == ("timestamp",)  # every value is an ISO-8601 time
    assert plan.events["page_view"].properties == {}
    assert draft.new_event_types == ["page_view", "purchase", "session_start"]
    # The text is a dbt properties file that loads back to the same plan.
    written = tmp_path / "written.yml"
    written.write_text(draft.text)
    assert load_tracking_plan(written) == plan
    model = yaml.safe_load(draft.text)["models"][0]
    assert model["name"] == "tracking_plan" and model["config"]["contract"] == {"enforced": True}
    assert [c["name"] for c in model["columns"]] == ["event_type", "property", "data_type", "description"]


def test_draft_merges_into_an_existing_plan_keeping_what_people_wrote(tmp_path: Path) -> None:
    warehouse = small_warehouse(tmp_path / "w.duckdb")
    existing = plan_file(tmp_path / "tp.yml", """
        events:
          purchase:
            description: One purchased line.
            properties:
              price: {type: number, description: Unit price (hand-written).}
              old_flag: {type: boolean, description: No longer sent.}
          signup:
            description: Retired event.
    """)
    # hand-written parts of the file outside the plan survive too
    document = yaml.safe_load(existing.read_text())
    document["models"][0]["columns"] = [{"name": "event_type", "description": "kept as written"}]
    existing.write_text(yaml.safe_dump(document, sort_keys=False))

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        draft = draft_tracking_plan(con, existing)
    finally:
        con.close()
    plan = draft.plan
    purchase = plan.events["purchase"]
    assert (purchase.description, purchase.drafted, purchase.seen) == ("One purchased line.", False, 3)
    price = purchase.properties["price"]
    # A described property keeps its type and description; the string values seen are reported.
    assert (price.types, price.description, price.drafted, price.seen) == (("number",), "Unit price (hand-written).", False, 3)
    assert draft.type_differences == ["purchase.price: declared number, seen number | string"]
    assert purchase.properties["quantity"].drafted  # new
    assert (purchase.properties["old_flag"].seen, purchase.properties["old_flag"].description) == (0, "No longer sent.")
    assert (plan.events["signup"].seen, plan.events["signup"].description) == (0, "Retired event.")
    assert draft.no_longer_seen == ["purchase.old_flag", "signup"]
    assert draft.new_event_types == ["page_view", "session_start"]
    assert "purchase.coupon" in draft.new_properties
    written = yaml.safe_load(draft.text)["models"][0]
    assert written["columns"] == [{"name": "event_type", "description": "kept as written"}]
    assert written["description"] == "test plan"


def test_cli_draft_writes_the_file_and_dry_run_prints_it(tmp_path: Path) -> None:
    warehouse = small_warehouse(tmp_path / "w.duckdb")
    output = tmp_path / "plan.yml"
    dry = CliRunner().invoke(main, ["--warehouse", str(warehouse), "tracking-plan", "draft", "--output", str(output),
                                    "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert not output.exists()
    assert "name: tracking_plan" in dry.stdout and "page_view:" in dry.stdout
    written = CliRunner().invoke(main, ["--warehouse", str(warehouse), "tracking-plan", "draft", "--output", str(output)])
    assert written.exit_code == 0, written.output
    assert f"wrote {output}" in written.output
    assert "3 event types (3 new), 9 properties (9 new)" in written.output
    assert set(load_tracking_plan(output).events) == {"page_view", "purchase", "session_start"}


def test_cli_draft_says_when_the_warehouse_is_missing_or_in_use(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["--warehouse", str(tmp_path / "none.duckdb"), "tracking-plan", "draft",
                                        "--dry-run"])
    assert missing.exit_code == 1
    assert "does not exist" in missing.output
    warehouse = small_warehouse(tmp_path / "w.duckdb")
    # Another process holds DuckDB's single writer lock on the file.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
                               "sys.stdin.read()", str(warehouse)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        busy = CliRunner().invoke(main, ["--warehouse", str(warehouse), "tracking-plan", "draft", "--dry-run"])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert busy.exit_code == 1
    assert "in use by another process" in busy.output and str(warehouse) in busy.output


def test_cli_check_validates_the_plan_file(tmp_path: Path) -> None:
    good = CliRunner().invoke(main, ["tracking-plan", "check"])
    assert good.exit_code == 0, good.output
    assert "event types" in good.output
    bad = plan_file(tmp_path / "tp.yml", "events:\n  purchase: {descripton: x}")
    refused = CliRunner().invoke(main, ["tracking-plan", "check", "--plan", str(bad)])
    assert refused.exit_code == 1
    assert "did you mean 'description'?" in refused.output
    assert json.dumps(str(bad))[1:-1] in refused.output
