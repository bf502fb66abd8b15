"""issue.status_reason, event.issue_id, subscriber.track_clicks, click

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


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
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.add_column(sa.Column('track_clicks', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))
    op.create_table(
        'click',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('subscriber_id', sa.Integer(), nullable=False),
        sa.Column('issue_id', sa.Integer(), nullable=False),
        sa.Column('item_id', sa.Integer(), nullable=False),
        sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.UniqueConstraint('subscriber_id', 'issue_id', 'item_id',
                            name='uq_click_subscriber_issue_item'),
    )
    op.create_index('ix_click_subscriber_id', 'click', ['subscriber_id'])
    op.create_index('ix_click_issue_id', 'click', ['issue_id'])
    op.create_index('ix_click_at', 'click', ['at'])


def downgrade() -> None:
    op.drop_table('click')
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.drop_column('track_clicks')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_issue_id')
        batch_op.drop_column('issue_id')
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.drop_column('status_reason')
