"""The Dagster UI starts on 127.0.0.1, lists every asset over GraphQL, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow

QUERY = "{ assetNodes { assetKey { path } groupName } }"
LOCATIONS = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
    "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_dagster_dev_serves_the_asset_graph_and_stops_cleanly(isolated_env, dbt_manifest, tmp_path):
    port = _free_port()
    log = open(tmp_path / "dagster-dev.log", "w+")
    # Started exactly as `make ui` starts it; SIGINT ignored by the parent must not stick to the child.
    process = subprocess.Popen(
        [sys.executable, "-m", "cohortflow.cli", "ui", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"dagster dev exited early ({process.returncode}):\n{log.read()[-4000:]}")
            try:
                entries = _graphql(port, LOCATIONS)["data"]["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    loaded = entries[0]["locationOrLoadError"]
                    assert loaded["__typename"] == "RepositoryLocation", f"code location failed to load: {loaded}"
                    nodes = _graphql(port, QUERY)["data"]["assetNodes"]
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, "the UI did not answer GraphQL within 120 s"
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        groups = {n["groupName"] for n in nodes}
        assert {
            "staging/stg_events",
            "marts/user_properties",
            "marts/cohort_memberships",
            "cohorts/cart_abandoners_24h",
            "syncs/cart_abandoners_24h_to_files",
        } <= keys, keys
        assert {"staging", "marts", "cohorts", "syncs"} <= groups
    finally:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("dagster dev ignored SIGTERM for 30 s")
        stopped_in = time.monotonic() - started
        log.close()
    assert stopped_in < 30
    # Nothing of the UI may outlive it for long (webserver, daemon and code-server children included).
    leftovers: list[str] = []
    for _ in range(20):
        leftovers = subprocess.run(
            ["ps", "-o", "pid=,args=", "-g", str(process.pid)], capture_output=True, text=True
        ).stdout.splitlines()
        if not leftovers:
            break
        time.sleep(0.5)
    assert not leftovers, "processes left behind:\n" + "\n".join(leftovers)
