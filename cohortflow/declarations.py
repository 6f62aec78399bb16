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
RECOMMENDATION_META_KEY = "recommendation"
RECOMMENDATIONS_SOURCE = "recommendations"
# meta keys of source tables that a Python asset of this project writes (not loaded raw data).
PYTHON_ASSET_META_KEYS = (PREDICTION_META_KEY, RECOMMENDATION_META_KEY)
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


def _load_declared_tables(
    manifest: Mapping[str, Any],
    *,
    meta_key: str,
    source_name: str,
    spec_model: type[BaseModel],
    kind: str,
    check: Any,
    make: Any,
    max_active: int,
) -> list[Any]:
    """Every table of ``source_name`` with ``config.meta.<meta_key>``, validated as ``spec_model``.

    ``check(spec) -> str | None`` adds a project-level check (a cohort that does not exist...);
    ``make(source, spec, where)`` builds the declaration. Raises :class:`DeclarationError` with every
    problem of every declaration, one per line, each naming file, declaration and key.
    """
    problems: list[str] = []
    found: list[Any] = []
    for source in manifest.get("sources", {}).values():
        meta = _source_meta(source)
        if meta_key not in meta:
            continue
        name = source["name"]
        where = f"{source.get('original_file_path', '?')}: {kind} {name!r}"
        if source.get("source_name") != source_name:
            problems.append(f"{where}: meta.{meta_key} belongs on a table of the source {source_name!r}, "
                            f"not {source.get('source_name')!r}")
            continue
        if not _NAME.match(name):
            problems.append(f"{where}: the name must be lower snake_case (letters, digits, _), at most 63 characters")
            continue
        raw = meta[meta_key]
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: meta.{meta_key} must be a mapping, got {raw!r}")
            continue
        try:
            spec = spec_model.model_validate(dict(raw))
        except ValidationError as exc:
            problems.extend(f"{where}: {line}" for line in validation_messages(exc, spec_model, f"meta.{meta_key}"))
            continue
        problem = check(spec)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        found.append(make(source, spec))
    active = [d for d in found if d.spec.enabled]
    if len(active) > max_active:
        problems.append(
            f"{len(active)} {kind}s are enabled; at most {max_active} may be "
            f"(set meta.{meta_key}.enabled: false on the ones not in use)"
        )
    if problems:
        raise DeclarationError("\n".join(problems))
    return sorted(found, key=lambda d: d.name)


def _declared_table(cls: type[BaseModel]) -> Any:
    """Builds a ``cls`` (prediction / recommendation declaration) from a dbt source table and its spec."""

    def make(source: Mapping[str, Any], spec: BaseModel) -> Any:
        return cls(
            name=source["name"],
            description=source.get("description") or "",
            spec=spec,
            relation=f"{source['schema']}.{source.get('identifier') or source['name']}",
            declared_in=str(source.get("original_file_path", "")),
        )

    return make


def _cohort_check(key: str, cohort: str, cohorts: Sequence[str]) -> str | None:
    if cohort == ACTIVE_LAST_90_DAYS or cohort in cohorts:
        return None
    return (f"{key} {cohort!r} is not a cohort model of this project nor {ACTIVE_LAST_90_DAYS!r}"
            f"{did_you_mean(cohort, [*cohorts, ACTIVE_LAST_90_DAYS])}")


def load_predictions(manifest: Mapping[str, Any]) -> list[PredictionDeclaration]:
    """The predictions a parsed dbt project declares, checked; in name order.

    Raises
    ------
    DeclarationError
        Every problem of every declaration, one per line, each naming file, prediction and key.
    """
    cohorts = _cohort_models(manifest)
    return _load_declared_tables(
        manifest, meta_key=PREDICTION_META_KEY, source_name=PREDICTIONS_SOURCE, spec_model=PredictionSpec,
        kind="prediction", max_active=MAX_ACTIVE_PREDICTIONS,
        check=lambda spec: _cohort_check("meta.prediction.starting_cohort", spec.starting_cohort, cohorts),
        make=_declared_table(PredictionDeclaration),
    )


# --- recommendations ------------------------------------------------------------------------------


MAX_ACTIVE_RECOMMENDATIONS = 30
MAX_ITEMS_PER_USER = 100
CANDIDATE_SOURCES = ("most_frequent", "list", "catalogue")
FALLBACKS = ("trending", "popular")


class CandidateItems(StrictModel):
    """Which items may be recommended at all.

    ``most_frequent``: the ``top`` items with the most interaction events in the ``within_days`` days
    before as_of (Amplitude's default: 50 over 30 days); ``list``: exactly ``items``; ``catalogue``:
    every item of the catalogue (``stg_items``), the long tail included.
    """

    source: Literal["most_frequent", "list", "catalogue"] = Field(default="most_frequent", alias="from")
    top: int = Field(default=50, ge=1, le=1_000_000)
    within_days: int = Field(default=30, ge=1, le=3650)
    items: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _list_has_items(self) -> "CandidateItems":
        if self.source == "list" and not self.items:
            raise ValueError("from: list needs items: [item ids]")
        if self.source != "list" and self.items:
            raise ValueError(f"items: only goes with from: list (from is {self.source!r})")
        return self


class Exclusions(StrictModel):
    """Items never recommended: listed ones, what the user already converted on, what is out of stock."""

    items: list[str] = Field(default_factory=list)
    converted: bool = True
    out_of_stock: bool = True


class RecommendationSpec(StrictModel):
    """``config.meta.recommendation`` of one table of the ``recommendations`` source."""

    label: str | None = None
    item_property: str = Field(default="item_id", min_length=1, description="The event property naming the item.")
    interactions: dict[str, float] = Field(
        description="Event types that show interest, with weights (e.g. view_item: 1, add_to_cart: 3, purchase: 5).",
        min_length=1,
    )
    outcome: str = Field(min_length=1, description="The event that is a conversion on an item (e.g. purchase).")
    users: str = Field(default=ACTIVE_LAST_90_DAYS, description="Who gets recommendations: a cohort model.")
    candidates: CandidateItems = Field(default_factory=CandidateItems)
    exclude: Exclusions = Field(default_factory=Exclusions)
    items_per_user: int = Field(default=10, ge=1, le=MAX_ITEMS_PER_USER)
    control_percent: float = Field(default=10, ge=0, le=50, description="Users who get random candidate items instead.")
    refresh: Literal["hourly", "daily"] = "daily"
    fallback: Literal["trending", "popular"] = "trending"
    attribution_days: int = Field(default=7, ge=1, le=90, description="Performance: a conversion on a recommended item counts this long after the lists.")
    min_history: int = Field(default=1, ge=1, description="Fewer interactions than this: the fallback list.")
    holdout_days: int = Field(default=30, ge=1, le=365, description="Model selection: test on the outcomes of these last days.")
    min_coverage: float = Field(default=0.25, ge=0, le=1, description="Model selection: share of candidate items a winner must reach.")
    time_budget_seconds: float = Field(default=30, gt=0, le=3600, description="Model selection: the hyper-parameter search stops here.")
    seed: int = 0
    enabled: bool = True

    @field_validator("interactions")
    @classmethod
    def _positive_weights(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {event: weight for event, weight in value.items() if not weight > 0}
        if bad:
            raise ValueError(f"weights must be positive numbers, got {bad}")
        return value


class RecommendationDeclaration(StrictModel):
    """One declared recommendation, checked."""

    name: str
    description: str
    spec: RecommendationSpec
    relation: str
    declared_in: str

    @property
    def label(self) -> str:
        return self.spec.label or self.name.replace("_", " ")


def load_recommendations(manifest: Mapping[str, Any]) -> list[RecommendationDeclaration]:
    """The recommendations a parsed dbt project declares, checked; in name order."""
    cohorts = _cohort_models(manifest)
    return _load_declared_tables(
        manifest, meta_key=RECOMMENDATION_META_KEY, source_name=RECOMMENDATIONS_SOURCE, spec_model=RecommendationSpec,
        kind="recommendation", max_active=MAX_ACTIVE_RECOMMENDATIONS,
        check=lambda spec: _cohort_check("meta.recommendation.users", spec.users, cohorts),
        make=_declared_table(RecommendationDeclaration),
    )


def _plan_properties(manifest: Mapping[str, Any], event: str) -> list[str] | None:
    node = _model_node(manifest, "tracking_plan")
    meta = ((node or {}).get("config") or {}).get("meta") or (node or {}).get("meta") or {}
    plan = meta.get("tracking_plan") if isinstance(meta.get("tracking_plan"), Mapping) else {}
    spec = (plan.get("events") or {}).get(event) if isinstance(plan.get("events"), Mapping) else None
    properties = spec.get("properties") if isinstance(spec, Mapping) else None
    return sorted(properties) if isinstance(properties, Mapping) else None


def load_project_recommendations(manifest: Mapping[str, Any]) -> list[RecommendationDeclaration]:
    """The recommendations of a parsed project, checked against it: every interaction and outcome
    event is in the tracking plan and carries the item property; the union model lists them all."""
    declarations = load_recommendations(manifest)
    if not declarations:
        return []
    events = _plan_events(manifest)
    union = _model_node(manifest, RECOMMENDATIONS_UNION_MODEL)
    union_sources = set((union or {}).get("depends_on", {}).get("nodes", []))
    problems = []
    for r in declarations:
        where = f"{r.declared_in}: recommendation {r.name!r}"
        unique_id = f"source.{(union or {}).get('package_name', 'cohortflow')}.{RECOMMENDATIONS_SOURCE}.{r.name}"
        if union is not None and unique_id not in union_sources:
            problems.append(f"{where}: add {r.name!r} to recommendation_names() in macros/recommendations.sql "
                            "(the models that read every recommendation need its name when dbt parses)")
        for key, event in [*((f"interactions.{e}", e) for e in r.spec.interactions), ("outcome", r.spec.outcome)]:
            if events is not None and event not in events:
                problems.append(f"{where}: meta.recommendation.{key}: {event!r} is not an event of the tracking plan"
                                f"{did_you_mean(event, events)}")
                continue
            properties = _plan_properties(manifest, event)
            if properties is not None and r.spec.item_property not in properties:
                problems.append(f"{where}: meta.recommendation.item_property: {r.spec.item_property!r} is not a property "
                                f"of {event!r} in the tracking plan{did_you_mean(r.spec.item_property, properties)}")
    if problems:
        raise DeclarationError("\n".join(problems))
    return declarations


RECOMMENDATIONS_UNION_MODEL = "recommendations"

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
