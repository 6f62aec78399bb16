"""`cohortflow demo`: sample data → warehouse → cohorts, properties, syncs, in one command."""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import duckdb

from cohortflow import warehouse
from cohortflow.as_of import format_as_of
from cohortflow.warehouse import PROJECT_ROOT

if TYPE_CHECKING:  # pragma: no cover
    from reverse_etl.emulators.webhook import WebhookEmulator

SAMPLE_DIR = PROJECT_ROOT / "data" / "generated"


class DemoError(RuntimeError):
    """The demo could not finish; the message says which stage and why."""


def _is_demo_warehouse(path: Path, sample_dir: Path) -> bool:
    """True when every file ever ingested into ``path`` came from the demo's sample folder."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        exists = con.execute(
            "select count(*) from information_schema.tables where table_schema = 'raw' and table_name = 'ingested_files'"
        ).fetchone()[0]
        if not exists:
            return con.execute("select count(*) from information_schema.tables").fetchone()[0] == 0
        foreign = con.execute(
            "select count(*) from raw.ingested_files where not starts_with(source_file, ?)", [str(sample_dir)]
        ).fetchone()[0]
        return foreign == 0
    finally:
        con.close()


def _reset_warehouse(path: Path, sample_dir: Path) -> None:
    if not path.exists():
        return
    if not _is_demo_warehouse(path, sample_dir):
        raise DemoError(
            f"{path} holds data that the demo did not load; the demo will not delete it. "
            f"Run `cohortflow demo --keep`, or point {warehouse.WAREHOUSE_ENV_VAR} at another file."
        )
    for leftover in (path, path.with_name(path.name + ".wal")):
        if leftover.exists():
            leftover.unlink()


def run_demo(
    *,
    users: int = 15_000,
    days: int = 100,
    seed: int = 42,
    fresh: bool = True,
    sample_dir: Path = SAMPLE_DIR,
    echo: Callable[[str], None] = print,
) -> None:
    """Generate, ingest and run everything as of the last generated event, printing each stage."""
    from cohortflow.generate import generate
    from cohortflow.ingest import IngestError, ingest_files
    from cohortflow.pipeline import PipelineError, run_pipeline

    started = time.perf_counter()
    path = warehouse.warehouse_path()
    os.environ[warehouse.WAREHOUSE_ENV_VAR] = str(path)
    sample_dir = sample_dir.resolve()
    if fresh:
        _reset_warehouse(path, sample_dir)

    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    echo(f"1/5 generating {users:,} users × {days} days of sample data into {sample_dir} ...")
    summary = generate(sample_dir, users=users, days=days, seed=seed, end=end, progress=True)
    echo(summary.format_text())

    echo(f"\n2/5 ingesting into {path} ...")
    con = warehouse.connect(path)
    try:
        results = [
            ingest_files(con, [sample_dir / "items.csv"], "csv", entity="items"),
            ingest_files(con, [sample_dir / "users.csv"], "csv", entity="users"),
            ingest_files(con, sorted(sample_dir.glob("events-*.jsonl.gz")), "amplitude-export", progress=True),
        ]
        last_event = con.execute("select max(event_time) from raw.events").fetchone()[0]
    except IngestError as exc:
        raise DemoError(f"ingest: {exc}") from None
    finally:
        con.close()
    for result in results:
        echo(result.format_text())
    if last_event is None:
        raise DemoError("ingest loaded no events; nothing to compute")

    as_of = format_as_of(last_event)
    # A local webhook receiver for the on-demand webhook syncs (dbt_project/destinations.yml points
    # `local_webhook` at $COHORTFLOW_WEBHOOK_URL): started here, on 127.0.0.1, for this demo only.
    from reverse_etl.emulators.webhook import WebhookEmulator

    os.environ["COHORTFLOW_WEBHOOK_SECRET"] = secrets.token_hex(16)
    with WebhookEmulator(secret=os.environ["COHORTFLOW_WEBHOOK_SECRET"]) as receiver:
        os.environ["COHORTFLOW_WEBHOOK_URL"] = f"{receiver.url}/cohortflow/webhook"
        echo(f"\n3/5 running dbt models and tests, training and scoring the predictions, building the predictive "
             f"cohorts and running the scheduled syncs, as of the last event ({as_of} UTC) ...")
        try:
            run = run_pipeline(as_of, warehouse=path)
        except PipelineError as exc:
            raise DemoError(str(exc)) from None
        echo(run.format_text())

        echo(f"\n4/6 on-demand webhook syncs to a local receiver at {receiver.url} (signed, de-duplicated on message_id) ...")
        for line in run_webhook_syncs(path, receiver):
            echo(line)

    echo("\n5/6 the API, on the serving snapshot this run published ...")
    for line in show_profile_api(path):
        echo(line)

    events = results[2]
    echo(
        "\n6/6 done in {:.0f} s.\n"
        "  events: {:,} loaded, {:,} rejected, {:,} duplicate (rejections with reasons: raw.rejected_events)\n"
        "  warehouse: {}\n"
        "  explore:   select * from marts.cohorts  (any DuckDB client on {})\n"
        "  syncs:     cohortflow sync list / status NAME  (history: cohortflow_syncs.sync_runs, sync_records)\n"
        "  open the UI: make ui   → http://127.0.0.1:3000 (asset graph, runs, schedules)\n"
        "  start the API: export COHORTFLOW_API_KEY=<a long random secret>; make serve\n"
        "                 → http://127.0.0.1:8000/docs (keys and scopes: serving.yml; docs/api.md)".format(
            time.perf_counter() - started,
            events.rows_loaded,
            events.rows_rejected,
            events.rows_duplicate,
            path,
            path,
        )
    )


def show_profile_api(path: Path) -> list[str]:
    """Start the API for a moment (this process, 127.0.0.1, a throwaway key) and show one real answer:
    a user who has a recommendation list and a propensity, if there is one."""
    import dataclasses
    import sqlite3

    import httpx

    from cohortflow.serving.settings import ApiKey, Scope, key_digest, load_settings
    from cohortflow.serving.server import serving_in_thread
    from cohortflow.serving.snapshot import POINTER

    key = secrets.token_urlsafe(24)
    settings = dataclasses.replace(
        load_settings(path, environ={}),
        keys=(ApiKey("demo", key_digest(key), frozenset(Scope), "6000/minute"),),
    )
    pointer = json.loads((settings.serving_dir / POINTER).read_text())
    with sqlite3.connect(f"file:{settings.serving_dir / pointer['file']}?mode=ro", uri=True) as db:
        row = db.execute(
            "select u.user_id, (select min(rec_id) from recommendations r where r.user_id = u.user_id), "
            "(select group_concat(prediction_id) from propensities p where p.user_id = u.user_id) "
            "from users u where u.cohort_ids <> '[]' order by (select count(*) from propensities p "
            "where p.user_id = u.user_id) desc, u.user_id limit 1"
        ).fetchone()
    if row is None:
        return ["  (no users in the snapshot)"]
    user_id, rec_id, predictions = row
    query = f"user_id={user_id}&get_amp_props=true&get_cohort_ids=true"
    if rec_id:
        query += f"&get_recs=true&rec_id={rec_id}"
    if predictions:
        query += f"&get_propensity=true&prediction_id={predictions}&propensity_type=pct"
    with serving_in_thread(settings) as url:
        answer = httpx.get(f"{url}/v1/userprofile?{query}", headers={"Authorization": f"Api-Key {key}"}, timeout=10)
    if answer.status_code != 200:
        raise DemoError(f"the Profile API answered {answer.status_code}: {answer.text[:300]}")
    lines = [f"  GET /v1/userprofile?{query}", "  Authorization: Api-Key …  →  200"]
    lines += ["  " + line for line in json.dumps(answer.json(), indent=2).splitlines()]
    return lines


def run_webhook_syncs(path: Path, receiver: WebhookEmulator) -> list[str]:
    """Run every on-demand sync whose destination is a webhook; say what each sent and what the receiver holds."""
    from cohortflow.dbt_manifest import ensure_manifest
    from cohortflow.sync_declarations import DeclarationError, load_project_declarations
    from reverse_etl import SyncError, run_sync

    try:
        declarations = load_project_declarations(json.loads(ensure_manifest().read_text()))
    except DeclarationError as exc:
        raise DemoError(f"sync declarations: {exc}") from None
    webhook_syncs = [d for d in declarations if d.destination.type == "webhook" and d.schedule == "on_demand"]
    if not webhook_syncs:
        return ["  (no on-demand webhook sync declared)"]
    lines = []
    con = warehouse.connect(path)
    try:
        for declaration in webhook_syncs:
            name = declaration.spec.name
            try:
                destination = declaration.destination.build(path, name)
                result = run_sync(con, declaration.spec, destination)
            except (DeclarationError, SyncError) as exc:
                raise DemoError(f"sync {name}: {exc}") from None
            lines.append(
                f"  {name}: +{result.rows_added:,} added, ~{result.rows_changed:,} changed, -{result.rows_removed:,} removed, "
                f"{result.rows_rejected:,} rejected; audience {result.audience_size:,}"
                + (f" ({result.rows_excluded_consent:,} left out: no marketing consent)" if result.rows_excluded_consent else "")
            )
    finally:
        con.close()
    batches = receiver.committed()
    members = sum(len(receiver.members(cohort_id)) for cohort_id in list(receiver.cohorts))
    lines.append(f"  receiver: {len(batches):,} batch(es) accepted, {members:,} member(s) held")
    return lines
