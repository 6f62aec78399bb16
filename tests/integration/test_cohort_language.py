"""The cohort language: its macro tests, its compile-time errors, and membership history across runs.

- The macro-test project (tests/dbt_macro_tests, folder cohorts/) builds one small cohort per operator,
  window kind, measure and condition type; each has dbt unit tests and all are compared with a
  hand-worked expected seed.
- A cohort written with a wrong argument stops dbt while parsing, with "<model>: <argument>: <message>".
- cohort_membership_history / cohort_sizes_daily, run at several moments on the hand-written event set,
  hold exactly the joins and exits implied by expected.yml's members at those moments, do not change
  when a moment is re-run, and rewind when as_of moves back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from hand_events import MOMENTS, normalise, read_table
from test_dbt_project import load_hand_events, run_dbt

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
MACRO_TESTS_DIR = REPO_ROOT / "tests" / "dbt_macro_tests"
MACROS_DIR = REPO_ROOT / "dbt_project" / "macros"
DBT = str(Path(sys.executable).parent / "dbt")


def dbt_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **extra}


def test_cohort_macro_tests_pass(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            DBT, "build", "--project-dir", str(MACRO_TESTS_DIR), "--profiles-dir", str(MACRO_TESTS_DIR),
            "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
            "--select", "path:models/cohorts path:seeds/cohorts path:tests/cohorts",
        ],
        cwd=MACRO_TESTS_DIR, env=dbt_env(COHORTFLOW_MACRO_TESTS_WAREHOUSE=str(tmp_path / "macro_tests.duckdb")),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    assert all(r["status"] in ("pass", "success") for r in results)
    unit_tests = [r for r in results if r["unique_id"].startswith("unit_test.")]
    models = [r for r in results if r["unique_id"].startswith("model.")]
    # Every test model is unit-tested, and the expected-seed comparison ran.
    assert len(models) >= 30 and len(unit_tests) >= len(models)
    assert any("assert_cohort_test_models_match_expected" in r["unique_id"] for r in results)


# (model SQL, the argument the message must name, a phrase of the message)
BAD_COHORTS = {
    "unknown_operator": ("performed('purchase', operator='>>', value=2)", "performed('purchase') operator", "unknown operator '>>'"),
    "negative_window": ("performed('purchase', within=last(-7, 'days'))", "last(amount)", "must be a positive whole number"),
    "zero_window": ("had_been_active(within=last(0, 'hours'))", "last(amount)", "must be a positive whole number"),
    "unknown_unit": ("performed('purchase', within=last(1, 'months'))", "last(unit)", "is not one of minutes, hours, days, weeks"),
    "missing_event": ("performed(within=last(7, 'days'))", "performed(None) event", "needs an event name"),
    "empty_any_of": ("any_of([])", "any_of(conditions)", "needs a non-empty list"),
    "unknown_measure": ("performed('purchase', measure='sum')", "performed('purchase') measure", "unknown measure sum"),
    "self_reference": ("in_cohort('bad_cohort')", "in_cohort(model_name)", "cannot refer to itself"),
    "nth_time_with_operator": ("performed('purchase', measure=nth_time(2), operator='>=', value=1)", "performed('purchase') operator", "nth_time(n) takes no operator"),
    "bad_value_source": ("user_property('country', '=', 'JP', using='sometimes')", "user_property('country') using", "is not most_recent or any_in_window"),
    "one_step_sequence": ("sequence([step('view_item')])", "sequence(steps)", "needs at least two steps"),
    "not_a_condition": ("'purchase'", "cohort(all_of)", "is not a condition"),
    "negative_count": ("performed('purchase', operator='>=', value=-1)", "performed('purchase') value", "is negative"),
    "total_of_a_time": ("performed('purchase', measure=total('event_at'), operator='>=', value=1)", "total(property)",
                        "event_at is a timestamp; total needs a number"),
    "total_of_a_text_column": ("performed('purchase', measure=total('category'), operator='>=', value=1)", "total(property)",
                               "category is text; total needs a number"),
    # Thresholds are exact decimals with at most 6 places (the scale money is stored with).
    "threshold_with_float_noise": ("performed('purchase', measure=total('revenue'), operator='>', value=1000.0000000000002)",
                                   "performed('purchase') value", "1000.0000000000002 has more than 6 decimal places"),
    "computed_property_too_precise": ("computed_property('revenue_90d', '>=', 0.0000001)",
                                      "computed_property('revenue_90d') value", "0.0000001 has more than 6 decimal places"),
}


def parse_bad_cohort(tmp_path: Path, condition: str) -> subprocess.CompletedProcess[str]:
    """`dbt parse` a one-model project whose cohort uses `condition`, with the real project's macros."""
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: bad_cohorts\nversion: '0.1.0'\nprofile: bad_cohorts\nconfig-version: 2\n"
        f"macro-paths: ['{MACROS_DIR}']\nvars:\n  as_of: '2024-03-10T12:00:00Z'\n"
        "flags:\n  send_anonymous_usage_stats: false\n"
    )
    (project / "profiles.yml").write_text(
        f"bad_cohorts:\n  target: duckdb\n  outputs:\n    duckdb:\n      type: duckdb\n      path: '{tmp_path / 'w.duckdb'}'\n"
    )
    (project / "models" / "bad_cohort.sql").write_text("{{ cohort(all_of=[" + condition + "]) }}\n")
    # Stand-ins for what cohorts read, so that a valid cohort parses (dbt checks refs after rendering).
    for stand_in in ("int_events_as_of", "int_users_seen", "int_user_attribute_updates", "user_properties"):
        (project / "models" / f"{stand_in}.sql").write_text("select 'u' as user_id\n")
    return subprocess.run(
        [DBT, "parse", "--project-dir", str(project), "--profiles-dir", str(project),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
        cwd=project, env=dbt_env(), capture_output=True, text=True, timeout=120, check=False,
    )


def test_wrong_arguments_fail_at_parse_time_naming_model_and_argument(tmp_path: Path) -> None:
    # One dbt process per case (dbt stops at the first error), two at a time.
    def run(item: tuple[str, tuple[str, str, str]]) -> tuple[str, str, str, str]:
        case, (condition, argument, phrase) = item
        result = parse_bad_cohort(tmp_path / case, condition)
        assert result.returncode != 0, case
        output = " ".join((result.stdout + result.stderr).split())
        return case, output, argument, phrase

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(run, BAD_COHORTS.items()))
    for case, output, argument, phrase in outcomes:
        assert f"bad_cohort: {argument}: " in output, (case, output[-1500:])
        assert phrase in output, (case, output[-1500:])


def test_a_valid_cohort_parses(tmp_path: Path) -> None:
    """The harness above fails for the right reason: the same project with a valid cohort parses."""
    result = parse_bad_cohort(tmp_path, "performed('purchase', operator='>=', value=2, within=last(7, 'days'))")
    assert result.returncode == 0, result.stdout[-3000:]


# ---------------------------------------------------------------------- names checked against the tracking plan

# (model SQL, the argument the message must name, phrases of the message). Checked against the project's
# real plan (dbt_project/models/staging/tracking_plan.yml) when the model compiles.
UNKNOWN_NAMES = {
    "unknown_event": ("performed('purchse')", "performed('purchse') event",
                      ["unknown event type 'purchse'", "did you mean 'purchase'?", "tracking_plan.yml"]),
    "unknown_event_in_a_list": ("performed(['view_item', 'add_to_crt'])", "performed('view_item', 'add_to_crt') event",
                                ["unknown event type 'add_to_crt'", "did you mean 'add_to_cart'?"]),
    "unknown_where_property": ("did_not_perform('purchase', where=[where('categry', '=', 'books')])",
                               "performed('purchase') where('categry')",
                               ["unknown property 'categry' of purchase", "did you mean 'category'?"]),
    "property_of_another_event": ("performed('view_item', where=[where('platform', '=', 'ios')])",
                                  "performed('view_item') where('platform')",
                                  ["unknown property 'platform' of view_item", "declared for session_start"]),
    "unknown_total": ("performed('purchase', measure=total('revnue'), operator='>=', value=5)",
                      "performed('purchase') total('revnue')", ["did you mean 'revenue'?"]),
    "unknown_distinct": ("performed('purchase', measure=distinct('order'), operator='>=', value=2)",
                         "performed('purchase') distinct('order')", ["did you mean 'order_id'?"]),
    "total_of_text": ("performed('start_subscription', measure=total('plan'), operator='>=', value=1)",
                      "performed('start_subscription') total('plan')", ["'plan' is string in the tracking plan"]),
    "unknown_step": ("sequence([step('view_item'), step('add_to_crt')])", "sequence() step('add_to_crt') event",
                     ["did you mean 'add_to_cart'?"]),
    "unknown_step_where": ("sequence([step('view_item', where=[where('prise', '>', 1)]), step('purchase')])",
                           "sequence() step('view_item') where('prise')", ["did you mean 'price'?"]),
    "unknown_then_not": ("sequence([step('add_to_cart')], then_not='purchse')", "sequence() then_not('purchse') event",
                         ["did you mean 'purchase'?"]),
    "unknown_any_event_property": ("had_been_active(where=[where('platfrom', '=', 'ios')])",
                                   "performed('*') where('platfrom')", ["did you mean 'platform'?"]),
    "unknown_inside_any_of": ("any_of([performed('view_item'), performed('purchse')])", "performed('purchse') event",
                              ["did you mean 'purchase'?"]),
    "nothing_close": ("performed('zzz')", "performed('zzz') event",
                      ["unknown event type 'zzz'", "known event types: add_to_cart, cancel_purchase"]),
}
# Valid cohorts of the same project: built-in columns (event_at, event_id ...) are always known, a property is
# known for an event type that declares it, and '*' knows every declared property.
KNOWN_NAMES = {
    "event_at_and_builtins": "performed('purchase', where=[where('event_at', '>=', '2024-03-01'), where('order_id', 'is_not_null')], "
                             "measure=distinct('event_id'), operator='>=', value=1)",
    "declared_properties": "sequence([step('session_start', where=[where('platform', '=', 'ios')]), "
                           "step('purchase', where=[where('country', '=', 'France')])], then_not='cancel_purchase')",
    "any_event": "had_been_active(where=[where('plan', '=', 'gold')])",
}
STAND_IN_EVENTS = (
    "select 'e1' as event_id, 'u1' as user_id, cast(null as varchar) as device_id, 'purchase' as event_type,\n"
    "       timestamp '2024-03-09 10:00:00' as event_at, cast(1 as bigint) as session_id, 'i1' as item_id,\n"
    "       'books' as category, cast(10 as decimal(18, 6)) as price, cast(1 as decimal(18, 6)) as quantity,\n"
    "       cast(10 as decimal(18, 6)) as revenue, 'o1' as order_id, cast('{}' as json) as event_properties\n"
)


def test_unknown_event_types_and_properties_fail_the_build_naming_model_argument_and_closest_name(tmp_path: Path) -> None:
    """One `dbt run` of a project holding the real tracking plan, stand-ins for the inputs, and one model per case:
    each bad model fails to compile with its message, each valid one builds."""
    project = tmp_path / "project"
    models = project / "models"
    models.mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: plan_checks\nversion: '0.1.0'\nprofile: plan_checks\nconfig-version: 2\n"
        f"macro-paths: ['{MACROS_DIR}']\nvars:\n  as_of: '2024-03-10T12:00:00Z'\n"
        "flags:\n  send_anonymous_usage_stats: false\n"
    )
    (project / "profiles.yml").write_text(
        f"plan_checks:\n  target: duckdb\n  outputs:\n    duckdb:\n      type: duckdb\n      path: '{tmp_path / 'w.duckdb'}'\n"
        "      threads: 2\n"
    )
    for suffix in ("sql", "yml"):
        shutil.copy(REPO_ROOT / "dbt_project" / "models" / "staging" / f"tracking_plan.{suffix}", models)
    (models / "int_events_as_of.sql").write_text(STAND_IN_EVENTS)
    (models / "int_users_seen.sql").write_text(
        "select 'u1' as user_id, timestamp '2024-03-01 00:00:00' as first_seen_at, timestamp '2024-03-09 10:00:00' as last_seen_at\n")
    for stand_in in ("int_user_attribute_updates", "user_properties"):
        (models / f"{stand_in}.sql").write_text("select 'u1' as user_id\n")
    for case, (condition, _, _) in UNKNOWN_NAMES.items():
        (models / f"bad_{case}.sql").write_text("{{ cohort(all_of=[" + condition + "]) }}\n")
    for case, condition in KNOWN_NAMES.items():
        (models / f"good_{case}.sql").write_text("{{ cohort(all_of=[" + condition + "]) }}\n")

    result = subprocess.run(
        [DBT, "run", "--project-dir", str(project), "--profiles-dir", str(project),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
        cwd=project, env=dbt_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    results = {r["unique_id"].split(".")[-1]: r for r in
               json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]}
    for case, (_, argument, phrases) in UNKNOWN_NAMES.items():
        outcome = results[f"bad_{case}"]
        message = " ".join((outcome["message"] or "").split())
        assert outcome["status"] == "error", (case, outcome["status"])
        assert f"bad_{case}: {argument}: " in message, (case, message)
        for phrase in phrases:
            assert phrase in message, (case, phrase, message)
    for case in KNOWN_NAMES:
        assert results[f"good_{case}"]["status"] == "success", (case, results[f"good_{case}"]["message"], result.stdout[-3000:])
    assert results["tracking_plan"]["status"] == "success", result.stdout[-3000:]


# -------------------------------------------------------------------------------- history across runs

SEGMENTATION = ["+cohort_sizes_daily", "+cohort_membership_history"]


def members_at(moment: dict) -> dict[tuple[str, str], str]:
    """(cohort_id, user_id) -> entered_at, from expected.yml."""
    return {
        (cohort_id, member["user_id"]): member["entered_at"]
        for cohort_id, members in moment["cohorts"]["members"].items()
        for member in members
    }


def history(warehouse: Path) -> set[tuple]:
    _, rows = read_table(warehouse, "marts.cohort_membership_history")
    return {(r["cohort_id"], r["user_id"], r["entered_at"], r["recorded_at"], r["exited_at"]) for r in rows}


def sizes(warehouse: Path) -> dict[tuple[str, str], int]:
    _, rows = read_table(warehouse, "marts.cohort_sizes_daily")
    return {(r["cohort_id"], normalise(r["day"]).__str__()[:10]): r["size"] for r in rows}


def run_at(moment: dict, warehouse: Path, scratch: Path) -> None:
    result = run_dbt(["run", "--select", *SEGMENTATION, "--vars", json.dumps({"as_of": moment["as_of"]})], warehouse, scratch)
    assert result.returncode == 0, result.stdout[-4000:]


def test_membership_history_records_joins_and_exits_across_runs(tmp_path: Path) -> None:
    warehouse = tmp_path / "hand.duckdb"
    load_hand_events(warehouse)
    later, earlier = MOMENTS[0], MOMENTS[1]  # 2024-03-10 12:00 and 2024-03-09 12:00
    before, after = members_at(earlier), members_at(later)
    t1, t2 = earlier["computed_at"], later["computed_at"]

    run_at(earlier, warehouse, tmp_path / "r1")
    first = {(c, u, entered, t1, None) for (c, u), entered in before.items()}
    assert history(warehouse) == first

    run_at(later, warehouse, tmp_path / "r2")
    stayed = {(c, u, before[c, u], t1, None) for (c, u) in before.keys() & after.keys()}
    left = {(c, u, before[c, u], t1, t2) for (c, u) in before.keys() - after.keys()}
    joined = {(c, u, after[c, u], t2, None) for (c, u) in after.keys() - before.keys()}
    assert left and joined and stayed  # the fixture exercises all three
    second = stayed | left | joined
    assert history(warehouse) == second

    # "Who joined / left since the last run" is a filter on the latest as_of.
    assert {(c, u) for c, u, _, recorded, _ in history(warehouse) if recorded == t2} == after.keys() - before.keys()
    assert {(c, u) for c, u, _, _, exited in history(warehouse) if exited == t2} == before.keys() - after.keys()

    run_at(later, warehouse, tmp_path / "r3")  # the same moment again: nothing changes
    assert history(warehouse) == second

    run_at(earlier, warehouse, tmp_path / "r4")  # back in time: the later run is undone
    assert history(warehouse) == first

    def expected_sizes(*moments: dict) -> dict[tuple[str, str], int]:
        return {
            (cohort_id, m["computed_at"][:10]): len(m["cohorts"]["members"].get(cohort_id, []))
            for m in moments for cohort_id in m["cohorts"]["cohort_ids"]
        }

    assert sizes(warehouse) == expected_sizes(earlier)
    run_at(later, warehouse, tmp_path / "r5")
    assert history(warehouse) == second
    assert sizes(warehouse) == expected_sizes(earlier, later)


# -------------------------------------------------------------------------------- money is exact

MONEY_AS_OF = "2024-03-10 12:00:00"
# (event_id, user_id, event_type, event_time, event_properties as the source wrote them)
MONEY_EVENTS = [
    ("m1", "u1", "purchase", "2024-03-10 10:00:00", '{"revenue": 0.1}'),
    ("m2", "u1", "purchase", "2024-03-10 11:00:00", '{"revenue": 0.2}'),
    ("m3", "u2", "purchase", "2024-03-10 10:00:00", '{"price": 0.1, "quantity": 3}'),  # revenue 0.1 x 3, computed in staging
    ("m4", "u3", "purchase", "2024-03-10 09:00:00", '{"revenue": 0.1}'),
    ("m5", "u3", "purchase", "2024-03-10 10:00:00", '{"revenue": "0.2"}'),
    ("m6", "u3", "purchase", "2024-03-10 11:00:00", '{"revenue": 0.000001}'),
    ("m7", "u4", "view_item", "2024-03-10 11:00:00", '{"price": 0.30000000000000004}'),  # a client that added 0.1 + 0.2
]


def show(warehouse: Path, scratch: Path, inline_sql: str) -> list[dict]:
    """`dbt show --inline` on the real project at MONEY_AS_OF: the rows, as JSON values."""
    result = run_dbt(["show", "--inline", inline_sql, "--limit", "-1", "--output", "json", "--log-format", "json",
                      "--vars", json.dumps({"as_of": MONEY_AS_OF})], warehouse, scratch)
    assert result.returncode == 0, result.stdout[-4000:]
    previews = [json.loads(line)["data"]["preview"] for line in result.stdout.splitlines()
                if line.startswith("{") and json.loads(line)["info"]["name"] == "ShowNode"]
    assert len(previews) == 1, result.stdout[-4000:]
    return json.loads(previews[0])


def test_money_is_exact_from_the_raw_json_to_cohorts_and_properties(tmp_path: Path) -> None:
    """The issue's minimal case, through the real staging: as_of 2024-03-10 12:00, u1 buys for 0.1 at 10:00
    and 0.2 at 11:00; `total('revenue') > 0.3` within the last day must not admit u1 (as doubles the sum
    was 0.30000000000000004 and did). Filters compare exact values too, also on an amount computed in
    staging (0.1 x 3) or sent with float noise (rounded to 6 places)."""
    from cohortflow.warehouse import connect

    warehouse = tmp_path / "money.duckdb"
    con = connect(warehouse)
    try:
        for index, (event_id, user_id, event_type, at, properties) in enumerate(MONEY_EVENTS, start=1):
            con.execute(
                "insert into raw.events (event_id, insert_id, user_id, event_type, event_time, event_properties, "
                "user_properties, source_format, source_file, source_row, ingested_at) "
                "values (?, ?, ?, ?, cast(? as timestamp), ?, '{}', 'amplitude', 'money.jsonl', ?, timestamp '2024-03-10 12:30:00')",
                [event_id, event_id, user_id, event_type, at, properties, index],
            )
    finally:
        con.close()
    built = run_dbt(["build", "--select", "+int_events_as_of", "+int_users_seen", "--vars", json.dumps({"as_of": MONEY_AS_OF})],
                    warehouse, tmp_path / "build")
    assert built.returncode == 0, built.stdout[-6000:]

    members = show(warehouse, tmp_path / "cohort", "{{ cohort(all_of=[performed('purchase', measure=total('revenue'), "
                   "operator='>', value=0.3, within=last(1, 'days'))]) }}")
    assert members == [{"user_id": "u3", "entered_at": "2024-03-10T11:00:00"}]

    rows = show(warehouse, tmp_path / "properties", """{{ computed_properties([
        aggregate('revenue_1d', 'sum', 'revenue', event='purchase', within=last(1, 'days')),
        event_count('lines_of_at_least_0_3', 'purchase', where=where('revenue', '>=', 0.3)),
        event_count('lines_above_0_3', 'purchase', where=where('revenue', '>', 0.3)),
        event_count('views_of_at_least_0_3', 'view_item', where=where('price', '>=', 0.3)),
        event_count('views_above_0_3', 'view_item', where=where('price', '>', 0.3)),
    ]) }}""")
    by_user = {row.pop("user_id"): row for row in rows}
    # Exact sums (the JSON of dbt show writes decimals as numbers: 0.3, never 0.30000000000000004).
    assert {user: Decimal(str(row["revenue_1d"])) for user, row in by_user.items()} == {
        "u1": Decimal("0.3"), "u2": Decimal("0.3"), "u3": Decimal("0.300001"), "u4": Decimal("0")}
    assert by_user["u2"]["lines_of_at_least_0_3"] == 1 and by_user["u2"]["lines_above_0_3"] == 0
    assert by_user["u4"]["views_of_at_least_0_3"] == 1 and by_user["u4"]["views_above_0_3"] == 0
    assert all(row["lines_above_0_3"] == 0 for row in by_user.values())
