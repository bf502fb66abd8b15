"""issue.local_send_date and local_send_time: delivery at a wall time in each reader's zone

Revision ID: 0140
Revises: 0110
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0140'
down_revision = '0110'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('local_send_date', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('local_send_time', sa.String(length=5), nullable=False,
                                      server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.drop_column('local_send_time')
        batch_op.drop_column('local_send_date')
