"""``cohortflow ingest``: land Amplitude, CSV and Online Retail files in the raw tables.

Use from Python (the CLI calls the same function)::

    from cohortflow.warehouse import connect
    from cohortflow.ingest import ingest_files

    con = connect()
    summary = ingest_files(con, ["events.json.gz"], "amplitude-export")
    print(summary.format_text())

Parsing and checks run vectorised in DuckDB; each file is one transaction; bad rows go to
``raw.rejected_events`` with a reason code from :data:`REASONS`. See docs/ingest.md.
"""

from cohortflow.ingest.loader import FORMATS, ingest_files
from cohortflow.ingest.mapping import ENTITIES, TARGET_FIELDS, CsvMapping, load_csv_mapping, parse_mapping_args
from cohortflow.ingest.reasons import REASONS
from cohortflow.ingest.summary import FileResult, IngestError, IngestSummary, Untracked

__all__ = [
    "ENTITIES",
    "FORMATS",
    "REASONS",
    "TARGET_FIELDS",
    "CsvMapping",
    "FileResult",
    "IngestError",
    "IngestSummary",
    "Untracked",
    "ingest_files",
    "load_csv_mapping",
    "parse_mapping_args",
]
