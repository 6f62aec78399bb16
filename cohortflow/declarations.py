"""Predictions (and, next, recommendations) declared as code in the dbt project, read and checked here.

A prediction is a table of the dbt source ``predictions`` whose ``config.meta.prediction`` says what to
predict; declaring it in dbt puts it in the lineage (features -> prediction -> predictive cohorts ->
syncs) and lets cohorts refer to it with ``had_propensity('<name>', ...)``::

    sources:
      - name: predictions
        schema: predictions
        tables:
          - name: purchase_7d
            description: Will an active user buy within the next 7 days?
            config:
              meta:
                prediction:
                  outcome: {performs: purchase}
                  within_days: 7

Every key is described in docs/predictions.md. This module is plain Python (pydantic, no Dagster):
the CLI and the Dagster definitions read the same declarations, and a mistake fails when they load,
naming the file, the prediction and the key, with a did-you-mean on a misspelt key or value. Syncs
and destinations are read by :mod:`cohortflow.sync_declarations`, with this module's
``DeclarationError`` and ``did_you_mean``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PREDICTION_META_KEY = "prediction"
PREDICTIONS_SOURCE = "predictions"
MAX_ACTIVE_PREDICTIONS = 30
HORIZONS = (7, 30, 60, 90)
# The starting cohort when none is named: users with an event in the 90 days before the cutoff.
ACTIVE_LAST_90_DAYS = "active_last_90_days"
ANY_EVENT = "any_event"
OPERATORS = ("=", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "is_null", "is_not_null")
SCORING_CADENCES = ("hourly", "daily")
RETRAINING_DAYS = {"daily": 1, "weekly": 7, "monthly": 30}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DeclarationError(ValueError):
    """A declaration that cannot work; the message names the file, the declaration and the key."""


def did_you_mean(word: Any, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class StrictModel(BaseModel):
    """Unknown keys are mistakes: refused, with the closest known key suggested."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _model_at(root: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at ``loc`` (for the did-you-mean of unknown keys)."""
    current: Any = root
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            field = current.model_fields.get(part)
            if field is None:
                return None
            current = _inner_model(field.annotation)
        # list indexes and union tags keep the current model
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in getattr(candidate, "__args__", ()):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


def validation_messages(error: ValidationError, root: type[BaseModel], prefix: str) -> list[str]:
    """One line per problem: ``<prefix>.<key>: <what is wrong>`` with a did-you-mean where it helps."""
    lines = []
    for item in error.errors():
        loc = [part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
        key = ".".join([prefix, *(str(p) for p in loc)]) if loc else prefix
        kind = item["type"]
        if kind == "extra_forbidden":
            owner = _model_at(root, loc)
            allowed = sorted(owner.model_fields) if owner else []
            hint = did_you_mean(loc[-1], allowed) or (f" (known keys: {', '.join(allowed)})" if allowed else "")
            lines.append(f"{key}: unknown key {loc[-1]!r}{hint}")
        elif kind == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            choices = re.findall(r"'([^']*)'|(\d+)", expected)
            words = [a or b for a, b in choices]
            lines.append(f"{key}: {item.get('input')!r} is not one of {expected}{did_you_mean(item.get('input'), words)}")
        elif kind == "missing":
            lines.append(f"{key}: missing (required)")
        else:
            lines.append(f"{key}: {item['msg'].removeprefix('Value error, ')} (got {item.get('input')!r})")
    return lines


# --- predictions ----------------------------------------------------------------------------------


Scalar = Union[bool, int, float, str]


class PropertyFilter(StrictModel):
    """A condition on an event property, the same shape as the cohort language's ``where(...)``."""

    property: str = Field(min_length=1)
    operator: Literal["=", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "is_null", "is_not_null"] = "="
    value: Union[Scalar, list[Scalar], None] = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> "PropertyFilter":
        if self.operator in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"operator {self.operator} needs a list of values")
        if self.operator not in ("in", "not_in", "is_null", "is_not_null") and (self.value is None or isinstance(self.value, list)):
            raise ValueError(f"operator {self.operator!r} needs one value")
        return self


class Outcome(StrictModel):
    """What counts as the goal: an event performed (with optional property filters) or not performed."""

    performs: str | None = Field(default=None, min_length=1, description="The event type that is the goal.")
    does_not_perform: str | None = Field(
        default=None, min_length=1, description=f"The event type whose absence is the goal ({ANY_EVENT!r}: no event at all)."
    )
    where: list[PropertyFilter] = Field(default_factory=list, description="Property filters on the outcome event.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Outcome":
        if (self.performs is None) == (self.does_not_perform is None):
            raise ValueError("give exactly one of performs: <event> or does_not_perform: <event | any_event>")
        return self

    @property
    def event(self) -> str:
        return self.performs or self.does_not_perform  # type: ignore[return-value]

    @property
    def negated(self) -> bool:
        return self.does_not_perform is not None

    def describe(self) -> str:
        event = "any event" if self.event == ANY_EVENT else self.event
        filters = " and ".join(f"{f.property} {f.operator} {f.value!r}" for f in self.where)
        verb = "does not perform" if self.negated else "performs"
        return f"{verb} {event}" + (f" where {filters}" if filters else "")


class FeatureChoice(StrictModel):
    """Which feature columns of marts.prediction_features the model may use (glob patterns)."""

    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)


class PredictionSpec(StrictModel):
    """``config.meta.prediction`` of one table of the ``predictions`` source."""

    label: str | None = Field(default=None, description="Display name; default: the table name.")
    outcome: Outcome
    within_days: Literal[7, 30, 60, 90] = Field(description="The horizon: the outcome counts within this many days.")
    starting_cohort: str = Field(
        default=ACTIVE_LAST_90_DAYS,
        description="Who is scored and trained on: a cohort model, or active_last_90_days (an event in the 90 days before).",
    )
    scoring: Literal["hourly", "daily"] = "daily"
    retraining: Literal["daily", "weekly", "monthly"] = "weekly"
    training_cutoffs: int = Field(default=8, ge=3, le=52, description="Past cutoffs whose examples train and check a model.")
    features: FeatureChoice = Field(default_factory=FeatureChoice)
    min_class_examples: int = Field(default=100, ge=1, description="Fewer positives or negatives than this: the run fails.")
    seed: int = 0
    enabled: bool = True


class PredictionDeclaration(StrictModel):
    """One declared prediction, checked."""

    name: str
    description: str
    spec: PredictionSpec
    relation: str
    declared_in: str
    input_models: tuple[str, ...] = ()
    feature_descriptions: dict[str, str] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.spec.label or self.name.replace("_", " ")

    @property
    def retraining_days(self) -> int:
        return RETRAINING_DAYS[self.spec.retraining]


def _source_meta(source: Mapping[str, Any]) -> Mapping[str, Any]:
    config = source.get("config") if isinstance(source.get("config"), Mapping) else {}
    return (config.get("meta") if isinstance(config, Mapping) else None) or source.get("meta") or {}


def _cohort_models(manifest: Mapping[str, Any]) -> list[str]:
    return sorted(
        node["name"]
        for node in manifest.get("nodes", {}).values()
        if node.get("resource_type") == "model" and "cohort" in (node.get("tags") or [])
        and (node.get("fqn") or [None, None])[1] == "cohorts"
    )


def load_predictions(manifest: Mapping[str, Any]) -> list[PredictionDeclaration]:
    """The predictions a parsed dbt project declares, checked; in name order.

    Raises
    ------
    DeclarationError
        Every problem of every declaration, one per line, each naming file, prediction and key.
    """
    cohorts = _cohort_models(manifest)
    problems: list[str] = []
    found: list[PredictionDeclaration] = []
    for source in manifest.get("sources", {}).values():
        meta = _source_meta(source)
        if PREDICTION_META_KEY not in meta:
            continue
        name = source["name"]
        where = f"{source.get('original_file_path', '?')}: prediction {name!r}"
        if source.get("source_name") != PREDICTIONS_SOURCE:
            problems.append(f"{where}: meta.prediction belongs on a table of the source {PREDICTIONS_SOURCE!r}, "
                            f"not {source.get('source_name')!r}")
            continue
        if not _NAME.match(name):
            problems.append(f"{where}: the name must be lower snake_case (letters, digits, _), at most 63 characters")
            continue
        raw = meta[PREDICTION_META_KEY]
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: meta.prediction must be a mapping, got {raw!r}")
            continue
        try:
            spec = PredictionSpec.model_validate(dict(raw))
        except ValidationError as exc:
            problems.extend(f"{where}: {line}" for line in validation_messages(exc, PredictionSpec, "meta.prediction"))
            continue
        if spec.starting_cohort != ACTIVE_LAST_90_DAYS and spec.starting_cohort not in cohorts:
            problems.append(
                f"{where}: meta.prediction.starting_cohort {spec.starting_cohort!r} is not a cohort model of this project"
                f" nor {ACTIVE_LAST_90_DAYS!r}{did_you_mean(spec.starting_cohort, [*cohorts, ACTIVE_LAST_90_DAYS])}"
            )
            continue
        found.append(
            PredictionDeclaration(
                name=name,
                description=source.get("description") or "",
                spec=spec,
                relation=f"{source['schema']}.{source.get('identifier') or name}",
                declared_in=str(source.get("original_file_path", "")),
            )
        )
    active = [p for p in found if p.spec.enabled]
    if len(active) > MAX_ACTIVE_PREDICTIONS:
        problems.append(
            f"{len(active)} predictions are enabled; at most {MAX_ACTIVE_PREDICTIONS} may be "
            f"(set meta.prediction.enabled: false on the ones not in use)"
        )
    if problems:
        raise DeclarationError("\n".join(problems))
    return sorted(found, key=lambda p: p.name)


FEATURES_MODEL = "prediction_features"
OUTCOMES_MODEL = "prediction_outcomes"
UNION_MODEL = "predictions"
MEMBERSHIP_MODELS = ("cohort_membership_history", "cohort_memberships", "cohorts")


def _model_node(manifest: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") == "model" and node.get("name") == name:
            return node
    return None


def _plan_events(manifest: Mapping[str, Any]) -> list[str] | None:
    node = _model_node(manifest, "tracking_plan")
    meta = ((node or {}).get("config") or {}).get("meta") or (node or {}).get("meta") or {}
    events = (meta.get("tracking_plan") or {}).get("events") if isinstance(meta.get("tracking_plan"), Mapping) else None
    return sorted(events) if isinstance(events, Mapping) else None


def load_project_predictions(manifest: Mapping[str, Any]) -> list[PredictionDeclaration]:
    """The predictions of a parsed project, with what their assets read, checked against the project:

    the outcome event is in the tracking plan, the union model ``predictions`` lists every prediction
    (macros/predictions.sql), and the features / outcomes models exist.
    """
    declarations = load_predictions(manifest)
    if not declarations:
        return []
    problems = []
    features = _model_node(manifest, FEATURES_MODEL)
    for name in (FEATURES_MODEL, OUTCOMES_MODEL):
        if _model_node(manifest, name) is None:
            problems.append(f"predictions need the dbt model {name!r}, which this project does not have")
    union = _model_node(manifest, UNION_MODEL)
    union_sources = set((union or {}).get("depends_on", {}).get("nodes", []))
    events = _plan_events(manifest)
    out = []
    for p in declarations:
        where = f"{p.declared_in}: prediction {p.name!r}"
        unique_id = next(
            (uid for uid, s in manifest.get("sources", {}).items() if s.get("source_name") == PREDICTIONS_SOURCE and s["name"] == p.name),
            None,
        )
        if union is not None and unique_id not in union_sources:
            problems.append(f"{where}: add {p.name!r} to prediction_names() in macros/predictions.sql "
                            "(the models that read every prediction need its name when dbt parses)")
        event = p.spec.outcome.event
        if events is not None and event != ANY_EVENT and event not in events:
            key = "does_not_perform" if p.spec.outcome.negated else "performs"
            problems.append(f"{where}: meta.prediction.outcome.{key}: {event!r} is not an event of the tracking plan"
                            f"{did_you_mean(event, [*events, ANY_EVENT])}")
        inputs = [FEATURES_MODEL, OUTCOMES_MODEL]
        if p.spec.starting_cohort != ACTIVE_LAST_90_DAYS:
            inputs += [*MEMBERSHIP_MODELS]
        descriptions = {
            name: column.get("description") or ""
            for name, column in ((features or {}).get("columns") or {}).items()
            if column.get("description")
        }
        out.append(p.model_copy(update={"input_models": tuple(inputs), "feature_descriptions": descriptions}))
    if problems:
        raise DeclarationError("\n".join(problems))
    return out
