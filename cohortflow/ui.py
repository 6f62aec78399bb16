"""Start `dagster dev` on this project the way it must be started.

Two pitfalls (../shared/STACK.md): started from a script with ``&``, dagster dev inherits
SIGINT / SIGTERM *ignored* and then never stops; and without DAGSTER_HOME it writes to
~/.dagster with telemetry on. Both are handled here, for `make ui` and for the tests.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from cohortflow.dbt_manifest import ensure_manifest
from cohortflow.pipeline import ensure_dagster_home
from cohortflow.warehouse import PROJECT_ROOT, WAREHOUSE_ENV_VAR, warehouse_path


def dagster_dev_command(host: str = "127.0.0.1", port: int = 3000) -> list[str]:
    """The command line of the UI: the workspace of this repo on host:port."""
    dagster = Path(sys.executable).parent / "dagster"
    return [str(dagster), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", host, "-p", str(port)]


def reset_signals() -> None:
    """Give SIGINT / SIGTERM their default meaning again (ignored dispositions survive exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exec_dagster_dev(host: str = "127.0.0.1", port: int = 3000) -> None:
    """Replace this process with `dagster dev` (prepared manifest, repo-local instance)."""
    ensure_dagster_home()
    ensure_manifest()
    os.environ[WAREHOUSE_ENV_VAR] = str(warehouse_path())
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    # dagster-dbt's prepare_if_dev() looks for `dbt` on PATH: make it this environment's dbt.
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
    print(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']}); Ctrl-C stops it.", flush=True)
    os.chdir(PROJECT_ROOT)
    reset_signals()
    command = dagster_dev_command(host, port)
    os.execv(command[0], command)
