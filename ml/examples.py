"""Training and scoring examples for a prediction, read from the warehouse the dbt models built.

Point in time, by construction:

- features: ``marts.prediction_features`` holds one row per user and cutoff, computed from what was
  known before the cutoff (tested by changing the future, tests/integration/test_prediction_features.py);
- labels: ``marts.prediction_outcomes`` holds the days each user performed the outcome event; a
  training cutoff ``c`` gets the label "any such day in [c, c + horizon)", and only cutoffs whose
  whole horizon lies before as_of are used (a horizon still open would call late converters negative);
- the starting cohort is taken at each cutoff: ``active_last_90_days`` from the features, a cohort
  model from ``marts.cohort_membership_history`` (who was a member at the cutoff).

Plain Python on a DB-API connection (DuckDB here): no Dagster, no dbt.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from cohortflow.declarations import ACTIVE_LAST_90_DAYS, PredictionDeclaration

FEATURES_RELATION = "marts.prediction_features"
OUTCOMES_RELATION = "marts.prediction_outcomes"
HISTORY_RELATION = "marts.cohort_membership_history"
MEMBERSHIPS_RELATION = "marts.cohort_memberships"
COHORTS_RELATION = "marts.cohorts"
KEY_COLUMNS = ("user_id", "cutoff_at", "is_scoring_cutoff", "as_of")
ACTIVE_DAYS = 90


class ExamplesError(RuntimeError):
    """The warehouse cannot give this prediction's examples; the message says what to run."""


@dataclass
class Examples:
    """Labelled examples from past cutoffs plus the rows to score at as_of."""

    training: pd.DataFrame
    scoring: pd.DataFrame
    feature_columns: list[str]
    cutoffs: list[datetime]
    skipped_cutoffs: dict[str, str] = field(default_factory=dict)


def feature_columns(columns: list[str], declaration: PredictionDeclaration) -> list[str]:
    """The feature columns the declaration allows (its ``features.include`` / ``exclude`` globs)."""
    choice = declaration.spec.features
    chosen = []
    for column in columns:
        if column in KEY_COLUMNS:
            continue
        if any(fnmatch.fnmatchcase(column, p) for p in choice.include) and not any(
            fnmatch.fnmatchcase(column, p) for p in choice.exclude
        ):
            chosen.append(column)
    if not chosen:
        raise ExamplesError(
            f"prediction {declaration.name!r}: meta.prediction.features leaves no feature column "
            f"(include {choice.include}, exclude {choice.exclude}; columns: {', '.join(c for c in columns if c not in KEY_COLUMNS)})"
        )
    return chosen


def features_as_of(con: Any) -> datetime:
    """The as_of marts.prediction_features was last built for."""
    try:
        row = con.execute(f"select max(as_of), count(*) from {FEATURES_RELATION}").fetchone()
    except Exception as exc:  # noqa: BLE001 - a missing table is the common case; say what to run
        raise ExamplesError(
            f"{FEATURES_RELATION} cannot be read ({' '.join(str(exc).split())[:200]}); build it first: "
            "`dbt build --select +prediction_features` (the main job does)"
        ) from None
    if row is None or row[0] is None:
        raise ExamplesError(f"{FEATURES_RELATION} is empty: no user had an event before as_of")
    return row[0]


def _cohort_id(con: Any, model_name: str) -> str:
    row = con.execute(f"select cohort_id from {COHORTS_RELATION} where model_name = ?", [model_name]).fetchone()
    if row is None:
        raise ExamplesError(f"starting cohort {model_name!r} is not in {COHORTS_RELATION}: build the cohorts first")
    return row[0]


def load_examples(con: Any, declaration: PredictionDeclaration, as_of: datetime) -> Examples:
    """The prediction's labelled examples (latest ``training_cutoffs`` usable cutoffs) and scoring rows.

    Raises
    ------
    ExamplesError
        The features were built for another as_of, or a table is missing.
    """
    built_for = features_as_of(con)
    if built_for != as_of:
        raise ExamplesError(
            f"{FEATURES_RELATION} was built as of {built_for:%Y-%m-%d %H:%M:%S}, not {as_of:%Y-%m-%d %H:%M:%S}: "
            "rebuild it for this as_of first (the main job builds the features and the predictions in one run)"
        )
    horizon = timedelta(days=declaration.spec.within_days)
    all_cutoffs = [
        r[0]
        for r in con.execute(
            f"select distinct cutoff_at from {FEATURES_RELATION} where not is_scoring_cutoff order by cutoff_at desc"
        ).fetchall()
    ]
    skipped: dict[str, str] = {}
    usable = []
    for cutoff in all_cutoffs:
        if cutoff + horizon > as_of:
            skipped[cutoff.isoformat()] = f"its {declaration.spec.within_days}-day horizon ends after as_of"
        else:
            usable.append(cutoff)

    cohort = declaration.spec.starting_cohort
    if cohort == ACTIVE_LAST_90_DAYS:
        membership_sql = f"f.days_since_last_event <= {ACTIVE_DAYS}"
        membership_join = ""
        scoring_join = ""
        scoring_filter = membership_sql
    else:
        cohort_id = _cohort_id(con, cohort).replace("'", "''")
        covered_from = con.execute(
            f"select min(recorded_at) from {HISTORY_RELATION} where cohort_id = '{cohort_id}'"
        ).fetchone()[0]
        kept = []
        for cutoff in usable:
            if covered_from is None or cutoff < covered_from:
                skipped[cutoff.isoformat()] = (
                    f"the membership history of {cohort!r} starts {covered_from or 'never'} "
                    "(backfill the cohorts over past days to train on earlier cutoffs)"
                )
            else:
                kept.append(cutoff)
        usable = kept
        membership_join = (
            f"inner join {HISTORY_RELATION} as m on m.cohort_id = '{cohort_id}' and m.user_id = f.user_id "
            "and m.recorded_at <= f.cutoff_at and (m.exited_at is null or m.exited_at > f.cutoff_at)"
        )
        membership_sql = "true"
        scoring_join = f"inner join {MEMBERSHIPS_RELATION} as m on m.cohort_id = '{cohort_id}' and m.user_id = f.user_id"
        scoring_filter = "true"

    chosen = usable[: declaration.spec.training_cutoffs]
    for cutoff in usable[declaration.spec.training_cutoffs:]:
        skipped[cutoff.isoformat()] = f"older than the latest {declaration.spec.training_cutoffs} usable cutoffs"
    columns = [d[0] for d in con.execute(f"select * from {FEATURES_RELATION} limit 0").description]
    features = feature_columns(columns, declaration)
    # Every feature column is loaded, the declared ones are learnt from: the model in service may
    # use others (its declaration changed) and is compared with a new one on the same rows.
    select_features = ", ".join(f"f.{c}" for c in columns if c not in KEY_COLUMNS)
    prediction_id = declaration.name.replace("'", "''")
    # performs: positive when an outcome day falls in [c, c + horizon); does_not_perform: when none does.
    label = "count(o.user_id) = 0" if declaration.spec.outcome.negated else "count(o.user_id) > 0"

    if chosen:
        cutoff_list = ", ".join(f"timestamp '{c:%Y-%m-%d %H:%M:%S}'" for c in chosen)
        training = con.execute(
            f"""
            with starting as (
                select distinct f.user_id, f.cutoff_at
                from {FEATURES_RELATION} as f
                {membership_join}
                where not f.is_scoring_cutoff and f.cutoff_at in ({cutoff_list}) and {membership_sql}
            ),
            labels as (
                select s.user_id, s.cutoff_at, cast({label} as integer) as label
                from starting as s
                left join {OUTCOMES_RELATION} as o
                    on o.prediction_id = '{prediction_id}'
                    and o.user_id = s.user_id
                    and o.outcome_date >= cast(s.cutoff_at as date)
                    and o.outcome_date < cast(s.cutoff_at as date) + {declaration.spec.within_days}
                group by s.user_id, s.cutoff_at
            )
            select f.user_id, f.cutoff_at, labels.label, {select_features}
            from labels
            inner join {FEATURES_RELATION} as f
                on f.user_id = labels.user_id and f.cutoff_at = labels.cutoff_at and not f.is_scoring_cutoff
            order by f.cutoff_at, f.user_id
            """
        ).df()
    else:
        training = pd.DataFrame(columns=["user_id", "cutoff_at", "label", *features])

    scoring = con.execute(
        f"""
        select distinct f.user_id, f.cutoff_at, {select_features}
        from {FEATURES_RELATION} as f
        {scoring_join}
        where f.is_scoring_cutoff and {scoring_filter}
        order by f.user_id
        """
    ).df()
    return Examples(training=training, scoring=scoring, feature_columns=features, cutoffs=sorted(chosen), skipped_cutoffs=skipped)
