"""
The pure half of the PostgreSQL backend, shared by the async source and the generated
sync twin: URL options, SQL text, argument building, result parsing and the migration
files. Nothing here does I/O, so the twins differ only by ``await``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from ..errors import ConfigurationError
from ._types import (
    Denial,
    Event,
    HoldRecord,
    HoldState,
    LineKey,
    LineRequest,
    LineState,
    OnExpiry,
    ReserveOutcome,
    ReserveStatus,
    SettleMode,
    SettleOutcome,
    SettleStatus,
)

DEFAULT_SCHEMA: Final = "execbudget"
SCHEMES: Final = ("postgresql", "postgres")
_SYNC_COMMIT: Final = ("on", "off", "local", "remote_write", "remote_apply")
_SCHEMA_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: execbudget's own URL options; every other query parameter goes to libpq unchanged.
OPTIONS: Final = (
    "schema",
    "synchronous_commit",
    "pool_min",
    "pool_max",
    "timeout",
    "prepare_threshold",
    "migrate",
)


@dataclass(frozen=True, slots=True)
class PgSettings:
    """What a ``postgresql://`` URL asks for, validated."""

    #: The URL for libpq, without execbudget's options (and still with any password).
    conninfo: str
    #: ``host:port/dbname`` for messages: never the password.
    where: str
    schema: str = DEFAULT_SCHEMA
    #: ``on`` (default) loses nothing acknowledged; ``off`` may lose the last ~0.6 s of
    #: acknowledged operations on a server crash (see docs/ledger-postgres.md).
    synchronous_commit: str = "on"
    pool_min: int = 1
    pool_max: int = 10
    #: Seconds to wait for a pooled connection before failing closed.
    timeout_s: float = 5.0
    #: psycopg prepares a statement after this many runs; 0 = at once, None = never
    #: (for PgBouncer in transaction mode before 1.21).
    prepare_threshold: int | None = 0
    #: Migrate the schema on first use (``migrate=auto``) or refuse (``migrate=off``).
    migrate: bool = True
    #: libpq keywords execbudget adds when the URL does not set them.
    extra: tuple[tuple[str, str], ...] = ()

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every connection: autocommit, one statement per call."""
        kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": self.prepare_threshold}
        kwargs.update(self.extra)
        return kwargs


def _int_option(options: Mapping[str, str], name: str, default: int, low: int) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"postgresql URL option {name}={raw!r} is not a whole number"
        ) from None
    if value < low:
        raise ConfigurationError(f"postgresql URL option {name} must be at least {low}")
    return value


def parse_url(url: str) -> PgSettings:
    """Split a ``postgresql://`` URL into libpq's part and execbudget's options."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigurationError(f"not a PostgreSQL URL: {parts.scheme}:// (use postgresql://)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in OPTIONS}
    rest = [(k, v) for k, v in query if k not in OPTIONS]
    conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise ConfigurationError(f"bad postgresql URL: {exc}") from None

    schema = ours.get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"postgresql schema {schema!r} must be letters, digits and _ (at most 63), "
            "not starting with a digit"
        )
    sync_commit = ours.get("synchronous_commit", "on").lower()
    if sync_commit not in _SYNC_COMMIT:
        raise ConfigurationError(
            f"postgresql synchronous_commit={sync_commit!r} is not one of {', '.join(_SYNC_COMMIT)}"
        )
    pool_min = _int_option(ours, "pool_min", 1, 0)
    pool_max = _int_option(ours, "pool_max", max(10, pool_min), 1)
    if pool_max < pool_min:
        raise ConfigurationError("postgresql pool_max must not be below pool_min")
    try:
        timeout = float(ours.get("timeout", "5"))
    except ValueError:
        raise ConfigurationError("postgresql URL option timeout must be seconds") from None
    if not (0 < timeout <= 3600):
        raise ConfigurationError("postgresql URL option timeout must be in (0, 3600] seconds")
    prepare_raw = ours.get("prepare_threshold", "0").lower()
    prepare = (
        None if prepare_raw in ("none", "off", "") else _int_option(ours, "prepare_threshold", 0, 0)
    )
    migrate_raw = ours.get("migrate", "auto").lower()
    if migrate_raw not in ("auto", "on", "off"):
        raise ConfigurationError("postgresql URL option migrate must be auto or off")

    extra: list[tuple[str, str]] = []
    if "application_name" not in params:
        extra.append(("application_name", "execbudget"))
    if "connect_timeout" not in params:
        extra.append(("connect_timeout", str(max(2, math.ceil(timeout)))))
    host = params.get("host") or params.get("hostaddr") or "localhost"
    where = (
        f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"
    )
    return PgSettings(
        conninfo=conninfo,
        where=where,
        schema=schema,
        synchronous_commit=sync_commit,
        pool_min=pool_min,
        pool_max=pool_max,
        timeout_s=timeout,
        prepare_threshold=prepare,
        migrate=migrate_raw != "off",
        extra=tuple(extra),
    )


def unreachable_message(settings: PgSettings, reason: str) -> str:
    """What to tell an operator when no connection could be had in time."""
    return (
        f"no connection to PostgreSQL at {settings.where} within {settings.timeout_s:g}s "
        f"({reason}); check that the server is running and accepts connections there, the "
        "URL's host, port, user, password and database name, and pg_hba.conf"
    )


# -- migrations -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str


def _load_migrations() -> tuple[Migration, ...]:
    folder = resources.files(__package__ or "execbudget.ledger").joinpath("_sql")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name[: -len(".sql")].partition("_")
            found.append(Migration(version, name, entry.read_text(encoding="utf-8")))
    return tuple(sorted(found, key=lambda m: m.version))


MIGRATIONS: Final = _load_migrations()
LATEST: Final = MIGRATIONS[-1].version


def quote_schema(schema: str) -> str:
    return sql.Identifier(schema).as_string()


def render(migration: Migration, schema: str) -> str:
    return migration.sql.replace("@schema@", quote_schema(schema))


def pending(installed: set[str], schema: str) -> list[Migration]:
    """The migrations still to apply; refuses a schema newer than this code."""
    unknown = installed - {m.version for m in MIGRATIONS}
    if unknown:
        raise ConfigurationError(
            f"ledger schema {schema!r} has migration(s) {sorted(unknown)} that this "
            f"execbudget does not know (it knows up to {LATEST}); upgrade execbudget"
        )
    return [m for m in MIGRATIONS if m.version not in installed]


def not_migrated_message(schema: str, missing: Sequence[Migration], url_hint: str) -> str:
    versions = ", ".join(m.version for m in missing)
    return (
        f"the ledger schema {schema!r} at {url_hint} is not migrated (missing {versions}) and "
        "the URL says migrate=off; run: execbudget ledger migrate URL"
    )


# -- SQL ------------------------------------------------------------------------------
class Queries:
    """Every statement, schema-qualified once, so each is prepared once per connection."""

    def __init__(self, schema: str) -> None:
        s = quote_schema(schema)
        self.schema = schema
        self.reserve = (
            f"SELECT * FROM {s}.eb_reserve(%s, %s::text[], %s::text[], %s::text[],"
            " %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint, %s, %s, %s::bigint)"
        )
        self.settle = f"SELECT * FROM {s}.eb_settle(%s, %s, %s::text[], %s::bigint[], %s::bigint)"
        self.extend = (
            f"UPDATE {s}.eb_hold SET expires_at_ms = coalesce(%s::bigint, {s}.eb_now_ms()) + %s"
            " WHERE rid = %s AND state = 'held'"
        )
        self.reap = f"SELECT {s}.eb_reap(%s, %s::bigint)"
        self.lines = (
            "SELECT scope, win, dim, coalesce(override, lim), spent, held, overrun, blocked"
            f" FROM {s}.eb_line WHERE starts_with(scope, %s)"
            ' ORDER BY scope COLLATE "C", win COLLATE "C", dim COLLATE "C"'
        )
        self.read_lines = (
            "SELECT scope, win, dim, coalesce(override, lim), spent, held, overrun, blocked"
            f" FROM {s}.eb_line WHERE (scope, win, dim) IN"
            " (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))"
        )
        hold_cols = (
            "SELECT h.rid, h.state, k.scopes, k.wins, k.dims, h.amounts, h.charged,"
            f" h.created_ms, h.expires_at_ms, h.on_expiry, h.settled_ms FROM {s}.eb_hold h"
            f" CROSS JOIN LATERAL {s}.eb_keys(h.line_ids) k"
        )
        self.hold = f"{hold_cols} WHERE h.rid = %s"
        self.holds = (
            f"{hold_cols} WHERE h.state = 'held'"
            " AND EXISTS (SELECT 1 FROM unnest(k.scopes) AS u(sc) WHERE starts_with(u.sc, %s))"
            " ORDER BY h.expires_at_ms, h.rid"
        )
        self.events = (
            "SELECT e.seq, e.ts_ms, e.kind, e.rid, k.scopes, k.wins, k.dims, e.amounts"
            f" FROM {s}.eb_event e CROSS JOIN LATERAL {s}.eb_keys(e.line_ids) k"
            " WHERE e.seq > %s ORDER BY e.seq LIMIT %s"
        )
        self.set_limit = (
            f"INSERT INTO {s}.eb_line (scope, win, dim, lim, override) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (scope, win, dim) DO UPDATE SET override = excluded.override"
        )
        self.block = (
            f"INSERT INTO {s}.eb_line (scope, win, dim, lim, blocked) VALUES (%s, %s, %s, 0, %s)"
            " ON CONFLICT (scope, win, dim) DO UPDATE SET blocked = excluded.blocked"
        )
        # SKIP LOCKED: concurrent purges split the work instead of deadlocking on each
        # other's rows; a tombstone being read by a late retry is left for the next purge.
        self.purge = (
            f"DELETE FROM {s}.eb_hold WHERE rid IN (SELECT rid FROM {s}.eb_hold"
            " WHERE state <> 'held' AND settled_ms < %s FOR UPDATE SKIP LOCKED)"
        )
        self.now = f"SELECT {s}.eb_now_ms()"
        self.installed = f"SELECT version FROM {s}.eb_migrations"
        self.lock = "SELECT pg_advisory_xact_lock(hashtext('execbudget.migrate'), hashtext(%s))"
        self.create_schema = f"CREATE SCHEMA IF NOT EXISTS {s}"
        self.create_migrations = (
            f"CREATE TABLE IF NOT EXISTS {s}.eb_migrations (version text PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        self.record_migration = f"INSERT INTO {s}.eb_migrations (version, name) VALUES (%s, %s)"


#: Run once on every new pooled connection.
CONFIGURE: Final = (
    "SELECT set_config('synchronous_commit', %s, false),"
    " set_config('default_transaction_isolation', 'read committed', false)"
)

#: Raised by a query on a schema or table that does not exist yet.
MISSING_SCHEMA: Final = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)


# -- arguments ------------------------------------------------------------------------
# Arrays go to the server as array literals (strings the SQL casts): psycopg's list
# dumpers inspect every element and look up a dumper per list, about a fifth of the
# client's CPU per reserve on a 4-line chain.
def _quote(text: str) -> str:
    """One element of a text[] literal, always quoted (so never read as NULL)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text_array(values: Sequence[str]) -> str:
    return "{" + ",".join([_quote(v) for v in values]) + "}"


def int_array(values: Sequence[int | None]) -> str:
    return "{" + ",".join(["NULL" if v is None else str(int(v)) for v in values]) + "}"


#: The three key literals of the chains in use (a chain is reserved again and again).
_CHAINS: dict[tuple[LineKey, ...], tuple[str, str, str]] = {}
_CACHED_CHAINS: Final = 4096


def _chain_literals(keys: tuple[LineKey, ...]) -> tuple[str, str, str]:
    found = _CHAINS.get(keys)
    if found is None:
        if len(_CHAINS) >= _CACHED_CHAINS:
            _CHAINS.clear()
        found = _CHAINS[keys] = (
            text_array([k[0] for k in keys]),
            text_array([k[1] for k in keys]),
            text_array([k[2] for k in keys]),
        )
    return found


def reserve_args(
    rid: str,
    lines: Sequence[LineRequest],
    ttl_ms: int,
    on_expiry: OnExpiry,
    charge_now: bool,
    now_ms: int | None,
) -> tuple[Any, ...]:
    scopes, wins, dims = _chain_literals(tuple([r[0] for r in lines]))
    return (
        rid,
        scopes,
        wins,
        dims,
        int_array([r[1] for r in lines]),
        int_array([r[2] for r in lines]),
        int_array([r[3] for r in lines]),
        ttl_ms,
        on_expiry.value,
        charge_now,
        now_ms,
    )


def settle_args(
    rid: str, mode: SettleMode, actual: Mapping[str, int] | None, now_ms: int | None
) -> tuple[Any, ...]:
    if not actual:
        return (rid, mode.value, None, None, now_ms)
    return (rid, mode.value, text_array(list(actual)), int_array(list(actual.values())), now_ms)


# -- the hot path's own statements -------------------------------------------------
# reserve and settle run on a connection of their own as statements prepared once, sent
# and read through libpq directly: psycopg's cursor (query conversion, per-parameter
# dumpers, its prepared-statement cache) and the pool's checkout were about two thirds
# of the client's CPU per pair.
RESERVE_STATEMENT: Final = b"eb_reserve"
SETTLE_STATEMENT: Final = b"eb_settle"


def numbered(query: str) -> str:
    """A query's ``%s`` placeholders as ``$1``, ``$2``, … (schema names have no ``%``)."""
    parts = query.split("%s")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


def wire(params: Sequence[Any]) -> list[bytes | None]:
    """
    Parameters in the text format, for a statement prepared without parameter types (the
    server takes each type from the function's signature or the query's cast).
    """
    out: list[bytes | None] = []
    for value in params:
        if value is None:
            out.append(None)
        elif value is True:
            out.append(b"t")
        elif value is False:
            out.append(b"f")
        else:
            out.append(str(value).encode())
    return out


# -- results --------------------------------------------------------------------------
def _keys(scopes: Sequence[str], wins: Sequence[str], dims: Sequence[str]) -> list[LineKey]:
    return [LineKey(s, w, d) for s, w, d in zip(scopes, wins, dims, strict=True)]


def _by_key(keys: Sequence[LineKey], values: Sequence[int] | None) -> dict[LineKey, int]:
    if not values:
        return {}
    return {k: int(v) for k, v in zip(keys, values, strict=True)}


def reserve_outcome(row: Sequence[Any], lines: Sequence[LineRequest]) -> ReserveOutcome:
    status, expires, index, limit, spent, held, reason = row
    if status == "denied":
        req = lines[index]
        denial = Denial(index, req.key, limit, spent, held, req.amount, reason)
        return ReserveOutcome(ReserveStatus.DENIED, denial=denial)
    return ReserveOutcome(ReserveStatus(status), expires)


def settle_outcome(row: Sequence[Any]) -> SettleOutcome:
    status, scopes, wins, dims, charged = row
    if status == "unknown":
        return SettleOutcome(SettleStatus.UNKNOWN)
    return SettleOutcome(SettleStatus(status), _by_key(_keys(scopes, wins, dims), charged))


def line_state(row: Sequence[Any]) -> LineState:
    scope, win, dim, limit, spent, held, overrun, blocked = row
    return LineState(LineKey(scope, win, dim), limit, spent, held, overrun, blocked)


def hold_record(row: Sequence[Any]) -> HoldRecord:
    rid, state, scopes, wins, dims, amounts, charged, created, expires, on_expiry, settled = row
    keys = _keys(scopes, wins, dims)
    return HoldRecord(
        rid,
        HoldState(state),
        _by_key(keys, amounts),
        _by_key(keys, charged),
        created,
        expires,
        OnExpiry(on_expiry),
        settled,
    )


def event(row: Sequence[Any]) -> Event:
    seq, ts_ms, kind, rid, scopes, wins, dims, amounts = row
    return Event(seq, ts_ms, kind, rid, _by_key(_keys(scopes, wins, dims), amounts))
