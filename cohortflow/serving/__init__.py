"""The serving layer: the Profile API, the Cohort API and the event endpoint (FastAPI).

The pipeline publishes a serving snapshot (:mod:`cohortflow.serving.snapshot`); the API reads only
that, never the warehouse file the pipeline writes. Events and cohort uploads the API accepts land as
files that the next pipeline run ingests. Plain library: no Dagster import.
"""
