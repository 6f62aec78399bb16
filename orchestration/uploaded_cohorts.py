"""Uploaded cohorts in Dagster: the asset that ingests what the Cohort API landed, upstream of dbt.

The tables it writes are the dbt source ``uploaded_cohorts`` (``config.meta.landed_by``), so their
asset keys are this asset's (CohortflowTranslator) and every dbt model that reads them runs after it,
in the same run. The body only calls ``cohortflow.ingest.uploaded_cohorts.ingest_uploaded_cohorts``.
"""
# No `from __future__ import annotations`: Dagster reads the annotations at runtime.

from typing import Any, Iterator, Mapping, Sequence

import dagster as dg

from cohortflow.ingest.uploaded_cohorts import ingest_uploaded_cohorts, landing_dir_for
from orchestration.dbt_config import CohortflowTranslator
from orchestration.resources import WarehouseResource

LANDED_META_KEY = "landed_by"
UPLOADED_COHORTS_MODULE = "cohortflow.ingest.uploaded_cohorts"


def uploaded_cohort_source_keys(manifest: Mapping[str, Any]) -> list[dg.AssetKey]:
    """The asset keys of the source tables the uploaded-cohorts ingest writes (from their meta)."""
    translator = CohortflowTranslator()
    keys = []
    for source in manifest["sources"].values():
        meta = (source.get("config") or {}).get("meta") or source.get("meta") or {}
        if meta.get(LANDED_META_KEY) == UPLOADED_COHORTS_MODULE:
            keys.append(translator.get_asset_key(source))
    return sorted(keys, key=lambda k: k.to_user_string())


def build_uploaded_cohorts_asset(keys: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    """One step writing both raw tables (a change and its ids land in one transaction)."""

    @dg.multi_asset(
        name="uploaded_cohorts",
        specs=[
            dg.AssetSpec(
                key=key,
                group_name=key.path[0],
                kinds={"duckdb"},
                description="Cohort uploads and membership changes accepted by the Cohort API, copied from "
                "the landing folder (<warehouse folder>/landing/cohorts) at the start of each run.",
            )
            for key in keys
        ],
    )
    def uploaded_cohorts(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Iterator[dg.MaterializeResult]:
        path = warehouse.resolved_path()
        with warehouse.connect() as con:
            summary = ingest_uploaded_cohorts(con, landing_dir_for(path))
        context.log.info(summary.format_text())
        metadata = {
            "files": dg.IntMetadataValue(summary.files),
            "changes": dg.IntMetadataValue(summary.changes),
            "ids": dg.IntMetadataValue(summary.ids),
            "cohorts": ", ".join(summary.cohorts) or "none",
            "already_ingested": dg.IntMetadataValue(summary.already_ingested),
            "unreadable_files": dg.IntMetadataValue(len(summary.rejected)),
        }
        for key in keys:
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)

    return uploaded_cohorts
