"""planned maintenances and their servers

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "maintenances",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("open_host", sa.String(255), nullable=True, unique=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("deadline", TZ, nullable=True),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("started_by", sa.String(255), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("ended_by", sa.String(255), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_maintenances_host", "maintenances", ["host"])
    op.create_index("ix_maintenances_started_at", "maintenances", ["started_at"])
    op.create_table(
        "maintenance_servers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("maintenance_id", sa.String(36), nullable=False),
        sa.Column("server_id", sa.String(36), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("ha", sa.Boolean(), nullable=False),
        sa.Column("answer", sa.String(16), nullable=True),
        sa.Column("answered_at", TZ, nullable=True),
        sa.Column("answered_by", sa.String(255), nullable=True),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("to_host", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.UniqueConstraint("maintenance_id", "server_id", name="uq_server_per_maintenance"),
    )
    op.create_index(
        "ix_maintenance_servers_maintenance_id", "maintenance_servers", ["maintenance_id"]
    )
    op.create_index("ix_maintenance_servers_server_id", "maintenance_servers", ["server_id"])


def downgrade() -> None:
    op.drop_table("maintenance_servers")
    op.drop_table("maintenances")
