"""Owner heartbeats: one row per owning process instead of a lease per run.

Revision ID: 0002_owner_heartbeats
Revises: 0001
Create Date: 2026-12-01

A process now renews one ``workflow_owners`` row per ownership round and its
runs name it; ``workflow_handlers.lease_expires_at`` stays (informative, no
longer renewed). Upgrading keeps every run whose lease is still live with its
owner: each such owner gets a row expiring with its latest live lease, so its
runs are adopted no sooner than their leases would have let them be.
Downgrading hands the owners' expiries back to their running handlers' leases.

Types are spelled out here rather than imported from the models, so this
revision keeps creating the same table whatever the models become.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision: str = "0002_owner_heartbeats"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class _Utc(sa.types.TypeDecorator[datetime]):
    """Timestamps as the store keeps them: aware on PostgreSQL, naive UTC text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


_handlers = sa.table(
    "workflow_handlers",
    sa.column("owner_id", sa.String(255)),
    sa.column("status", sa.String(16)),
    sa.column("lease_expires_at", _Utc()),
)
_owners = sa.table(
    "workflow_owners",
    sa.column("owner_id", sa.String(255)),
    sa.column("heartbeat_at", _Utc()),
    sa.column("expires_at", _Utc()),
)


def upgrade() -> None:
    op.create_table(
        "workflow_owners",
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_kind", sa.String(32), nullable=True),
        sa.Column("token_key", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("owner_id", name="pk_workflow_owners"),
    )
    _owners_from_leases()


def _owners_from_leases() -> None:
    """An owners row for each owner still holding a live lease on a running handler."""
    now = datetime.now(timezone.utc)
    h = _handlers.c
    latest = sa.func.max(h.lease_expires_at, type_=_Utc())
    stmt = (
        sa.select(h.owner_id, latest)
        .where(h.status == "running", h.owner_id.is_not(None))
        .group_by(h.owner_id)
    )
    rows = [
        {"owner_id": owner, "heartbeat_at": now, "expires_at": until}
        for owner, until in op.get_bind().execute(stmt)
        if until is not None and until >= now
    ]
    if rows:
        op.get_bind().execute(sa.insert(_owners), rows)


def downgrade() -> None:
    # Each running handler gets its owner's expiry as its lease, as 0001 expects.
    o = _owners.c
    expiry = sa.select(o.expires_at).where(o.owner_id == _handlers.c.owner_id).scalar_subquery()
    op.get_bind().execute(
        sa.update(_handlers)
        .where(_handlers.c.status == "running", _handlers.c.owner_id.is_not(None))
        .values(lease_expires_at=expiry)
    )
    op.drop_table("workflow_owners")
