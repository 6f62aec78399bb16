"""The whole product on the hand-written event set: `cohortflow ingest` + `cohortflow run`, as a user runs them.

After each run the cohorts, their members, every computed property and the synced files equal what was
worked out by hand in tests/fixtures/hand_events/expected.yml — also after travelling back in time.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hand_events import FIXTURE_DIR, MOMENTS, expected_members, expected_user_properties, read_table

pytestmark = pytest.mark.slow

COHORTFLOW = str(Path(sys.executable).parent / "cohortflow")


def cohortflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COHORTFLOW, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=600)


def test_ingest_then_run_gives_the_hand_worked_answer_at_every_moment(isolated_env: Path) -> None:
    events = cohortflow("ingest", "--format", "amplitude", str(FIXTURE_DIR / "events.jsonl"))
    assert events.returncode == 0, events.stderr
    assert "46 loaded" in events.stdout, events.stdout
    users = cohortflow("ingest", "--format", "csv", "--entity", "users", str(FIXTURE_DIR / "users.csv"))
    assert users.returncode == 0, users.stderr

    for moment in MOMENTS:
        # Six hand-written users cannot train a prediction (its guardrail would fail the run, naming
        # why): the rest of the graph runs without them, and the predictive cohorts stay empty.
        run = cohortflow("run", "--as-of", moment["as_of"], "--no-predictions")
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
        assert "FAILED" not in run.stdout

        _, rows = read_table(isolated_env, "marts.user_properties")
        assert {row.pop("user_id"): row for row in rows} == expected_user_properties(moment), moment["as_of"]

        _, rows = read_table(isolated_env, "marts.cohort_memberships")
        actual: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            actual.setdefault(row["cohort_id"], []).append((row["user_id"], row["entered_at"]))
        expected = expected_members(moment)
        assert {k: sorted(v) for k, v in actual.items()} == {k: v for k, v in expected.items() if v}

        # The file destinations hold exactly the current members, whatever the run before held.
        synced = isolated_env.parent / "destinations" / "cart_abandoners_24h_to_files.csv"
        with synced.open(newline="") as handle:
            in_file = sorted(row["user_id"] for row in csv.DictReader(handle))
        assert in_file == sorted(user for user, _ in expected["cart_abandoners_24h"]), moment["as_of"]
        for cohort_id, members in expected.items():
            assert f"{len(members):>8,} users" in run.stdout or not members, (cohort_id, run.stdout)

    # With the predictions, the run fails at their guardrail, saying why and what to do.
    run = cohortflow("run", "--as-of", MOMENTS[0]["as_of"])
    assert run.returncode == 1
    assert "step predictions__purchase_7d" in run.stderr and "the last good scores stay in place" in run.stderr
    assert "--skip-prediction purchase_7d" in run.stderr


def test_reingesting_the_same_file_adds_nothing(isolated_env: Path) -> None:
    first = cohortflow("ingest", "--format", "amplitude", str(FIXTURE_DIR / "events.jsonl"))
    again = cohortflow("ingest", "--format", "amplitude", str(FIXTURE_DIR / "events.jsonl"))
    assert first.returncode == again.returncode == 0
    from cohortflow.warehouse import connect

    con = connect(isolated_env, read_only=True)
    try:
        assert con.execute("select count(*) from raw.events").fetchone()[0] == 46
    finally:
        con.close()
