"""delivery: partial index on leases held, for the sweep

Revision ID: 0117
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0117'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only rows a worker holds right now (a few batches' worth), however large the
    # ledger grows: the sweep finds expired leases without reading the table.
    op.create_index(
        'ix_delivery_lease_held', 'delivery', ['lease_until'],
        postgresql_where=sa.text("status = 'sending'"),
        sqlite_where=sa.text("status = 'sending'"),
    )


def downgrade() -> None:
    op.drop_index('ix_delivery_lease_held', table_name='delivery')
