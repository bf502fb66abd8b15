"""inboundmessage: mail that came back, recorded once; delivery.message_id index

Revision ID: 0108
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0108'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'inboundmessage',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('ref', sa.String(length=255), nullable=False, server_default=''),
        sa.Column('source', sa.String(length=32), nullable=False, server_default=''),
        sa.Column('outcome', sa.String(length=32), nullable=False, server_default=''),
        sa.Column('subscriber_id', sa.Integer(), nullable=True),
        sa.Column('issue_id', sa.Integer(), nullable=True),
        sa.Column('detail', sa.String(length=1000), nullable=False, server_default=''),
        sa.Column('received_at', sa.DateTime(), nullable=False),
    )
    op.create_index('ix_inboundmessage_key', 'inboundmessage', ['key'], unique=True)
    op.create_index('ix_inboundmessage_outcome', 'inboundmessage', ['outcome'])
    op.create_index('ix_inboundmessage_subscriber_id', 'inboundmessage', ['subscriber_id'])
    op.create_index('ix_inboundmessage_issue_id', 'inboundmessage', ['issue_id'])
    op.create_index('ix_inboundmessage_received_at', 'inboundmessage', ['received_at'])
    # A DSN that quotes our Message-ID finds its ledger row without a table scan.
    op.create_index('ix_delivery_message_id', 'delivery', ['message_id'])


def downgrade() -> None:
    op.drop_index('ix_delivery_message_id', table_name='delivery')
    op.drop_table('inboundmessage')
