"""webhook_receipt: provider events acted on once (issue 8)

Revision ID: 0118
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


revision = '0118'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhookreceipt',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.UniqueConstraint('provider', 'key', name='uq_webhook_receipt'),
    )
    op.create_index('ix_webhookreceipt_at', 'webhookreceipt', ['at'])


def downgrade() -> None:
    op.drop_index('ix_webhookreceipt_at', table_name='webhookreceipt')
    op.drop_table('webhookreceipt')
