"""Declaring a sync: which warehouse model goes where, keyed how, in which mode.

A :class:`SyncSpec` is pure data, validated when it is built, so a typo in a sync declaration fails
at load time with a message naming the sync and the field, not in the middle of a scheduled run.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from reverse_etl.errors import SyncSpecError

# Sync names end up in file names (locks, change files), Dagster asset keys and SQL string
# literals, so they are restricted to the one spelling that is safe in all of them.
SYNC_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# One part of a relation name; quoted when used, but restricted so that a relation name can never
# carry SQL. dbt model and schema names always fit.
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

DEFAULT_BATCH_SIZE = 10_000
# Who a record is, for destinations that address people: a sync maps each kind it has to a source
# column, and the record carries it under the kind's name (``email``, ``phone``...).
IDENTIFIER_KINDS = ("user_id", "email", "phone", "device_id")
MAX_BATCH_SIZE = 1_000_000


class Operation(str, enum.Enum):
    """What a sync does to one record at the destination."""

    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


class SyncMode(str, enum.Enum):
    """Which operations a sync sends (the others are planned but not sent).

    ``mirror`` keeps the destination equal to the source (add, change, remove); ``upsert`` adds and
    changes but never removes; ``insert_only`` only adds records never sent; ``update_only`` only
    changes records already sent; ``remove`` only removes records that left the source.
    """

    MIRROR = "mirror"
    UPSERT = "upsert"
    INSERT_ONLY = "insert_only"
    UPDATE_ONLY = "update_only"
    REMOVE = "remove"

    @property
    def operations(self) -> frozenset[Operation]:
        """The operations this mode sends."""
        return _MODE_OPERATIONS[self]

    @classmethod
    def parse(cls, value: SyncMode | str, *, sync_name: str = "?") -> SyncMode:
        """Read a mode from its name; ``insert-only`` and ``insert_only`` are the same mode.

        Raises
        ------
        SyncSpecError
            When the value is not one of the five modes.
        """
        if isinstance(value, SyncMode):
            return value
        if isinstance(value, str):
            normalised = value.strip().lower().replace("-", "_")
            for mode in cls:
                if mode.value == normalised:
                    return mode
        allowed = ", ".join(m.value for m in cls)
        raise SyncSpecError(f"sync {sync_name!r}: mode {value!r} is not one of: {allowed}")


_MODE_OPERATIONS: dict[SyncMode, frozenset[Operation]] = {
    SyncMode.MIRROR: frozenset({Operation.ADD, Operation.CHANGE, Operation.REMOVE}),
    SyncMode.UPSERT: frozenset({Operation.ADD, Operation.CHANGE}),
    SyncMode.INSERT_ONLY: frozenset({Operation.ADD}),
    SyncMode.UPDATE_ONLY: frozenset({Operation.CHANGE}),
    SyncMode.REMOVE: frozenset({Operation.REMOVE}),
}


def parse_relation(relation: str, *, sync_name: str = "?") -> tuple[str, ...]:
    """Split ``[database.]schema.table`` (or a bare table name) into its parts.

    Raises
    ------
    SyncSpecError
        When a part is empty or not a plain identifier.
    """
    if not isinstance(relation, str) or not relation.strip():
        raise SyncSpecError(f"sync {sync_name!r}: source_relation must be a relation name like 'cohorts.my_cohort', got {relation!r}")
    parts = tuple(relation.strip().split("."))
    if len(parts) > 3 or not all(IDENTIFIER_PATTERN.match(p) for p in parts):
        raise SyncSpecError(
            f"sync {sync_name!r}: source_relation {relation!r} is not '[database.]schema.table' made of plain identifiers"
        )
    return parts


@dataclass(frozen=True)
class SyncSpec:
    """A sync: ship the rows of one warehouse relation, keyed by a unique key, to a destination.

    Parameters
    ----------
    name
        Lower-snake-case name, unique among syncs (``cart_abandoners_to_crm``). State is kept per name:
        renaming a sync starts it over.
    source_relation
        The warehouse relation to ship, ``schema.table`` (e.g. ``"cohorts.cart_abandoners_24h"``).
    primary_key
        Source column(s) that identify a record; must be unique and never NULL in the source.
    fields
        Destination field name -> source column. ``None`` (default) ships every column under its own
        name. Every primary key column must be shipped, since the destination needs it to address a record.
    mode
        One of ``mirror``, ``upsert``, ``insert_only``, ``update_only``, ``remove`` (see :class:`SyncMode`).
    batch_size
        Most records handed to a destination at once; a destination may declare a smaller cap.
    identifiers
        Identifier kind (``user_id``, ``email``, ``phone``, ``device_id``) -> source column. Each
        record carries them under the kind's name, beside ``fields``.
    consent_relation, consent_column
        When set, only users whose ``consent_column`` is true in ``consent_relation`` (keyed by
        ``user_id``) are in the audience; users who lose consent are removed where they were sent.
    suppress_relations
        Relations with a ``user_id`` column (e.g. a suppression cohort) whose users are never sent.
    user_column
        The source column holding the user id that consent and suppression match on.

    Raises
    ------
    SyncSpecError
        On any invalid value; the message names the sync and the field.
    """

    name: str
    source_relation: str
    primary_key: Sequence[str]
    fields: Mapping[str, str] | None = None
    mode: SyncMode | str = SyncMode.MIRROR
    batch_size: int = DEFAULT_BATCH_SIZE
    identifiers: Mapping[str, str] | None = None
    consent_relation: str | None = None
    consent_column: str = "has_marketing_consent"
    suppress_relations: Sequence[str] = ()
    user_column: str = "user_id"
    relation_parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise through object.__setattr__ so the stored values are immutable
        # (tuples / read-only mappings) whatever the caller passed in.
        if not isinstance(self.name, str) or not SYNC_NAME_PATTERN.match(self.name):
            raise SyncSpecError(
                f"sync {self.name!r}: name must be lower_snake_case (a-z, 0-9, _; starting with a letter; at most 63 characters)"
            )
        name = self.name
        object.__setattr__(self, "relation_parts", parse_relation(self.source_relation, sync_name=name))
        object.__setattr__(self, "source_relation", self.source_relation.strip())

        key = (self.primary_key,) if isinstance(self.primary_key, str) else self.primary_key
        if not isinstance(key, Sequence) or len(key) == 0:
            raise SyncSpecError(f"sync {name!r}: primary_key must name at least one source column")
        for column in key:
            if not isinstance(column, str) or not column.strip():
                raise SyncSpecError(f"sync {name!r}: primary_key entries must be column names, got {column!r}")
        if len(set(key)) != len(key):
            raise SyncSpecError(f"sync {name!r}: primary_key repeats a column: {list(key)!r}")
        object.__setattr__(self, "primary_key", tuple(key))

        if self.fields is not None:
            if not isinstance(self.fields, Mapping) or len(self.fields) == 0:
                raise SyncSpecError(
                    f"sync {name!r}: fields must map destination field -> source column (or be omitted to ship all columns)"
                )
            for dest, src in self.fields.items():
                if not isinstance(dest, str) or not dest.strip():
                    raise SyncSpecError(f"sync {name!r}: fields has an empty destination field name (source column {src!r})")
                if not isinstance(src, str) or not src.strip():
                    raise SyncSpecError(f"sync {name!r}: fields[{dest!r}] must name a source column, got {src!r}")
            mapped = set(self.fields.values())
            for column in self.primary_key:
                if column not in mapped:
                    raise SyncSpecError(
                        f"sync {name!r}: primary_key column {column!r} is not shipped by fields; "
                        f"add e.g. {column!r}: {column!r} so the destination can address each record"
                    )
            object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

        object.__setattr__(self, "mode", SyncMode.parse(self.mode, sync_name=name))

        if self.identifiers is not None:
            if not isinstance(self.identifiers, Mapping):
                raise SyncSpecError(f"sync {name!r}: identifiers must map identifier kind -> source column")
            for kind, column in self.identifiers.items():
                if kind not in IDENTIFIER_KINDS:
                    raise SyncSpecError(
                        f"sync {name!r}: identifiers has unknown kind {kind!r}; allowed: {', '.join(IDENTIFIER_KINDS)}"
                    )
                if not isinstance(column, str) or not column.strip():
                    raise SyncSpecError(f"sync {name!r}: identifiers[{kind!r}] must name a source column, got {column!r}")
                if self.fields is not None and kind in self.fields and self.fields[kind] != column:
                    raise SyncSpecError(
                        f"sync {name!r}: fields[{kind!r}] ({self.fields[kind]!r}) and identifiers[{kind!r}] ({column!r}) disagree"
                    )
            object.__setattr__(self, "identifiers", MappingProxyType(dict(self.identifiers)))
        if self.consent_relation is not None:
            parse_relation(self.consent_relation, sync_name=name)
            if not isinstance(self.consent_column, str) or not IDENTIFIER_PATTERN.match(self.consent_column):
                raise SyncSpecError(f"sync {name!r}: consent_column must be a column name, got {self.consent_column!r}")
        suppress = (self.suppress_relations,) if isinstance(self.suppress_relations, str) else tuple(self.suppress_relations)
        for relation in suppress:
            parse_relation(relation, sync_name=name)
        object.__setattr__(self, "suppress_relations", suppress)
        if not isinstance(self.user_column, str) or not IDENTIFIER_PATTERN.match(self.user_column):
            raise SyncSpecError(f"sync {name!r}: user_column must be a column name, got {self.user_column!r}")

        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise SyncSpecError(f"sync {name!r}: batch_size must be an integer, got {self.batch_size!r}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise SyncSpecError(f"sync {name!r}: batch_size must be between 1 and {MAX_BATCH_SIZE:,}, got {self.batch_size}")

    @property
    def sync_mode(self) -> SyncMode:
        """The mode as a :class:`SyncMode` (``mode`` is normalised to one after validation)."""
        assert isinstance(self.mode, SyncMode)
        return self.mode

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SyncSpec:
        """Build a spec from a plain mapping (a YAML sync declaration), refusing unknown keys.

        Raises
        ------
        SyncSpecError
            On a missing or unknown key, or any invalid value.
        """
        if not isinstance(data, Mapping):
            raise SyncSpecError(f"a sync declaration must be a mapping, got {type(data).__name__}")
        name = data.get("name", "?")
        allowed = {
            "name", "source_relation", "primary_key", "fields", "mode", "batch_size", "identifiers",
            "consent_relation", "consent_column", "suppress_relations", "user_column",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SyncSpecError(f"sync {name!r}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        missing = [k for k in ("name", "source_relation", "primary_key") if k not in data]
        if missing:
            raise SyncSpecError(f"sync {name!r}: missing required key(s) {missing}")
        return cls(**dict(data))


def check_identifiers(spec: SyncSpec, destination_class: Any) -> None:
    """Refuse a sync that does not map the identifier kinds its destination needs.

    Pure: reads only ``spec.identifiers`` and the destination's declared ``required_identifiers``
    (every one needed) and ``any_identifier_of`` (at least one needed, when not empty), so a
    declaration loader can call it at load time without a warehouse.

    Parameters
    ----------
    spec
        The sync.
    destination_class
        The destination class (or an instance: the attributes are read the same way).

    Raises
    ------
    SyncSpecError
        Naming the sync, the destination kind and the missing identifier kind(s).
    """
    mapped = set(spec.identifiers or ())
    required = set(getattr(destination_class, "required_identifiers", ()) or ())
    any_of = set(getattr(destination_class, "any_identifier_of", ()) or ())
    kind = getattr(destination_class, "kind", None) or getattr(destination_class, "__name__", type(destination_class).__name__)
    problems = []
    missing = sorted(required - mapped)
    if missing:
        problems.append(f"needs the identifier(s) {', '.join(map(repr, missing))}")
    if any_of and not any_of & mapped:
        problems.append(f"needs at least one of the identifiers {', '.join(map(repr, sorted(any_of)))}")
    if problems:
        example = (missing or sorted(any_of))[0]
        raise SyncSpecError(
            f"sync {spec.name!r}: the {kind} destination {' and '.join(problems)}; the sync maps "
            f"{', '.join(map(repr, sorted(mapped))) or 'no identifiers'} (add e.g. identifiers: {{{example}: <source column>}})"
        )
