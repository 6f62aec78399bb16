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
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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
