"""Connections to PostgreSQL: the pool, JSON codecs, and driver-error translation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from conveyor.errors import (
    DatabaseUnavailable,
    RefusedValue,
    SchemaNotReady,
    StoreConflict,
    StoreError,
)
from conveyor.store.dsn import redact_dsn

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""A connection of its own or one borrowed from the pool: every operation takes either."""


# What opening a connection raises when the server is down, starting or unreachable.
CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.InterfaceError)
# What opening a connection raises when the DSN itself is wrong: waiting will not help.
MISCONFIGURED = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidCatalogNameError,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb to Python values and encode Python values to JSON text."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=_dumps, decoder=json.loads, schema="pg_catalog"
        )


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own (listeners dropped, an
    open transaction rolled back).

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release: a round trip per operation, two of the four per claimed
    and finished batch (measured in ``benchmarks/queue_throughput.py``). The store's own
    statements leave no session state behind (advisory locks are transaction-scoped,
    ``set_config`` is local, LISTEN has a connection of its own); the one connection that
    user code gets, ``PostgresStore.transaction``, is reset in full before it goes back.
    """


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_cache_size: int = 100,
    application_name: str = "conveyor",
) -> asyncpg.Pool:
    """Open a pool; ``statement_cache_size=0`` for PgBouncer in transaction mode."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            statement_cache_size=statement_cache_size,
            init=init_connection,
            reset=keep_session,
            server_settings={"application_name": application_name},
        )
    except (*CONNECT_ERRORS, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {exc}; "
            "check DATABASE_URL (unset it to use the embedded server)",
            retryable=not isinstance(exc, MISCONFIGURED),
        ) from exc
    assert pool is not None
    return pool


async def connect(dsn: str, *, statement_cache_size: int = 100) -> asyncpg.Connection:
    """Open one connection (LISTEN, migrations), with the same codecs as the pool."""
    try:
        conn = await asyncpg.connect(dsn, statement_cache_size=statement_cache_size)
    except (*CONNECT_ERRORS, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {exc}",
            retryable=not isinstance(exc, MISCONFIGURED),
        ) from exc
    try:
        await init_connection(conn)
    except BaseException as exc:
        conn.terminate()  # half-open: never leak it
        if is_connection_error(exc) or isinstance(exc, asyncpg.PostgresError):
            raise DatabaseUnavailable(
                f"lost the connection to PostgreSQL at {redact_dsn(dsn)} while setting it up: {exc}"
            ) from exc
        raise
    return conn


# Errors that mean the connection (or the server) is gone or going, not that a statement
# was wrong: the server shutting down (57P01 admin_shutdown, 57P02 crash_shutdown), still
# starting (57P03 cannot_connect_now), a socket reset, and asyncpg's protocol falling out of
# step on a connection the server dropped mid-operation (InternalClientError "cannot switch
# to state ..."). The operation may be retried once a new connection is made.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` is a driver or socket error of a lost or refused connection.

    ``QueryCanceledError`` (a statement timeout) is an OperatorInterventionError too, but it
    says the statement ran too long on a live connection: it is not a lost connection.
    """
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(
        exc, asyncpg.exceptions.QueryCanceledError
    )


# Errors of a statement that lost a race, not of a wrong statement: trying it again later
# is right (a deadlock, a serialization failure, a statement or lock timeout).
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
)

_RAISED_BY_USER = "_conveyor_raised_by_user_code"


def mark_users_error(exc: BaseException, conn: Conn) -> None:
    """Mark ``exc``, raised by user code running on ``conn``, to pass the store untranslated.

    User code (``fn`` of ``ctx.once_in_transaction``, the block of ``store.transaction()``)
    may raise anything, an OSError or a timeout of its own included: that is its error, not
    a lost database. Only an error of the connection itself, now closed, is ours to handle.
    """
    if not (is_connection_error(exc) and _closed(conn)):
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _RAISED_BY_USER, True)


def raised_by_user(exc: BaseException) -> bool:
    """True for an error ``mark_users_error`` marked."""
    return bool(getattr(exc, _RAISED_BY_USER, False))


def _closed(conn: Conn) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # a pool proxy the pool took back: its connection died
        return True


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Turn driver errors into Conveyor's, so nothing above the store sees asyncpg."""
    try:
        yield
    except asyncpg.UndefinedTableError as exc:
        raise SchemaNotReady(
            f"the Conveyor schema is missing ({exc}); run `conveyor migrate`"
        ) from exc
    except BaseException as exc:
        if raised_by_user(exc):
            raise
        if isinstance(exc, CONFLICT_ERRORS):
            raise StoreConflict(f"database conflict, try again: {exc}") from exc
        if isinstance(exc, asyncpg.DataError | asyncpg.CheckViolationError):
            raise RefusedValue(f"the database refused a value: {exc}") from exc
        if is_connection_error(exc):
            raise DatabaseUnavailable(
                f"lost the connection to PostgreSQL ({type(exc).__name__}: {exc})"
            ) from exc
        if isinstance(exc, asyncpg.PostgresError):
            raise StoreError(f"database error: {exc}") from exc
        raise


AcquireObserver = Callable[[float], None]
"""Told how many seconds each acquire from the pool waited (the metrics' pool waits)."""


@asynccontextmanager
async def pooled(pool: asyncpg.Pool, observe: AcquireObserver | None = None) -> AsyncIterator[Conn]:
    """A pooled connection that is discarded, not reused, after a connection error.

    A connection the server dropped mid-statement can be left with its protocol in an
    unknown state; handed out again, it fails the next caller with an InternalClientError.
    Terminated here, the pool opens a fresh one on the next acquire. ``observe`` is told
    how long the acquire waited (a plugin's, so that the store imports no metrics library).
    """
    started = time.perf_counter() if observe is not None else 0.0
    async with pool.acquire() as conn:
        if observe is not None:
            observe(time.perf_counter() - started)
        try:
            yield conn
        except BaseException as exc:
            if raised_by_user(exc):
                raise
            if is_connection_error(exc) or isinstance(exc, asyncio.CancelledError):
                # cancelled mid-statement: the protocol state is unknown as well. A
                # connection the server dropped is already back with the pool (asyncpg
                # detaches it on connection_lost): terminating it then is refused.
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
            raise
