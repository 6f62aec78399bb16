"""ml.store: skops round-trips, refusal of foreign types, atomic writes, version names."""

from __future__ import annotations

import json
import re
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from threadpoolctl import threadpool_limits

from ml.store import (
    ArtefactNotFound,
    ModelStore,
    ModelStoreError,
    UntrustedArtefact,
    new_model_version,
    training_fingerprint,
)
from ml.training import score, train_prediction

FEATURES = ["purchases_30d", "days_since_last_event"]
AS_OF = datetime(2024, 3, 10, 12, 0, 0)


class Foreign:
    """A type skops does not know: loading it would mean importing and running test code."""

    def __init__(self) -> None:
        self.payload = "not a model"


def small_examples(users=800, cutoffs=4, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(cutoffs):
        purchases = rng.poisson(1.0, users).astype(float)
        days = rng.exponential(15, users)
        days[rng.random(users) < 0.1] = np.nan
        logit = -0.5 + purchases - 0.06 * np.nan_to_num(days, nan=50.0)
        frames.append(
            pd.DataFrame(
                {
                    "user_id": [f"u{i:04d}" for i in range(users)],
                    "cutoff_at": pd.Timestamp("2024-02-01") + pd.Timedelta(weeks=k),
                    "label": (rng.random(users) < 1 / (1 + np.exp(-logit))).astype(int),
                    "purchases_30d": purchases,
                    "days_since_last_event": days,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(autouse=True)
def _one_thread():
    # Shared 2-core machine: OpenMP spin-waiting makes 2 threads slower than 1 here.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def examples():
    return small_examples()


@pytest.fixture(scope="module", params=["logistic", "gradient_boosting"])
def trained(request, examples):
    with threadpool_limits(limits=1):
        return train_prediction(examples, FEATURES, candidates=(request.param,), min_class_examples=50)


def test_round_trip_gives_identical_probabilities(tmp_path, trained, examples):
    store = ModelStore(tmp_path)
    version = new_model_version("purchase_7d", AS_OF)
    path = store.save("purchase_7d", version, trained)
    assert path == tmp_path / "purchase_7d" / f"{version}.skops"
    assert store.exists("purchase_7d", version)

    model, metadata = store.load("purchase_7d", version)
    X = examples[FEATURES]
    assert np.array_equal(model.predict_proba(X), trained.model.predict_proba(X))
    assert score(model, examples, FEATURES).equals(score(trained.model, examples, FEATURES))

    assert metadata["feature_columns"] == FEATURES
    assert metadata["model_name"] == trained.model_name
    assert metadata["metrics"]["auc"] == pytest.approx(trained.metrics["auc"])
    assert metadata["summary"]["cutoffs"] == trained.summary["cutoffs"]
    assert datetime.fromisoformat(metadata["created"]).tzinfo is not None
    on_disk = json.loads((tmp_path / "purchase_7d" / f"{version}.json").read_text())
    assert on_disk == metadata


def test_no_pickle_anywhere(tmp_path, trained):
    store = ModelStore(tmp_path)
    store.save("purchase_7d", "v1", trained)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["v1.json", "v1.skops"]  # no temporary or .pkl file left behind
    skops_file = tmp_path / "purchase_7d" / "v1.skops"
    assert zipfile.is_zipfile(skops_file)
    with zipfile.ZipFile(skops_file) as archive:
        assert "schema.json" in archive.namelist()
        assert not [n for n in archive.namelist() if n.endswith((".pkl", ".pickle", ".joblib"))]
    source = "\n".join(p.read_text() for p in (Path(__file__).parents[2] / "ml").glob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+(pickle|cloudpickle|joblib|dill)\b", source, re.M)


def test_foreign_type_is_refused_naming_the_file(tmp_path, trained):
    store = ModelStore(tmp_path)
    store.save("purchase_7d", "v1", trained)
    target = tmp_path / "purchase_7d" / "v1.skops"
    sio.dump({"model": trained.model, "extra": Foreign()}, target)
    with pytest.raises(UntrustedArtefact) as caught:
        store.load("purchase_7d", "v1")
    message = str(caught.value)
    assert str(target) in message
    assert "Foreign" in message
    assert [t.rsplit(".", 1)[-1] for t in caught.value.types] == ["Foreign"]


def test_missing_and_corrupt_artefacts_name_the_path(tmp_path, trained):
    store = ModelStore(tmp_path)
    with pytest.raises(ArtefactNotFound, match=re.escape(str(tmp_path / "purchase_7d" / "nope.skops"))):
        store.load("purchase_7d", "nope")
    assert issubclass(ArtefactNotFound, FileNotFoundError)

    store.save("purchase_7d", "v1", trained)
    target = tmp_path / "purchase_7d" / "v1.skops"
    target.write_bytes(b"this is not a skops file")
    with pytest.raises(ModelStoreError, match=re.escape(str(target))):
        store.load("purchase_7d", "v1")

    store.save("purchase_7d", "v2", trained)
    meta = tmp_path / "purchase_7d" / "v2.json"
    meta.write_text("{ truncated")
    with pytest.raises(ModelStoreError, match=re.escape(str(meta))):
        store.load("purchase_7d", "v2")


def test_failed_write_leaves_the_previous_version_intact(tmp_path, trained, examples, monkeypatch):
    store = ModelStore(tmp_path)
    store.save("purchase_7d", "v1", trained)
    before = store.load("purchase_7d", "v1")[0].predict_proba(examples[FEATURES])

    def broken_dump(obj, file):
        Path(file).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(sio, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        store.save("purchase_7d", "v1", trained)
    with pytest.raises(OSError, match="disk full"):
        store.save("purchase_7d", "v2", trained)
    monkeypatch.undo()

    assert np.array_equal(store.load("purchase_7d", "v1")[0].predict_proba(examples[FEATURES]), before)
    assert not store.exists("purchase_7d", "v2")
    assert sorted(p.name for p in (tmp_path / "purchase_7d").iterdir()) == ["v1.json", "v1.skops"]


def test_versions_and_exists(tmp_path, trained):
    store = ModelStore(tmp_path)
    assert store.versions("purchase_7d") == []
    later = new_model_version("purchase_7d", AS_OF + timedelta(days=7))
    earlier = new_model_version("purchase_7d", AS_OF)
    for version in (later, earlier):
        store.save("purchase_7d", version, trained)
    (tmp_path / "purchase_7d" / "orphan.json").write_text("{}")  # no model file: incomplete
    assert store.versions("purchase_7d") == [earlier, later]
    assert not store.exists("purchase_7d", "orphan")
    assert not store.exists("other_prediction", earlier)


def test_model_version_names():
    version = new_model_version("purchase_7d", AS_OF)
    assert re.fullmatch(r"purchase_7d-20240310T120000Z-[0-9a-f]{8}", version)
    assert new_model_version("purchase_7d", AS_OF) != version  # random suffix by default
    # Aware datetimes are converted to UTC; naive ones are UTC already.
    tokyo = datetime(2024, 3, 10, 21, 0, 0, tzinfo=timezone(timedelta(hours=9)))
    assert new_model_version("purchase_7d", tokyo).startswith("purchase_7d-20240310T120000Z-")
    # With a fingerprint of the training inputs the name is reproducible.
    examples = small_examples(users=50, cutoffs=2)
    first = training_fingerprint(examples, FEATURES, seed=0)
    assert training_fingerprint(examples.sample(frac=1.0, random_state=1), FEATURES, seed=0) == first
    assert training_fingerprint(examples, FEATURES, seed=1) != first
    changed = examples.copy()
    changed.loc[0, "label"] = 1 - changed.loc[0, "label"]
    assert training_fingerprint(changed, FEATURES, seed=0) != first
    named = new_model_version("purchase_7d", AS_OF, fingerprint=first)
    assert named == new_model_version("purchase_7d", AS_OF, fingerprint=first)


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", ".hidden", "x..y"])
def test_unsafe_names_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        ModelStore(tmp_path).exists(bad, "v1")
    with pytest.raises(ValueError):
        ModelStore(tmp_path).exists("purchase_7d", bad)
