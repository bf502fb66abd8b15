"""import_job, editor roles and sessions; indexes for finding subscribers

Revision ID: 0110
Revises: 0108
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


revision = '0110'
down_revision = '0108'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('editor', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=False,
                                      server_default='editor'))
    # Before roles every editor could do everything: they stay able to (owners).
    op.execute("UPDATE editor SET role = 'owner'")
    op.create_table(
        'editorsession',
        sa.Column('id', sa.String(length=32), primary_key=True),
        sa.Column('editor_id', sa.Integer(), sa.ForeignKey('editor.id'), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('last_seen_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('ip', sa.String(length=64), nullable=False, server_default=''),
        sa.Column('user_agent', sa.String(length=300), nullable=False, server_default=''),
        sa.Column('revoked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_index('ix_editorsession_editor_id', 'editorsession', ['editor_id'])
    op.create_table(
        'issueundo',
        sa.Column('issue_id', sa.Integer(), sa.ForeignKey('issue.id'), primary_key=True),
        sa.Column('label', sa.String(length=300), nullable=False, server_default=''),
        sa.Column('snapshot', sa.Text(), nullable=False),
        sa.Column('after', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    )
    op.create_table(
        'importjob',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('editor_id', sa.Integer(), nullable=True),
        sa.Column('filename', sa.String(length=200), nullable=False, server_default=''),
        sa.Column('status', sa.String(length=16), nullable=False, server_default='queued'),
        sa.Column('confirmed', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('total', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('done', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('added', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('rejected', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('errors_csv', sa.Text(), nullable=False, server_default=''),
        sa.Column('message', sa.String(length=1000), nullable=False, server_default=''),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )
    # Sign-up date filters on the subscribers screen.
    op.create_index('ix_subscriber_created_at', 'subscriber', ['created_at'])
    # "Find ana@" in the console is a substring search: on PostgreSQL, trigram indexes
    # answer it from the index instead of reading every subscriber (pg_trgm is a
    # trusted extension, so the database owner may create it).
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
        op.execute('CREATE INDEX IF NOT EXISTS ix_subscriber_email_trgm ON subscriber '
                   'USING gin (email gin_trgm_ops)')
        op.execute('CREATE INDEX IF NOT EXISTS ix_subscriber_name_trgm ON subscriber '
                   'USING gin (lower(name) gin_trgm_ops)')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP INDEX IF EXISTS ix_subscriber_name_trgm')
        op.execute('DROP INDEX IF EXISTS ix_subscriber_email_trgm')
    op.drop_index('ix_subscriber_created_at', 'subscriber')
    op.drop_table('importjob')
    op.drop_table('issueundo')
    op.drop_index('ix_editorsession_editor_id', 'editorsession')
    op.drop_table('editorsession')
    with op.batch_alter_table('editor', schema=None) as batch_op:
        batch_op.drop_column('role')
