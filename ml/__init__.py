"""Predictions and recommendations: a plain library (no Dagster import), wired by ``orchestration/``.

Empty until the personalisation issues land; the layout is fixed now so that the dbt project
can declare its outputs as sources and the Dagster graph has a place for them.
"""
