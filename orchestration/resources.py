"""Dagster resources: the warehouse, injected into every asset that reads or writes it."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg
import duckdb
from pydantic import Field

from cohortflow import warehouse


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
