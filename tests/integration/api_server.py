"""A real `cohortflow serve` on 127.0.0.1 for the API tests, and a served warehouse to point it at.

``served_world`` builds one warehouse per test session (per xdist worker): generated data, one full
pipeline run (which publishes the serving snapshot), restored environment afterwards. ``ApiServer``
starts the CLI's own server in a subprocess with keys from its environment, the way a user would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
WORLD_END = datetime(2026, 11, 1)
WORLD_USERS = 3000
# Keys of the test server: name -> (secret, scopes, rate limit).
KEYS = {
    "admin": ("test-admin-key-0123456789", ["read:profiles", "read:cohorts", "write:cohorts", "write:events"], "100000/minute"),
    "profiles": ("test-profiles-key-0123456789", ["read:profiles"], "100000/minute"),
    "cohorts": ("test-cohorts-key-0123456789", ["read:cohorts"], "100000/minute"),
    "events": ("test-events-key-0123456789", ["write:events"], "100000/minute"),
    "slow": ("test-slow-key-0123456789", ["read:profiles"], "5/minute"),
}


def auth(name: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Api-Key {KEYS[name][0]}"}


def build_world(base: Path, *, users: int = WORLD_USERS) -> Path:
    """Generate, ingest and run the whole pipeline once; return the warehouse file (snapshot published)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from generated_warehouse import load_generated

    from cohortflow.pipeline import run_pipeline

    warehouse = base / "warehouse" / "world.duckdb"
    warehouse.parent.mkdir(parents=True)
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    saved = {k: os.environ.get(k) for k in ("COHORTFLOW_WAREHOUSE", "DAGSTER_HOME")}
    os.environ["COHORTFLOW_WAREHOUSE"] = str(warehouse)
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        last_event = load_generated(warehouse, base / "data", users=users, days=100, seed=7, end=WORLD_END)
        # subscribe_7d needs ~14k users to pass its guardrail; the other predictions score here.
        run_pipeline(last_event, skip_predictions=["subscribe_7d"])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return warehouse


def copy_world(warehouse: Path, target: Path) -> Path:
    """A private copy of a world's folder (warehouse, snapshots, models) for a test that changes it."""
    shutil.copytree(warehouse.parent, target, ignore=shutil.ignore_patterns("*.locks", "logs"))
    return target / warehouse.name


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ApiServer:
    """`cohortflow serve` in a subprocess, for one warehouse."""

    warehouse: Path
    workdir: Path
    keys: dict[str, tuple[str, list[str], str]] = field(default_factory=lambda: dict(KEYS))
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        config = self.workdir / "serving.yml"
        lines = ["api_keys:"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTFLOW_")}
        for name, (secret, scopes, rate) in self.keys.items():
            variable = f"TEST_KEY_{name.upper()}"
            lines += [f"  - name: {name}", f"    key_env: {variable}", f"    scopes: [{', '.join(scopes)}]",
                      f"    rate_limit: {rate}"]
            env[variable] = secret
        config.write_text("\n".join(lines) + "\n")
        env.update({"COHORTFLOW_WAREHOUSE": str(self.warehouse), "COHORTFLOW_SERVING_CONFIG": str(config),
                    **self.extra_env})
        return env

    def start(self, timeout: float = 60.0) -> "ApiServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        log = open(self.workdir / "server.log", "ab")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "cohortflow"), "serve", "--port", str(self.port)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                httpx.get(f"{self.url}/health", timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer within {timeout} s: {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "ApiServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
