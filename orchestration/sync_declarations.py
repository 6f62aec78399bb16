"""Syncs are declared as code next to the model they ship: dbt exposures with ``meta.sync``.

Declaring them in dbt puts every sync in the dbt docs lineage; this module reads them from
the manifest and checks them when the definitions load, so a bad declaration fails early
with the file and field named, instead of at 3 a.m. in a scheduled run.

Example (``dbt_project/models/syncs/*.yml``)::

    exposures:
      - name: cart_abandoners_24h_to_files
        type: application
        owner: {name: Growth team}
        depends_on: [ref('cart_abandoners_24h')]
        config:
          meta:
            sync:
              destination: local_files      # a name from dbt_project/destinations.yml
              mode: mirror
              primary_key: [user_id]
              fields: {user_id: user_id, entered_at: entered_at}
              schedule: hourly
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from reverse_etl import CsvFileDestination, Destination, SyncSpec

SYNC_META_KEY = "sync"
SCHEDULES = ("on_demand", "hourly", "daily", "every_minute")
DESTINATION_TYPES = ("csv",)
_ENV_VAR = re.compile(r"\{\{\s*env_var\(\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\s*(?:,\s*['\"]([^'\"]*)['\"]\s*)?\)\s*\}\}")


class DeclarationError(ValueError):
    """A sync or destination declaration that cannot work; the message names file and field."""


@dataclass(frozen=True)
class DestinationConfig:
    """A destination configured once in ``destinations.yml`` and referenced by name."""

    name: str
    type: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def build(self, warehouse_path: Path, sync_name: str) -> Destination:
        """Instantiate the destination for one sync (files land beside the warehouse by default)."""
        if self.type == "csv":
            directory = Path(str(self.settings.get("directory", "destinations")))
            if not directory.is_absolute():
                directory = warehouse_path.parent / directory
            return CsvFileDestination(directory / f"{sync_name}.csv")
        raise DeclarationError(f"destination {self.name!r}: unknown type {self.type!r}")


@dataclass(frozen=True)
class SyncDeclaration:
    """One sync as declared in dbt: what to ship (the model), where, how and when."""

    spec: SyncSpec
    destination: DestinationConfig
    schedule: str
    model_unique_id: str
    model_name: str
    description: str
    declared_in: str


def _render_env(value: Any, where: str) -> Any:
    """Substitute ``{{ env_var('NAME', 'default') }}``: secrets live in the environment only."""
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise DeclarationError(f"{where}: environment variable {name} is not set")

        return _ENV_VAR.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: _render_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render_env(v, where) for v in value]
    return value


def load_destinations(path: Path) -> dict[str, DestinationConfig]:
    """Read ``destinations.yml``; every destination needs a known ``type``."""
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{path}: not valid YAML: {exc}") from None
    entries = document.get("destinations") or {}
    if not isinstance(entries, Mapping):
        raise DeclarationError(f"{path}: 'destinations' must be a mapping of name -> settings")
    destinations: dict[str, DestinationConfig] = {}
    for name, settings in entries.items():
        where = f"{path}: destinations.{name}"
        if not isinstance(settings, Mapping) or "type" not in settings:
            raise DeclarationError(f"{where}: needs a 'type' (one of {', '.join(DESTINATION_TYPES)})")
        kind = settings["type"]
        if kind not in DESTINATION_TYPES:
            raise DeclarationError(f"{where}.type: {kind!r} is not one of {', '.join(DESTINATION_TYPES)}")
        rest = {k: v for k, v in settings.items() if k != "type"}
        destinations[name] = DestinationConfig(name=name, type=kind, settings=_render_env(rest, where))
    return destinations


def _relation(node: Mapping[str, Any]) -> str:
    # Schema + alias, not relation_name: the latter embeds the database name of the file
    # that happened to be configured at parse time.
    return f"{node['schema']}.{node.get('alias') or node['name']}"


def load_sync_declarations(manifest: Mapping[str, Any], destinations: Mapping[str, DestinationConfig]) -> list[SyncDeclaration]:
    """Every exposure carrying ``meta.sync`` in a parsed dbt manifest, validated against it and the destinations."""
    nodes = manifest.get("nodes", {})
    declarations: list[SyncDeclaration] = []
    for unique_id, exposure in sorted(manifest.get("exposures", {}).items()):
        meta = (exposure.get("config") or {}).get("meta") or exposure.get("meta") or {}
        sync = meta.get(SYNC_META_KEY)
        if sync is None:
            continue
        where = f"{exposure.get('original_file_path', unique_id)}: exposure {exposure['name']}"
        if not isinstance(sync, Mapping):
            raise DeclarationError(f"{where}: meta.sync must be a mapping")
        models = [n for n in exposure.get("depends_on", {}).get("nodes", []) if n.startswith(("model.", "seed.", "snapshot."))]
        if len(models) != 1:
            raise DeclarationError(f"{where}: depends_on must name exactly one model (the one it ships), found {len(models)}")
        model = nodes.get(models[0])
        if model is None:
            raise DeclarationError(f"{where}: depends_on names unknown model {models[0]}")
        destination_name = sync.get("destination")
        if destination_name not in destinations:
            known = ", ".join(sorted(destinations)) or "none declared"
            raise DeclarationError(f"{where}: meta.sync.destination {destination_name!r} is not in destinations.yml ({known})")
        schedule = sync.get("schedule", "on_demand")
        if schedule not in SCHEDULES:
            raise DeclarationError(f"{where}: meta.sync.schedule {schedule!r} is not one of {', '.join(SCHEDULES)}")
        columns = set((model.get("columns") or {}).keys())
        primary_key = sync.get("primary_key")
        if isinstance(primary_key, str):
            primary_key = [primary_key]
        if not primary_key:
            raise DeclarationError(f"{where}: meta.sync.primary_key is required")
        fields = dict(sync.get("fields") or {})
        for column in [*primary_key, *fields.values()]:
            if columns and column not in columns:
                raise DeclarationError(
                    f"{where}: column {column!r} is not documented on model {model['name']} "
                    f"(known: {', '.join(sorted(columns))})"
                )
        try:
            spec = SyncSpec(
                name=exposure["name"],
                source_relation=_relation(model),
                primary_key=list(primary_key),
                fields=fields or None,
                mode=sync.get("mode", "mirror"),
                batch_size=int(sync.get("batch_size", 10_000)),
            )
        except (ValueError, TypeError) as exc:
            raise DeclarationError(f"{where}: meta.sync: {exc}") from None
        declarations.append(
            SyncDeclaration(
                spec=spec,
                destination=destinations[destination_name],
                schedule=schedule,
                model_unique_id=models[0],
                model_name=model["name"],
                description=exposure.get("description") or "",
                declared_in=str(exposure.get("original_file_path", "")),
            )
        )
    return declarations
