"""Dagster resources: the warehouse, injected into every asset that reads or writes it."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import dagster as dg
import duckdb
from pydantic import Field

from cohortflow import warehouse

if TYPE_CHECKING:  # pragma: no cover
    from ml.store import ModelStore

MODEL_STORE_ENV_VAR = "COHORTFLOW_MODEL_STORE"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file.

    ``path`` unset means ``$COHORTFLOW_WAREHOUSE`` at run time, else ``warehouse/cohortflow.duckdb``;
    nothing is read when the code location loads.
    """

    path: Optional[str] = Field(
        default=None,
        description="DuckDB file; default: $COHORTFLOW_WAREHOUSE, else warehouse/cohortflow.duckdb",
    )

    def resolved_path(self) -> Path:
        return warehouse.warehouse_path(self.path)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection, closed (and so unlocked) on exit: DuckDB allows one writer process."""
        con = warehouse.connect(self.resolved_path())
        try:
            yield con
        finally:
            con.close()


class ModelStoreResource(dg.ConfigurableResource):
    """Where trained models are kept (skops files named by model_version), outside git.

    ``path`` unset means ``$COHORTFLOW_MODEL_STORE`` at run time, else a ``models`` folder beside the
    warehouse file; nothing is read when the code location loads.
    """

    path: Optional[str] = Field(
        default=None, description="Folder of the model store; default: $COHORTFLOW_MODEL_STORE, else <warehouse folder>/models"
    )

    def resolved_path(self, warehouse_file: Path) -> Path:
        configured = self.path or os.environ.get(MODEL_STORE_ENV_VAR)
        return Path(configured) if configured else Path(warehouse_file).parent / "models"

    def store(self, warehouse_file: Path) -> "ModelStore":
        from ml.store import ModelStore

        return ModelStore(self.resolved_path(warehouse_file))
