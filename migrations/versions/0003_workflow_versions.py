"""Record the workflow version that started each run.

Revision ID: 0003_workflow_versions
Revises: 0002_owner_heartbeats
Create Date: 2026-12-01

Rows written before this revision keep ``version`` NULL: any process serving
their workflow name may claim and resume them, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_workflow_versions"
down_revision: str | Sequence[str] | None = "0002_owner_heartbeats"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workflow_handlers", sa.Column("version", sa.String(64), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite drops a column by copying the table.
    with op.batch_alter_table("workflow_handlers") as batch:
        batch.drop_column("version")
