"""SyncSpec validation: a bad declaration fails at once, naming the sync and the field."""

from __future__ import annotations

import dataclasses

import pytest

from reverse_etl import CsvFileDestination, Operation, Secret, SyncMode, SyncSpec, SyncSpecError
from reverse_etl.destinations.base import RecordDestination


def make(**overrides: object) -> SyncSpec:
    values: dict[str, object] = {
        "name": "cart_abandoners_csv",
        "source_relation": "cohorts.cart_abandoners_24h",
        "primary_key": ["user_id"],
    }
    values.update(overrides)
    return SyncSpec(**values)  # type: ignore[arg-type]


def test_defaults_and_normalisation() -> None:
    spec = make(primary_key="user_id", mode="Insert-Only", fields={"external_id": "user_id", "email": "email"})
    assert spec.primary_key == ("user_id",)
    assert spec.mode is SyncMode.INSERT_ONLY
    assert spec.relation_parts == ("cohorts", "cart_abandoners_24h")
    assert dict(spec.fields or {}) == {"external_id": "user_id", "email": "email"}
    assert make().mode is SyncMode.MIRROR and make().fields is None and make().batch_size == 10_000


def test_spec_is_immutable_even_through_the_mapping() -> None:
    source = {"user_id": "user_id"}
    spec = make(fields=source)
    source["email"] = "email"  # the caller's dict changing later must not change the sync
    assert dict(spec.fields or {}) == {"user_id": "user_id"}
    with pytest.raises(TypeError):
        spec.fields["x"] = "y"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": "Cart Abandoners"}, "name must be lower_snake_case"),
        ({"name": ""}, "name must be lower_snake_case"),
        ({"source_relation": "cohorts.cart;drop table x"}, "source_relation"),
        ({"source_relation": "a.b.c.d"}, "source_relation"),
        ({"source_relation": ""}, "source_relation"),
        ({"primary_key": []}, "primary_key must name at least one"),
        ({"primary_key": ["user_id", "user_id"]}, "primary_key repeats"),
        ({"primary_key": ["user_id", ""]}, "primary_key entries"),
        ({"fields": {}}, "fields must map"),
        ({"fields": {"email": "email"}}, "primary_key column 'user_id' is not shipped by fields"),
        ({"fields": {"user_id": "user_id", "": "email"}}, "empty destination field name"),
        ({"fields": {"user_id": "user_id", "email": ""}}, "fields['email'] must name a source column"),
        ({"mode": "sync_everything"}, "mode 'sync_everything' is not one of: mirror, upsert, insert_only, update_only, remove"),
        ({"batch_size": 0}, "batch_size must be between 1"),
        ({"batch_size": 2_000_000}, "batch_size must be between 1"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"batch_size": "100"}, "batch_size must be an integer"),
    ],
)
def test_invalid_values_name_the_sync_and_the_field(overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(SyncSpecError) as info:
        make(**overrides)
    assert expected in str(info.value)
    if "name" not in overrides:
        assert "'cart_abandoners_csv'" in str(info.value)


def test_spec_error_is_a_value_error_for_config_loaders() -> None:
    with pytest.raises(ValueError):
        make(mode="nope")


def test_modes_send_the_documented_operations() -> None:
    assert SyncMode.MIRROR.operations == {Operation.ADD, Operation.CHANGE, Operation.REMOVE}
    assert SyncMode.UPSERT.operations == {Operation.ADD, Operation.CHANGE}
    assert SyncMode.INSERT_ONLY.operations == {Operation.ADD}
    assert SyncMode.UPDATE_ONLY.operations == {Operation.CHANGE}
    assert SyncMode.REMOVE.operations == {Operation.REMOVE}


def test_from_dict_refuses_unknown_and_missing_keys() -> None:
    spec = SyncSpec.from_dict({"name": "s", "source_relation": "t", "primary_key": ["id"], "mode": "upsert"})
    assert spec.mode is SyncMode.UPSERT
    with pytest.raises(SyncSpecError, match=r"sync 's': unknown key\(s\) \['primary_keys'\]"):
        SyncSpec.from_dict({"name": "s", "source_relation": "t", "primary_keys": ["id"]})
    with pytest.raises(SyncSpecError, match=r"missing required key\(s\) \['primary_key'\]"):
        SyncSpec.from_dict({"name": "s", "source_relation": "t"})


class _TokenDestination(RecordDestination):
    kind = "test_api"

    def __init__(self, url: str, token: Secret) -> None:
        self.url, self.token = url, token

    @property
    def location(self) -> str:
        return self.url

    def settings(self) -> dict[str, object]:
        return {"url": self.url, "token": self.token}

    def send_batch(self, run, batch):  # type: ignore[no-untyped-def]
        return None


def test_secrets_never_appear_in_repr_or_str() -> None:
    secret = Secret("sk_live_123")
    destination = _TokenDestination("https://api.example.com/users", secret)
    for text in (repr(destination), str(destination), repr(secret), str(secret), f"{secret}"):
        assert "sk_live_123" not in text
    assert "token='***'" in repr(destination)
    assert secret.reveal() == "sk_live_123"
    assert repr(CsvFileDestination("/tmp/x/a.csv")).startswith("CsvFileDestination(path='/tmp/x/a.csv'")
