"""The warehouse tables the prediction runs own (schema ``ml``) and the per-prediction score tables.

Scores of prediction ``p`` live in ``predictions.p`` (the dbt source ``predictions``): one set of
rows per kept scoring run, told apart by ``as_of``. A run writes its as_of's rows in one transaction
(re-running an as_of replaces them: idempotent), so readers never see half a run and a failed run
leaves every earlier run in place. dbt reads, for its own as_of, the latest scored as_of at or before
it: a backfill as of a past date adds that date's scores without touching what is served now.
Everything in ``ml`` is history, appended, never rewritten except when the same as_of is re-run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

SCORES_SCHEMA = "predictions"
ML_SCHEMA = "ml"
MODELS_TABLE = f"{ML_SCHEMA}.prediction_models"
REALISED_TABLE = f"{ML_SCHEMA}.prediction_realised"
REALISED_DECILES_TABLE = f"{ML_SCHEMA}.prediction_realised_deciles"
LISTS_SCHEMA = "recommendations"
RECOMMENDATION_MODELS_TABLE = f"{ML_SCHEMA}.recommendation_models"
RECOMMENDATION_PERFORMANCE_TABLE = f"{ML_SCHEMA}.recommendation_performance"

SCORE_COLUMNS = """
    prediction_id   varchar   not null,
    user_id         varchar   not null,
    probability     double    not null,
    percentile      integer   not null,
    model_version   varchar   not null,
    scored_at       timestamp not null,
    as_of           timestamp not null
"""

DDL = f"""
create schema if not exists {SCORES_SCHEMA};
create schema if not exists {ML_SCHEMA};

-- One row per trained model, promoted or not: how it did on validation, beside every candidate.
create table if not exists {MODELS_TABLE} (
    prediction_id       varchar   not null,
    model_version       varchar   not null,
    trained_at          timestamp not null,   -- wall clock
    as_of               timestamp not null,   -- what the model could see: events up to here
    model_name          varchar   not null,   -- the winning candidate (logistic, gradient_boosting)
    status              varchar   not null,   -- in_service | retired | not_promoted
    reason              varchar   not null,   -- why it was (not) promoted, in words
    auc                 double,
    log_loss            double,
    brier               double,
    base_rate           double,
    calibration_error   double,
    top_decile_lift     double,
    validation_examples bigint,
    validation_positives bigint,
    metrics             json      not null,   -- the winner's validation metrics (TPR / FPR at thresholds...)
    calibration_table   json      not null,
    candidates          json      not null,   -- every candidate's validation metrics (the baselines)
    importance          json      not null,   -- features that matter, with direction, in words
    summary             json      not null,   -- cutoffs per split, example counts, calibration method, seed
    artefact            varchar   not null    -- where the skops file is (the model store)
);

-- Once a scored as_of's horizon has passed: how the scores did against what really happened.
create table if not exists {REALISED_TABLE} (
    prediction_id       varchar   not null,
    model_version       varchar   not null,
    scored_as_of        timestamp not null,
    horizon_end         timestamp not null,
    evaluated_at        timestamp not null,
    users               bigint    not null,
    converters          bigint    not null,
    mean_probability    double    not null,
    realised_rate       double    not null,
    auc                 double,
    log_loss            double,
    calibration_error   double,
    validation_auc      double                -- what the model promised on validation
);

create table if not exists {REALISED_DECILES_TABLE} (
    prediction_id       varchar   not null,
    scored_as_of        timestamp not null,
    decile              integer   not null,   -- 1 = the lowest probabilities, 10 = the highest
    users               bigint    not null,
    mean_probability    double    not null,
    realised_rate       double    not null
);
"""


LIST_COLUMNS = """
    rec_id          varchar   not null,
    user_id         varchar   not null,
    rank            integer   not null,
    item_id         varchar   not null,
    score           double,
    is_control      boolean   not null,
    source          varchar   not null,
    model_version   varchar   not null,
    generated_at    timestamp not null,
    as_of           timestamp not null
"""

RECOMMENDATION_DDL = f"""
create schema if not exists {LISTS_SCHEMA};
create schema if not exists {ML_SCHEMA};

-- One row per run: the model chosen, why, and every candidate's holdout metrics beside popularity.
create table if not exists {RECOMMENDATION_MODELS_TABLE} (
    rec_id                  varchar   not null,
    model_version           varchar   not null,
    trained_at              timestamp not null,
    as_of                   timestamp not null,
    model_name              varchar   not null,   -- ease, als, item_cosine, ...
    model_label             varchar   not null,   -- with its parameters: ease(l2=500)
    reason                  varchar   not null,   -- the choice in words
    recall_at_10            double,
    precision_at_10         double,
    ndcg_at_10              double,
    coverage                double,
    popularity_recall_at_10 double,
    recall_vs_popularity    double,
    candidates              json      not null,
    skipped                 json      not null,
    timings                 json      not null,
    summary                 json      not null
);

-- Treatment against control for each run's lists, refreshed until its window closes.
create table if not exists {RECOMMENDATION_PERFORMANCE_TABLE} (
    rec_id                  varchar   not null,
    scored_as_of            timestamp not null,
    window_end              timestamp not null,
    window_complete         boolean   not null,
    evaluated_at            timestamp not null,
    treatment_exposed       bigint    not null,
    treatment_converted     bigint    not null,
    treatment_rate          double,
    treatment_repeat_rate   double,
    control_exposed         bigint    not null,
    control_converted       bigint    not null,
    control_rate            double,
    control_repeat_rate     double,
    lift                    double,                -- treatment rate / control rate - 1
    p_value                 double                 -- two-sided Welch t-test on converted (0/1)
);
"""


def recommendation_relation(rec_id: str) -> str:
    return f"{LISTS_SCHEMA}.{rec_id}"


def ensure_recommendation_tables(con: Any, rec_id: str) -> None:
    """The ml tables and the list table (dbt's on-run-start creates the same one, empty)."""
    con.execute(RECOMMENDATION_DDL)
    con.execute(f"create table if not exists {recommendation_relation(rec_id)} ({LIST_COLUMNS})")


def ensure_tables(con: Any) -> None:
    """Create the ml tables if needed (idempotent)."""
    con.execute(DDL)


def score_relation(prediction_id: str) -> str:
    return f"{SCORES_SCHEMA}.{prediction_id}"


def ensure_score_table(con: Any, prediction_id: str) -> None:
    """The score table (dbt's on-run-start creates the same one, empty, before a first run)."""
    con.execute(f"create table if not exists {score_relation(prediction_id)} ({SCORE_COLUMNS})")


# Runs kept in a per-run table (scores, recommendation lists): every run of the last two days (hourly
# cadences), then the last run of each UTC day — enough for the realised / performance evaluations
# (longest horizon 90 days) and for backfills.
ALL_RUNS_DAYS = 2


def replace_run(con: Any, relation: str, rows: Any, as_of: datetime) -> None:
    """Write one run's rows (a DataFrame with the table's columns, in order) under ``as_of``.

    One transaction: the as_of's earlier rows are replaced (re-running is idempotent), older runs
    thinned (ALL_RUNS_DAYS); readers never see half a run and a failure leaves every run in place.
    """
    # A cursor of its own: DuckDB 2 refuses register() on a connection whose last result was read
    # with fetchone(), and the write is one transaction of its own anyway.
    cur = con.cursor()
    try:
        cur.register("cohortflow_new_run", rows)
        cur.execute("begin transaction")
        cur.execute(f"delete from {relation} where as_of = ?", [as_of])
        cur.execute(f"insert into {relation} select * from cohortflow_new_run")
        cur.execute(
            f"""
            delete from {relation}
            where as_of < ? and as_of not in (select max(as_of) from {relation} group by cast(as_of as date))
            """,
            [as_of - timedelta(days=ALL_RUNS_DAYS)],
        )
        cur.execute("commit")
    except Exception:
        cur.execute("rollback")
        raise
    finally:
        cur.close()
