"""Withdrawn reason and time on recommendations; index for result queries by kernel/arch/status.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Validate jobs withdraw a recommendation that fails on some node; the dashboard shows why.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recommendations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("withdrawn_reason", sa.Text(), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index(
            "ix_trials_kernel_arch_status", ["kernel", "arch_id", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_kernel_arch_status")
    with op.batch_alter_table("recommendations", schema=None) as batch_op:
        batch_op.drop_column("withdrawn_at")
        batch_op.drop_column("withdrawn_reason")
