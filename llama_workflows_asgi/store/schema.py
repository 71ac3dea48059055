"""The database schema: four ``workflow_``-prefixed tables and their metadata.

``metadata`` is public so a host's own Alembic environment can see these
tables (and exclude them, see :func:`exclude_workflow_tables`). The schema
itself is created and upgraded only by this package's migrations
(``llama_workflows_asgi.migrations``), which a test keeps in step with the
models below.

JSON columns are plain ``TEXT`` holding compact JSON the store encodes and
decodes itself, so both dialects store exactly the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

TABLE_PREFIX = "workflow_"
"""Every table (and the Alembic version table) of this package starts with this."""

VERSION_TABLE = "workflow_alembic_version"
"""Alembic's version table for this package's migrations (not ``alembic_version``)."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The package's tables, for a host's Alembic ``target_metadata`` or inspection."""


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp with microseconds, on SQLite and PostgreSQL alike.

    PostgreSQL stores ``TIMESTAMP WITH TIME ZONE``. SQLite has no timestamp
    type: SQLAlchemy stores a fixed-width text form, which sorts correctly only
    if every value is in the same zone, hence the conversion to naive UTC.
    Naive inputs are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base bound to :data:`metadata`."""

    metadata = metadata


class HandlerRow(Base):
    """``workflow_handlers``: one row per handler (the seed's fields plus bookkeeping)."""

    __tablename__ = "workflow_handlers"
    __table_args__ = (
        # Listings page by (started_at, handler_id), optionally filtered first.
        Index(None, "started_at", "handler_id"),
        Index(None, "status", "started_at", "handler_id"),
        Index(None, "workflow_name", "started_at", "handler_id"),
        Index(None, "principal", "started_at", "handler_id"),
    )

    handler_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    workflow_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(64))
    ctx: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    start_event: Mapped[str | None] = mapped_column(Text)
    principal: Mapped[str | None] = mapped_column(String(255))
    idle_since: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Heartbeats list the runs an owner still holds; claims look owners up.
    owner_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # The owner's heartbeat expiry when the run was claimed or created; not
    # renewed and not consulted for adoption (``workflow_owners`` decides).
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    resume_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(128))
    # The workflow version that started the run (NULL on rows from before 0003).
    version: Mapped[str | None] = mapped_column(String(64))


class EventRow(Base):
    """``workflow_events``: the event log, keyed by run and per-run sequence."""

    __tablename__ = "workflow_events"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    event_type: Mapped[str] = mapped_column(String(255))
    internal: Mapped[bool] = mapped_column(Boolean)
    terminal: Mapped[bool] = mapped_column(Boolean)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class InboxRow(Base):
    """``workflow_inbox``: events sent to a run and not consumed yet."""

    __tablename__ = "workflow_inbox"
    # AUTOINCREMENT on SQLite so ids are never reused after the newest entry is
    # consumed: a run may remember which ids it has already seen.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    handler_id: Mapped[str] = mapped_column(String(255), index=True)
    run_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    step: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class OwnerRow(Base):
    """``workflow_owners``: one row per live process that owns runs, renewed every round.

    A run is adoptable once its owner's row has lapsed (``expires_at`` before
    now) or is missing, or its liveness token is provably free. ``token_kind``
    names that token (``advisory_lock`` on PostgreSQL, ``flock`` beside a
    SQLite file, ``process`` in memory) and ``token_key`` is the advisory
    lock's key, for an operator looking the session up in ``pg_locks``.
    """

    __tablename__ = "workflow_owners"

    owner_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    token_kind: Mapped[str | None] = mapped_column(String(32))
    token_key: Mapped[int | None] = mapped_column(BigInteger)


# Core handles on the tables: the store issues Core statements, not ORM sessions.
handlers_table = cast(Table, HandlerRow.__table__)
events_table = cast(Table, EventRow.__table__)
inbox_table = cast(Table, InboxRow.__table__)
owners_table = cast(Table, OwnerRow.__table__)


def is_workflow_table(name: str | None) -> bool:
    """Whether a table name belongs to this package (``workflow_`` prefix)."""
    return name is not None and name.startswith(TABLE_PREFIX)


def only_workflow_tables(
    name: str | None, type_: str, parent_names: Mapping[str, str | None]
) -> bool:
    """Alembic ``include_name`` hook keeping only this package's tables."""
    return type_ != "table" or is_workflow_table(name)


def exclude_workflow_tables(
    name: str | None, type_: str, parent_names: Mapping[str, str | None]
) -> bool:
    """Alembic ``include_name`` hook for a host: ignore this package's tables."""
    return type_ != "table" or not is_workflow_table(name)
