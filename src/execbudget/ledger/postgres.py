"""
``postgresql://`` (and ``postgres://``): the ledger as a system of record, shared by any
number of processes and hosts.

``PostgresStorage`` (psycopg 3, sync, with a ``psycopg_pool.ConnectionPool``) and
``AsyncPostgresStorage`` (asyncio, ``AsyncConnectionPool``) call one PL/pgSQL function
per operation (``_sql/0001_ledger.sql``) on autocommit connections: one transaction, one
round trip. A reserve locks its chain's lines ``ORDER BY id FOR UPDATE`` (one global order,
so overlapping chains never deadlock), checks every line, then writes every line, under
READ COMMITTED. Holds live in ``eb_hold`` and stay as tombstones once settled; the event
log is the append-only ``eb_event`` table.

**URL options** (everything else in the query string goes to libpq unchanged)::

    postgresql://user@host:5432/db?schema=execbudget&synchronous_commit=on
        schema              tables and functions live here (default ``execbudget``)
        synchronous_commit  on (default) | off | local | remote_write | remote_apply
        pool_min, pool_max  pooled connections per storage object (default 1 and 10);
                            reserve and settle also have one connection of their own,
                            opened on first use (a concurrent call takes a pooled one)
        timeout             seconds to wait for a connection before failing closed (5)
        prepare_threshold   0 (default: prepare at once) | N | none (PgBouncer < 1.21)
        migrate             auto (default: migrate on first use) | off (refuse instead)

**Migrations.** Numbered SQL files under ``_sql/``, recorded in ``<schema>.eb_migrations``
and applied in one transaction under an advisory lock, so racing starters apply each
version once. ``execbudget ledger migrate URL`` (``migrate_command``) applies them
explicitly; a storage migrates on first use unless the URL says ``migrate=off``, where
it refuses with a ``ConfigurationError`` naming the command (for roles without DDL rights).

**Durability.** ``synchronous_commit=on`` loses nothing acknowledged when the server
crashes; ``off`` may lose the operations acknowledged in the last ~3 × wal_writer_delay
(0.6 s by default) — lost holds can mean overspend in that window. See
docs/ledger-postgres.md.
"""

from __future__ import annotations

from rich.console import Console

from ..errors import ConfigurationError
from ._pg_async import AsyncPostgresStorage
from ._pg_common import LATEST, parse_url
from ._pg_sync import PostgresStorage, migrate_url

__all__ = ["LATEST", "AsyncPostgresStorage", "PostgresStorage", "migrate", "migrate_command"]


def migrate(url: str) -> list[str]:
    """Apply the pending schema migrations for ``url``; returns the versions applied."""
    return migrate_url(url)


def migrate_command(url: str) -> int:
    """``execbudget ledger migrate URL``: migrate and say what happened; 0 on success."""
    import psycopg

    console = Console()
    try:
        settings = parse_url(url)
        applied = migrate_url(url)
    except ConfigurationError as exc:
        console.print(f"[red]✗[/] {exc}")
        return 2
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        console.print(f"[red]✗[/] migration failed: {detail}")
        return 1
    where = f"{settings.where} schema {settings.schema}"
    if applied:
        console.print(f"[green]✓[/] applied {', '.join(applied)} to {where} (now at {LATEST})")
    else:
        console.print(f"[green]✓[/] {where} is up to date (at {LATEST})")
    return 0
