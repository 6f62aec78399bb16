"""The computed-property language (dbt_project/macros/properties.sql) does what docs/properties.md says.

1. The macro test project (tests/dbt_macro_tests, the dbt-utils way) builds the property folder: seeds,
   models that call every constructor, YAML unit tests on every window boundary / operator / tie / NULL
   rule, and an equality test against a hand-worked seed. Every node must pass, on DuckDB and on a
   real Postgres (skipped where none can start, failed in CI).
2. A declaration with a wrong argument stops dbt while it parses, with a message that names the model
   and the argument, so an analytics engineer sees the mistake before anything runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MACRO_TESTS_DIR = REPO_ROOT / "tests" / "dbt_macro_tests"
MACROS_DIR = REPO_ROOT / "dbt_project" / "macros"

pytestmark = pytest.mark.slow  # dbt invocations


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_macro_test_project_property_folder_passes(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    dbt = Path(sys.executable).parent / "dbt"
    env = {
        **os.environ,
        "COHORTFLOW_MACRO_TESTS_WAREHOUSE": str(tmp_path / "macro_tests.duckdb"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    profiles_dir = MACRO_TESTS_DIR
    if engine == "postgres":
        # The same macros and tests on a real Postgres (the session's server, tests/integration/conftest.py),
        # in a schema of their own so they never meet the parity test's tables.
        server = request.getfixturevalue("postgres")
        profiles_dir = tmp_path / "profiles"
        profiles_dir.mkdir()
        (profiles_dir / "profiles.yml").write_text(
            "cohortflow_macro_tests:\n  target: postgres\n  outputs:\n    postgres:\n"
            f"      type: postgres\n      host: '{server.host}'\n      port: {server.port}\n"
            f"      user: '{server.user}'\n      password: ''\n      dbname: '{server.dbname}'\n"
            "      schema: macro_tests_properties\n      threads: 2\n"
        )
    result = subprocess.run(
        [
            str(dbt), "build",
            "--select", "path:seeds/properties", "path:models/properties", "path:tests/properties",
            "--project-dir", str(MACRO_TESTS_DIR), "--profiles-dir", str(profiles_dir),
            "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"dbt build failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"

    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    assert results and all(r["status"] in ("pass", "success") for r in results)

    # Every model of the folder is unit-tested or compared with a hand-worked seed by a singular test.
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    ran = {r["unique_id"] for r in results}
    models = {uid for uid in ran if uid.startswith("model.")}
    checked = {
        "model." + uid.split(".")[1] + "." + uid.split(".")[2] for uid in ran if uid.startswith("unit_test.")
    }
    for uid in ran:
        node = manifest["nodes"].get(uid, {})
        if node.get("resource_type") == "test" and not node.get("test_metadata"):  # singular test
            checked |= set(node["depends_on"]["nodes"])
    assert models and models <= checked, models - checked


# (model file name, the declaration, text the error must contain besides the model name)
BAD_DECLARATIONS = [
    ("unknown_aggregate",
     "aggregate('p', 'median', 'price', event='purchase')",
     "aggregate('p') function: unknown aggregate 'median'"),
    ("negative_window",
     "event_count('p', 'purchase', within=last(-7, 'days'))",
     "last(amount): amount -7 must be a positive whole number"),
    ("zero_window",
     "event_count('p', 'purchase', within=last(0, 'hours'))",
     "last(amount): amount 0 must be a positive whole number"),
    ("missing_event",
     "event_count('p')",
     "event_count('p') event: missing event"),
    ("empty_event_list",
     "unique_list('p', 'category', event=[])",
     "unique_list('p') event: expected an event_type"),
    ("window_as_text",
     "event_count('p', 'purchase', within='30 days')",
     "event_count('p') within: expected last(...)"),
    ("unknown_operator",
     "event_count('p', 'purchase', where=[where('price', '~', 10)])",
     "where('price') operator: unknown operator '~'"),
    ("missing_property",
     "most_frequent('p', none, event='view_item')",
     "most_frequent('p') property: needs the name of an event property"),
    ("aggregate_of_text",
     "aggregate('p', 'sum', 'category', event='purchase')",
     "aggregate('p') property: category is text"),
    ("aggregate_of_an_id",
     "aggregate('p', 'max', 'event_id', event='purchase')",
     "aggregate('p') property: event_id is text"),
    ("sum_of_a_time",
     "aggregate('p', 'sum', 'event_at', event='purchase')",
     "aggregate('p') property: event_at is a timestamp; sum needs a number (min / max give the earliest / latest time)"),
    ("quote_in_property",
     "unique_list('p', \"it's\", event='view_item')",
     "unique_list('p') property: a property name cannot contain a quote"),
    ("name_not_snake_case",
     "event_count('Views 7d', 'view_item')",
     "event_count(name): property name Views 7d must be a lower_snake_case identifier"),
    ("duplicate_name",
     "event_count('p', 'view_item'), event_count('p', 'purchase')",
     "computed_properties(properties): property 'p' is defined twice"),
    ("not_a_declaration",
     "'view_count_7d'",
     "computed_properties(properties): item 1 is not a property declaration"),
    # Numbers are exact decimals with 6 places: a threshold with more could not be compared exactly.
    ("threshold_with_too_many_decimals",
     "event_count('p', 'purchase', where=[where('price', '>=', 0.1234567)])",
     "where('price') value: 0.1234567 has more than 6 decimal places"),
    ("float_noise_in_a_list",
     "event_count('p', 'purchase', where=[where('price', 'in', [10, 0.30000000000000004])])",
     "where('price') value: 0.30000000000000004 has more than 6 decimal places"),
    # Properties on the event time: the messages name the constructor the user wrote, not what it compiles to.
    ("unknown_unit",
     "preferred_hour('p', 'purchase', unit='visits')",
     "preferred_hour('p') unit: unknown unit 'visits' (use one of events, orders, sessions)"),
    ("unit_in_the_singular",
     "preferred_day_of_week('p', 'purchase', unit='order')",
     "preferred_day_of_week('p') unit: unknown unit 'order' (use one of events, orders, sessions)"),
    ("time_zone_as_a_zone_name",
     "preferred_hour('p', 'purchase', time_zone='Europe/London')",
     "preferred_hour('p') time_zone: unknown time_zone 'Europe/London' (use 'utc', or 'user' for each user's own zone"),
    ("time_zone_missing",
     "preferred_day_of_week('p', 'purchase', time_zone=none)",
     "preferred_day_of_week('p') time_zone: unknown time_zone 'None'"),
    ("days_since_without_event",
     "days_since('p')",
     "days_since('p') event: missing event"),
    ("first_time_with_a_bad_window",
     "first_time('p', 'purchase', within='7 days')",
     "first_time('p') within: expected last(...)"),
    ("last_time_name_not_snake_case",
     "last_time('Last Purchase', 'purchase')",
     "last_time(name): property name Last Purchase must be a lower_snake_case identifier"),
    ("preferred_hour_without_event",
     "preferred_hour('p', unit='orders')",
     "preferred_hour('p') event: missing event"),
]


@pytest.mark.parametrize(("model_name", "declaration", "message"), BAD_DECLARATIONS, ids=[c[0] for c in BAD_DECLARATIONS])
def test_wrong_argument_fails_at_compile_time_naming_model_and_argument(
    model_name: str, declaration: str, message: str, tmp_path: Path
) -> None:
    from dbt.cli.main import dbtRunner

    # A throw-away project with the real macros and one model, so the only error is the one under test.
    shutil.copytree(MACROS_DIR, tmp_path / "macros")
    (tmp_path / "models").mkdir()
    (tmp_path / "dbt_project.yml").write_text(
        "name: bad_properties\nversion: '0.1.0'\nprofile: bad_properties\nconfig-version: 2\n"
        "vars: {as_of: '2024-03-10T12:00:00Z'}\nflags: {send_anonymous_usage_stats: false}\n"
    )
    (tmp_path / "profiles.yml").write_text(
        "bad_properties:\n  target: duckdb\n  outputs:\n"
        f"    duckdb: {{type: duckdb, path: '{tmp_path / 'unused.duckdb'}', threads: 1}}\n"
    )
    model = f"user_{model_name}"
    (tmp_path / "models" / f"{model}.sql").write_text(
        f"{{{{ computed_properties([{declaration}], events='events', users='users') }}}}\n"
    )

    result = dbtRunner().invoke([
        "parse", "--project-dir", str(tmp_path), "--profiles-dir", str(tmp_path), "--no-partial-parse",
        "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"), "--quiet",
    ])

    assert not result.success
    assert f"{model}: {message}" in str(result.exception), str(result.exception)


def test_a_valid_declaration_parses(tmp_path: Path) -> None:
    """The failing cases above fail for their argument, not because the scaffolding is broken."""
    from dbt.cli.main import dbtRunner

    shutil.copytree(MACROS_DIR, tmp_path / "macros")
    (tmp_path / "models").mkdir()
    (tmp_path / "dbt_project.yml").write_text(
        "name: good_properties\nversion: '0.1.0'\nprofile: good_properties\nconfig-version: 2\n"
        "vars: {as_of: '2024-03-10T12:00:00Z'}\nflags: {send_anonymous_usage_stats: false}\n"
    )
    (tmp_path / "profiles.yml").write_text(
        "good_properties:\n  target: duckdb\n  outputs:\n"
        f"    duckdb: {{type: duckdb, path: '{tmp_path / 'unused.duckdb'}', threads: 1}}\n"
    )
    (tmp_path / "models" / "user_ok.sql").write_text(
        "{{ computed_properties([aggregate('p', 'avg', 'price', event='purchase', within=last(7, 'days'),"
        " where=[where('category', 'in', ['books'])])], events='events', users='users') }}\n"
    )
    result = dbtRunner().invoke([
        "parse", "--project-dir", str(tmp_path), "--profiles-dir", str(tmp_path), "--no-partial-parse",
        "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"), "--quiet",
    ])
    assert result.success, str(result.exception)


def test_the_event_time_constructors_parse_with_every_unit_and_time_zone(tmp_path: Path) -> None:
    """first_time / last_time / days_since / preferred_* with each unit and zone (any case) are declarations."""
    from dbt.cli.main import dbtRunner

    shutil.copytree(MACROS_DIR, tmp_path / "macros")
    (tmp_path / "models").mkdir()
    (tmp_path / "dbt_project.yml").write_text(
        "name: good_times\nversion: '0.1.0'\nprofile: good_times\nconfig-version: 2\n"
        "vars: {as_of: '2024-03-10T12:00:00Z'}\nflags: {send_anonymous_usage_stats: false}\n"
    )
    (tmp_path / "profiles.yml").write_text(
        "good_times:\n  target: duckdb\n  outputs:\n"
        f"    duckdb: {{type: duckdb, path: '{tmp_path / 'unused.duckdb'}', threads: 1}}\n"
    )
    (tmp_path / "models" / "user_times.sql").write_text(
        "{{ computed_properties(["
        "first_time('a', 'purchase', within=last(7, 'days')), last_time('b', ['purchase', 'view_item']),"
        " days_since('c', '*', where=[where('price', '>', 0)]),"
        " preferred_hour('d', 'purchase'), preferred_hour('e', 'purchase', unit='orders', time_zone='user'),"
        " preferred_day_of_week('f', '*', unit='sessions', time_zone='UTC'),"
        " preferred_day_of_week('g', 'purchase', unit='events', time_zone='User', within=within_first(7, 'days'))"
        "], events='events', users='users', time_zones='zones') }}\n"
    )
    result = dbtRunner().invoke([
        "parse", "--project-dir", str(tmp_path), "--profiles-dir", str(tmp_path), "--no-partial-parse",
        "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"), "--quiet",
    ])
    assert result.success, str(result.exception)


# --------------------------------------------------------------------- names checked against the tracking plan

# (model file name, the declaration, text the error must contain besides the model name). Checked against the
# project's real plan (dbt_project/models/staging/tracking_plan.yml) when the model compiles.
UNKNOWN_NAMES = [
    ("unknown_event",
     "event_count('p', 'purchse')",
     ["event_count('p') event: unknown event type 'purchse'", "did you mean 'purchase'?", "tracking_plan.yml"]),
    ("unknown_event_in_a_list",
     "event_count('p', ['view_item', 'add_to_crt'])",
     ["event_count('p') event: unknown event type 'add_to_crt'", "did you mean 'add_to_cart'?"]),
    ("misspelt_property",
     "first_value('p', 'categroy', event='purchase')",
     ["first_value('p') property: unknown property 'categroy' of purchase", "did you mean 'category'?"]),
    ("misspelt_event_at",
     "aggregate('p', 'max', 'evnt_at', event='purchase')",
     ["aggregate('p') property: unknown property 'evnt_at' of purchase", "did you mean 'event_at'?"]),
    ("property_of_another_event",
     "unique_list('p', 'platform', event='view_item')",
     ["unique_list('p') property: unknown property 'platform' of view_item", "declared for session_start"]),
    ("unknown_where_property",
     "event_count('p', 'view_item', where=[where('prise', '>=', 10)])",
     ["event_count('p') where('prise'): unknown property 'prise' of view_item", "did you mean 'price'?"]),
    ("unknown_property_of_any_event",
     "most_frequent('p', 'platfrm', event='*')",
     ["most_frequent('p') property: unknown property 'platfrm' of any event type", "did you mean 'platform'?"]),
    ("aggregate_of_a_string",
     "aggregate('p', 'sum', 'platform', event='session_start')",
     ["aggregate('p') property: 'platform' is string in the tracking plan"]),
    # The event-time constructors go through the same checks.
    ("first_time_of_an_unknown_event",
     "first_time('p', 'purchse')",
     ["first_time('p') event: unknown event type 'purchse'", "did you mean 'purchase'?"]),
    ("days_since_with_an_unknown_where",
     "days_since('p', 'view_item', where=[where('prise', '>=', 10)])",
     ["days_since('p') where('prise'): unknown property 'prise' of view_item", "did you mean 'price'?"]),
    ("preferred_hour_of_an_unknown_event",
     "preferred_hour('p', ['purchase', 'sesion_start'], unit='sessions')",
     ["preferred_hour('p') event: unknown event type 'sesion_start'", "did you mean 'session_start'?"]),
    ("preferred_day_with_a_property_of_another_event",
     "preferred_day_of_week('p', 'view_item', unit='orders', where=[where('platform', '=', 'iOS')])",
     ["preferred_day_of_week('p') where('platform'): unknown property 'platform' of view_item", "declared for session_start"]),
]
# The examples, and properties the plan declares: these compile (and run on the stand-in events).
KNOWN_NAMES = (
    "aggregate('first_purchase_at', 'min', 'event_at', event='purchase'), "
    "first_value('first_purchase_time', 'event_at', event='purchase'), "
    "unique_list('platforms', 'platform', event='session_start'), "
    "aggregate('discount', 'sum', 'price', event=['view_item', 'purchase'], where=[where('country', '=', 'France')]), "
    "unique_count('plans', 'plan', event='*'), "
    "event_count('views', 'view_item', where=[where('event_at', '>=', '2024-03-01'), where('session_id', '=', 1)]), "
    "first_time('first_purchase', 'purchase'), last_time('last_purchase', 'purchase'), "
    "days_since('days_since_purchase', 'purchase', where=[where('country', '=', 'France')]), "
    "preferred_hour('purchase_hour', 'purchase', unit='orders'), "
    "preferred_day_of_week('session_day', '*', unit='sessions')"
)
STAND_IN_EVENTS = (
    "select 'e1' as event_id, 'u1' as user_id, cast(null as varchar) as device_id, 'purchase' as event_type,\n"
    "       timestamp '2024-03-09 10:00:00' as event_at, cast(1 as bigint) as session_id, 'i1' as item_id,\n"
    "       'books' as category, cast(10 as decimal(18, 6)) as price, cast(1 as decimal(18, 6)) as quantity,\n"
    "       cast(10 as decimal(18, 6)) as revenue, 'o1' as order_id, cast('{}' as json) as event_properties\n"
)


def plan_check_project(path: Path, *, with_plan: bool) -> Path:
    """A project with the real macros, stand-in inputs and (with_plan) the project's real tracking plan."""
    shutil.copytree(MACROS_DIR, path / "macros")
    (path / "models").mkdir()
    (path / "dbt_project.yml").write_text(
        "name: plan_checks\nversion: '0.1.0'\nprofile: plan_checks\nconfig-version: 2\n"
        "vars: {as_of: '2024-03-10T12:00:00Z'}\nflags: {send_anonymous_usage_stats: false}\n"
    )
    (path / "profiles.yml").write_text(
        "plan_checks:\n  target: duckdb\n  outputs:\n"
        f"    duckdb: {{type: duckdb, path: '{path / 'w.duckdb'}', threads: 2}}\n"
    )
    if with_plan:
        for suffix in ("sql", "yml"):
            shutil.copy(REPO_ROOT / "dbt_project" / "models" / "staging" / f"tracking_plan.{suffix}", path / "models")
    (path / "models" / "stand_in_events.sql").write_text(STAND_IN_EVENTS)
    (path / "models" / "stand_in_users.sql").write_text("select 'u1' as user_id, timestamp '2024-03-01 00:00:00' as first_seen_at\n")
    return path


def run_plan_check_project(path: Path) -> dict[str, dict]:
    from dbt.cli.main import dbtRunner

    dbtRunner().invoke([
        "run", "--project-dir", str(path), "--profiles-dir", str(path), "--no-partial-parse",
        "--target-path", str(path / "target"), "--log-path", str(path / "logs"), "--quiet",
    ])
    results = json.loads((path / "target" / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[-1]: r for r in results}


def properties_model(declarations: str) -> str:
    return f"{{{{ computed_properties([{declarations}], events=ref('stand_in_events'), users=ref('stand_in_users')) }}}}\n"


def test_unknown_event_types_and_properties_fail_naming_model_argument_and_closest_name(tmp_path: Path) -> None:
    """One `dbt run`: every bad model fails to compile with its message, the valid one builds."""
    project = plan_check_project(tmp_path, with_plan=True)
    for model_name, declaration, _ in UNKNOWN_NAMES:
        (project / "models" / f"user_{model_name}.sql").write_text(properties_model(declaration))
    (project / "models" / "user_known_names.sql").write_text(properties_model(KNOWN_NAMES))

    results = run_plan_check_project(project)

    for model_name, _, phrases in UNKNOWN_NAMES:
        outcome = results[f"user_{model_name}"]
        message = " ".join((outcome["message"] or "").split())
        assert outcome["status"] == "error", (model_name, outcome["status"])
        for phrase in phrases:
            assert phrase in message, (model_name, phrase, message)
        assert f"user_{model_name}: {phrases[0]}" in message, (model_name, message)
    assert results["user_known_names"]["status"] == "success", results["user_known_names"]["message"]


def test_a_project_without_a_tracking_plan_model_fails_instead_of_skipping_the_checks(tmp_path: Path) -> None:
    project = plan_check_project(tmp_path, with_plan=False)
    (project / "models" / "user_p.sql").write_text(properties_model("event_count('p', 'view_item')"))
    outcome = run_plan_check_project(project)["user_p"]
    assert outcome["status"] == "error"
    assert "user_p: event_count('p') event: no tracking plan: this project has no model named tracking_plan" in " ".join(
        outcome["message"].split())
