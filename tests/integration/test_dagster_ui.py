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
                payload = _graphql(port, QUERY)
                nodes = payload.get("data", {}).get("assetNodes")
                if nodes:
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
    # Nothing of the UI may outlive it (webserver and code-server children included).
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes left behind: {leftovers}"
