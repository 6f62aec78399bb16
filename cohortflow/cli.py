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
@click.option("--days", default=60, show_default=True, type=click.IntRange(min=1), help="Days of history.")
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
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def ingest(fmt: str, entity: str, mappings: tuple[str, ...], mapping_file: Path | None, paths: tuple[Path, ...]) -> None:
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
                con, list(paths), fmt, entity=entity, mapping=mapping, progress=sys.stderr.isatty()
            )
        finally:
            con.close()
    except IngestError as exc:
        _fail(str(exc))
    click.echo(summary.format_text())


@main.command()
@click.option("--as-of", "as_of", default=None, metavar="TIMESTAMP",
              help="Compute as of this UTC moment (YYYY-MM-DD[ HH:MM:SS] or ISO-8601); default: now.")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
@click.option("--verbose", is_flag=True, help="Show Dagster's and dbt's step logs.")
def run(as_of: str | None, full_refresh: bool, verbose: bool) -> None:
    """Materialise the whole graph in process: dbt models, tests, then syncs."""
    from cohortflow.as_of import parse_as_of
    from cohortflow.pipeline import PipelineError, run_pipeline

    try:
        parse_as_of(as_of)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    try:
        summary = run_pipeline(as_of, full_refresh=full_refresh, verbose=verbose)
    except PipelineError as exc:
        _fail(str(exc))
    click.echo(summary.format_text())


@main.command()
@click.option("--users", default=2000, show_default=True, type=click.IntRange(min=1), help="Sample users.")
@click.option("--days", default=60, show_default=True, type=click.IntRange(min=1), help="Days of history.")
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


if __name__ == "__main__":
    main()
