"""Destinations a sync can ship to: files, a Postgres table, a webhook and vendor APIs.

``DESTINATION_TYPES`` maps the ``type`` of a ``destinations.yml`` entry to its class; classes are
imported on first use (:func:`destination_class`), so a missing optional driver only matters to the
syncs that use it.
"""

import importlib

from reverse_etl.destinations.base import (
    BatchResult,
    ChangeBatch,
    Destination,
    RecordDestination,
    RunInfo,
    Secret,
    Snapshot,
    SnapshotDestination,
)
from reverse_etl.destinations.files import CsvFileDestination, FileSnapshotDestination, ParquetFileDestination
from reverse_etl.destinations.memory import InMemoryDestination

DESTINATION_TYPES: dict[str, str] = {
    "csv": "reverse_etl.destinations.files:CsvFileDestination",
    "parquet": "reverse_etl.destinations.files:ParquetFileDestination",
    "postgres": "reverse_etl.destinations.postgres:PostgresTableDestination",
    "webhook": "reverse_etl.destinations.webhook:WebhookDestination",
    "braze": "reverse_etl.destinations.braze:BrazeDestination",
    "facebook_custom_audience": "reverse_etl.destinations.facebook:FacebookCustomAudienceDestination",
    "hubspot": "reverse_etl.destinations.hubspot:HubSpotContactsDestination",
    "klaviyo": "reverse_etl.destinations.klaviyo:KlaviyoProfilesDestination",
}


def destination_class(type_name: str) -> type[Destination]:
    """The destination class for a ``destinations.yml`` type name.

    Raises
    ------
    ValueError
        When the type is unknown (the message lists the known ones).
    """
    target = DESTINATION_TYPES.get(type_name)
    if target is None:
        raise ValueError(f"unknown destination type {type_name!r}; known: {', '.join(sorted(DESTINATION_TYPES))}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = [
    "DESTINATION_TYPES",
    "destination_class",
    "BatchResult",
    "ChangeBatch",
    "CsvFileDestination",
    "Destination",
    "FileSnapshotDestination",
    "InMemoryDestination",
    "ParquetFileDestination",
    "RecordDestination",
    "RunInfo",
    "Secret",
    "Snapshot",
    "SnapshotDestination",
]
