"""issue.subject, item.excerpt, item.image_url, item.image_alt (the digest email, issue 9)

Revision ID: 0109
Revises: 0140
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0109'
down_revision = '0140'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subject', sa.String(length=200), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('excerpt', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('image_url', sa.String(length=2000), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('image_alt', sa.String(length=500), nullable=False,
                                      server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.drop_column('image_alt')
        batch_op.drop_column('image_url')
        batch_op.drop_column('excerpt')
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.drop_column('subject')
