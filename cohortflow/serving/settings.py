"""What `cohortflow serve` needs: where the snapshots and landing folders are, and the API keys.

API keys are declared in ``serving.yml`` at the project root (or the file ``COHORTFLOW_SERVING_CONFIG``
names), read and checked here like every other declaration (pydantic, unknown keys refused with a
did-you-mean). A key itself is a secret and never written in that file: each declared key names the
environment variable that holds it (``key_env``), or gives the key's SHA-256 (``key_sha256``). The
server keeps only the hashes::

    api_keys:
      - name: crm
        key_env: COHORTFLOW_CRM_API_KEY
        scopes: [read:profiles, read:cohorts]
        rate_limit: 600/minute
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from cohortflow.declarations import DeclarationError, StrictModel, validation_messages
from cohortflow.warehouse import PROJECT_ROOT, warehouse_path

SERVING_CONFIG_ENV_VAR = "COHORTFLOW_SERVING_CONFIG"
DEFAULT_SERVING_CONFIG = PROJECT_ROOT / "serving.yml"
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Scope(StrEnum):
    """What a key may do."""

    READ_PROFILES = "read:profiles"
    READ_COHORTS = "read:cohorts"
    WRITE_COHORTS = "write:cohorts"
    WRITE_EVENTS = "write:events"


class ApiKeyDeclaration(StrictModel):
    """One key as declared in serving.yml."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                description="The environment variable that holds the key.")
    key_sha256: str | None = Field(default=None, description="The key's SHA-256, hex (for keys kept elsewhere).")
    scopes: list[Scope] = Field(min_length=1)
    rate_limit: str = Field(default="600/minute", description="Requests per second / minute / hour, e.g. 600/minute.")

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("must be 64 hex digits (sha256sum of the key)")
        return value.lower() if value else value

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        match = _RATE.match(value)
        if not match or int(match.group(1)) < 1:
            raise ValueError("must read like 600/minute (a whole number per second, minute or hour)")
        return value.strip()

    @model_validator(mode="after")
    def _one_source(self) -> "ApiKeyDeclaration":
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key_env (the environment variable holding the key) or key_sha256")
        return self


class ServingFile(StrictModel):
    api_keys: list[ApiKeyDeclaration] = Field(default_factory=list)
    max_upload_ids: int = Field(default=1_000_000, ge=1)
    max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    snapshots_kept: int = Field(default=3, ge=2)


@dataclass(frozen=True)
class ApiKey:
    """A usable key: its name, the SHA-256 of its secret (never the secret), scopes and rate limit."""

    name: str
    digest: bytes
    scopes: frozenset[Scope]
    rate_limit: str


@dataclass(frozen=True)
class ServingSettings:
    """Everything the app reads; built once by :func:`load_settings` and injected into ``create_app``."""

    warehouse: Path
    serving_dir: Path
    landing_dir: Path
    exports_dir: Path
    keys: tuple[ApiKey, ...] = ()
    disabled_keys: tuple[str, ...] = ()  # declared keys whose environment variable is unset
    max_upload_ids: int = 1_000_000
    max_request_bytes: int = 20 * 1024 * 1024
    snapshots_kept: int = 3
    snapshot_poll_seconds: float = 0.25
    extra: Mapping[str, Any] = field(default_factory=dict)


def key_digest(key: str) -> bytes:
    """The SHA-256 of a key, as the server keeps it."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def serving_paths(warehouse: str | os.PathLike[str] | None = None) -> tuple[Path, Path, Path, Path]:
    """(warehouse, serving_dir, landing_dir, exports_dir): the folders live beside the warehouse file."""
    path = warehouse_path(warehouse)
    base = path.parent
    return path, base / "serving", base / "landing", base / "exports"


def serving_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """serving.yml, or the file ``$COHORTFLOW_SERVING_CONFIG`` names."""
    env = os.environ if environ is None else environ
    return Path(env.get(SERVING_CONFIG_ENV_VAR) or DEFAULT_SERVING_CONFIG)


def read_serving_file(path: Path) -> ServingFile:
    """Read and check serving.yml; a missing file means no keys (the server then refuses to start)."""
    if not path.exists():
        return ServingFile()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{path.name}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise DeclarationError(f"{path.name}: must be a mapping with api_keys: [...]")
    try:
        parsed = ServingFile.model_validate(raw)
    except ValidationError as exc:
        raise DeclarationError("\n".join(validation_messages(exc, ServingFile, path.name))) from None
    names = [k.name for k in parsed.api_keys]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DeclarationError(f"{path.name}: api_keys: the name {duplicates[0]!r} is declared twice")
    return parsed


def load_settings(
    warehouse: str | os.PathLike[str] | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServingSettings:
    """Resolve paths and keys. Keys are hashed here; the secrets are not kept.

    Raises
    ------
    DeclarationError
        When serving.yml does not check out (names the file and key).
    """
    env = os.environ if environ is None else environ
    config_path = Path(config) if config else serving_config_path(env)
    parsed = read_serving_file(config_path)
    keys: list[ApiKey] = []
    disabled: list[str] = []
    for declared in parsed.api_keys:
        if declared.key_sha256:
            digest = bytes.fromhex(declared.key_sha256)
        else:
            secret = env.get(declared.key_env or "", "")
            if not secret:
                disabled.append(f"{declared.name} (set {declared.key_env})")
                continue
            digest = key_digest(secret)
        keys.append(ApiKey(declared.name, digest, frozenset(declared.scopes), declared.rate_limit))
    path, serving_dir, landing_dir, exports_dir = serving_paths(warehouse)
    return ServingSettings(
        warehouse=path,
        serving_dir=serving_dir,
        landing_dir=landing_dir,
        exports_dir=exports_dir,
        keys=tuple(keys),
        disabled_keys=tuple(disabled),
        max_upload_ids=parsed.max_upload_ids,
        max_request_bytes=parsed.max_request_bytes,
        snapshots_kept=parsed.snapshots_kept,
    )
