"""A throw-away PostgreSQL server for tests: initdb in a temp folder, start on a free port, stop cleanly.

The recipe is the one verified in ../shared/STACK.md. initdb refuses to run as root, so when the tests
run as root the server runs as the `postgres` system user (via `runuser`) in a folder it owns.
Durability is switched off (`fsync=off`, `--no-sync`): the data live for one test session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DATABASE = "cohortflow"
USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The server cannot be started here; the message says why and what to install."""


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb (or $COHORTFLOW_PG_BIN)."""
    explicit = os.environ.get("COHORTFLOW_PG_BIN")
    candidates = [explicit] if explicit else glob.glob("/usr/lib/postgresql/*/bin")
    with_initdb = [Path(c) for c in candidates if c and (Path(c) / "initdb").is_file()]
    if not with_initdb:
        raise PostgresUnavailable(
            f"PostgreSQL server binaries not found (no initdb in {explicit or '/usr/lib/postgresql/*/bin'}; "
            "install them with `apt-get install -y postgresql` or point COHORTFLOW_PG_BIN at their folder)"
        )
    return max(with_initdb, key=lambda p: tuple(int(x) for x in p.parent.name.split(".") if x.isdigit()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server. `dsn` / `dbt_env` point clients at its `cohortflow` database."""

    bin_dir: Path
    base_dir: Path
    port: int
    run_as: str | None
    host: str = "127.0.0.1"
    user: str = USER
    dbname: str = DATABASE
    _running: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "pg"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "pg.log"

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    def dbt_env(self) -> dict[str, str]:
        """The env vars the `postgres` target of dbt_project/profiles.yml reads."""
        return {
            "COHORTFLOW_PG_HOST": self.host,
            "COHORTFLOW_PG_PORT": str(self.port),
            "COHORTFLOW_PG_USER": self.user,
            "COHORTFLOW_PG_PASSWORD": "",
            "COHORTFLOW_PG_DBNAME": self.dbname,
        }

    def _run(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise PostgresUnavailable(
                f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}"
            )
        return result

    def start(self) -> None:
        # C.UTF-8: text sorts by code point like DuckDB (alphabetical tie-breaks agree), and lower() /
        # upper() still know non-ASCII letters (plain C would leave 'É' as is).
        self._run(self.bin_dir / "initdb", "-D", self.data_dir, "-U", self.user, "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        self._run(
            self.bin_dir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", "30",
            "-o", f"-p {self.port} -k {self.base_dir} -c listen_addresses={self.host} -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c timezone=UTC",
            "start",
        )
        self._running = True
        self._run(self.bin_dir / "psql", "-h", self.host, "-p", str(self.port), "-U", self.user,
                  "-d", "postgres", "-qc", f"create database {self.dbname}")

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._run(self.bin_dir / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")

    def cleanup(self) -> None:
        """Stop (if running) and delete the folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def start_server(base_dir: Path | None = None) -> PostgresServer:
    """Create and start a fresh server on a free port; raise PostgresUnavailable with the reason."""
    bin_dir = find_bin_dir()
    is_root = os.geteuid() == 0
    if is_root and shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root, and `runuser` (needed to run initdb as postgres) is missing")
    # Not under pytest's tmp_path: /tmp/pytest-of-root is 0700, so the postgres user could not enter it.
    base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="cohortflow-pg-"))
    base.mkdir(parents=True, exist_ok=True)
    if is_root:
        try:
            shutil.chown(base, user=USER)
        except (LookupError, PermissionError) as error:
            raise PostgresUnavailable(f"cannot hand {base} to the `{USER}` system user: {error}") from error
    server = PostgresServer(bin_dir=bin_dir, base_dir=base, port=free_port(), run_as=USER if is_root else None)
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server
