"""Schemathesis over the served OpenAPI schema, and hostile strings on every parameter.

Every operation gets generated requests (valid and invalid); no answer may be a 5xx, every answer
must match the schema (status, content type, body), authentication must be enforced, and no answer
may carry a stack trace, SQL or a file path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from api_server import ApiServer, auth, copy_world
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, ignored_auth]
HOSTILE = [
    "' OR '1'='1", "1; DROP TABLE users; --", "\" OR \"\"=\"", "user-000001' UNION SELECT sql FROM sqlite_master --",
    "../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "/etc/shadow", "C:\\Windows\\win.ini",
    "%00", "\x00", "${jndi:ldap://x}", "<script>alert(1)</script>", "🙂" * 50, "a" * 5000,
]
# What only the server's insides would put in an answer (inputs may be echoed back in error messages).
LEAKS = ("Traceback", "sqlite3.", "duckdb.", "OperationalError", "site-packages", "File \"", str(Path.cwd()), "/tmp/pytest")


@pytest.fixture(scope="module")
def fuzz_server(served_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    # A private copy: fuzzed uploads and events land in its landing folder, not the shared world's.
    base = tmp_path_factory.mktemp("fuzz")
    with ApiServer(copy_world(served_world, base / "world"), base / "server") as running:
        yield running


def test_generated_requests_never_fail_the_server_or_the_schema(fuzz_server: ApiServer) -> None:
    """Valid and invalid requests for every operation (Hypothesis strategies from schemathesis; its
    pytest plugin does not run on this pytest)."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.generate])
            def call(case) -> None:
                counts[operation.label] = counts.get(operation.label, 0) + 1
                response = case.call_and_validate(base_url=fuzz_server.url, headers=auth(), checks=CHECKS, timeout=30)
                assert not any(leak in response.text for leak in LEAKS), (operation.label, response.text[:500])

            try:
                call()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
                # An operation without inputs (GET /health) has no invalid request to generate.
    assert sum(counts.values()) >= 1000, counts


def _operations(schema_json: dict) -> list[tuple[str, str, list[dict]]]:
    found = []
    for path, methods in schema_json["paths"].items():
        for method, operation in methods.items():
            found.append((method.upper(), path, operation.get("parameters", [])))
    return found


def test_hostile_strings_on_every_parameter_are_refused_cleanly(fuzz_server: ApiServer) -> None:
    spec = httpx.get(f"{fuzz_server.url}/openapi.json").json()
    tried = 0
    with httpx.Client(base_url=fuzz_server.url, headers=auth(), timeout=30) as client:
        for method, path, parameters in _operations(spec):
            for parameter in parameters:
                for value in HOSTILE:
                    url, params = path, {}
                    if parameter["in"] == "path":
                        url = path.replace("{" + parameter["name"] + "}", quote(value, safe=""))
                    elif parameter["in"] == "query":
                        params[parameter["name"]] = value
                    else:
                        continue
                    answer = client.request(method, url, params=params, json={} if method == "POST" else None)
                    tried += 1
                    assert answer.status_code < 500, (method, path, parameter["name"], value, answer.text[:300])
                    shown = answer.text.replace(value, "")
                    assert not any(leak in shown for leak in LEAKS), (method, path, parameter["name"], answer.text[:300])
    assert tried >= 50
