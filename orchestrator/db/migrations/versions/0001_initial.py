"""Initial schema: architectures, software envs, nodes, devices, jobs, tasks, trials,
recommendations.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Types are spelled out here (not imported from the models) so this revision never changes when
the models do. JSON documents are JSONB on PostgreSQL; enums are VARCHAR(32) values.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "architectures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("vendor", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_architectures")),
        sa.UniqueConstraint("name", name=op.f("uq_architectures_name")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("kernel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("spec", JSON_DOC, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_status"), ["status"], unique=False)

    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("ray_node_id", sa.String(length=64), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("host", name=op.f("uq_nodes_host")),
    )
    op.create_table(
        "software_envs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env_key", sa.String(length=512), nullable=False),
        sa.Column("driver", sa.String(length=64), nullable=True),
        sa.Column("cuda", sa.String(length=64), nullable=True),
        sa.Column("rocm", sa.String(length=64), nullable=True),
        sa.Column("torch", sa.String(length=64), nullable=False),
        sa.Column("triton", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_software_envs")),
        sa.UniqueConstraint("env_key", name=op.f("uq_software_envs_env_key")),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_key", sa.String(length=512), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("arch_id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", JSON_DOC, nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["arch_id"], ["architectures.id"], name=op.f("fk_devices_arch_id_architectures")
        ),
        sa.ForeignKeyConstraint(
            ["env_id"], ["software_envs.id"], name=op.f("fk_devices_env_id_software_envs")
        ),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name=op.f("fk_devices_node_id_nodes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("device_key", name=op.f("uq_devices_device_key")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("arch", sa.String(length=64), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("kernel", sa.String(length=32), nullable=False),
        sa.Column("problem", JSON_DOC, nullable=False),
        sa.Column("bucket_key", sa.String(length=128), nullable=False),
        sa.Column("config", JSON_DOC, nullable=True),
        sa.Column("recorded_median_us", sa.Float(), nullable=True),
        sa.Column("node_host", sa.String(length=255), nullable=True),
        sa.Column("recommendation_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_tasks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("job_id", "arch", "idx", name=op.f("uq_tasks_job_id")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_status"), ["status"], unique=False)

    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("env_id", sa.Integer(), nullable=False),
        sa.Column("arch_id", sa.Integer(), nullable=False),
        sa.Column("kernel", sa.String(length=32), nullable=False),
        sa.Column("problem", JSON_DOC, nullable=False),
        sa.Column("bucket_key", sa.String(length=128), nullable=False),
        sa.Column("config", JSON_DOC, nullable=False),
        sa.Column("config_hash", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("median_us", sa.Float(), nullable=True),
        sa.Column("timing", JSON_DOC, nullable=True),
        sa.Column("validation", JSON_DOC, nullable=True),
        sa.Column("validation_passed", sa.Boolean(), nullable=True),
        sa.Column("compile_s", sa.Float(), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["arch_id"], ["architectures.id"], name=op.f("fk_trials_arch_id_architectures")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_trials_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["env_id"], ["software_envs.id"], name=op.f("fk_trials_env_id_software_envs")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_trials_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_trials_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint("task_id", "env_id", "config_hash", name=op.f("uq_trials_task_id")),
    )
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trials_job_id"), ["job_id"], unique=False)

    op.create_table(
        "recommendations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kernel", sa.String(length=32), nullable=False),
        sa.Column("arch_id", sa.Integer(), nullable=False),
        sa.Column("bucket_key", sa.String(length=128), nullable=False),
        sa.Column("bucket", JSON_DOC, nullable=False),
        sa.Column("env_id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("gpu_name", sa.String(length=128), nullable=False),
        sa.Column("config", JSON_DOC, nullable=False),
        sa.Column("median_us", sa.Float(), nullable=False),
        sa.Column("default_median_us", sa.Float(), nullable=True),
        sa.Column("speedup_vs_default", sa.Float(), nullable=True),
        sa.Column("noise", sa.Float(), nullable=True),
        sa.Column("validated", sa.Boolean(), nullable=False),
        sa.Column("withdrawn", sa.Boolean(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["arch_id"], ["architectures.id"], name=op.f("fk_recommendations_arch_id_architectures")
        ),
        sa.ForeignKeyConstraint(
            ["env_id"], ["software_envs.id"], name=op.f("fk_recommendations_env_id_software_envs")
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_recommendations_trial_id_trials")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recommendations")),
        sa.UniqueConstraint(
            "kernel", "arch_id", "bucket_key", "env_id", name=op.f("uq_recommendations_kernel")
        ),
    )


def downgrade() -> None:
    op.drop_table("recommendations")
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trials_job_id"))

    op.drop_table("trials")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_status"))
        batch_op.drop_index(batch_op.f("ix_tasks_job_id"))

    op.drop_table("tasks")
    op.drop_table("devices")
    op.drop_table("software_envs")
    op.drop_table("nodes")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_status"))

    op.drop_table("jobs")
    op.drop_table("architectures")
