"""indexes the retention purge selects by: deliveries by creation, incidents by closing

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_index("ix_deliveries_created_at", "deliveries", ["created_at"])
    op.create_index("ix_incidents_closed_at", "incidents", ["closed_at"])


def downgrade() -> None:
    op.drop_index("ix_incidents_closed_at", "incidents")
    op.drop_index("ix_deliveries_created_at", "deliveries")
