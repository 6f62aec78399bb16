"""One run of a prediction: retrain when due, score the starting cohort, keep the score history honest.

``run_prediction`` is what the Dagster asset calls (orchestration/predictions.py only wires it) and
what tests and benchmarks call directly. Rules, in order:

1. Which model serves as of ``as_of``: the latest promoted model trained as of ``as_of`` or earlier —
   a backfill to a past date never scores with a model that saw later events.
2. Retrain when there is none, when it is older than the retraining cadence (weekly by default), or
   when asked. A new model is promoted only when it does at least as well as the one in service on
   the new validation cutoffs (log loss, the same rule that picks the winner among candidates);
   otherwise it is kept as ``not_promoted`` with the reason, and the old one keeps serving.
3. Too few positives or negatives (< ``min_class_examples``): the run fails saying so, and the last
   good scores stay in place.
4. Score every user of the starting cohort at as_of and write them to ``predictions.<name>`` under
   that as_of in one transaction (re-running an as_of replaces its rows; older runs are thinned to
   one per day after two days). dbt serves, for its as_of, the latest scored as_of at or before it.
5. For every earlier scored as_of whose horizon has now passed: predicted against realised
   conversion, overall and by decile (``ml.prediction_realised``), what the asset check watches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from cohortflow.declarations import PredictionDeclaration
from ml import tables
from ml.examples import OUTCOMES_RELATION, load_examples
from ml.metrics import classification_metrics, decile_table
from ml.store import ModelStore, new_model_version
from ml.training import NotEnoughExamples, TrainedPrediction, score, time_split_sizes, train_prediction

# The asset check warns when realised AUC falls this far below what validation promised.
DEGRADATION_TOLERANCE = 0.05


class PredictionRunError(RuntimeError):
    """The run could not produce scores; the last good scores are still in place."""


@dataclass
class ModelInService:
    model_version: str
    as_of: datetime
    auc: float | None
    log_loss: float | None
    artefact: str


@dataclass
class PredictionRun:
    """What one run did (shown as the asset's metadata and printed by the demo)."""

    prediction_id: str
    as_of: datetime
    model_version: str
    model_name: str
    retrained: bool
    promoted: bool
    reason: str
    scored_users: int
    mean_probability: float
    metrics: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, Any] = field(default_factory=dict)
    calibration_table: list[dict[str, Any]] = field(default_factory=list)
    importance: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    percentile_curve: list[dict[str, Any]] = field(default_factory=list)
    realised: list[dict[str, Any]] = field(default_factory=list)
    skipped_cutoffs: dict[str, str] = field(default_factory=dict)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def model_in_service(con: Any, prediction_id: str, as_of: datetime) -> ModelInService | None:
    """The latest promoted model trained as of ``as_of`` or earlier (none after a backfill's date)."""
    row = con.execute(
        f"""
        select model_version, as_of, auc, log_loss, artefact
        from {tables.MODELS_TABLE}
        where prediction_id = ? and status in ('in_service', 'retired') and as_of <= ?
        order by as_of desc, trained_at desc
        limit 1
        """,
        [prediction_id, as_of],
    ).fetchone()
    return ModelInService(*row) if row else None


def _json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=False)


def _record_model(con: Any, declaration: PredictionDeclaration, version: str, trained: TrainedPrediction,
                  as_of: datetime, status: str, reason: str, artefact: Path, now: datetime) -> None:
    m = trained.metrics
    con.execute(
        f"delete from {tables.MODELS_TABLE} where prediction_id = ? and model_version = ?", [declaration.name, version]
    )
    con.execute(
        f"insert into {tables.MODELS_TABLE} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            declaration.name, version, now, as_of, trained.model_name, status, reason,
            m.get("auc"), m.get("log_loss"), m.get("brier"), m.get("base_rate"), m.get("calibration_error"),
            m.get("top_decile_lift"), m.get("examples"), m.get("positives"),
            _json(m), _json(trained.calibration_table), _json(trained.candidates), _json(trained.importance),
            _json(trained.summary), str(artefact),
        ],
    )


def _percentile_curve(scores: pd.DataFrame) -> list[dict[str, Any]]:
    """Probability at each percentile (0, 5, ..., 100): "percentile and probability are not the same"."""
    if scores.empty:
        return []
    curve = scores.groupby("percentile")["probability"].agg(["min", "max", "count"]).reset_index()
    wanted = set(range(0, 101, 5))
    return [
        {"percentile": int(r.percentile), "min_probability": float(r["min"]), "max_probability": float(r["max"]), "users": int(r["count"])}
        for _, r in curve.iterrows()
        if int(r.percentile) in wanted or r.percentile == curve.percentile.max()
    ]


def _realised_labels(con: Any, declaration: PredictionDeclaration, scored_as_of: datetime) -> pd.DataFrame:
    """user_id, label for the users scored at ``scored_as_of``: the outcome in [scored_as_of, + horizon)."""
    end = scored_as_of + timedelta(days=declaration.spec.within_days)
    label = "count(o.user_id) = 0" if declaration.spec.outcome.negated else "count(o.user_id) > 0"
    return con.execute(
        f"""
        select h.user_id, h.probability, cast({label} as integer) as label
        from {tables.score_relation(declaration.name)} as h
        left join {OUTCOMES_RELATION} as o
            on o.prediction_id = h.prediction_id and o.user_id = h.user_id
            and o.outcome_date >= cast(? as date) and o.outcome_date <= cast(? as date)
            and o.last_outcome_at >= ? and o.first_outcome_at < ?
        where h.as_of = ?
        group by h.user_id, h.probability
        """,
        [scored_as_of, end, scored_as_of, end, scored_as_of],
    ).df()


def evaluate_realised(con: Any, declaration: PredictionDeclaration, as_of: datetime, now: datetime) -> list[dict[str, Any]]:
    """Predicted against realised conversion for every scored as_of whose horizon has passed by as_of."""
    horizon = timedelta(days=declaration.spec.within_days)
    pending = con.execute(
        f"""
        select distinct h.as_of, h.model_version
        from {tables.score_relation(declaration.name)} as h
        where h.as_of + to_days(?) <= ?
          and not exists (
              select 1 from {tables.REALISED_TABLE} as r
              where r.prediction_id = ? and r.scored_as_of = h.as_of)
        order by h.as_of
        """,
        [declaration.spec.within_days, as_of, declaration.name],
    ).fetchall()
    done = []
    for scored_as_of, model_version in pending:
        frame = _realised_labels(con, declaration, scored_as_of)
        if frame.empty:
            continue
        metrics = classification_metrics(frame["label"].to_numpy(), frame["probability"].to_numpy())
        promised = con.execute(
            f"select auc from {tables.MODELS_TABLE} where prediction_id = ? and model_version = ?",
            [declaration.name, model_version],
        ).fetchone()
        row = {
            "prediction_id": declaration.name, "model_version": model_version, "scored_as_of": scored_as_of,
            "horizon_end": scored_as_of + horizon, "evaluated_at": now, "users": int(len(frame)),
            "converters": int(frame["label"].sum()), "mean_probability": float(frame["probability"].mean()),
            "realised_rate": float(frame["label"].mean()), "auc": metrics.get("auc"),
            "log_loss": metrics.get("log_loss"), "calibration_error": metrics.get("calibration_error"),
            "validation_auc": promised[0] if promised else None,
        }
        con.execute(f"insert into {tables.REALISED_TABLE} values ({', '.join('?' * len(row))})", list(row.values()))
        for decile in decile_table(frame["label"].to_numpy(), frame["probability"].to_numpy()):
            con.execute(
                f"insert into {tables.REALISED_DECILES_TABLE} values (?, ?, ?, ?, ?, ?)",
                [declaration.name, scored_as_of, decile["decile"], decile["examples"],
                 decile["predicted_rate"], decile["realised_rate"]],
            )
        done.append(row)
    return done


def run_prediction(
    con: Any,
    declaration: PredictionDeclaration,
    *,
    as_of: datetime,
    store: ModelStore,
    descriptions: Mapping[str, str] | None = None,
    retrain: bool | None = None,
    now: datetime | None = None,
) -> PredictionRun:
    """Retrain if due (or ``retrain=True``; never with ``retrain=False``), then score as of ``as_of``.

    Raises
    ------
    PredictionRunError
        Too few examples, no usable cutoff, no model to score with; nothing was replaced.
    """
    as_of = _naive_utc(as_of)
    now = _naive_utc(now or datetime.now(timezone.utc))
    spec = declaration.spec
    tables.ensure_tables(con)
    tables.ensure_score_table(con, declaration.name)
    examples = load_examples(con, declaration, as_of)
    current = model_in_service(con, declaration.name, as_of)
    due = current is None or (as_of - current.as_of) >= timedelta(days=declaration.retraining_days)
    retrained = bool(retrain) if retrain is not None else due
    if current is None and retrain is False:
        raise PredictionRunError(f"prediction {declaration.name!r}: no model trained as of {as_of} or earlier to score with")

    run = PredictionRun(
        prediction_id=declaration.name, as_of=as_of, model_version=current.model_version if current else "",
        model_name="",
        retrained=retrained, promoted=False, reason="scored with the model in service (retraining not due)",
        scored_users=0, mean_probability=0.0, skipped_cutoffs=examples.skipped_cutoffs,
    )
    serving_model = None
    serving_columns = examples.feature_columns
    if retrained:
        if len(examples.cutoffs) < 3:
            raise PredictionRunError(
                f"prediction {declaration.name!r}: {len(examples.cutoffs)} usable training cutoff(s) as of {as_of:%Y-%m-%d %H:%M}, "
                f"need at least 3 (fit, calibration, validation); a {spec.within_days}-day horizon needs history from "
                f"{spec.within_days + 21} days before as_of; the last good scores stay in place (too little data for it: "
                f"`cohortflow run --skip-prediction {declaration.name}`, or enabled: false in {declaration.declared_in}). "
                f"Skipped: {examples.skipped_cutoffs}"
            )
        validation_cutoffs, calibration_cutoffs = time_split_sizes(
            examples.training["cutoff_at"], examples.training["label"], min_class_examples=spec.min_class_examples
        )
        try:
            trained = train_prediction(
                examples.training, examples.feature_columns, descriptions=descriptions, seed=spec.seed, name=declaration.name,
                min_class_examples=spec.min_class_examples, validation_cutoffs=validation_cutoffs,
                calibration_cutoffs=calibration_cutoffs,
            )
        except NotEnoughExamples as exc:
            raise PredictionRunError(
                f"prediction {declaration.name!r} as of {as_of:%Y-%m-%d %H:%M}: {exc}; the last good scores stay in place "
                f"(an outcome this rare in your data: more history, a longer within_days, "
                f"`cohortflow run --skip-prediction {declaration.name}`, or enabled: false in {declaration.declared_in})"
            ) from None
        version = new_model_version(declaration.name, as_of)
        artefact = store.save(declaration.name, version, trained)
        promoted, reason = True, "first model" if current is None else "better than or as good as the model in service on validation"
        if current is not None:
            old_model, old_meta = store.load(declaration.name, current.model_version)
            old_columns = old_meta["feature_columns"]
            validation = examples.training[examples.training["cutoff_at"].isin(
                pd.to_datetime(trained.summary["validation_cutoffs"]))]
            if not set(old_columns) <= set(validation.columns):
                reason = (f"promoted: the model in service ({current.model_version}) uses feature columns that "
                          f"marts.prediction_features no longer has, so it cannot be compared")
            elif len(validation):
                old_p = score(old_model, validation, old_columns)["probability"].to_numpy()
                old_metrics = classification_metrics(validation["label"].to_numpy(), old_p)
                new_loss, old_loss = trained.metrics["log_loss"], old_metrics["log_loss"]
                if new_loss > old_loss:
                    promoted = False
                    reason = (f"not promoted: validation log loss {new_loss:.4f} is worse than the model in service "
                              f"({current.model_version}: {old_loss:.4f}) on the same cutoffs")
                else:
                    reason = f"promoted: validation log loss {new_loss:.4f} ≤ {old_loss:.4f} of {current.model_version}"
        status = "in_service" if promoted else "not_promoted"
        if promoted and current is not None:
            con.execute(f"update {tables.MODELS_TABLE} set status = 'retired' where prediction_id = ? and status = 'in_service'",
                        [declaration.name])
        _record_model(con, declaration, version, trained, as_of, status, reason, artefact, now)
        run.promoted, run.reason = promoted, reason
        run.metrics, run.candidates = trained.metrics, trained.candidates
        run.calibration_table, run.importance, run.summary = trained.calibration_table, trained.importance, trained.summary
        if promoted:
            serving_model, run.model_version, run.model_name = trained.model, version, trained.model_name
            serving_columns = trained.feature_columns
    if serving_model is None:
        assert current is not None
        serving_model, meta = store.load(declaration.name, current.model_version)
        serving_columns = meta["feature_columns"]
        run.model_version, run.model_name = current.model_version, meta.get("model_name", "")
        if not run.retrained:
            # Scoring only: show what the model in service promised on its own validation.
            run.metrics, run.candidates = meta.get("metrics", {}), meta.get("candidates", {})
            run.calibration_table, run.importance = meta.get("calibration_table", []), meta.get("importance", [])
            run.summary = meta.get("summary", {})

    if examples.scoring.empty:
        scores = pd.DataFrame(columns=["user_id", "probability", "percentile"])
    else:
        missing = [c for c in serving_columns if c not in examples.scoring.columns]
        if missing:
            raise PredictionRunError(f"prediction {declaration.name!r}: model {run.model_version} needs feature columns "
                                     f"that marts.prediction_features no longer has: {missing}; retrain it")
        scores = score(serving_model, examples.scoring, serving_columns)
    out = pd.DataFrame({
        "prediction_id": declaration.name,
        "user_id": scores["user_id"].astype(str),
        "probability": scores["probability"].astype(float),
        "percentile": scores["percentile"].astype(np.int32),
        "model_version": run.model_version,
        "scored_at": pd.Timestamp(now),
        "as_of": pd.Timestamp(as_of),
    })
    tables.replace_run(con, tables.score_relation(declaration.name), out, as_of)
    run.scored_users = int(len(out))
    run.mean_probability = float(out["probability"].mean()) if len(out) else 0.0
    run.percentile_curve = _percentile_curve(out)
    run.realised = evaluate_realised(con, declaration, as_of, now)
    return run


def degradation(con: Any, prediction_id: str, tolerance: float = DEGRADATION_TOLERANCE) -> dict[str, Any] | None:
    """The latest realised evaluation, and whether it fell short of what validation promised."""
    row = con.execute(
        f"""
        select scored_as_of, model_version, auc, validation_auc, calibration_error, users, realised_rate, mean_probability
        from {tables.REALISED_TABLE} where prediction_id = ? order by scored_as_of desc limit 1
        """,
        [prediction_id],
    ).fetchone()
    if row is None:
        return None
    scored_as_of, version, auc, promised, ece, users, realised_rate, mean_p = row
    degraded = auc is not None and promised is not None and auc < promised - tolerance
    return {
        "scored_as_of": scored_as_of, "model_version": version, "realised_auc": auc, "validation_auc": promised,
        "calibration_error": ece, "users": users, "realised_rate": realised_rate, "mean_probability": mean_p,
        "degraded": bool(degraded),
    }
