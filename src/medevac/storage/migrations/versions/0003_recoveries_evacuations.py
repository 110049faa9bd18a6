"""recoveries and the evacuation history

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recoveries",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("incident_id", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_recoveries_incident_id", "recoveries", ["incident_id"])
    op.create_index("ix_recoveries_host", "recoveries", ["host"])
    op.create_index("ix_recoveries_started_at", "recoveries", ["started_at"])
    op.create_table(
        "evacuations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("recovery_id", sa.String(128), nullable=False),
        sa.Column("server_id", sa.String(36), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("from_host", sa.String(255), nullable=False),
        sa.Column("to_host", sa.String(255), nullable=True),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.UniqueConstraint("recovery_id", "server_id", name="uq_evacuation_per_recovery"),
    )
    op.create_index("ix_evacuations_recovery_id", "evacuations", ["recovery_id"])
    op.create_index("ix_evacuations_server_id", "evacuations", ["server_id"])
    op.create_index("ix_evacuations_started_at", "evacuations", ["started_at"])


def downgrade() -> None:
    op.drop_table("evacuations")
    op.drop_table("recoveries")
