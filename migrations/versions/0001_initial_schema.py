"""Initial schema: handlers, their event logs and their inboxes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Types are spelled out here rather than imported from the models, so this
revision keeps creating the same tables whatever the models become.
Timestamps are ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL; on SQLite the
store writes them as naive UTC text.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    _create_handlers()
    _create_events()
    _create_inbox()


def _create_handlers() -> None:
    op.create_table(
        "workflow_handlers",
        sa.Column("handler_id", sa.String(255), nullable=False),
        sa.Column("workflow_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("ctx", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("started_at", nullable=False),
        _timestamp("updated_at", nullable=True),
        _timestamp("completed_at", nullable=True),
        sa.Column("start_event", sa.Text(), nullable=True),
        sa.Column("principal", sa.String(255), nullable=True),
        _timestamp("idle_since", nullable=True),
        sa.Column("owner_id", sa.String(255), nullable=True),
        _timestamp("lease_expires_at", nullable=True),
        sa.Column("resume_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("request_hash", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("handler_id", name="pk_workflow_handlers"),
        sa.UniqueConstraint("idempotency_key", name="uq_workflow_handlers_idempotency_key"),
    )
    # Listings page by (started_at, handler_id), optionally filtered first;
    # lease renewal and owner listing look rows up by owner.
    op.create_index(
        "ix_workflow_handlers_started_at_handler_id",
        "workflow_handlers",
        ["started_at", "handler_id"],
    )
    op.create_index(
        "ix_workflow_handlers_status_started_at_handler_id",
        "workflow_handlers",
        ["status", "started_at", "handler_id"],
    )
    op.create_index(
        "ix_workflow_handlers_workflow_name_started_at_handler_id",
        "workflow_handlers",
        ["workflow_name", "started_at", "handler_id"],
    )
    op.create_index(
        "ix_workflow_handlers_principal_started_at_handler_id",
        "workflow_handlers",
        ["principal", "started_at", "handler_id"],
    )
    op.create_index("ix_workflow_handlers_owner_id", "workflow_handlers", ["owner_id"])


def _create_events() -> None:
    op.create_table(
        "workflow_events",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("terminal", sa.Boolean(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("run_id", "sequence", name="pk_workflow_events"),
    )


def _create_inbox() -> None:
    op.create_table(
        "workflow_inbox",
        # BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY AUTOINCREMENT on SQLite (ids never reused).
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("handler_id", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("step", sa.String(255), nullable=True),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_inbox"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_workflow_inbox_handler_id", "workflow_inbox", ["handler_id"])


def downgrade() -> None:
    op.drop_index("ix_workflow_inbox_handler_id", table_name="workflow_inbox")
    op.drop_table("workflow_inbox")
    op.drop_table("workflow_events")
    for name in (
        "ix_workflow_handlers_owner_id",
        "ix_workflow_handlers_principal_started_at_handler_id",
        "ix_workflow_handlers_workflow_name_started_at_handler_id",
        "ix_workflow_handlers_status_started_at_handler_id",
        "ix_workflow_handlers_started_at_handler_id",
    ):
        op.drop_index(name, table_name="workflow_handlers")
    op.drop_table("workflow_handlers")
