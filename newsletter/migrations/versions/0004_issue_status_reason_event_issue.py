"""issue.status_reason and event.issue_id

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_reason', sa.Text(), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('issue_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_event_issue_id', ['issue_id'])


def downgrade() -> None:
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_issue_id')
        batch_op.drop_column('issue_id')
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.drop_column('status_reason')
