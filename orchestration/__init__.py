"""Dagster wiring only: dbt models as assets, one asset per sync, resources and schedules.

The logic lives in ``reverse_etl/``, ``ml/`` and ``cohortflow/``; asset bodies stay thin.
"""
