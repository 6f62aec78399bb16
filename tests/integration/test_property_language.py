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
