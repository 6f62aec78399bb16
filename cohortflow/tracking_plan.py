"""The tracking plan: the event types the project knows and, per event type, its properties and their types.

It is what Amplitude and Segment users know as a tracking plan (or event schema). It lives in the dbt
project, in the YAML of the model ``tracking_plan`` (``dbt_project/models/staging/tracking_plan.yml``,
under ``config.meta.tracking_plan``), because dbt macros can read a model's meta from the graph at
compile time: cohort and property macros check every event type and property name against it
(``dbt_project/macros/tracking_plan.sql``). The model renders the plan as a table for the warehouse.

::

    models:
      - name: tracking_plan
        config:
          meta:
            tracking_plan:
              events:
                purchase:
                  description: One purchased line (one event per item).
                  properties:
                    price: {type: number, description: Unit price.}
                    coupon: {type: string, description: The coupon code, when one was used.}

This module is the one place Python loads and checks the file (``cohortflow tracking-plan``, ingest),
and drafts it from ``raw.events``. No Dagster or dbt import here.

Keys, per event type: ``description``, ``properties``, ``drafted`` (added by ``tracking-plan draft``, not
yet described by a person), ``seen`` (events of that type in the warehouse at the last draft; ``0``: no
longer seen, the entry is kept). Per property: ``type`` (one of :data:`PROPERTY_TYPES` or a list of
them), ``description``, ``drafted``, ``seen`` (events carrying it).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cohortflow.warehouse import DBT_PROJECT_DIR, RAW_SCHEMA

#: The plan's file in the dbt project (its model's YAML).
DEFAULT_PLAN_FILE = DBT_PROJECT_DIR / "models" / "staging" / "tracking_plan.yml"
PLAN_MODEL = "tracking_plan"
#: Where the plan sits inside the model's entry, for messages.
META_KEY = "config.meta.tracking_plan"
#: Property types: JSON Schema's (as Segment Protocols and Amplitude use them) plus timestamp
#: (ISO-8601 text, which JSON has no type for).
PROPERTY_TYPES: tuple[str, ...] = ("string", "number", "integer", "boolean", "timestamp", "object", "array")
#: Typed columns of int_events_as_of a cohort or property may name whatever the plan says
#: (dbt: ``tracking_plan_builtin_properties()``), with their type.
BUILTIN_PROPERTIES: dict[str, str] = {
    "event_id": "string", "user_id": "string", "device_id": "string", "event_type": "string",
    "event_at": "timestamp", "session_id": "integer", "item_id": "string", "category": "string",
    "price": "number", "quantity": "number", "revenue": "number", "order_id": "string",
}

# DuckDB json_type() -> plan type.
_JSON_TYPES = {"VARCHAR": "string", "BIGINT": "integer", "UBIGINT": "integer", "HUGEINT": "integer",
               "DOUBLE": "number", "BOOLEAN": "boolean", "OBJECT": "object", "ARRAY": "array"}
# An ISO-8601 time (a date alone is not one): the JSON text of a timestamp property.
_ISO_TIME = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}([.,]\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?"


class TrackingPlanError(ValueError):
    """A plan file that cannot be used; the message names the file and the key."""


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("description", mode="before", check_fields=False)
    @classmethod
    def _no_description_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value


class PropertySpec(_Strict):
    """One property of an event type."""

    type: str | list[str]
    description: str = ""
    drafted: bool = False
    seen: int | None = Field(default=None, ge=0)

    @field_validator("type", mode="before")
    @classmethod
    def _known_types(cls, value: Any) -> Any:
        names = value if isinstance(value, list) else [value]
        if not names:
            raise ValueError(f"needs one of {', '.join(PROPERTY_TYPES)}")
        for name in names:
            if name not in PROPERTY_TYPES:
                hint = _did_you_mean(name, PROPERTY_TYPES) or f" (use one of {', '.join(PROPERTY_TYPES)})"
                raise ValueError(f"unknown type {name!r}{hint}")
        unique = list(dict.fromkeys(names))
        return unique[0] if len(unique) == 1 else unique

    @property
    def types(self) -> tuple[str, ...]:
        """The type(s) as a tuple."""
        return (self.type,) if isinstance(self.type, str) else tuple(self.type)


class EventSpec(_Strict):
    """One event type: what it means and its properties."""

    description: str = ""
    properties: dict[str, PropertySpec] = Field(default_factory=dict)
    drafted: bool = False
    seen: int | None = Field(default=None, ge=0)

    @field_validator("properties", mode="before")
    @classmethod
    def _none_is_no_properties(cls, value: Any) -> Any:
        return {} if value is None else value


class TrackingPlan(_Strict):
    """Event types (in file order) and their properties."""

    events: dict[str, EventSpec] = Field(default_factory=dict)

    @field_validator("events", mode="before")
    @classmethod
    def _none_is_no_events(cls, value: Any) -> Any:
        return {} if value is None else value

    def knows(self, event_type: str, property: str | None = None) -> bool:
        """Whether the plan lists the event type (and, given, that property for it)."""
        spec = self.events.get(event_type)
        return spec is not None and (property is None or property in spec.properties)

    def known_pairs(self) -> list[tuple[str, str | None]]:
        """(event_type, None) for every event type and (event_type, property) for every property."""
        pairs: list[tuple[str, str | None]] = []
        for event_type, spec in self.events.items():
            pairs.append((event_type, None))
            pairs.extend((event_type, name) for name in spec.properties)
        return pairs

    def as_meta(self) -> dict[str, Any]:
        """The plan as the YAML mapping under config.meta.tracking_plan (defaults left out)."""
        events: dict[str, Any] = {}
        for event_type, spec in self.events.items():
            entry: dict[str, Any] = {"description": spec.description}
            if spec.drafted:
                entry["drafted"] = True
            if spec.seen is not None:
                entry["seen"] = spec.seen
            if spec.properties:
                entry["properties"] = {}
                for name, prop in spec.properties.items():
                    item: dict[str, Any] = {"type": prop.type, "description": prop.description}
                    if prop.drafted:
                        item["drafted"] = True
                    if prop.seen is not None:
                        item["seen"] = prop.seen
                    entry["properties"][name] = item
            events[event_type] = entry
        return {"events": events}


_FIELDS_AT_DEPTH = {1: TrackingPlan, 3: EventSpec, 5: PropertySpec}


def _messages(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join([META_KEY, *loc])
        kind = item["type"]
        if kind == "extra_forbidden":
            model = _FIELDS_AT_DEPTH.get(len(loc))
            allowed = list(model.model_fields) if model else []
            hint = _did_you_mean(loc[-1], allowed) or (f" (use {', '.join(allowed)})" if allowed else "")
            lines.append(f"{key}: unknown key {loc[-1]!r}{hint}")
        elif kind == "missing":
            what = f"a type: {', '.join(PROPERTY_TYPES)}" if loc[-1] == "type" else "a value"
            lines.append(f"{key}: missing (a property needs {what})")
        elif kind in ("dict_type", "model_type", "model_attributes_type"):
            lines.append(f"{key}: expected a mapping, got {item.get('input')!r}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {message}")
    return lines


def read_plan_document(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The YAML document of a plan file and its ``tracking_plan`` model entry.

    Raises
    ------
    TrackingPlanError
        No file, not YAML, or no ``tracking_plan`` model in it.
    """
    path = Path(path)
    if not path.is_file():
        raise TrackingPlanError(f"{path}: no such file")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TrackingPlanError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    models = document.get("models") if isinstance(document, dict) else None
    for entry in models if isinstance(models, list) else []:
        if isinstance(entry, dict) and entry.get("name") == PLAN_MODEL:
            return document, entry
    raise TrackingPlanError(
        f"{path}: no model named {PLAN_MODEL} (a dbt properties file: `models: - name: {PLAN_MODEL}` with the "
        f"plan under {META_KEY})")


def plan_from_entry(entry: Mapping[str, Any], path: str | Path) -> TrackingPlan:
    """Check and return the plan held by a ``tracking_plan`` model entry of ``path``."""
    config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    meta = config.get("meta") if isinstance(config.get("meta"), dict) else {}
    if "tracking_plan" not in meta:
        where = " (it is under meta:, put it under config: meta:)" if "tracking_plan" in (entry.get("meta") or {}) else ""
        raise TrackingPlanError(f"{path}: {META_KEY}: missing{where}")
    raw = meta["tracking_plan"]
    if not isinstance(raw, dict):
        raise TrackingPlanError(f"{path}: {META_KEY}: expected a mapping with events, got {raw!r}")
    try:
        plan = TrackingPlan.model_validate(raw)
    except ValidationError as exc:
        raise TrackingPlanError("\n".join(f"{path}: {line}" for line in _messages(exc))) from None
    for event_type, spec in plan.events.items():
        if not event_type.strip():
            raise TrackingPlanError(f"{path}: {META_KEY}.events: an event type needs a name")
        for name in spec.properties:
            key = f"{path}: {META_KEY}.events.{event_type}.properties.{name}"
            if not name.strip():
                raise TrackingPlanError(f"{key}: a property needs a name")
            if "'" in name:
                raise TrackingPlanError(f"{key}: a property name cannot contain a quote (the macros refuse it)")
    return plan


def load_tracking_plan(path: str | Path = DEFAULT_PLAN_FILE) -> TrackingPlan:
    """Load and check the plan file.

    Parameters
    ----------
    path : str or Path
        A dbt properties file holding the ``tracking_plan`` model (default: the project's).

    Raises
    ------
    TrackingPlanError
        Naming the file and the key: a missing file, bad YAML, an unknown key or type (with the
        closest known one), a property without a type, ...
    """
    _, entry = read_plan_document(path)
    return plan_from_entry(entry, path)


# ------------------------------------------------------------------------------------------ drafting


@dataclass(frozen=True)
class Observed:
    """What raw.events holds: events per type, and per (type, property) the events carrying it and its types."""

    events: dict[str, int]
    properties: dict[tuple[str, str], tuple[int, tuple[str, ...]]]

    @property
    def total(self) -> int:
        return sum(self.events.values())


def observe_events(con: Any) -> Observed:
    """Count event types and the keys of ``event_properties`` with their JSON types (one scan each)."""
    events = dict(con.execute(
        f"select event_type, count(*) from {RAW_SCHEMA}.events group by 1 order by 1").fetchall())
    rows = con.execute(f"""
        select event_type, property, json_type(p, pointer) as json_type, count(*) as n,
               count(*) filter (where json_type(p, pointer) = 'VARCHAR'
                                  and regexp_full_match(json_extract_string(p, pointer), '{_ISO_TIME}')) as n_times
        from (
            select event_type, property, p, '/' || replace(replace(property, '~', '~0'), '/', '~1') as pointer
            from (select event_type, event_properties as p, unnest(json_keys(event_properties)) as property
                  from {RAW_SCHEMA}.events) as keyed
        ) as pointed
        group by all
    """).fetchall()
    seen: dict[tuple[str, str], int] = {}
    types: dict[tuple[str, str], set[str]] = {}
    for event_type, name, json_type, n, n_times in rows:
        key = (event_type, name)
        seen[key] = seen.get(key, 0) + n
        kind = _JSON_TYPES.get(json_type)
        if kind == "string" and n_times == n:
            kind = "timestamp"
        if kind is not None:
            types.setdefault(key, set()).add(kind)
    properties = {}
    for key in sorted(seen):
        kinds = types.get(key, set())
        if {"integer", "number"} <= kinds:
            kinds = kinds - {"integer"}  # 10 and 9.5 are both numbers
        properties[key] = (seen[key], tuple(sorted(kinds)) or ("string",))
    return Observed(events=events, properties=properties)


def _covered(observed: str, declared: Sequence[str]) -> bool:
    return (observed in declared or (observed == "integer" and "number" in declared)
            or (observed == "timestamp" and "string" in declared))


def _type_value(types: Sequence[str]) -> str | list[str]:
    return types[0] if len(types) == 1 else list(types)


@dataclass
class Draft:
    """A plan merged from what the warehouse holds into an existing plan, and what changed."""

    plan: TrackingPlan
    text: str
    observed_events: int = 0
    new_event_types: list[str] = field(default_factory=list)
    new_properties: list[str] = field(default_factory=list)
    no_longer_seen: list[str] = field(default_factory=list)
    type_differences: list[str] = field(default_factory=list)

    def format_report(self) -> str:
        """What the draft found and changed, in a few lines."""
        n_events = len(self.plan.events)
        n_properties = sum(len(e.properties) for e in self.plan.events.values())
        lines = [f"tracking plan: {n_events:,} event types ({len(self.new_event_types):,} new), "
                 f"{n_properties:,} properties ({len(self.new_properties):,} new) "
                 f"from {self.observed_events:,} events in raw.events"]
        if self.new_event_types or self.new_properties:
            lines.append("  new, marked drafted (describe them, then delete `drafted: true`): "
                         + _some(self.new_event_types + self.new_properties))
        if self.no_longer_seen:
            lines.append("  no longer seen (kept, seen: 0): " + _some(self.no_longer_seen))
        for difference in self.type_differences:
            lines.append(f"  type differs from the data: {difference}")
        return "\n".join(lines)


def _some(names: Sequence[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit:,} more)" if len(names) > limit else "")


def merge_observed(existing: TrackingPlan | None, observed: Observed) -> Draft:
    """Merge what the warehouse holds into ``existing`` (or a new plan).

    Kept as written: descriptions, types of described properties, entries no longer seen (their
    ``seen`` becomes 0). New event types and properties are added with ``drafted: true``, the JSON types
    seen and an empty description; a still-drafted property takes the types seen now.
    """
    existing = existing or TrackingPlan()
    draft = Draft(plan=TrackingPlan(), text="", observed_events=observed.total)
    by_event: dict[str, dict[str, tuple[int, tuple[str, ...]]]] = {}
    for (event_type, name), value in observed.properties.items():
        by_event.setdefault(event_type, {})[name] = value

    events: dict[str, EventSpec] = {}
    for event_type in [*existing.events, *sorted(set(observed.events) - set(existing.events))]:
        old = existing.events.get(event_type)
        seen_properties = by_event.get(event_type, {})
        if old is None:
            draft.new_event_types.append(event_type)
        elif event_type not in observed.events:
            draft.no_longer_seen.append(event_type)
        properties: dict[str, PropertySpec] = {}
        old_properties = old.properties if old else {}
        for name in [*old_properties, *sorted(set(seen_properties) - set(old_properties))]:
            prop = old_properties.get(name)
            count, types = seen_properties.get(name, (0, ()))
            if prop is None:
                draft.new_properties.append(f"{event_type}.{name}")
                properties[name] = PropertySpec(type=_type_value(types), drafted=True, seen=count)
                continue
            if not count and old is not None and event_type in observed.events:
                draft.no_longer_seen.append(f"{event_type}.{name}")
            new_type: str | list[str] = prop.type
            if count and prop.drafted:
                new_type = _type_value(types)
            elif count and not all(_covered(t, prop.types) for t in types):
                draft.type_differences.append(
                    f"{event_type}.{name}: declared {' | '.join(prop.types)}, seen {' | '.join(types)}")
            properties[name] = prop.model_copy(update={"type": new_type, "seen": count})
        if old is None:
            events[event_type] = EventSpec(drafted=True, seen=observed.events[event_type], properties=properties)
        else:
            events[event_type] = old.model_copy(update={"seen": observed.events.get(event_type, 0),
                                                        "properties": properties})
    draft.plan = TrackingPlan(events=events)
    draft.no_longer_seen.sort()
    return draft


def draft_tracking_plan(con: Any, path: str | Path = DEFAULT_PLAN_FILE) -> Draft:
    """Draft the plan from ``raw.events`` of ``con``, merged into the plan file at ``path`` if there is one.

    Returns
    -------
    Draft
        The merged plan, the file's new text (``Draft.text``; nothing is written here) and what changed.

    Raises
    ------
    TrackingPlanError
        When the existing file cannot be read (fix it first: a draft must not lose what it holds).
    """
    path = Path(path)
    if path.exists():
        document, entry = read_plan_document(path)
        existing = plan_from_entry(entry, path) if _has_plan(entry) else None
    else:
        document, entry, existing = _template(), None, None
        entry = document["models"][0]
    draft = merge_observed(existing, observed=observe_events(con))
    entry.setdefault("config", {}).setdefault("meta", {})["tracking_plan"] = draft.plan.as_meta()
    draft.text = render_plan_document(document)
    return draft


def _has_plan(entry: Mapping[str, Any]) -> bool:
    config = entry.get("config")
    return isinstance(config, dict) and isinstance(config.get("meta"), dict) and "tracking_plan" in config["meta"]


_HEADER = """\
# The tracking plan: every event type the project knows and its properties (type, description).
# Cohort and property macros check each event type and property they name against it at compile time
# (macros/tracking_plan.sql); ingest counts events and properties it does not know (raw.untracked_events).
# `cohortflow tracking-plan draft` adds what raw.events holds (new entries marked drafted: true) and
# rewrites this file: descriptions and types you wrote stay, comments other than this header do not.
# docs/properties.md, "The tracking plan".
"""


def _template() -> dict[str, Any]:
    """A new plan file: the tracking_plan model with its contract (as in the shipped file)."""
    return {
        "version": 2,
        "models": [{
            "name": PLAN_MODEL,
            "description": (
                "The tracking plan as a table: one row per event type (property NULL) and one per property, "
                "with its type and description. Declared in this file under config.meta.tracking_plan; "
                "cohort and property macros check every name against it at compile time."),
            "config": {
                "materialized": "view",
                "contract": {"enforced": True},
                "tags": ["staging"],
                "meta": {"owner": "analytics-engineering"},
            },
            "columns": [
                {"name": "event_type", "data_type": "varchar", "description": "An event type of the plan.",
                 "data_tests": ["not_null"]},
                {"name": "property", "data_type": "varchar",
                 "description": "A property of that event type; NULL on the event type's own row."},
                {"name": "data_type", "data_type": "varchar",
                 "description": f"The property's type ({', '.join(PROPERTY_TYPES)}; several joined by ' | ')."},
                {"name": "description", "data_type": "varchar", "description": "What the event type or property means."},
            ],
        }],
    }


class _Dumper(yaml.SafeDumper):
    """Block style with indented lists, a list of plain names on one line (``type: [number, string]``)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = bool(data) and all(isinstance(v, str) and v.isidentifier() for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def render_plan_document(document: Mapping[str, Any]) -> str:
    """The plan file's text: the fixed header, then the document as YAML."""
    body = yaml.dump(dict(document), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110,
                     default_flow_style=False)
    return _HEADER + "\n" + body
