"""How the columns of an arbitrary CSV become events, users or items.

A :class:`CsvMapping` maps *target fields* (``user_id``, ``event_time``, ...) to *source
columns* of the CSV, or to constants written with a leading ``:`` (``event_type=:purchase``).
It comes from CLI arguments (:func:`parse_mapping_args`) or a small YAML file
(:func:`load_csv_mapping`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from cohortflow.ingest.summary import IngestError

ENTITIES: tuple[str, ...] = ("events", "users", "items")

#: Target fields each entity understands. Columns of these names map to themselves
#: when no mapping names them; every other column becomes a property.
TARGET_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "events": ("event_type", "user_id", "device_id", "event_time", "insert_id", "session_id"),
    "users": ("user_id", "updated_at"),
    "items": ("item_id", "item_name", "category", "price", "is_in_stock", "updated_at"),
})

_YAML_KEYS = ("entity", "fields", "properties", "time_format", "timezone")


@dataclass(frozen=True)
class CsvMapping:
    """Target field -> source column (or ``:constant``) for one CSV layout.

    Parameters
    ----------
    entity : str or None
        ``events``, ``users`` or ``items``; ``None`` lets ``ingest_files(entity=...)`` decide.
    fields : Mapping[str, str]
        Target field -> source column name, or a constant with a leading ``:``. Targets
        not named here fall back to a column of the same name when the CSV has one.
    properties : Mapping[str, str] or None
        Property name -> source column, copied into event / user / item properties.
        ``None`` (the default) copies every column not used by a field, under its own name.
    time_format : str or None
        ``strptime`` format of time columns; ``None`` auto-detects ISO-8601 and epoch ms.
    timezone : str
        IANA zone of times written without an offset; they are converted to UTC.
    """

    entity: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] | None = None
    time_format: str | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.entity is not None and self.entity not in ENTITIES:
            raise IngestError(f"mapping: unknown entity {self.entity!r}; expected one of {', '.join(ENTITIES)}")
        allowed = TARGET_FIELDS[self.entity or "events"] if self.entity else sorted(
            {f for fs in TARGET_FIELDS.values() for f in fs})
        for target, source in self.fields.items():
            if target not in allowed:
                raise IngestError(f"mapping: unknown field {target!r} for entity {self.entity or 'events/users/items'}; "
                                  f"known fields: {', '.join(allowed)}")
            _check_source(f"fields.{target}", source)
        for name, source in (self.properties or {}).items():
            if not isinstance(name, str) or not name:
                raise IngestError(f"mapping: property names must be non-empty strings, got {name!r}")
            _check_source(f"properties.{name}", source)
        if self.time_format is not None and (not isinstance(self.time_format, str) or "%" not in self.time_format):
            raise IngestError(f"mapping: time_format {self.time_format!r} is not a strptime format (e.g. '%Y-%m-%d %H:%M:%S')")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise IngestError(f"mapping: unknown timezone {self.timezone!r} (use an IANA name like 'Europe/London')") from None
        # Frozen dataclass: freeze the dicts too, so a mapping cannot change under a running ingest.
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        if self.properties is not None:
            object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))

    def for_entity(self, entity: str) -> CsvMapping:
        """Return this mapping bound to ``entity`` (validating its fields for that entity)."""
        return CsvMapping(entity=entity, fields=self.fields, properties=self.properties,
                          time_format=self.time_format, timezone=self.timezone)


def _check_source(where: str, source: Any) -> None:
    if not isinstance(source, str) or not source.strip() or source == ":":
        raise IngestError(f"mapping: {where} must name a source column (or ':constant'), got {source!r}")


def parse_mapping_args(args: Sequence[str], *, entity: str | None = None) -> CsvMapping:
    """Build a mapping from ``target=source`` arguments as given on the command line.

    Parameters
    ----------
    args : Sequence[str]
        Items like ``user_id=CustomerID``, ``event_type=:purchase`` (leading ``:`` = a constant),
        ``properties.item_id=StockCode``, ``time_format=%d/%m/%Y %H:%M``, ``timezone=Europe/London``
        or ``entity=users``.
    entity : str or None
        Entity to validate the fields against when no ``entity=`` argument is given.

    Returns
    -------
    CsvMapping

    Raises
    ------
    IngestError
        An item without ``=``, an unknown field, a repeated field, a bad timezone.
    """
    fields: dict[str, str] = {}
    properties: dict[str, str] = {}
    options: dict[str, str] = {}
    for arg in args:
        target, sep, source = arg.partition("=")
        target = target.strip()
        if not sep or not target:
            raise IngestError(f"mapping: {arg!r} is not of the form target=source (e.g. user_id=CustomerID)")
        if target in ("entity", "time_format", "timezone"):
            options[target] = source.strip()
            continue
        for prefix in ("properties.", "property.", "prop."):
            if target.startswith(prefix):
                name = target[len(prefix):]
                if name in properties:
                    raise IngestError(f"mapping: property {name!r} is given twice")
                properties[name] = source
                break
        else:
            if target in fields:
                raise IngestError(f"mapping: field {target!r} is given twice")
            fields[target] = source
    return CsvMapping(entity=options.get("entity") or entity, fields=fields, properties=properties or None,
                      time_format=options.get("time_format") or None, timezone=options.get("timezone") or "UTC")


def load_csv_mapping(path: str | Path) -> CsvMapping:
    """Read a mapping YAML file.

    The file looks like::

        entity: events            # or users / items
        fields: {user_id: CustomerID, event_time: InvoiceDate, event_type: ":purchase"}
        properties: {item_id: StockCode, quantity: Quantity}
        time_format: "%Y-%m-%d %H:%M:%S"   # optional
        timezone: Europe/London             # optional, default UTC

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    CsvMapping

    Raises
    ------
    IngestError
        File missing, not YAML, not a mapping, an unknown key, a field that is not a string.
        The message names the file.
    """
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IngestError(f"{p}: mapping file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise IngestError(f"{p}: mapping file is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise IngestError(f"{p}: mapping file must be a YAML mapping with keys {', '.join(_YAML_KEYS)}")
    unknown = sorted(set(map(str, doc)) - set(_YAML_KEYS))
    if unknown:
        raise IngestError(f"{p}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_YAML_KEYS)}")
    for key in ("fields", "properties"):
        value = doc.get(key)
        if value is not None and not isinstance(value, dict):
            raise IngestError(f"{p}: {key} must be a mapping of name: column, got {type(value).__name__}")
        if value and not all(isinstance(v, str) for v in value.values()):
            bad = next(k for k, v in value.items() if not isinstance(v, str))
            raise IngestError(f"{p}: {key}.{bad} must be a column name (string), got {value[bad]!r}")
    for key in ("entity", "time_format", "timezone"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise IngestError(f"{p}: {key} must be a string, got {doc[key]!r}")
    try:
        return CsvMapping(entity=doc.get("entity"), fields=doc.get("fields") or {},
                          properties=doc.get("properties"), time_format=doc.get("time_format"),
                          timezone=doc.get("timezone") or "UTC")
    except IngestError as exc:
        raise IngestError(f"{p}: {exc}") from None
