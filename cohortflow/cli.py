"""`cohortflow`: the user's entry point beside dbt and Dagster.

Exit codes: 0 done; 1 the work failed (bad input file as a whole, a failed run);
2 wrong usage (click's own).
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

import click

from cohortflow.warehouse import PROJECT_ROOT, WAREHOUSE_ENV_VAR, warehouse_path

DEFAULT_SAMPLE_DIR = PROJECT_ROOT / "data" / "generated"


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--warehouse",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"DuckDB warehouse file (default: ${WAREHOUSE_ENV_VAR}, else warehouse/cohortflow.duckdb).",
)
@click.version_option(package_name="cohortflow")
def main(warehouse: Path | None) -> None:
    """cohortflow: warehouse-native cohorts, computed properties, predictions and syncs."""
    if warehouse is not None:
        # One absolute path for this process and the dbt subprocesses it starts.
        os.environ[WAREHOUSE_ENV_VAR] = str(warehouse_path(warehouse))


@main.command()
@click.option("--users", default=2000, show_default=True, type=click.IntRange(min=1), help="Number of users.")
@click.option("--days", default=100, show_default=True, type=click.IntRange(min=1), help="Days of history.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed (same seed, same files).")
@click.option("--end", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
              default=None, help="When the data stops, UTC (default: today 00:00 UTC).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_SAMPLE_DIR,
              show_default=True, help="Folder to write events-*.jsonl.gz, users.csv and items.csv into.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(users: int, days: int, seed: int, end: datetime | None, out: Path, quiet: bool) -> None:
    """Write realistic sample data (Amplitude export events, users.csv, items.csv)."""
    from cohortflow.generate import generate as run_generate

    try:
        summary = run_generate(out, users=users, days=days, seed=seed, end=end, progress=not quiet)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(summary.format_text())


@main.command()
@click.option("--format", "fmt", required=True,
              type=click.Choice(["amplitude", "amplitude-export", "csv", "online-retail"]),
              help="Format of the files.")
@click.option("--entity", default="events", show_default=True, type=click.Choice(["events", "users", "items"]),
              help="What the files hold (csv; amplitude identify rows become users anyway).")
@click.option("--map", "mappings", multiple=True, metavar="FIELD=COLUMN",
              help="CSV column mapping, repeatable; FIELD=:value sets a constant (e.g. event_type=:purchase).")
@click.option("--mapping", "mapping_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV column mapping as a YAML file.")
# Default = cohortflow.ingest.reasons.DEFAULT_MAX_FIELD_BYTES, written out so that every command does
# not import the ingest package (numpy, pyarrow) just to show it; a test keeps the two equal.
@click.option("--max-field-bytes", "max_field_bytes", default=1024 * 1024, show_default=True,
              type=click.IntRange(min=1), metavar="BYTES",
              help="Size limit of one value (CSV cell, JSON line, event of a JSON document); "
                   "a row with a larger one is rejected as field_too_large.")
@click.option("--tracking-plan", "tracking_plan_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="PATH",
              help="Tracking plan to count unknown event types and properties against "
                   "[default: dbt_project/models/staging/tracking_plan.yml].")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def ingest(fmt: str, entity: str, mappings: tuple[str, ...], mapping_file: Path | None, max_field_bytes: int,
           tracking_plan_path: Path | None, paths: tuple[Path, ...]) -> None:
    """Load files into the warehouse's raw tables (append-only, deduplicated, nothing dropped silently)."""
    from cohortflow import warehouse
    from cohortflow.ingest import IngestError, ingest_files, load_csv_mapping, parse_mapping_args

    try:
        mapping = None
        if mapping_file is not None:
            mapping = load_csv_mapping(mapping_file)
        elif mappings:
            mapping = parse_mapping_args(list(mappings))
        con = warehouse.connect()
        try:
            summary = ingest_files(
                con, list(paths), fmt, entity=entity, mapping=mapping, progress=sys.stderr.isatty(),
                max_field_bytes=max_field_bytes, tracking_plan=tracking_plan_path,
            )
        finally:
            con.close()
    except IngestError as exc:
        _fail(str(exc))
    click.echo(summary.format_text())


@main.command("ingest-landed")
@click.option("--landing-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The API's landing folder [default: landing/ beside the warehouse file].")
def ingest_landed_command(landing_dir: Path | None) -> None:
    """Ingest the events the event endpoint (POST /2/httpapi) landed, without a whole run.

    `cohortflow run` and the schedules do this first anyway; each event is ingested once.
    """
    from cohortflow.ingest import IngestError
    from cohortflow.ingest.landing import ingest_landed

    try:
        result = ingest_landed(None, landing_dir)
    except IngestError as exc:
        _fail(str(exc))
    click.echo(result.format_text())


@main.command()
@click.option("--as-of", "as_of", default=None, metavar="TIMESTAMP",
              help="Compute as of this UTC moment (YYYY-MM-DD[ HH:MM:SS] or ISO-8601); default: now.")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
@click.option("--verbose", is_flag=True, help="Show Dagster's and dbt's step logs.")
@click.option("--skip-prediction", "skip_predictions", multiple=True, metavar="NAME",
              help="Do not train or score this prediction in this run (repeatable); dbt reads its last scores.")
@click.option("--no-predictions", is_flag=True,
              help="Skip every prediction (data too small or without their outcome events).")
def run(as_of: str | None, full_refresh: bool, verbose: bool, skip_predictions: tuple[str, ...],
        no_predictions: bool) -> None:
    """Materialise the whole graph in process: dbt models and tests, predictions, then syncs."""
    from cohortflow.as_of import parse_as_of
    from cohortflow.pipeline import PipelineError, run_pipeline

    try:
        parse_as_of(as_of)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    try:
        summary = run_pipeline(as_of, full_refresh=full_refresh, verbose=verbose,
                               skip_predictions=True if no_predictions else skip_predictions)
    except PipelineError as exc:
        _fail(str(exc))
    click.echo(summary.format_text())


@main.command()
@click.option("--users", default=15_000, show_default=True, type=click.IntRange(min=1),
              help="Sample users (the default is about the least the shipped predictions can train on).")
@click.option("--days", default=100, show_default=True, type=click.IntRange(min=1), help="Days of history.")
@click.option("--seed", default=42, show_default=True, type=int, help="Random seed.")
@click.option("--fresh/--keep", default=True, show_default=True,
              help="Start from an empty warehouse (default) or add to the existing one.")
def demo(users: int, days: int, seed: int, fresh: bool) -> None:
    """Generate sample data, ingest it, run everything as of the last event, and say what happened."""
    from cohortflow.demo import DemoError, run_demo

    try:
        run_demo(users=users, days=days, seed=seed, fresh=fresh, echo=click.echo)
    except DemoError as exc:
        _fail(str(exc))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
def ui(host: str, port: int) -> None:
    """Start the Dagster UI (dagster dev) on this project, with the repo-local DAGSTER_HOME."""
    from cohortflow.ui import exec_dagster_dev

    exec_dagster_dev(host=host, port=port)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes (each counts rate limits on its own).")
@click.option("--access-log", is_flag=True, help="Log every request (method, path, status) to stderr.")
def serve(host: str, port: int, workers: int, access_log: bool) -> None:
    """Start the Profile API, Cohort API and event endpoint (OpenAPI docs at /docs).

    Answers come from the serving snapshot the last run published; a new run's snapshot is picked up
    without a restart. API keys: serving.yml (each names the environment variable holding its key).
    """
    from cohortflow.declarations import DeclarationError
    from cohortflow.serving.server import ServeError, check_settings
    from cohortflow.serving.server import serve as run_server
    from cohortflow.serving.settings import load_settings

    try:
        settings = load_settings()
        warnings = check_settings(settings)
    except (DeclarationError, ServeError) as exc:
        _fail(str(exc))
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    click.echo(f"cohortflow API on http://{host}:{port} (docs: http://{host}:{port}/docs), "
               f"{len(settings.keys)} key(s), snapshots from {settings.serving_dir}", err=True)
    run_server(settings, host=host, port=port, workers=workers, access_log=access_log)


# --- cohortflow tracking-plan ... ------------------------------------------------------------------

# Written out (= cohortflow.tracking_plan.DEFAULT_PLAN_FILE) so that --help does not import pydantic.
DEFAULT_TRACKING_PLAN = PROJECT_ROOT / "dbt_project" / "models" / "staging" / "tracking_plan.yml"


@main.group("tracking-plan")
def tracking_plan() -> None:
    """The tracking plan (event types and their properties) in dbt_project/models/staging/tracking_plan.yml.

    Cohort and property macros check every event type and property they name against it; ingest counts
    what it does not know. `draft` writes it from the events in the warehouse, `check` validates it.
    """


@tracking_plan.command("draft")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_TRACKING_PLAN,
              show_default=True, help="The plan file to merge into and write (created when missing).")
@click.option("--dry-run", "--print", "dry_run", is_flag=True,
              help="Print the file's new text on stdout (the report on stderr) instead of writing it.")
def tracking_plan_draft(output: Path, dry_run: bool) -> None:
    """Draft the plan from raw.events: every event type and property with its count and JSON type(s).

    Merges into the existing file: descriptions and types written by hand stay, new entries get
    `drafted: true`, entries no longer in the warehouse are kept with `seen: 0`.
    """
    import duckdb

    from cohortflow.tracking_plan import TrackingPlanError, draft_tracking_plan

    path = warehouse_path()
    if not path.exists():
        _fail(f"warehouse {path} does not exist: ingest events first (`cohortflow ingest`, or `cohortflow demo`)")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            _fail(f"cannot read {path}: it is in use by another process (DuckDB allows one writer at a time: "
                  f"a dbt run, an ingest, the Dagster UI?); try again when it has finished. ({str(exc).splitlines()[0]})")
        _fail(f"cannot read {path}: {str(exc).splitlines()[0]}")
    try:
        con.execute("set enable_progress_bar = false")
        has_events = con.execute(
            "select count(*) from information_schema.tables where table_schema = 'raw' and table_name = 'events'"
        ).fetchone()[0]
        if not has_events:
            _fail(f"warehouse {path} has no raw.events: ingest events first (`cohortflow ingest`)")
        draft = draft_tracking_plan(con, output)
    except TrackingPlanError as exc:
        _fail(f"{exc}\n(fix the plan file first: a draft must not lose what it holds)")
    finally:
        con.close()
    if dry_run:
        click.echo(draft.text, nl=False)
        click.echo(draft.format_report(), err=True)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(draft.text, encoding="utf-8")
    click.echo(draft.format_report())
    click.echo(f"wrote {output}")


@tracking_plan.command("check")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_TRACKING_PLAN,
              show_default=True, help="The plan file.")
def tracking_plan_check(plan_path: Path) -> None:
    """Validate the plan file (keys, types); exit code 1 naming the file and the key when it is wrong."""
    from cohortflow.tracking_plan import TrackingPlanError, load_tracking_plan

    try:
        plan = load_tracking_plan(plan_path)
    except TrackingPlanError as exc:
        _fail(str(exc))
    n_properties = sum(len(e.properties) for e in plan.events.values())
    drafted = [name for name, e in plan.events.items() if e.drafted] + [
        f"{name}.{p}" for name, e in plan.events.items() for p, spec in e.properties.items() if spec.drafted]
    click.echo(f"{plan_path}: {len(plan.events):,} event types, {n_properties:,} properties"
               + (f"; still drafted (not described): {', '.join(drafted)}" if drafted else ""))


# --- cohortflow sync ... ---------------------------------------------------------------------------


def _sync_declarations() -> dict:
    """The declared syncs (dbt exposures with meta.sync + destinations.yml), checked as Dagster checks them."""
    import json

    from cohortflow.dbt_manifest import ensure_manifest
    from cohortflow.sync_declarations import DeclarationError, load_project_declarations

    try:
        manifest = json.loads(ensure_manifest().read_text())
        declarations = load_project_declarations(manifest)
    except (DeclarationError, RuntimeError) as exc:
        _fail(str(exc))
    return {d.spec.name: d for d in declarations}


def _declaration(name: str):
    import difflib

    declarations = _sync_declarations()
    if name not in declarations:
        close = difflib.get_close_matches(name, list(declarations), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _fail(f"no sync named {name!r}{hint}; declared: {', '.join(sorted(declarations)) or 'none'}")
    return declarations[name]


def _open_warehouse(*, read_only: bool):
    """The warehouse, or ``None`` when it does not exist yet (read-only callers show 'never run')."""
    import duckdb

    from cohortflow import warehouse

    path = warehouse_path()
    if not path.exists():
        if read_only:
            return None
        _fail(f"warehouse {path} does not exist: run `cohortflow ingest` and `cohortflow run` (or `cohortflow demo`) first")
    try:
        return warehouse.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        _fail(f"cannot open {path}: another process is using it (a dbt run, a sync, the API?): {exc}")


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-" if value is None else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


@main.group()
@click.option("-v", "--verbose", is_flag=True, help="Show the sync engine's log (plan, batches, retries) on stderr.")
def sync(verbose: bool) -> None:
    """Syncs declared in dbt (models/syncs/*.yml): list, run, status, pause, resume.

    Each command reads the same declarations as Dagster and the warehouse of --warehouse.
    """
    import logging

    engine_log = logging.getLogger("reverse_etl")
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        engine_log.addHandler(handler)
        engine_log.setLevel(logging.INFO)
    elif not engine_log.handlers:
        # Everything a user needs is in the printed result or error; without a handler Python would
        # print the engine's warnings (the same failure again) on stderr.
        engine_log.addHandler(logging.NullHandler())


@sync.command("list")
def sync_list() -> None:
    """Every declared sync: model, destination, mode, schedule, paused, last run."""
    from reverse_etl.control import pause_info, sync_history

    declarations = _sync_declarations()
    con = _open_warehouse(read_only=True)
    rows = []
    try:
        for name, d in sorted(declarations.items()):
            paused = pause_info(con, name) if con is not None else None
            history = sync_history(con, name, limit=1) if con is not None else []
            last = history[0] if history else None
            rows.append([
                name,
                d.model_name,
                f"{d.destination.name} ({d.destination.type})",
                d.spec.sync_mode.value,
                d.schedule,
                "yes" + (f": {paused['reason']}" if paused.get("reason") else "") if paused else "no",
                f"{last['status']} {_when(last.get('started_at'))}" if last else "never run",
            ])
    finally:
        if con is not None:
            con.close()
    if not rows:
        click.echo("no syncs declared (add an exposure with meta.sync under dbt_project/models/syncs/)")
        return
    click.echo(_table(["sync", "model", "destination", "mode", "schedule", "paused", "last run"], rows))


@sync.command("run")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Plan only: show what would be added / changed / removed; send nothing.")
@click.option("--full-resync", is_flag=True, help="Send the whole audience again, not only what changed.")
def sync_run(name: str, dry_run: bool, full_resync: bool) -> None:
    """Run one sync now (the same run as its Dagster asset); exit code 1 with the reason if it fails."""
    from cohortflow.sync_declarations import DeclarationError
    from reverse_etl import SyncError, run_sync

    declaration = _declaration(name)
    try:
        destination = declaration.destination.build(warehouse_path(), name)
    except DeclarationError as exc:
        _fail(f"sync {name!r} cannot build its destination: {exc}")
    con = _open_warehouse(read_only=False)
    try:
        try:
            result = run_sync(con, declaration.spec, destination, dry_run=dry_run, full_resync=full_resync)
        except SyncError as exc:
            if exc.result is not None and exc.result.rows_processed:
                # Part of it was delivered before the failure (and stays delivered): say what.
                click.echo(exc.result.format_text())
            _fail(str(exc))
        click.echo(result.format_text())
        if result.status == "paused":
            click.echo(f"  resume with: cohortflow sync resume {name}")
        elif dry_run:
            _echo_samples(con, declaration.spec, destination, full_resync=full_resync)
    finally:
        con.close()


def _echo_samples(con, spec, destination, *, full_resync: bool, limit: int = 3) -> None:
    """A few records of each operation the mode would send, with their values (removes: as last sent)."""
    import json

    from reverse_etl import plan_sync
    from reverse_etl.spec import Operation

    with plan_sync(con, spec, destination=destination, full_resync=full_resync) as plan:
        for operation in (Operation.ADD, Operation.CHANGE, Operation.REMOVE):
            if operation not in spec.sync_mode.operations:
                continue
            records = plan.sample(operation, limit)
            if records:
                click.echo(f"  sample {operation.value}:")
                for record in records:
                    click.echo("    " + json.dumps(record, default=str, ensure_ascii=False))


@sync.command("status")
@click.argument("name")
@click.option("--record", "record_key", metavar="KEY", help="What happened to one record (e.g. a user_id).")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=1), help="Runs / events to show.")
def sync_status(name: str, record_key: str | None, limit: int) -> None:
    """Recent runs of a sync; with --record, what each run did to that record and whether the destination has it."""
    from reverse_etl.control import pause_info, record_history, sync_history

    declaration = _declaration(name)
    con = _open_warehouse(read_only=True)
    try:
        click.echo(
            f"sync {name}: {declaration.model_name} → {declaration.destination.name} ({declaration.destination.type}), "
            f"{declaration.spec.sync_mode.value}, {declaration.schedule}"
        )
        paused = pause_info(con, name) if con is not None else None
        if paused:
            click.echo(f"  PAUSED since {_when(paused.get('paused_at'))}" + (f": {paused['reason']}" if paused.get("reason") else ""))
        if record_key is None:
            runs = sync_history(con, name, limit=limit) if con is not None else []
            if not runs:
                click.echo("  never run")
                return
            click.echo(_table(
                ["started", "status", "added", "changed", "removed", "rejected", "no consent", "suppressed", "error"],
                [[
                    _when(r.get("started_at")),
                    r["status"] + (" (dry run)" if r.get("dry_run") and r["status"] != "dry_run" else ""),
                    r.get("rows_added", 0), r.get("rows_changed", 0), r.get("rows_removed", 0),
                    r.get("rows_rejected") or 0,
                    r.get("rows_excluded_consent") or 0,
                    r.get("rows_excluded_suppressed") or 0,
                    _short(r.get("error") or r.get("note") or "", name),
                ] for r in runs],
            ))
            if runs[0].get("error"):
                click.echo(f"latest run {runs[0]['status']}: {runs[0]['error']}")
            return
        events = record_history(con, name, record_key, limit=limit) if con is not None else []
        held = _held(con, declaration, record_key) if con is not None else None
        click.echo(f"  record {record_key}: " + (f"in the destination since {_when(held)}" if held else "not in the destination"))
        if not events:
            click.echo("  no run has sent it (never in the audience, excluded by consent / suppression, or not yet synced)")
            return
        click.echo(_table(
            ["when", "run", "run status", "operation", "status", "reason"],
            [[_when(e.get("recorded_at")), e.get("run_id"), e.get("run_status") or "-", e.get("operation"), e.get("status"),
              e.get("reason") or ""] for e in events],
        ))
    finally:
        if con is not None:
            con.close()


def _short(text: str, name: str, width: int = 60) -> str:
    text = text.removeprefix(f"sync {name!r}: ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _held(con, declaration, record_key: str):
    """When the destination last acknowledged the record it still holds (``sync_state``), else ``None``."""
    from cohortflow.sync_declarations import DeclarationError
    from reverse_etl.state import STATE_SCHEMA, sync_identity

    try:
        location = declaration.destination.build(warehouse_path(), declaration.name).location
    except DeclarationError:
        return None  # an unset secret: where it ships, and so what it holds there, is unknown here

    exists = con.execute(
        "select count(*) from duckdb_tables() where schema_name = ? and table_name = 'sync_state'", [STATE_SCHEMA]
    ).fetchone()[0]
    if not exists:
        return None
    keyed = con.execute(
        "select count(*) from duckdb_columns() where schema_name = ? and table_name = 'sync_state' and column_name = 'sync_id'",
        [STATE_SCHEMA],
    ).fetchone()[0]
    if not keyed:  # a warehouse whose syncs have not run since identities were introduced
        row = con.execute(
            f"select max(sent_at) from {STATE_SCHEMA}.sync_state where sync_name = ? and record_key = ?",
            [declaration.name, record_key],
        ).fetchone()
        return row[0] if row else None
    row = con.execute(
        f"select max(sent_at) from {STATE_SCHEMA}.sync_state where sync_id = ? and record_key = ?",
        [sync_identity(declaration.name, location), record_key],
    ).fetchone()
    return row[0] if row else None


@sync.command("pause")
@click.argument("name")
@click.option("--reason", default=None, help="Why (shown by `sync list`, `sync status` and in the runs).")
def sync_pause(name: str, reason: str | None) -> None:
    """Pause a sync: its runs (scheduled or not) send nothing until it is resumed."""
    from reverse_etl.control import pause_sync

    _declaration(name)
    con = _open_warehouse(read_only=False)
    try:
        pause_sync(con, name, reason=reason)
    finally:
        con.close()
    click.echo(f"sync {name} paused" + (f": {reason}" if reason else "") + f"; resume with `cohortflow sync resume {name}`")


@sync.command("resume")
@click.argument("name")
def sync_resume(name: str) -> None:
    """Resume a paused sync; its next run sends everything that is pending."""
    from reverse_etl.control import is_paused, resume_sync

    _declaration(name)
    con = _open_warehouse(read_only=False)
    try:
        was_paused = is_paused(con, name)
        resume_sync(con, name)
    finally:
        con.close()
    click.echo(f"sync {name} resumed" if was_paused else f"sync {name} was not paused")


if __name__ == "__main__":
    main()
