"""Syncs are declared as code next to the model they ship: dbt exposures with ``meta.sync``.

Declaring them in dbt puts every sync in the dbt docs lineage; this module reads them from the
manifest and checks them when the definitions load, so a bad declaration fails early with the file,
the exposure and the field named, instead of at 3 a.m. in a scheduled run. No Dagster import here:
the CLI (`cohortflow sync ...`) reads the same declarations.

Example (``dbt_project/models/syncs/*.yml``; every key is described in ``docs/syncs.md``)::

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
              primary_key: [user_id]        # must be declared unique on the model (a `unique` test...)
              fields: {user_id: user_id, entered_at: entered_at}
              schedule: hourly              # on_demand | hourly | daily | every_minute | {cron: "..."}

Destinations (``dbt_project/destinations.yml``) are checked at load too: the type must be known and
the settings must build (``destination_class(type).from_settings``), except a setting whose
``{{ env_var('NAME') }}`` is not set here — secrets may exist only where syncs run, so such a setting
fails the run of a sync that uses it, not the loading of every definition.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# One error type and one did-you-mean for every declaration (syncs, destinations, predictions).
from cohortflow.declarations import DeclarationError, did_you_mean
from cohortflow.warehouse import DBT_PROJECT_DIR, warehouse_path
from reverse_etl import Destination, SyncSpec, check_identifiers
from reverse_etl.destinations import DESTINATION_TYPES, destination_class
from reverse_etl.spec import IDENTIFIER_KINDS, SyncMode

SYNC_META_KEY = "sync"
DESTINATIONS_FILE = DBT_PROJECT_DIR / "destinations.yml"
ON_DEMAND = "on_demand"
# Named cadences and their cron (UTC). "hourly" runs right after the hourly dbt refresh, in its run.
NAMED_SCHEDULES: dict[str, str] = {"hourly": "0 * * * *", "daily": "0 0 * * *", "every_minute": "* * * * *"}
SCHEDULES = (ON_DEMAND, *NAMED_SCHEDULES)
_CRON_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *"}
DEFAULT_MAX_REJECTED_SHARE = 0.05
DEFAULT_MODE = SyncMode.MIRROR.value
# Marketing destinations send only users whose latest stated consent is true, unless the sync says otherwise.
DEFAULT_CONSENT_MODEL = "user_properties"
DEFAULT_CONSENT_COLUMN = "has_marketing_consent"
CONSENT_NONE = "none"
SYNC_KEYS = (
    "destination", "mode", "primary_key", "fields", "identifiers", "schedule", "batch_size",
    "consent", "suppress", "user_column", "max_rejected_share",
)
# The sync name handed to from_settings when destinations.yml is checked without a sync.
_SETTINGS_CHECK_SYNC = "settings_check"
_ENV_VAR = re.compile(r"\{\{\s*env_var\(\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\s*(?:,\s*['\"]([^'\"]*)['\"]\s*)?\)\s*\}\}")




# --- destinations.yml ---------------------------------------------------------------------------


def _render_env(value: Any, where: str, missing: dict[str, str] | None = None) -> Any:
    """Substitute ``{{ env_var('NAME', 'default') }}``: secrets live in the environment only.

    With ``missing`` (a dict), an unset variable without default is recorded there (setting path ->
    variable name) and replaced by a placeholder instead of raising.
    """
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            if missing is None:
                raise DeclarationError(
                    f"{where}: environment variable {name} is not set (set it where the sync runs)"
                )
            missing[where] = name
            return f"unset-{name}"

        return _ENV_VAR.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: _render_env(v, f"{where}.{k}", missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_env(v, where, missing) for v in value]
    return value


@dataclass(frozen=True)
class DestinationConfig:
    """A destination configured once in ``destinations.yml`` and referenced by name.

    ``settings`` are kept as written (``{{ env_var(...) }}`` unrendered): they are rendered when a
    sync builds the destination, so a secret is read from the environment of the run.

    Attributes
    ----------
    unavailable
        Why the destination's class could not be imported when the definitions loaded (its module
        or driver is missing); a sync using it fails its run with this reason.
    unchecked
        Why some settings could not be checked at load (an environment variable not set here).
    """

    name: str
    type: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    declared_in: str = "destinations.yml"
    unavailable: str | None = field(default=None, compare=False)
    unchecked: str | None = field(default=None, compare=False)

    @property
    def where(self) -> str:
        return f"{self.declared_in}: destinations.{self.name}"

    def destination_class(self) -> type[Destination]:
        """The class of this destination's type (imported now).

        Raises
        ------
        DeclarationError
            When its module cannot be imported (a missing optional driver).
        """
        try:
            return destination_class(self.type)
        except ValueError as exc:
            raise DeclarationError(f"{self.where}.type: {exc}") from None
        except Exception as exc:  # an ImportError, or a module that fails while importing
            raise DeclarationError(
                f"{self.where}: destination type {self.type!r} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc

    def rendered_settings(self) -> dict[str, Any]:
        """The settings with environment variables substituted now.

        Raises
        ------
        DeclarationError
            Naming the setting and the variable when one is not set.
        """
        return _render_env(dict(self.settings), self.where)

    def build(self, warehouse: Path, sync_name: str) -> Destination:
        """Instantiate the destination for one sync (relative paths resolve beside the warehouse file).

        Raises
        ------
        DeclarationError
            When the class cannot be imported, an environment variable is not set, or a setting is
            invalid; the message names destinations.yml, the destination and the setting.
        """
        cls = self.destination_class()
        settings = self.rendered_settings()
        try:
            return cls.from_settings(settings, sync_name=sync_name, base_dir=Path(warehouse).parent)
        except (ValueError, TypeError) as exc:
            raise DeclarationError(f"{self.where}: {exc}") from None


def _check_settings(config: DestinationConfig, base_dir: Path) -> DestinationConfig:
    """Check a destination at load: known type, importable class, settings that build."""
    try:
        cls = destination_class(config.type)
    except ValueError as exc:
        raise DeclarationError(f"{config.where}.type: {exc}") from None
    except Exception as exc:  # modules of optional destinations must not break loading
        return DestinationConfig(
            config.name, config.type, config.settings, config.declared_in,
            unavailable=f"destination type {config.type!r} cannot be loaded: {type(exc).__name__}: {exc}",
        )
    missing: dict[str, str] = {}
    rendered = _render_env(dict(config.settings), config.where, missing)
    try:
        # A trial build: from_settings only validates and stores values (no I/O), so this is cheap.
        cls.from_settings(rendered, sync_name=_SETTINGS_CHECK_SYNC, base_dir=base_dir)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        placeholders = {path.rsplit(".", 1)[-1] for path in missing if path != config.where}
        typo = re.search(r"unknown setting", message, re.IGNORECASE)  # never caused by a placeholder
        if not typo and any(re.search(rf"\b{re.escape(key)}\b", message) for key in placeholders):
            # Most likely our placeholder for the unset variable: the run will tell.
            names = ", ".join(sorted(set(missing.values())))
            return DestinationConfig(
                config.name, config.type, config.settings, config.declared_in,
                unchecked=f"not set here: {names} ({message})",
            )
        raise DeclarationError(f"{config.where}: {message}") from None
    except Exception as exc:  # a bug in a destination being written must not break loading
        return DestinationConfig(
            config.name, config.type, config.settings, config.declared_in,
            unavailable=f"{cls.__name__}.from_settings failed: {type(exc).__name__}: {exc}",
        )
    if missing:
        names = ", ".join(sorted(set(missing.values())))
        return DestinationConfig(config.name, config.type, config.settings, config.declared_in, unchecked=f"not set here: {names}")
    return config


def load_destinations(path: Path, *, base_dir: Path | None = None) -> dict[str, DestinationConfig]:
    """Read ``destinations.yml`` and check every destination (see the module docstring).

    Parameters
    ----------
    path
        The file; a missing file means no destinations.
    base_dir
        Folder relative paths resolve against in the trial build; default: the warehouse's folder
        (nothing is created there).

    Raises
    ------
    DeclarationError
        Naming the file, the destination and the setting.
    """
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, Mapping):
        raise DeclarationError(f"{path}: expected a mapping with a 'destinations' key")
    unknown = sorted(set(document) - {"destinations"})
    if unknown:
        raise DeclarationError(f"{path}: unknown top-level key(s) {unknown}; only 'destinations' is read")
    entries = document.get("destinations") or {}
    if not isinstance(entries, Mapping):
        raise DeclarationError(f"{path}: 'destinations' must be a mapping of name -> settings")
    base = Path(base_dir) if base_dir is not None else warehouse_path().parent
    known = ", ".join(sorted(DESTINATION_TYPES))
    destinations: dict[str, DestinationConfig] = {}
    for name, settings in entries.items():
        where = f"{path}: destinations.{name}"
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise DeclarationError(f"{where}: a destination name must be a plain identifier")
        if not isinstance(settings, Mapping) or "type" not in settings:
            raise DeclarationError(f"{where}: needs a 'type' (one of {known})")
        kind = settings["type"]
        if kind not in DESTINATION_TYPES:
            raise DeclarationError(
                f"{where}.type: unknown destination type {kind!r}{did_you_mean(kind, list(DESTINATION_TYPES))}; known: {known}"
            )
        config = DestinationConfig(
            name=name, type=kind, settings={k: v for k, v in settings.items() if k != "type"}, declared_in=str(path)
        )
        destinations[name] = _check_settings(config, base)
    return destinations


# --- meta.sync -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncDeclaration:
    """One sync as declared in dbt: what to ship (the model), where, how and when.

    Attributes
    ----------
    schedule
        ``on_demand``, ``hourly``, ``daily``, ``every_minute``, or a cron expression (UTC).
    cron
        The cron of the schedule; ``None`` for ``on_demand``.
    max_rejected_share
        The asset check fails when a run's rejected records exceed this share of those processed.
    consent_model, suppress_models
        The models behind ``spec.consent_relation`` / ``spec.suppress_relations`` (for display).
    """

    spec: SyncSpec
    destination: DestinationConfig
    schedule: str
    model_unique_id: str
    model_name: str
    description: str
    declared_in: str
    cron: str | None = None
    max_rejected_share: float = DEFAULT_MAX_REJECTED_SHARE
    consent_model: str | None = None
    suppress_models: tuple[str, ...] = ()
    label: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


def _relation(node: Mapping[str, Any]) -> str:
    # Schema + alias, not relation_name: the latter embeds the database name of the file
    # that happened to be configured at parse time.
    return f"{node['schema']}.{node.get('alias') or node['name']}"


_RELATION_TYPES = ("model", "seed", "snapshot")


def _nodes_by_name(manifest: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for unique_id, node in manifest.get("nodes", {}).items():
        if node.get("resource_type") in _RELATION_TYPES:
            found.setdefault(node["name"], (unique_id, node))
    return found


def unique_column_sets(manifest: Mapping[str, Any], unique_id: str) -> list[frozenset[str]]:
    """Column sets declared unique on a model: ``unique`` / ``unique_combination_of_columns`` data
    tests (enabled, without a ``where``), and primary-key / unique constraints."""
    sets: list[frozenset[str]] = []
    for test in manifest.get("nodes", {}).values():
        if test.get("resource_type") != "test":
            continue
        attached = test.get("attached_node") or next(iter((test.get("depends_on") or {}).get("nodes") or []), None)
        if attached != unique_id:
            continue
        config = test.get("config") or {}
        if config.get("enabled") is False or config.get("where"):
            continue
        metadata = test.get("test_metadata") or {}
        kwargs = metadata.get("kwargs") or {}
        if metadata.get("name") == "unique":
            column = test.get("column_name") or kwargs.get("column_name")
            if column:
                sets.append(frozenset([column]))
        elif metadata.get("name") == "unique_combination_of_columns":
            columns = kwargs.get("combination_of_columns") or []
            if columns:
                sets.append(frozenset(columns))
    node = manifest.get("nodes", {}).get(unique_id) or {}
    for constraint in node.get("constraints") or []:
        if constraint.get("type") in ("primary_key", "unique") and constraint.get("columns"):
            sets.append(frozenset(constraint["columns"]))
    for name, column in (node.get("columns") or {}).items():
        for constraint in column.get("constraints") or []:
            if constraint.get("type") in ("primary_key", "unique"):
                sets.append(frozenset([name]))
    return sets


def _parse_schedule(value: Any, where: str) -> tuple[str, str | None]:
    if isinstance(value, str) and value in SCHEDULES:
        return value, NAMED_SCHEDULES.get(value)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"cron"})
        if unknown or "cron" not in value:
            raise DeclarationError(f"{where}: meta.sync.schedule as a mapping takes one key, cron (e.g. {{cron: '15 3 * * *'}})")
        expression = value["cron"]
        if not isinstance(expression, str):
            raise DeclarationError(f"{where}: meta.sync.schedule.cron must be a cron string, got {expression!r}")
        expression = " ".join(expression.split())
        expression = _CRON_ALIASES.get(expression, expression)
        from dagster._utils.schedules import is_valid_cron_string  # Dagster's own rule; only imported here

        if not is_valid_cron_string(expression):
            raise DeclarationError(f"{where}: meta.sync.schedule.cron {value['cron']!r} is not a valid cron expression")
        for name, cron in NAMED_SCHEDULES.items():
            if cron == expression:
                return name, cron
        return expression, expression
    raise DeclarationError(
        f"{where}: meta.sync.schedule {value!r} is not one of {', '.join(SCHEDULES)} or {{cron: '<expression>'}}"
        + did_you_mean(value, SCHEDULES)
    )


def _is_sync(entry: Mapping[str, Any]) -> bool:
    config = entry.get("config")
    meta = (config.get("meta") if isinstance(config, Mapping) else None) or entry.get("meta") or {}
    return isinstance(meta, Mapping) and SYNC_META_KEY in meta


def _exposures_in(path: Path) -> list[tuple[str, int, bool]]:
    """``(name, line, is a sync)`` of every exposure a dbt YAML file declares, in file order."""
    try:
        document = yaml.compose(path.read_text())
    except (OSError, yaml.YAMLError):
        return []  # dbt itself reports a file it cannot read or parse
    found: list[tuple[str, int, bool]] = []
    if not isinstance(document, yaml.MappingNode):
        return found
    for key, value in document.value:
        if key.value != "exposures" or not isinstance(value, yaml.SequenceNode):
            continue
        for item in value.value:
            entry = yaml.safe_load(yaml.serialize(item))
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                found.append((entry["name"], item.start_mark.line + 1, _is_sync(entry)))
    return found


def check_unique_sync_names(manifest: Mapping[str, Any], project_dir: Path) -> None:
    """Refuse a sync name declared twice, anywhere in the project's exposure files.

    dbt refuses two exposures of one name in two files, but within one file it keeps the last one
    silently — and a sync's state, outbox, history, lock and default file are all found by its name,
    so a second declaration would ship the first one's records. Both places are named.

    Raises
    ------
    DeclarationError
        ``sync name 'x' is declared twice: <file>:<line> and <file>:<line>``.
    """
    files = sorted({e.get("original_file_path") for e in manifest.get("exposures", {}).values() if e.get("original_file_path")})
    seen: dict[str, tuple[str, int, bool]] = {}
    for relative in files:
        for name, line, is_sync in _exposures_in(Path(project_dir) / relative):
            where = (relative, line, is_sync)
            first = seen.setdefault(name, where)
            if first is not where and (is_sync or first[2]):
                raise DeclarationError(
                    f"sync name {name!r} is declared twice: {first[0]}:{first[1]} and {relative}:{line}; every sync "
                    "needs its own name (its state, outbox, history and default file are kept under it) — rename one"
                )


def check_exclusive_locations(declarations: Sequence[SyncDeclaration], base_dir: Path) -> None:
    """Refuse two syncs writing the same file or table (destinations with ``exclusive_location``).

    Two syncs there would overwrite each other's records. APIs that hold many audiences (webhooks,
    CRMs, ad platforms) may be shared.

    Raises
    ------
    DeclarationError
        Naming both syncs, where they are declared and the location.
    """
    owners: dict[str, SyncDeclaration] = {}
    for declaration in declarations:
        config = declaration.destination
        if config.unavailable is not None:
            continue
        cls = config.destination_class()
        if not cls.exclusive_location:
            continue
        rendered = _render_env(dict(config.settings), config.where, {})
        try:
            location = cls.from_settings(rendered, sync_name=declaration.name, base_dir=base_dir).location
        except (ValueError, TypeError):
            continue  # a setting that needs the environment: checked when the sync runs
        first = owners.setdefault(location, declaration)
        if first is not declaration:
            raise DeclarationError(
                f"{declaration.declared_in}: exposure {declaration.name}: meta.sync.destination {config.name!r} writes "
                f"{location}, which sync {first.name!r} ({first.declared_in}) writes too; two syncs would overwrite "
                f"each other's records — give each its own file or table (e.g. drop the fixed filename / table setting)"
            )


def load_sync_declarations(
    manifest: Mapping[str, Any],
    destinations: Mapping[str, DestinationConfig],
    *,
    project_dir: Path = DBT_PROJECT_DIR,
    base_dir: Path | None = None,
) -> list[SyncDeclaration]:
    """Every exposure carrying ``meta.sync`` in a parsed dbt manifest, validated against it and the destinations.

    Parameters
    ----------
    manifest
        The parsed project.
    destinations
        From :func:`load_destinations`.
    project_dir
        The dbt project (exposure files are read again to find a name declared twice in one file).
    base_dir
        Folder relative file paths resolve against (default: the warehouse's folder), to find two
        syncs writing one file.

    Raises
    ------
    DeclarationError
        On the first bad declaration; the message starts with ``<file>: exposure <name>`` and names
        the field (``meta.sync.<key>``), or names both places of a duplicate.
    """
    check_unique_sync_names(manifest, project_dir)
    nodes = manifest.get("nodes", {})
    by_name = _nodes_by_name(manifest)
    declarations: list[SyncDeclaration] = []
    for unique_id, exposure in sorted(manifest.get("exposures", {}).items()):
        meta = (exposure.get("config") or {}).get("meta") or exposure.get("meta") or {}
        sync = meta.get(SYNC_META_KEY)
        if sync is None:
            continue
        where = f"{exposure.get('original_file_path', unique_id)}: exposure {exposure['name']}"
        declarations.append(_declaration(exposure, sync, where, nodes, by_name, destinations, manifest))
    check_exclusive_locations(declarations, Path(base_dir) if base_dir is not None else warehouse_path().parent)
    return declarations


def _declaration(
    exposure: Mapping[str, Any],
    sync: Any,
    where: str,
    nodes: Mapping[str, Any],
    by_name: Mapping[str, tuple[str, Mapping[str, Any]]],
    destinations: Mapping[str, DestinationConfig],
    manifest: Mapping[str, Any],
) -> SyncDeclaration:
    if not isinstance(sync, Mapping):
        raise DeclarationError(f"{where}: meta.sync must be a mapping")
    for key in sync:
        if key == "paused":
            raise DeclarationError(
                f"{where}: meta.sync.paused: pausing is state, not declaration; use `cohortflow sync pause {exposure['name']}`"
            )
        if key not in SYNC_KEYS:
            raise DeclarationError(
                f"{where}: meta.sync.{key}: unknown key{did_you_mean(key, SYNC_KEYS)}; allowed: {', '.join(SYNC_KEYS)}"
            )
    models = [n for n in exposure.get("depends_on", {}).get("nodes", []) if n.split(".", 1)[0] in _RELATION_TYPES]
    if len(models) != 1:
        raise DeclarationError(f"{where}: depends_on must name exactly one model (the one it ships), found {len(models)}")
    model = nodes.get(models[0])
    if model is None:
        raise DeclarationError(f"{where}: depends_on names unknown model {models[0]}")
    def documented(column: Any, field_name: str, on: Mapping[str, Any] = model) -> None:
        known = set((on.get("columns") or {}).keys())
        if known and column not in known:
            raise DeclarationError(
                f"{where}: meta.sync.{field_name}: column {column!r} is not documented on model {on['name']} "
                f"(known: {', '.join(sorted(known))})"
            )

    destination_name = sync.get("destination")
    if destination_name is None:
        raise DeclarationError(f"{where}: meta.sync.destination is required (a name from destinations.yml)")
    if destination_name not in destinations:
        known = ", ".join(sorted(destinations)) or "none declared"
        raise DeclarationError(
            f"{where}: meta.sync.destination {destination_name!r} is not in destinations.yml"
            f"{did_you_mean(destination_name, list(destinations))} (declared: {known})"
        )
    destination = destinations[destination_name]
    cls: type[Destination] | None = None
    if destination.unavailable is None:
        cls = destination.destination_class()

    schedule, cron = _parse_schedule(sync.get("schedule", ON_DEMAND), where)

    primary_key = sync.get("primary_key")
    if isinstance(primary_key, str):
        primary_key = [primary_key]
    if not primary_key:
        raise DeclarationError(f"{where}: meta.sync.primary_key is required (the model column(s) that identify a record)")
    if not isinstance(primary_key, list) or not all(isinstance(c, str) for c in primary_key):
        raise DeclarationError(f"{where}: meta.sync.primary_key must be a column name or a list of them, got {primary_key!r}")
    for column in primary_key:
        documented(column, "primary_key")
    key = frozenset(primary_key)
    declared_unique = unique_column_sets(manifest, models[0])
    if not any(unique <= key for unique in declared_unique):
        shown = ", ".join("[" + ", ".join(sorted(u)) + "]" for u in declared_unique) or "none"
        raise DeclarationError(
            f"{where}: meta.sync.primary_key {primary_key} is not declared unique on model {model['name']} "
            f"(declared unique: {shown}); add a `unique` data test on the column (or a unique_combination_of_columns "
            "test / a primary_key constraint) so dbt proves it before the sync relies on it"
        )

    fields = sync.get("fields")
    if fields is not None:
        if not isinstance(fields, Mapping):
            raise DeclarationError(f"{where}: meta.sync.fields must map destination field -> model column")
        for column in fields.values():
            documented(column, "fields")
    identifiers = sync.get("identifiers")
    if identifiers is not None:
        if not isinstance(identifiers, Mapping):
            raise DeclarationError(
                f"{where}: meta.sync.identifiers must map identifier kind ({', '.join(IDENTIFIER_KINDS)}) -> model column"
            )
        for kind, column in identifiers.items():
            if kind not in IDENTIFIER_KINDS:
                raise DeclarationError(
                    f"{where}: meta.sync.identifiers.{kind}: unknown identifier kind{did_you_mean(kind, IDENTIFIER_KINDS)}; "
                    f"allowed: {', '.join(IDENTIFIER_KINDS)}"
                )
            documented(column, f"identifiers.{kind}")

    mode = sync.get("mode", DEFAULT_MODE)
    try:
        parsed_mode = SyncMode.parse(mode, sync_name=exposure["name"])
    except ValueError:
        allowed = ", ".join(m.value for m in SyncMode)
        raise DeclarationError(f"{where}: meta.sync.mode {mode!r} is not one of: {allowed}{did_you_mean(mode, [m.value for m in SyncMode])}") from None
    if cls is not None:
        missing_ops = parsed_mode.operations - cls.supported_operations
        if missing_ops:
            can = ", ".join(m.value for m in SyncMode if m.operations <= cls.supported_operations)
            raise DeclarationError(
                f"{where}: meta.sync.mode {parsed_mode.value!r} needs {sorted(o.value for o in missing_ops)}, which "
                f"{destination.type} destination {destination.name!r} cannot do (modes it supports: {can})"
            )

    # Consent: marketing destinations default to the latest stated consent in user_properties.
    consent = sync.get("consent", ...)
    consent_model: str | None = None
    consent_column = DEFAULT_CONSENT_COLUMN
    requires_consent = cls.requires_consent if cls is not None else True  # unknown: the safe side
    if consent is ...:
        if requires_consent:
            consent_model = DEFAULT_CONSENT_MODEL
    elif consent == CONSENT_NONE:
        consent_model = None
    elif isinstance(consent, Mapping):
        unknown = sorted(set(consent) - {"model", "column"})
        if unknown or not isinstance(consent.get("model"), str):
            raise DeclarationError(
                f"{where}: meta.sync.consent must be `none` or {{model: <model>, column: <boolean column>}}, got {dict(consent)!r}"
            )
        consent_model = consent["model"]
        consent_column = consent.get("column", DEFAULT_CONSENT_COLUMN)
        if not isinstance(consent_column, str):
            raise DeclarationError(f"{where}: meta.sync.consent.column must be a column name, got {consent_column!r}")
    else:
        raise DeclarationError(
            f"{where}: meta.sync.consent must be `none` (not a marketing use) or {{model: <model>, column: <boolean column>}}, "
            f"got {consent!r}"
        )
    consent_relation = None
    if consent_model is not None:
        if consent_model not in by_name:
            raise DeclarationError(f"{where}: meta.sync.consent.model {consent_model!r} is not a model of this project"
                                   f"{did_you_mean(consent_model, list(by_name))}")
        consent_node = by_name[consent_model][1]
        documented("user_id", "consent.model", consent_node)
        documented(consent_column, "consent.column", consent_node)
        consent_relation = _relation(consent_node)

    suppress = sync.get("suppress") or []
    if isinstance(suppress, str):
        suppress = [suppress]
    if not isinstance(suppress, list) or not all(isinstance(s, str) for s in suppress):
        raise DeclarationError(f"{where}: meta.sync.suppress must be a list of model names, got {suppress!r}")
    suppress_relations = []
    for name in suppress:
        if name not in by_name:
            raise DeclarationError(f"{where}: meta.sync.suppress: {name!r} is not a model of this project{did_you_mean(name, list(by_name))}")
        suppress_node = by_name[name][1]
        documented("user_id", "suppress", suppress_node)
        suppress_relations.append(_relation(suppress_node))

    user_column = sync.get("user_column", "user_id")
    if consent_relation is not None or suppress_relations:
        documented(user_column, "user_column")

    share = sync.get("max_rejected_share", DEFAULT_MAX_REJECTED_SHARE)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise DeclarationError(f"{where}: meta.sync.max_rejected_share must be a number from 0 to 1, got {share!r}")

    try:
        spec = SyncSpec(
            name=exposure["name"],
            source_relation=_relation(model),
            primary_key=list(primary_key),
            fields=dict(fields) if fields is not None else None,
            mode=parsed_mode,
            batch_size=sync.get("batch_size", 10_000),
            identifiers=dict(identifiers) if identifiers is not None else None,
            consent_relation=consent_relation,
            consent_column=consent_column,
            suppress_relations=tuple(suppress_relations),
            user_column=user_column,
        )
    except (ValueError, TypeError) as exc:
        raise DeclarationError(f"{where}: meta.sync: {exc}") from None
    if cls is not None:
        try:
            check_identifiers(spec, cls)
        except ValueError as exc:
            raise DeclarationError(f"{where}: meta.sync.identifiers: {exc}") from None
    return SyncDeclaration(
        spec=spec,
        destination=destination,
        schedule=schedule,
        cron=cron,
        model_unique_id=models[0],
        model_name=model["name"],
        description=exposure.get("description") or "",
        declared_in=str(exposure.get("original_file_path", "")),
        max_rejected_share=float(share),
        consent_model=consent_model,
        suppress_models=tuple(suppress),
        label=exposure.get("label") or "",
    )


def load_project_declarations(
    manifest: Mapping[str, Any], destinations_file: Path = DESTINATIONS_FILE, *, project_dir: Path = DBT_PROJECT_DIR
) -> list[SyncDeclaration]:
    """The syncs of a parsed project: ``destinations.yml`` and the exposures, checked together."""
    return load_sync_declarations(manifest, load_destinations(destinations_file), project_dir=project_dir)
