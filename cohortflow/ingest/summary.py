"""What an ingest run did, per file and in total, and the error for unusable input."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


class IngestError(Exception):
    """Input that cannot be ingested as a whole (missing file, unknown format, bad mapping).

    The message always names the file or the option at fault. A bad *row* never raises:
    it is written to ``raw.rejected_events`` with a reason code.
    """


@dataclass(frozen=True)
class Untracked:
    """Loaded events of one file that the tracking plan does not know: a row of ``raw.untracked_events``.

    ``property`` is ``None`` when the event type itself is not in the plan (its properties are not
    counted then); otherwise the event type is known and ``property`` is a key of ``event_properties``
    the plan does not list for it. ``events`` counts the loaded events (duplicates and rejected rows
    are not loaded, so not counted).
    """

    event_type: str
    property: str | None
    events: int
    first_event_time: datetime
    last_event_time: datetime


@dataclass
class FileResult:
    """Outcome of ingesting one file.

    ``rows_read == rows_loaded + rows_duplicate + rows_rejected`` always holds. A row is a
    record of the source: a JSON line, an event inside a request body, a CSV record.
    ``users_loaded`` / ``items_loaded`` count rows written to ``raw.users`` / ``raw.items``
    (for Online Retail these are derived per customer / stock code, not source rows).
    """

    path: str
    sha256: str
    skipped_as_already_ingested: bool = False
    rows_read: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    users_loaded: int = 0
    items_loaded: int = 0
    seconds: float = 0.0
    #: What the tracking plan does not know, one entry per event type x property (empty without a plan).
    untracked: list[Untracked] = field(default_factory=list)
    #: Loaded events of known types carrying at least one property the plan does not list for them.
    events_with_untracked_properties: int = 0

    @property
    def untracked_event_types(self) -> list[str]:
        """Event types not in the tracking plan, sorted."""
        return sorted(u.event_type for u in self.untracked if u.property is None)

    @property
    def events_of_untracked_types(self) -> int:
        """Loaded events whose event type is not in the tracking plan."""
        return sum(u.events for u in self.untracked if u.property is None)

    @property
    def untracked_properties(self) -> list[tuple[str, str]]:
        """(event_type, property) pairs the tracking plan does not list, sorted."""
        return sorted((u.event_type, u.property) for u in self.untracked if u.property is not None)


@dataclass
class IngestSummary:
    """One :class:`FileResult` per path given to ``ingest_files``, in order, plus totals."""

    format: str
    entity: str
    files: list[FileResult] = field(default_factory=list)
    #: The tracking plan file the events were counted against; ``None`` when there was none.
    tracking_plan: str | None = None
    #: Said once when events were not counted against a plan (no plan file at the path given).
    tracking_plan_note: str | None = None

    @property
    def rows_read(self) -> int:
        """Rows read over all files."""
        return sum(f.rows_read for f in self.files)

    @property
    def rows_loaded(self) -> int:
        """Rows loaded over all files."""
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_duplicate(self) -> int:
        """Rows recognised as duplicates (insert_id seen before) over all files."""
        return sum(f.rows_duplicate for f in self.files)

    @property
    def rows_rejected(self) -> int:
        """Rows rejected over all files."""
        return sum(f.rows_rejected for f in self.files)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """Rejected rows per reason code over all files, most frequent first."""
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.rejected_by_reason)
        return dict(total.most_common())

    @property
    def users_loaded(self) -> int:
        """Rows written to raw.users over all files."""
        return sum(f.users_loaded for f in self.files)

    @property
    def items_loaded(self) -> int:
        """Rows written to raw.items over all files."""
        return sum(f.items_loaded for f in self.files)

    @property
    def files_skipped(self) -> int:
        """Files skipped because the same bytes were ingested before (same format and entity)."""
        return sum(f.skipped_as_already_ingested for f in self.files)

    @property
    def untracked_event_types(self) -> list[str]:
        """Event types not in the tracking plan, over all files."""
        return sorted({name for f in self.files for name in f.untracked_event_types})

    @property
    def untracked_properties(self) -> list[tuple[str, str]]:
        """(event_type, property) pairs not in the tracking plan, over all files."""
        return sorted({pair for f in self.files for pair in f.untracked_properties})

    def format_text(self) -> str:
        """Render a short human summary: per file and total, rejected rows by reason.

        Returns
        -------
        str
            Several lines of plain text, no trailing newline.
        """
        lines = [f"ingest {self.format} ({self.entity}): {len(self.files)} file(s)"]
        if self.tracking_plan_note:
            lines.append(f"  {self.tracking_plan_note}")
        for f in self.files:
            name = Path(f.path).name
            if f.skipped_as_already_ingested:
                lines.append(f"  {name}: skipped, already ingested (sha256 {f.sha256[:12]}…)")
                continue
            lines.append(f"  {name}: {_counts(f.rows_read, f.rows_loaded, f.rows_duplicate, f.rows_rejected)}"
                         f"{_extras(f.users_loaded, f.items_loaded)} in {f.seconds:.1f} s")
            if f.rejected_by_reason:
                lines.append(f"    rejected: {_reasons(f.rejected_by_reason)}")
            if f.untracked:
                lines.append("    " + _untracked(len(f.untracked_event_types), f.events_of_untracked_types,
                                                   len(f.untracked_properties), f.events_with_untracked_properties))
        lines.append(f"  total: {_counts(self.rows_read, self.rows_loaded, self.rows_duplicate, self.rows_rejected)}"
                     f"{_extras(self.users_loaded, self.items_loaded)}"
                     + (f", {self.files_skipped} file(s) skipped" if self.files_skipped else ""))
        if self.rejected_by_reason:
            lines.append(f"    rejected: {_reasons(self.rejected_by_reason)}")
            lines.append("    (details and original payloads: table raw.rejected_events)")
        types, properties = self.untracked_event_types, self.untracked_properties
        if types or properties:
            lines.append("    " + _untracked(len(types), sum(f.events_of_untracked_types for f in self.files),
                                               len(properties), sum(f.events_with_untracked_properties for f in self.files)))
            names = types + [f"{event_type}.{name}" for event_type, name in properties]
            shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8:,} more)" if len(names) > 8 else "")
            lines.append(f"      {shown} (loaded; per file: table raw.untracked_events; "
                         f"add them to the plan: cohortflow tracking-plan draft)")
        return "\n".join(lines)


def _untracked(types: int, type_events: int, properties: int, property_events: int) -> str:
    parts = []
    if types:
        parts.append(f"{types:,} event type{'s' if types != 1 else ''} ({type_events:,} event{'s' if type_events != 1 else ''})")
    if properties:
        parts.append(f"{properties:,} propert{'ies' if properties != 1 else 'y'} "
                     f"({property_events:,} event{'s' if property_events != 1 else ''})")
    return "not in the tracking plan: " + ", ".join(parts)


def _counts(read: int, loaded: int, duplicate: int, rejected: int) -> str:
    return f"{read:,} read, {loaded:,} loaded, {duplicate:,} duplicate, {rejected:,} rejected"


def _extras(users: int, items: int) -> str:
    parts = [f"{users:,} users"] if users else []
    if items:
        parts.append(f"{items:,} items")
    return f" (+ {', '.join(parts)})" if parts else ""


def _reasons(by_reason: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
