"""Run the API with uvicorn (uvloop + httptools): what `cohortflow serve` calls."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from cohortflow.serving.settings import ServingSettings, serving_config_path
from cohortflow.serving.snapshot import POINTER


class ServeError(RuntimeError):
    """The server cannot start; the message says what to do."""


def check_settings(settings: ServingSettings) -> list[str]:
    """Refuse to start without a usable key; return warnings worth printing (disabled keys, no data)."""
    if not settings.keys:
        declared = ", ".join(settings.disabled_keys) or "none"
        raise ServeError(
            f"no API key is enabled, so every request would be refused. Declared in {serving_config_path()}: "
            f"{declared}. Put a key in the environment variable its key_env names (e.g. "
            "`export COHORTFLOW_API_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`)."
        )
    warnings = [f"key {name} is disabled" for name in settings.disabled_keys]
    if not (settings.serving_dir / POINTER).exists():
        warnings.append(
            f"no serving snapshot in {settings.serving_dir} yet: answers are 503 until `cohortflow run` publishes one"
        )
    return warnings


def serve(settings: ServingSettings, *, host: str, port: int, workers: int = 1, access_log: bool = False) -> None:
    """Serve until interrupted. With several workers each process keeps its own rate-limit counters."""
    import uvicorn

    logging.getLogger("cohortflow.serving").setLevel(logging.INFO)
    common = dict(host=host, port=port, loop="uvloop", http="httptools", access_log=access_log,
                  log_level="info", timeout_graceful_shutdown=5, server_header=False)
    if workers > 1:
        os.environ["COHORTFLOW_WAREHOUSE"] = str(settings.warehouse)
        uvicorn.run("cohortflow.serving.app:app_from_environment", factory=True, workers=workers, **common)
    else:
        from cohortflow.serving.app import create_app

        uvicorn.run(create_app(settings), **common)


@contextmanager
def serving_in_thread(settings: ServingSettings, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The API on a background thread of this process (the demo uses it); yields its base URL."""
    import socket

    import uvicorn

    from cohortflow.serving.app import create_app

    if not port:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning",
                                           access_log=False, loop="asyncio"))
    thread = threading.Thread(target=server.run, name="cohortflow-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ServeError(f"the API did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
