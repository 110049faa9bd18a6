"""Masakari's segments, their hosts and notifications

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

TZ = sa.DateTime(timezone=True)


def _id() -> sa.Column:  # type: ignore[type-arg]
    serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return sa.Column("id", serial, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "masakari_segments",
        _id(),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("recovery_method", sa.String(32), nullable=False),
        sa.Column("service_type", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=True),
    )
    op.create_index("ix_masakari_segments_created_at", "masakari_segments", ["created_at"])
    op.create_table(
        "masakari_hosts",
        _id(),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("segment_uuid", sa.String(36), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("control_attributes", sa.String(1000), nullable=False),
        sa.Column("reserved", sa.Boolean(), nullable=False),
        sa.Column("on_maintenance", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=True),
    )
    op.create_index("ix_masakari_hosts_segment_uuid", "masakari_hosts", ["segment_uuid"])
    op.create_index("ix_masakari_hosts_created_at", "masakari_hosts", ["created_at"])
    op.create_table(
        "masakari_notifications",
        _id(),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("source_host_uuid", sa.String(36), nullable=False),
        sa.Column("segment_uuid", sa.String(36), nullable=False),
        sa.Column("generated_time", TZ, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("message", sa.String(1000), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=True),
    )
    op.create_index(
        "ix_masakari_notifications_host_type_time",
        "masakari_notifications",
        ["hostname", "type", "generated_time"],
    )
    op.create_index(
        "ix_masakari_notifications_source_host_uuid", "masakari_notifications", ["source_host_uuid"]
    )
    op.create_index(
        "ix_masakari_notifications_segment_uuid", "masakari_notifications", ["segment_uuid"]
    )
    op.create_index(
        "ix_masakari_notifications_created_at", "masakari_notifications", ["created_at"]
    )


def downgrade() -> None:
    op.drop_table("masakari_notifications")
    op.drop_table("masakari_hosts")
    op.drop_table("masakari_segments")
