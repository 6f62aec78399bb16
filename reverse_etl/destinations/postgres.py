"""A Postgres table as a record destination: every batch is COPY'd to a staging table and applied in
one transaction, so the table holds exactly what was acknowledged, and a batch sent twice (after a
crash) leaves the same table.

How one batch is written (see ``docs/destinations-postgres.md``):

1. the Arrow records are rendered as CSV by pyarrow (nested values as JSON text by DuckDB), in
   chunks, and streamed with ``COPY ... FROM STDIN`` — no Python code per row;
2. *add*: COPY straight into the table inside a savepoint; if a row already exists (a batch resent
   after a crash, a full resync, a row someone else wrote) the savepoint is rolled back and the batch
   goes through the staging table: ``INSERT ... ON CONFLICT (key) DO UPDATE`` (``DO NOTHING`` for
   ``insert_only``);
   *change*: staging, then the same upsert (``update_only``: ``UPDATE ... FROM`` staging, which never
   inserts); *remove*: staging (key columns only), then ``DELETE ... USING`` staging;
3. the batch's idempotency key is recorded in ``<table>__cohortflow_batches`` in the same
   transaction (optional), then COMMIT — and only then does ``send_batch`` return.

A server error is classified: a connection problem (or deadlock, cancel, shutdown) is a
:class:`TransientDestinationError`; a value the table refuses (bad encoding, out of range, a
constraint) is a :class:`BatchRejectedError`, which the engine splits to isolate the record; anything
else (privileges, a dropped table) fails the run with a :class:`DestinationError`. The password is
only ever passed to the driver: it is masked in ``repr`` and scrubbed from every error message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from reverse_etl.destinations.base import (
    ALL_OPERATIONS,
    BatchResult,
    ChangeBatch,
    RecordDestination,
    RunInfo,
    Secret,
)
from reverse_etl.errors import BatchRejectedError, DestinationError, TransientDestinationError
from reverse_etl.spec import Operation, SyncMode

logger = logging.getLogger("reverse_etl.postgres")

# Postgres truncates identifiers to 63 bytes; a longer name would silently address another column.
MAX_IDENTIFIER_BYTES = 63
BATCH_LOG_SUFFIX = "__cohortflow_batches"
# Rows rendered to CSV and handed to COPY at once: bounds memory for wide records.
COPY_CHUNK_ROWS = 20_000
# Column of the staging table carrying the engine's record key (used to report update_only misses).
RECORD_KEY_COLUMN = "__cohortflow_record_key"
STAGE_TABLE = "__cohortflow_stage"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Settings that may never be written in a dsn: they are secrets.
_SECRET_DSN_KEYS = ("password", "sslpassword")
_SETTINGS = (
    "host", "port", "user", "password", "password_env", "dbname", "schema", "table", "sslmode", "dsn",
    "batch_log", "batch_log_table", "batch_log_keep_days", "connect_timeout",
)
# Postgres types whose values cannot be compared with IS DISTINCT FROM as they are.
_COMPARE_AS_TEXT = {"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"}


def postgres_type(arrow_type: pa.DataType) -> str:
    """The Postgres column type a new table gets for an Arrow type.

    Raises
    ------
    ValueError
        For a type with no sensible mapping.
    """
    t = arrow_type
    if pa.types.is_dictionary(t):
        return postgres_type(t.value_type)
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "integer"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "bigint"
    if pa.types.is_uint64(t):
        return "numeric(20, 0)"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "real"
    if pa.types.is_float64(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision}, {t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "text"
    if _is_binary(t):
        return "bytea"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return "interval"
    if _is_nested(t):
        return "jsonb"
    if pa.types.is_null(t):
        return "text"
    raise ValueError(f"no Postgres type for Arrow type {t}")


def _is_binary(t: pa.DataType) -> bool:
    return (
        pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _is_nested(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)
        or pa.types.is_struct(t) or pa.types.is_map(t) or pa.types.is_union(t)
    )


def _needs_duckdb(t: pa.DataType) -> bool:
    """Types pyarrow's CSV writer cannot render the way Postgres reads them."""
    return _is_nested(t) or _is_binary(t) or pa.types.is_duration(t) or pa.types.is_interval(t)


def _accepts(arrow_type: pa.DataType, category: str, typname: str) -> bool:
    """Whether a column of an existing table (``pg_type.typcategory`` / ``typname``) can take the values."""
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if category == "S" or pa.types.is_null(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return True  # text in, text out; a string column may feed any type Postgres can parse
    if pa.types.is_boolean(t):
        return category == "B"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return category == "N"
    if pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_time(t):
        return category == "D"
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return category == "T"
    if _is_binary(t):
        return typname == "bytea"
    if _is_nested(t):
        return typname in ("json", "jsonb")
    return False


def _ident_ok(name: str, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty name, got {name!r}")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"{what} {name!r} is longer than Postgres' {MAX_IDENTIFIER_BYTES}-byte identifier limit")
    if "\x00" in name:
        raise ValueError(f"{what} {name!r} contains a NUL character")
    return name


_QUOTED_VALUE_AFTER_COLON = re.compile(r':\s*"(?:[^"]|"")*"\s*$')
_QUOTED_VALUE = re.compile(r'\bvalue "(?:[^"]|"")*"')


def _reason(error: psycopg.Error) -> str:
    """The server's one-line message with the SQLSTATE, without record values.

    DETAIL ("Failing row contains (...)") and CONTEXT (the COPY line) quote the record, and some
    messages end with the offending value (``invalid input syntax for type integer: "abc"``): both are
    left out, since reasons are logged and kept in ``sync_records``.
    """
    diag = getattr(error, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or str(error).split("\n", 1)[0]
    primary = _QUOTED_VALUE_AFTER_COLON.sub(': "…"', primary.strip())
    primary = _QUOTED_VALUE.sub('value "…"', primary)
    state = getattr(error, "sqlstate", None)
    return f"{primary} (SQLSTATE {state})" if state else primary


class PostgresTableDestination(RecordDestination):
    """Keep a Postgres table equal to what a sync sent: upsert adds and changes, delete removes.

    Parameters
    ----------
    table, schema
        The target table (created on the first batch when missing; see the module docstring).
    host, port, user, dbname, sslmode
        Where to connect. ``dsn`` (``"host=... dbname=..."`` or a ``postgresql://`` URI) may be given
        instead or as well (explicit settings win); it must not contain a password.
    password
        A :class:`Secret` (from an environment variable), or ``None`` for trust / peer / ``.pgpass``
        / ``PGPASSWORD`` authentication.
    password_env
        Instead of ``password``: the environment variable holding it, read when connecting (so a
        declaration loads where the secret is not set, and a run without it fails naming the variable).
    batch_log
        Record each applied batch's idempotency key in ``<table>__cohortflow_batches`` (or
        ``batch_log_table``), in the batch's own transaction, so a batch applied twice is detected.
    batch_log_keep_days
        Rows of that log older than this are deleted when a run begins.
    connect_timeout
        Seconds to wait for the server.
    """

    kind: ClassVar[str] = "postgres"
    # COPY makes big batches cheap, and each batch is one transaction; the sync's batch_size
    # (default 10,000) still applies: raise it to 100,000 for large first syncs.
    max_batch_size: ClassVar[int | None] = 100_000
    exclusive_location: ClassVar[bool] = True
    supported_operations = ALL_OPERATIONS

    def __init__(
        self,
        *,
        table: str,
        schema: str = "public",
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        password: Secret | None = None,
        password_env: str | None = None,
        dbname: str | None = None,
        sslmode: str | None = None,
        dsn: str | None = None,
        batch_log: bool = True,
        batch_log_table: str | None = None,
        batch_log_keep_days: int = 30,
        connect_timeout: int = 10,
    ) -> None:
        self.table = _ident_ok(table, "table")
        self.schema = _ident_ok(schema, "schema")
        if password is not None and not isinstance(password, Secret):
            raise ValueError("password must be a Secret (read it from an environment variable), never a plain string")
        self.password = password
        if password_env is not None and (not isinstance(password_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", password_env)):
            raise ValueError(f"password_env must name an environment variable, got {password_env!r}")
        if password is not None and password_env is not None:
            raise ValueError("give password or password_env, not both")
        self.password_env = password_env
        parsed: dict[str, Any] = {}
        if dsn is not None:
            if not isinstance(dsn, str) or not dsn.strip():
                raise ValueError("dsn must be a non-empty connection string")
            try:
                parsed = conninfo_to_dict(dsn)
            except psycopg.ProgrammingError as exc:
                # The driver's message may quote the dsn; say only that it is malformed.
                raise ValueError("dsn is not a valid Postgres connection string (key=value pairs or a postgresql:// URI)") from None
            leaked = [k for k in _SECRET_DSN_KEYS if k in parsed]
            if leaked:
                raise ValueError(
                    f"dsn must not contain {', '.join(leaked)}: put the password in an environment variable "
                    "(password_env) instead"
                )
        self.dsn = dsn
        self.host = host if host is not None else parsed.get("host")
        if not self.host:
            raise ValueError("host is required (or a dsn that names it)")
        raw_port = port if port is not None else parsed.get("port", 5432)
        try:
            self.port = int(raw_port)
        except (TypeError, ValueError):
            raise ValueError(f"port must be a number, got {raw_port!r}") from None
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, got {self.port}")
        self.user = user if user is not None else parsed.get("user")
        self.dbname = dbname if dbname is not None else parsed.get("dbname")
        if not self.dbname:
            raise ValueError("dbname is required (or a dsn that names it)")
        self.sslmode = sslmode if sslmode is not None else parsed.get("sslmode")
        if self.sslmode is not None and self.sslmode not in SSL_MODES:
            raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}, got {self.sslmode!r}")
        self.batch_log = bool(batch_log)
        log_name = batch_log_table if batch_log_table is not None else f"{self.table}{BATCH_LOG_SUFFIX}"
        if self.batch_log:
            if len(log_name.encode()) > MAX_IDENTIFIER_BYTES:
                raise ValueError(
                    f"batch log table name {log_name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes: "
                    "set batch_log_table to a shorter name (or batch_log: false)"
                )
            _ident_ok(log_name, "batch_log_table")
        self.batch_log_table = log_name
        if isinstance(batch_log_keep_days, bool) or not isinstance(batch_log_keep_days, int) or batch_log_keep_days < 1:
            raise ValueError(f"batch_log_keep_days must be a positive whole number of days, got {batch_log_keep_days!r}")
        self.batch_log_keep_days = batch_log_keep_days
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int) or connect_timeout < 1:
            raise ValueError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
        self.connect_timeout = connect_timeout
        self._reset()

    def _reset(self) -> None:
        self._conn: psycopg.Connection[Any] | None = None
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._run: RunInfo | None = None
        self._columns: dict[str, tuple[str, str, str]] | None = None  # name -> (format_type, category, typname)
        self._stage_ready = False
        # After one add batch met existing rows, later add batches go straight to staging.
        self._direct_adds = True
        self.reapplied_batches = 0

    # -- configuration ------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, sync_name: str, base_dir: Any) -> PostgresTableDestination:
        """Build from a ``destinations.yml`` entry.

        ``table`` defaults to the sync's name, so one entry can serve many syncs (one table each).
        The password comes from the environment: ``password_env: NAME`` names the variable, or
        ``password`` holds the value already read from it (``{{ env_var('NAME') }}``).

        Raises
        ------
        ValueError
            Naming the setting when one is unknown, missing or invalid.
        """
        try:
            return cls._from_settings(settings, sync_name=sync_name)
        except ValueError as exc:
            # The one place the prefix is added: the checks below and the constructor say only what is wrong.
            raise ValueError(f"postgres destination: {exc}") from None

    @classmethod
    def _from_settings(cls, settings: Mapping[str, Any], *, sync_name: str) -> PostgresTableDestination:
        if not isinstance(settings, Mapping):
            raise ValueError(f"settings must be a mapping, got {type(settings).__name__}")
        unknown = sorted(set(settings) - set(_SETTINGS) - {"type"})
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; allowed: {', '.join(_SETTINGS)}")
        password: Secret | None = None
        if settings.get("password") is not None:
            value = settings["password"]
            if isinstance(value, Secret):
                password = value
            elif isinstance(value, str) and value:
                password = Secret(value)
            elif value != "":
                raise ValueError("password must be text read from the environment")

        def number(key: str, default: int | None) -> int | None:
            value = settings.get(key, default)
            if value is None:
                return None
            if isinstance(value, bool):
                raise ValueError(f"{key} must be a whole number, got {value!r}")
            try:
                return int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a whole number, got {value!r}") from None

        def flag(key: str, default: bool) -> bool:
            value = settings.get(key, default)
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.strip().lower() in ("true", "yes", "1")
            raise ValueError(f"{key} must be true or false, got {value!r}")

        return cls(
            table=settings.get("table") or sync_name,
            schema=settings.get("schema") or "public",
            host=settings.get("host"),
            port=number("port", None),
            user=settings.get("user"),
            password=password,
            password_env=settings.get("password_env"),
            dbname=settings.get("dbname"),
            sslmode=settings.get("sslmode"),
            dsn=settings.get("dsn"),
            batch_log=flag("batch_log", True),
            batch_log_table=settings.get("batch_log_table"),
            batch_log_keep_days=number("batch_log_keep_days", 30) or 30,
            connect_timeout=number("connect_timeout", 10) or 10,
        )

    @property
    def location(self) -> str:
        """``postgresql://user@host:port/dbname/schema.table`` (never the password)."""
        user = f"{self.user}@" if self.user else ""
        return f"postgresql://{user}{self.host}:{self.port}/{self.dbname}/{self.schema}.{self.table}"

    def settings(self) -> dict[str, Any]:
        """Connection and table settings; the password shows as ``***``."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "password_env": self.password_env,
            "dbname": self.dbname,
            "schema": self.schema,
            "table": self.table,
            "sslmode": self.sslmode,
            "batch_log": self.batch_log,
        }

    @property
    def qualified_table(self) -> str:
        """``schema.table`` as written in messages."""
        return f"{self.schema}.{self.table}"

    def _where(self) -> str:
        return f"postgres destination {self.location}"

    def _secret(self) -> Secret | None:
        """The password: given, or read now from ``password_env``."""
        if self.password is not None or self.password_env is None:
            return self.password
        value = os.environ.get(self.password_env)
        if not value:
            raise DestinationError(
                f"{self._where()}: environment variable {self.password_env} (password_env) is not set where the sync runs"
            )
        return Secret(value)

    def _scrub(self, text: str) -> str:
        """Remove the password from a message, should a driver ever echo it."""
        values = [self.password.reveal()] if self.password is not None else []
        if self.password_env and os.environ.get(self.password_env):
            values.append(os.environ[self.password_env])
        for value in values:
            text = text.replace(value, "***")
        return text

    def _table_sql(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))

    def _log_sql(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.batch_log_table))

    # -- connection ---------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "connect_timeout": self.connect_timeout,
            "application_name": "cohortflow-sync",
            "client_encoding": "UTF8",
        }
        if self.user:
            params["user"] = self.user
        if self.sslmode:
            params["sslmode"] = self.sslmode
        secret = self._secret()
        if secret is not None:
            params["password"] = secret.reveal()
        try:
            conn = psycopg.connect(self.dsn or "", autocommit=True, **params)
        except psycopg.Error as exc:
            message = self._scrub(str(exc).strip().replace("\n", " "))
            raise DestinationError(
                f"{self._where()}: cannot connect to {self.host}:{self.port} database {self.dbname}"
                f"{' as ' + self.user if self.user else ''}: {message}"
            ) from None
        # Timestamps without zone are written as given; zoned ones are read back in UTC.
        conn.execute("set timezone to 'UTC'")
        return conn

    def _close(self) -> None:
        conn, duck = self._conn, self._duck
        self._conn = self._duck = None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:  # pragma: no cover - closing a broken connection
                pass
        if duck is not None:
            duck.close()

    # -- checks -------------------------------------------------------------------------------------

    def check(self) -> None:
        """Connect and verify the privileges a run needs: on the table (or to create it), and TEMP.

        Raises
        ------
        DestinationError
            Naming host, database and table (never the password) and what is missing.
        """
        conn = self._connect()
        try:
            problems = self._privilege_problems(conn)
        except psycopg.Error as exc:
            raise DestinationError(f"{self._where()}: checking privileges failed: {self._scrub(_reason(exc))}") from None
        finally:
            conn.close()
        if problems:
            raise DestinationError(f"{self._where()}: user {self.user or '(default)'} cannot sync here: {'; '.join(problems)}")

    def _privilege_problems(self, conn: psycopg.Connection[Any]) -> list[str]:
        problems: list[str] = []
        row = conn.execute(
            "select has_database_privilege(current_database(), 'TEMP'), "
            "has_database_privilege(current_database(), 'CREATE'), "
            "(select oid from pg_namespace where nspname = %s)",
            [self.schema],
        ).fetchone()
        assert row is not None
        temp_ok, db_create, schema_oid = row
        if not temp_ok:
            problems.append("no TEMP privilege on the database (needed for the staging table)")
        needed_tables = [(self.table, ("SELECT", "INSERT", "UPDATE", "DELETE"))]
        if self.batch_log:
            needed_tables.append((self.batch_log_table, ("SELECT", "INSERT", "UPDATE", "DELETE")))
        if schema_oid is None:
            if not db_create:
                problems.append(f"schema {self.schema} does not exist and the user may not create it")
            return problems
        usage, create = conn.execute(
            "select has_schema_privilege(%s::oid, 'USAGE'), has_schema_privilege(%s::oid, 'CREATE')", [schema_oid, schema_oid]
        ).fetchone() or (False, False)
        if not usage:
            problems.append(f"no USAGE privilege on schema {self.schema}")
            return problems
        for table, privileges in needed_tables:
            exists = conn.execute(
                "select c.oid from pg_class c where c.relnamespace = %s and c.relname = %s and c.relkind in ('r', 'p')",
                [schema_oid, table],
            ).fetchone()
            qualified = f"{self.schema}.{table}"
            if exists is None:
                if not create:
                    problems.append(f"table {qualified} does not exist and the user may not create tables in schema {self.schema}")
                continue
            missing = [
                p for p in privileges
                if not conn.execute("select has_table_privilege(%s::oid, %s)", [exists[0], p]).fetchone()[0]  # type: ignore[index]
            ]
            if missing:
                problems.append(f"missing {', '.join(missing)} on table {qualified}")
        return problems

    # -- run ----------------------------------------------------------------------------------------

    def begin(self, run: RunInfo) -> None:
        """Open the connection, check an existing table against the sync, prepare the batch log.

        Raises
        ------
        DestinationError
            When the table lacks a shipped column, has no unique key on the sync's primary key, or
            has a NOT NULL column without default that the sync does not ship.
        """
        self._close()
        self._reset()
        for name in run.fields:
            _ident_ok(name, "field name")
        self._run = run
        self._conn = self._connect()
        try:
            self._columns = self._read_columns()
            if self._columns is not None:
                self._check_table(run)
            if self.batch_log:
                self._prepare_batch_log()
        except psycopg.Error as exc:
            self._close()
            raise self._classify(exc, "preparing the run") from None
        except BaseException:
            self._close()
            raise

    def finish(self, run: RunInfo, *, succeeded: bool) -> None:
        """Close the connection (an unfinished transaction is rolled back by the server)."""
        self._close()
        self._run = None

    def _read_columns(self) -> dict[str, tuple[str, str, str]] | None:
        """The table's columns (name -> type, category, type name), or ``None`` when it does not exist."""
        assert self._conn is not None
        oid = self._conn.execute("select to_regclass(%s)::oid", [self._table_sql().as_string(self._conn)]).fetchone()
        if oid is None or oid[0] is None:
            return None
        rows = self._conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory, t.typname "
            "from pg_attribute a join pg_type t on t.oid = a.atttypid "
            "where a.attrelid = %s and a.attnum > 0 and not a.attisdropped order by a.attnum",
            [oid[0]],
        ).fetchall()
        return {name: (ftype, str(category), typname) for name, ftype, category, typname in rows}

    def _check_table(self, run: RunInfo) -> None:
        assert self._conn is not None and self._columns is not None
        where = f"{self._where()}: table {self.qualified_table}"
        missing = [f for f in run.fields if f not in self._columns]
        if missing:
            raise DestinationError(
                f"{where} has no column(s) {', '.join(missing)} (it has: {', '.join(self._columns)}); "
                "add them, or drop the table to let the sync create it"
            )
        keys = self._unique_keys()
        wanted = set(run.primary_key_fields)
        if not any(set(k) == wanted for k in keys):
            shown = "; ".join("(" + ", ".join(k) + ")" for k in keys) or "none"
            raise DestinationError(
                f"{where} has no primary key or unique index on exactly ({', '.join(run.primary_key_fields)}), "
                f"the sync's key (unique keys found: {shown}); the sync upserts on that key"
            )
        required = self._conn.execute(
            "select a.attname from pg_attribute a where a.attrelid = to_regclass(%s) and a.attnum > 0 "
            "and not a.attisdropped and a.attnotnull and not a.atthasdef and a.attidentity = '' and a.attgenerated = ''",
            [self._table_sql().as_string(self._conn)],
        ).fetchall()
        unshipped = [r[0] for r in required if r[0] not in run.fields]
        if unshipped and run.mode is not SyncMode.REMOVE:
            raise DestinationError(
                f"{where}: column(s) {', '.join(unshipped)} are NOT NULL without a default and not shipped by the sync, "
                "so no record could be inserted"
            )

    def _unique_keys(self) -> list[tuple[str, ...]]:
        assert self._conn is not None
        rows = self._conn.execute(
            "select array(select a.attname from unnest(i.indkey) with ordinality k(attnum, n) "
            "join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.n) "
            "from pg_index i where i.indrelid = to_regclass(%s) and i.indisunique and i.indisvalid "
            "and i.indpred is null and i.indexprs is null order by i.indisprimary desc",
            [self._table_sql().as_string(self._conn)],
        ).fetchall()
        return [tuple(r[0]) for r in rows]

    def _check_types(self, schema: pa.Schema) -> None:
        assert self._columns is not None
        bad = []
        for f in schema:
            ftype, category, typname = self._columns[f.name]
            if not _accepts(f.type, category, typname):
                bad.append(f"{f.name} is {ftype} but the sync ships {f.type} (would be {postgres_type(f.type)})")
        if bad:
            raise DestinationError(
                f"{self._where()}: table {self.qualified_table} cannot hold the sync's values: {'; '.join(bad)}"
            )

    def _prepare_batch_log(self) -> None:
        assert self._conn is not None
        self._conn.execute(
            sql.SQL(
                "create table if not exists {} (idempotency_key text primary key, sync_name text not null, "
                "operation text not null, records integer not null, first_run_id text not null, last_run_id text not null, "
                "first_applied_at timestamptz not null default now(), last_applied_at timestamptz not null default now(), "
                "times_applied integer not null default 1)"
            ).format(self._log_sql())
        )
        self._conn.execute(
            sql.SQL("delete from {} where last_applied_at < now() - make_interval(days => %s)").format(self._log_sql()),
            [self.batch_log_keep_days],
        )

    def _prepare_table(self, schema: pa.Schema) -> None:
        """Create the table when missing, check types, and create the session's staging table."""
        assert self._conn is not None and self._run is not None
        try:
            column_types = {f.name: postgres_type(f.type) for f in schema}
        except ValueError as exc:
            raise DestinationError(f"{self._where()}: {exc}") from None
        if self._columns is None:
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type)) for name, pg_type in column_types.items()
            )
            key = sql.SQL(", ").join(sql.Identifier(k) for k in self._run.primary_key_fields)
            with self._conn.transaction():
                self._conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema)))
                self._conn.execute(
                    sql.SQL("create table if not exists {} ({}, primary key ({}))").format(self._table_sql(), columns, key)
                )
            logger.info("%s: created table %s", self._where(), self.qualified_table)
            self._columns = self._read_columns()
            self._check_table(self._run)
        self._check_types(schema)
        fields = sql.SQL(", ").join(sql.Identifier(n) for n in self._run.fields)
        self._conn.execute(sql.SQL("drop table if exists pg_temp.{}").format(sql.Identifier(STAGE_TABLE)))
        # Same column types as the table: COPY parses into them, so a bad value fails in the COPY.
        self._conn.execute(
            sql.SQL("create temp table {} on commit delete rows as select null::text as {}, {} from {} with no data").format(
                sql.Identifier(STAGE_TABLE), sql.Identifier(RECORD_KEY_COLUMN), fields, self._table_sql()
            )
        )
        self._stage_ready = True

    # -- sending ------------------------------------------------------------------------------------

    def send_batch(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        """Apply one batch in one transaction; return only after COMMIT.

        Raises
        ------
        TransientDestinationError
            The connection failed (or a deadlock / cancel): nothing of the batch is acknowledged.
        BatchRejectedError
            The table refused a value or a constraint failed; the transaction was rolled back.
        DestinationError
            Anything else the server refused (privileges, a dropped table).
        """
        if self._conn is None or self._run is None:
            raise DestinationError(f"{self._where()}: send_batch called before begin()")
        if len(batch) == 0:
            return None
        records = batch.records
        missing = [f for f in self._run.fields if f not in records.column_names]
        if missing:
            raise DestinationError(f"{self._where()}: batch {batch.sequence} lacks field(s) {', '.join(missing)}")
        if self._columns is None and batch.operation is Operation.REMOVE:
            return None  # no table yet: nothing to remove (the first add batch creates it)
        try:
            if not self._stage_ready:
                self._prepare_table(records.select(list(self._run.fields)).schema)
            result = self._apply(run, batch)
        except psycopg.Error as exc:
            raise self._classify(exc, f"batch {batch.sequence} ({batch.operation.value}, {len(batch):,} records)") from None
        return result

    def _apply(self, run: RunInfo, batch: ChangeBatch) -> BatchResult | None:
        assert self._conn is not None and self._run is not None
        conn, fields, key = self._conn, list(self._run.fields), list(self._run.primary_key_fields)
        op, mode = batch.operation, self._run.mode
        result: BatchResult | None = None
        with conn.transaction():
            if op is Operation.ADD and self._direct_adds and mode is not SyncMode.INSERT_ONLY:
                try:
                    with conn.transaction():  # savepoint: a conflict undoes only this attempt
                        self._copy(self._table_sql(), fields, batch.records)
                    applied = True
                except psycopg.errors.UniqueViolation:
                    applied = False
                    self._direct_adds = False
                    logger.info("%s: batch %d meets rows already in the table; upserting from now on", self._where(), batch.sequence)
                if not applied:
                    self._stage_and_upsert(fields, key, batch.records, do_update=True)
            elif op is Operation.ADD:
                self._stage_and_upsert(fields, key, batch.records, do_update=mode is not SyncMode.INSERT_ONLY)
            elif op is Operation.CHANGE and mode is SyncMode.UPDATE_ONLY:
                result = self._stage_and_update(fields, key, batch)
            elif op is Operation.CHANGE:
                self._stage_and_upsert(fields, key, batch.records, do_update=True)
            else:
                self._copy(sql.Identifier(STAGE_TABLE), key, batch.records.select(key))
                match = sql.SQL(" and ").join(
                    sql.SQL("t.{k} = s.{k}").format(k=sql.Identifier(k)) for k in key
                )
                conn.execute(
                    sql.SQL("delete from {} as t using {} as s where {}").format(self._table_sql(), sql.Identifier(STAGE_TABLE), match)
                )
            if self.batch_log and batch.idempotency_key:
                self._log_batch(run, batch)
        return result

    def _stage_and_upsert(self, fields: list[str], key: list[str], records: pa.Table, *, do_update: bool) -> None:
        assert self._conn is not None and self._columns is not None
        self._copy(sql.Identifier(STAGE_TABLE), fields, records)
        names = sql.SQL(", ").join(sql.Identifier(f) for f in fields)
        conflict = sql.SQL(", ").join(sql.Identifier(k) for k in key)
        others = [f for f in fields if f not in key]
        if do_update and others:
            sets = sql.SQL(", ").join(sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in others)
            # Rows already equal are left alone: a resent batch writes no new row versions.
            old = sql.SQL(", ").join(self._comparable(sql.SQL("t"), c) for c in others)
            new = sql.SQL(", ").join(self._comparable(sql.SQL("excluded"), c) for c in others)
            action = sql.SQL("do update set {} where row({}) is distinct from row({})").format(sets, old, new)
        else:
            action = sql.SQL("do nothing")
        self._conn.execute(
            sql.SQL("insert into {} as t ({}) select {} from {} on conflict ({}) {}").format(
                self._table_sql(), names, names, sql.Identifier(STAGE_TABLE), conflict, action
            )
        )

    def _stage_and_update(self, fields: list[str], key: list[str], batch: ChangeBatch) -> BatchResult | None:
        """``update_only``: update rows that exist; report the others as skipped (never insert)."""
        assert self._conn is not None
        records = batch.records.append_column(RECORD_KEY_COLUMN, pa.array(batch.keys, pa.string()))
        self._copy(sql.Identifier(STAGE_TABLE), [RECORD_KEY_COLUMN, *fields], records)
        match = sql.SQL(" and ").join(sql.SQL("t.{k} = s.{k}").format(k=sql.Identifier(k)) for k in key)
        others = [f for f in fields if f not in key]
        stage = sql.Identifier(STAGE_TABLE)
        if others:
            sets = sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in others)
            query = sql.SQL("update {} as t set {} from {} as s where {} returning s.{}").format(
                self._table_sql(), sets, stage, match, sql.Identifier(RECORD_KEY_COLUMN)
            )
        else:
            query = sql.SQL("select s.{} from {} as s join {} as t on {}").format(
                sql.Identifier(RECORD_KEY_COLUMN), stage, self._table_sql(), match
            )
        found = {row[0] for row in self._conn.execute(query).fetchall()}
        absent = {k: f"not in {self.qualified_table} (update_only does not insert)" for k in batch.keys if k not in found}
        return BatchResult(skipped=absent) if absent else None

    def _comparable(self, alias: sql.Composable, column: str) -> sql.Composable:
        assert self._columns is not None
        ref = sql.SQL("{}.{}").format(alias, sql.Identifier(column))
        if self._columns[column][2] in _COMPARE_AS_TEXT:
            return sql.SQL("{}::text").format(ref)
        return ref

    def _log_batch(self, run: RunInfo, batch: ChangeBatch) -> None:
        assert self._conn is not None
        row = self._conn.execute(
            sql.SQL(
                "insert into {} as b (idempotency_key, sync_name, operation, records, first_run_id, last_run_id) "
                "values (%s, %s, %s, %s, %s, %s) on conflict (idempotency_key) do update set "
                "times_applied = b.times_applied + 1, last_applied_at = now(), last_run_id = excluded.last_run_id "
                "returning times_applied, first_run_id"
            ).format(self._log_sql()),
            [batch.idempotency_key, run.sync_name, batch.operation.value, len(batch), run.run_id, run.run_id],
        ).fetchone()
        if row is not None and row[0] > 1:
            self.reapplied_batches += 1
            logger.info(
                "%s: batch %d (%s, %d records) was applied before (first by run %s); applied again, which leaves the same rows",
                self._where(), batch.sequence, batch.operation.value, len(batch), row[1],
            )

    # -- COPY ---------------------------------------------------------------------------------------

    def _copy(self, target: sql.Composable, columns: Sequence[str], records: pa.Table) -> None:
        """Stream ``records[columns]`` into ``target`` with CSV COPY, rendered by pyarrow in chunks."""
        assert self._conn is not None
        table = self._csv_ready(records.select(list(columns)))
        statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(
            target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        options = pa_csv.WriteOptions(include_header=False, batch_size=4096)
        with self._conn.cursor() as cur, cur.copy(statement) as copy:
            for chunk in _chunks(table, COPY_CHUNK_ROWS):
                sink = pa.BufferOutputStream()
                pa_csv.write_csv(chunk, sink, options)
                copy.write(memoryview(sink.getvalue()))

    def _csv_ready(self, table: pa.Table) -> pa.Table:
        """Columns in a form pyarrow writes as Postgres reads CSV.

        Strings are always quoted and NULL is an empty unquoted field, as Postgres' CSV format expects.
        Nested values become JSON text, binary ``\\x``-hex and intervals text (rendered by DuckDB).
        """
        columns, names, via_duckdb = [], table.column_names, []
        for name, column in zip(names, table.columns):
            t = column.type
            if pa.types.is_dictionary(t):
                column = pc.cast(column, t.value_type)
                t = column.type
            if pa.types.is_float16(t):
                column = pc.cast(column, pa.float32())
            if _needs_duckdb(t):
                via_duckdb.append(name)
            columns.append(column)
        table = pa.Table.from_arrays(columns, names=names)
        if not via_duckdb:
            return table
        if self._duck is None:
            self._duck = duckdb.connect()
            self._duck.execute("set threads = 1")
        exprs = []
        for name in names:
            ident = '"' + name.replace('"', '""') + '"'
            t = table.schema.field(name).type
            if name not in via_duckdb:
                exprs.append(ident)
            elif _is_binary(t):
                exprs.append(f"'\\x' || hex({ident}) as {ident}")
            elif _is_nested(t):
                exprs.append(f"to_json({ident})::varchar as {ident}")
            else:
                exprs.append(f"{ident}::varchar as {ident}")
        converted = self._duck.from_arrow(table).select(", ".join(exprs)).to_arrow_table()
        return converted

    # -- errors -------------------------------------------------------------------------------------

    def _classify(self, exc: psycopg.Error, what: str) -> DestinationError:
        reason = self._scrub(_reason(exc))
        where = f"{self._where()}: {what}"
        if isinstance(exc, psycopg.OperationalError) or (self._conn is not None and self._conn.broken):
            return TransientDestinationError(f"{where}: the server did not complete it ({reason}); nothing of it was committed")
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.CardinalityViolation)):
            return BatchRejectedError(f"{where}: refused by the table: {reason}", reason=reason)
        return DestinationError(f"{where}: {reason}")


def _chunks(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for offset in range(0, table.num_rows, rows):
        yield table.slice(offset, rows)
