"""Trained models on disk, in skops format (no pickle), with JSON metadata beside them.

Layout::

    <root>/<prediction_id>/<model_version>.skops   the calibrated scikit-learn estimator
    <root>/<prediction_id>/<model_version>.json    feature_columns, model_name, metrics, summary…

Why skops rather than pickle/joblib: loading a pickle runs whatever code the file names, so a
model file would be as dangerous as a script. skops stores the object as data and, on load,
refuses any type it was not told to trust. :meth:`ModelStore.load` trusts only the types that
skops reports and that belong to scikit-learn, numpy or scipy (the only libraries a model from
:mod:`ml.training` is made of) and refuses a file containing anything else, naming the file and
the types. The trust check is by module name: it keeps foreign code out, it does not vet
individual scikit-learn/numpy/scipy functions.

Writes are atomic: each file is written to a temporary file in the same folder and moved into
place with ``os.replace``; the ``.skops`` goes first and the ``.json`` last, so a version is
listed (:meth:`ModelStore.versions`) only once both are complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

TRUSTED_MODULES = ("sklearn", "numpy", "scipy")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ModelStoreError(Exception):
    """A model artefact cannot be read, written or trusted; the message names the file."""


class ArtefactNotFound(ModelStoreError, FileNotFoundError):
    """The requested model version is not in the store."""


class UntrustedArtefact(ModelStoreError):
    """The artefact contains types from outside scikit-learn, numpy and scipy."""

    def __init__(self, message: str, *, path: Path, types: list[str]) -> None:
        super().__init__(message)
        self.path = path
        self.types = types


def _check_name(kind: str, value: str) -> str:
    # Both names become path components: refuse separators, "..", and leading dots.
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{kind} {value!r} must be letters, digits, '_', '-' or '.', starting with a "
            "letter or digit"
        )
    return value


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are UTC (the project's ``as_of`` convention); aware ones are converted."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def training_fingerprint(examples: Any, feature_columns: list[str], **params: Any) -> str:
    """A hex digest of the training inputs: the examples' keys, labels and features, and params.

    Meant for :func:`new_model_version`: training the same examples with the same parameters
    gives the same fingerprint, hence the same version name, so re-running a materialisation
    overwrites its own artefact instead of piling up copies.
    """
    import pandas as pd

    columns = ["user_id", "cutoff_at", "label", *feature_columns]
    frame = examples[columns].sort_values(["cutoff_at", "user_id"], kind="mergesort")
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(json.dumps([columns, params], sort_keys=True, default=str).encode())
    return digest.hexdigest()


def new_model_version(prediction_id: str, as_of: datetime, *, fingerprint: str | None = None) -> str:
    """A model version name: ``<prediction_id>-<as_of, UTC, YYYYMMDDTHHMMSSZ>-<8 hex>``.

    E.g. ``purchase_7d-20240310T120000Z-3f9a1c2e``. The timestamp is the ``as_of`` of the run
    that trained the model, so versions of one prediction sort chronologically as strings. The
    suffix is the first 8 hex digits of SHA-256 of ``fingerprint`` when given (see
    :func:`training_fingerprint`: same inputs, same name), else of a random UUID4 (a fresh name
    each time). It keeps two trainings at the same ``as_of`` apart.
    """
    _check_name("prediction_id", prediction_id)
    stamp = _utc(as_of).strftime("%Y%m%dT%H%M%SZ")
    source = fingerprint if fingerprint is not None else uuid.uuid4().hex
    suffix = hashlib.sha256(source.encode()).hexdigest()[:8]
    return f"{prediction_id}-{stamp}-{suffix}"


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays and timestamps to plain JSON values (NaN/inf become None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ModelStore:
    """Saved prediction models under ``root``, one folder per prediction id (see module doc)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    new_model_version = staticmethod(new_model_version)

    def _paths(self, prediction_id: str, model_version: str) -> tuple[Path, Path]:
        folder = self.root / _check_name("prediction_id", prediction_id)
        _check_name("model_version", model_version)
        return folder / f"{model_version}.skops", folder / f"{model_version}.json"

    def save(self, prediction_id: str, model_version: str, trained: Any) -> Path:
        """Write the model and its metadata; return the ``.skops`` path.

        ``trained`` is a :class:`ml.training.TrainedPrediction`. Saving the same version again
        replaces it (atomically, file by file).
        """
        import skops.io as sio

        model_path, meta_path = self._paths(prediction_id, model_version)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "prediction_id": prediction_id,
            "model_version": model_version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "format": "skops",
            "model_file": model_path.name,
            "feature_columns": list(trained.feature_columns),
            "model_name": trained.model_name,
            "metrics": trained.metrics,
            "candidates": trained.candidates,
            "baseline": getattr(trained, "baseline", {}),
            "calibration_table": trained.calibration_table,
            "importance": trained.importance,
            "descriptions": getattr(trained, "descriptions", {}),
            "summary": trained.summary,
            "versions": {"skops": _version("skops"), "scikit-learn": _version("scikit-learn")},
        }
        text = json.dumps(_jsonable(metadata), indent=2, sort_keys=True, allow_nan=False)
        _atomic_write(model_path, lambda tmp: sio.dump(trained.model, tmp))
        _atomic_write(meta_path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
        return model_path

    def exists(self, prediction_id: str, model_version: str) -> bool:
        """Whether both files of this version are present."""
        model_path, meta_path = self._paths(prediction_id, model_version)
        return model_path.is_file() and meta_path.is_file()

    def versions(self, prediction_id: str) -> list[str]:
        """Complete versions of a prediction, oldest first (by name: see new_model_version)."""
        folder = self.root / _check_name("prediction_id", prediction_id)
        if not folder.is_dir():
            return []
        return sorted(
            path.stem
            for path in folder.glob("*.json")
            if not path.name.startswith(".") and path.with_suffix(".skops").is_file()
        )

    def load_metadata(self, prediction_id: str, model_version: str) -> dict[str, Any]:
        """The JSON metadata of a version (without loading the model)."""
        _, meta_path = self._paths(prediction_id, model_version)
        if not meta_path.is_file():
            raise ArtefactNotFound(f"model metadata not found: {meta_path}")
        try:
            return json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"model metadata is unreadable or corrupt: {meta_path}: {exc}") from exc

    def load(self, prediction_id: str, model_version: str) -> tuple[Any, dict[str, Any]]:
        """Load ``(estimator, metadata)``, trusting only scikit-learn/numpy/scipy types.

        Raises :class:`ArtefactNotFound` (also a ``FileNotFoundError``) when a file is missing,
        :class:`UntrustedArtefact` when the model file holds other types, and
        :class:`ModelStoreError` when a file is corrupt; every message names the file.
        """
        import skops.io as sio

        model_path, _ = self._paths(prediction_id, model_version)
        if not model_path.is_file():
            raise ArtefactNotFound(f"model file not found: {model_path}")
        metadata = self.load_metadata(prediction_id, model_version)
        try:
            reported = sio.get_untrusted_types(file=model_path)
        except Exception as exc:
            raise ModelStoreError(f"model file is unreadable or corrupt: {model_path}: {exc}") from exc
        foreign = sorted(t for t in reported if t.split(".", 1)[0] not in TRUSTED_MODULES)
        if foreign:
            raise UntrustedArtefact(
                f"refusing to load {model_path}: it contains types outside "
                f"{', '.join(TRUSTED_MODULES)}: {', '.join(foreign)}",
                path=model_path,
                types=foreign,
            )
        try:
            estimator = sio.load(model_path, trusted=reported)
        except Exception as exc:
            raise ModelStoreError(f"model file could not be loaded: {model_path}: {exc}") from exc
        return estimator, metadata


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
