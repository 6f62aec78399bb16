"""Keep the dbt manifest that Dagster loads in step with the dbt project.

Dagster builds its asset graph from ``dbt_project/target/manifest.json``. Parsing the
project at import time would slow every code-location load, so the CLI, ``make ui`` and
the tests call :func:`ensure_manifest` once before Dagster imports the definitions.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Container
from pathlib import Path

from cohortflow.warehouse import DBT_PROJECT_DIR, WAREHOUSE_ENV_VAR, warehouse_path

# Files whose change can change the manifest (dbt reads nothing else when parsing).
_WATCHED_SUFFIXES = {".sql", ".yml", ".yaml", ".csv", ".md"}
_WATCHED_DIRS = ("models", "macros", "tests", "seeds", "snapshots", "analyses")


def dbt_executable() -> str:
    """The ``dbt`` that belongs to the running interpreter's environment."""
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"


def manifest_path(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    """Where ``dbt parse`` writes the manifest of ``project_dir``."""
    return project_dir / "target" / "manifest.json"


def _newest_source_mtime(project_dir: Path, suffixes: Container[str] = _WATCHED_SUFFIXES) -> float:
    newest = 0.0
    for name in ("dbt_project.yml", "profiles.yml"):
        path = project_dir / name
        if path.exists():
            newest = max(newest, path.stat().st_mtime)
    for folder in _WATCHED_DIRS:
        root = project_dir / folder
        if not root.exists():
            continue
        for path in root.rglob("*"):
            if path.suffix in suffixes:
                newest = max(newest, path.stat().st_mtime)
    return newest


def _parsed_for_path(project_dir: Path) -> Path:
    # Which warehouse the last parse rendered the profile with: dbt's partial parse (what makes a
    # run start in ~2.5 s instead of ~4 s) is only reused when the profile renders the same.
    return project_dir / "target" / "cohortflow_parsed_for_warehouse.txt"


def manifest_is_stale(project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """True when the manifest is missing, older than a file of the dbt project, or parsed for another warehouse."""
    target = manifest_path(project_dir)
    stamp = _parsed_for_path(project_dir)
    if not target.exists() or not stamp.exists():
        return True
    if stamp.read_text() != str(warehouse_path()):
        return True
    return target.stat().st_mtime < _newest_source_mtime(project_dir)


def ensure_manifest(project_dir: Path = DBT_PROJECT_DIR, *, force: bool = False) -> Path:
    """Run ``dbt parse`` when the manifest is missing or stale; return its path.

    Parses for the warehouse ``$COHORTFLOW_WAREHOUSE`` names (or the default), as runs will use it.

    Raises
    ------
    RuntimeError
        When ``dbt parse`` fails; the message carries dbt's own output.
    """
    target = manifest_path(project_dir)
    if not force and not manifest_is_stale(project_dir):
        return target
    # One parse at a time per project: two processes (a CLI run beside `dagster dev`, two test
    # workers) parsing into one target folder at once can leave a torn manifest behind.
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".cohortflow-parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and not manifest_is_stale(project_dir):
            return target  # another process parsed it while we waited
        return _parse(project_dir, target)


PARTIAL_PARSE_FILE = "partial_parse.msgpack"


def _parse(project_dir: Path, target: Path) -> Path:
    # The same absolute warehouse path that every later run passes (orchestration.dbt_config).
    warehouse = str(warehouse_path())
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", WAREHOUSE_ENV_VAR: warehouse}
    # Parsed into a scratch folder and moved into place file by file (os.replace is atomic), so a
    # process reading the manifest meanwhile sees the old one or the new one, never half of one.
    scratch = target.parent / f".parse-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    if (target.parent / PARTIAL_PARSE_FILE).exists():
        shutil.copy2(target.parent / PARTIAL_PARSE_FILE, scratch / PARTIAL_PARSE_FILE)
    args = [dbt_executable(), "parse", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
            "--target-path", str(scratch), "--quiet"]
    # dbt 1.11's partial parse keeps a unit test that a YAML edit renamed or removed (it then runs,
    # and fails, against the new model): after a YAML change, parse from scratch (~2 s more, once).
    if target.exists() and target.stat().st_mtime < _newest_source_mtime(project_dir, (".yml", ".yaml")):
        args.append("--no-partial-parse")
    try:
        proc = subprocess.run(args, cwd=project_dir, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not (scratch / target.name).exists():
            raise RuntimeError(f"dbt parse failed in {project_dir}:\n{proc.stdout}\n{proc.stderr}".strip())
        for name in (PARTIAL_PARSE_FILE, "semantic_manifest.json", target.name):  # the manifest last
            if (scratch / name).exists():
                os.replace(scratch / name, target.parent / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # Touch so that a parse that rewrote nothing still counts as fresh.
    os.utime(target)
    _parsed_for_path(project_dir).write_text(warehouse)
    return target
