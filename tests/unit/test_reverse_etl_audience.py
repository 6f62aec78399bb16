"""Who is in the audience (consent, suppression) and how records name people (identifier kinds)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import duckdb
import pytest

from reverse_etl import (
    InMemoryDestination,
    Operation,
    SourceError,
    SyncSpec,
    SyncSpecError,
    check_identifiers,
    plan_sync,
    run_sync,
)

T0 = datetime(2026, 3, 1, 12, 0, 0)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("create schema c")
    connection.execute(
        "create table c.vip as select 'u' || i as uid, 'user' || i || '@example.com' as contact_email, "
        "'+8190' || i as mobile, i * 10 as score from range(10) t(i)"
    )
    # u0..u6 opted in; u5 has a second, opted-out row (opt-out wins); u7 false, u8 NULL, u9 no row.
    connection.execute("create table c.consent (user_id varchar, has_marketing_consent boolean)")
    connection.execute(
        "insert into c.consent values ('u0', true), ('u1', true), ('u2', true), ('u3', true), ('u4', true), "
        "('u5', true), ('u5', false), ('u6', true), ('u7', false), ('u8', null)"
    )
    connection.execute("create table c.do_not_contact as select 'u1' as user_id")
    connection.execute("create table c.complaints (user_id varchar, note varchar)")
    yield connection
    connection.close()


def spec(**overrides: object) -> SyncSpec:
    values: dict[str, object] = {
        "name": "vip_crm", "source_relation": "c.vip", "primary_key": ["uid"], "user_column": "uid",
        "consent_relation": "c.consent", "suppress_relations": ["c.do_not_contact", "c.complaints"],
    }
    values.update(overrides)
    return SyncSpec(**values)  # type: ignore[arg-type]


def run(con: duckdb.DuckDBPyConnection, s: SyncSpec, dest: InMemoryDestination, tmp_path: Path, n: int = 0):  # type: ignore[no-untyped-def]
    return run_sync(con, s, dest, lock_dir=tmp_path, now=T0 + timedelta(hours=n))


def test_only_consented_unsuppressed_users_are_sent(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = InMemoryDestination()
    result = run(con, spec(), api, tmp_path)
    assert sorted(api.records) == ["u0", "u2", "u3", "u4", "u6"]
    assert (result.rows_excluded_consent, result.rows_excluded_suppressed, result.audience_size) == (4, 1, 5)
    assert "excluded without consent 4, suppressed 1" in result.format_text()
    # Users never sent leave no per-record rows.
    assert con.execute("select list(distinct record_key order by record_key) from cohortflow_syncs.sync_records").fetchone() == (
        ["u0", "u2", "u3", "u4", "u6"],
    )
    assert con.execute(
        "select rows_excluded_consent, rows_excluded_suppressed from cohortflow_syncs.sync_runs where run_id = ?", [result.run_id]
    ).fetchone() == (4, 1)
    with plan_sync(con, spec(), destination=InMemoryDestination()) as plan:
        assert "0 to add" in plan.summary() and "4 excluded without consent, 1 suppressed" in plan.summary()


def test_losing_consent_or_being_suppressed_removes_under_mirror_only(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    mirror, upsert = InMemoryDestination("m"), InMemoryDestination("u")
    run(con, spec(), mirror, tmp_path)
    run(con, spec(name="vip_upsert", mode="upsert"), upsert, tmp_path)
    con.execute("update c.consent set has_marketing_consent = false where user_id = 'u3'")
    con.execute("insert into c.complaints values ('u4', 'spam report')")
    con.execute("insert into c.consent values ('u9', true)")

    gone = run(con, spec(), mirror, tmp_path, 1)
    assert (gone.rows_removed, gone.rows_added) == (2, 1)
    assert sorted(mirror.records) == ["u0", "u2", "u6", "u9"]
    assert [keys for _, op, keys in mirror.received if op is Operation.REMOVE] == [("u3", "u4")]
    kept = run(con, spec(name="vip_upsert", mode="upsert"), upsert, tmp_path, 1)
    assert (kept.rows_removed, kept.rows_skipped) == (0, 2)  # upsert never removes
    assert sorted(upsert.records) == ["u0", "u2", "u3", "u4", "u6", "u9"]


def test_ids_are_compared_as_text(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    con.execute("create table c.numbered as select i as id, i * 2 as score from range(5) t(i)")
    con.execute("create table c.numbered_consent as select i::varchar as user_id, i <> 3 as ok from range(5) t(i)")
    s = SyncSpec(name="numbered", source_relation="c.numbered", primary_key=["id"], user_column="id",
                 consent_relation="c.numbered_consent", consent_column="ok")
    api = InMemoryDestination()
    run(con, s, api, tmp_path)
    assert sorted(api.records) == ["0", "1", "2", "4"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"consent_relation": "c.nope"}, r"sync 'vip_crm': consent_relation 'c.nope' does not exist"),
        ({"consent_column": "opted_in"}, r"consent_column column 'opted_in' is not in 'c.consent'"),
        ({"suppress_relations": ["c.vip"]}, r"suppress_relations user_id column 'user_id' is not in 'c.vip'"),
        ({"user_column": "user_id"}, r"user_column column 'user_id' is not in 'c.vip'"),
    ],
)
def test_a_missing_audience_relation_or_column_is_named(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SourceError, match=message):
        plan_sync(con, spec(**overrides), destination=InMemoryDestination())
    api = InMemoryDestination()
    with pytest.raises(SourceError, match=message):
        run(con, spec(**overrides), api, tmp_path)
    assert api.records == {}


def test_identifiers_ship_under_the_kind_name(con: duckdb.DuckDBPyConnection) -> None:
    s = spec(consent_relation=None, suppress_relations=(), fields={"uid": "uid", "score": "score"},
             identifiers={"email": "contact_email", "phone": "mobile", "user_id": "uid"})
    with plan_sync(con, s, destination=InMemoryDestination()) as plan:
        assert plan.field_names == ("uid", "score", "email", "phone", "user_id")
        first = next(plan.batches()).to_pylist()[0]
    assert first == {"uid": "u0", "score": 0, "email": "user0@example.com", "phone": "+81900", "user_id": "u0"}

    # A field already shipping the column under the kind's name is not doubled.
    s = spec(consent_relation=None, suppress_relations=(), fields={"uid": "uid", "email": "contact_email"},
             identifiers={"email": "contact_email"})
    with plan_sync(con, s, destination=InMemoryDestination()) as plan:
        assert plan.field_names == ("uid", "email")


def test_an_identifier_clashing_with_a_shipped_column_is_refused(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("alter table c.vip add column email varchar")
    s = spec(consent_relation=None, suppress_relations=(), identifiers={"email": "contact_email"})  # fields=None ships 'email'
    with pytest.raises(SourceError, match=r"identifiers\['email'\] is column 'contact_email', but the field 'email' already ships column 'email'"):
        plan_sync(con, s, destination=InMemoryDestination())
    with pytest.raises(SourceError, match=r"identifiers\['phone'\] column 'cell' is not in 'c.vip'"):
        plan_sync(con, spec(consent_relation=None, suppress_relations=(), identifiers={"phone": "cell"}), destination=InMemoryDestination())


class AdAudience(InMemoryDestination):
    kind: ClassVar[str] = "ad_audience"
    any_identifier_of: ClassVar[frozenset[str]] = frozenset({"email", "phone"})


class Crm(InMemoryDestination):
    kind: ClassVar[str] = "crm"
    required_identifiers: ClassVar[frozenset[str]] = frozenset({"user_id", "email"})


def test_check_identifiers_names_the_sync_the_destination_and_what_is_missing() -> None:
    bare = spec(consent_relation=None, suppress_relations=())
    with pytest.raises(SyncSpecError, match=r"sync 'vip_crm': the ad_audience destination needs at least one of the identifiers 'email', 'phone'; the sync maps no identifiers"):
        check_identifiers(bare, AdAudience)
    with_email = spec(consent_relation=None, suppress_relations=(), identifiers={"email": "contact_email"})
    check_identifiers(with_email, AdAudience)  # one of them is enough
    with pytest.raises(SyncSpecError, match=r"the crm destination needs the identifier\(s\) 'user_id'; the sync maps 'email'"):
        check_identifiers(with_email, Crm)
    check_identifiers(spec(identifiers={"email": "contact_email", "user_id": "uid"}), Crm())  # an instance works too
    check_identifiers(bare, InMemoryDestination)  # no requirement


def test_run_sync_refuses_a_sync_without_the_identifiers_before_anything_runs(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    api = AdAudience()
    with pytest.raises(SyncSpecError, match=r"sync 'vip_crm': the ad_audience destination needs"):
        run(con, spec(), api, tmp_path)
    assert api.received == []
    assert con.execute("select count(*) from duckdb_tables() where schema_name = 'cohortflow_syncs'").fetchone() == (0,)
    ok = run(con, spec(identifiers={"phone": "mobile"}), api, tmp_path)
    assert ok.rows_added == 5 and api.records["u0"]["phone"] == "+81900"
