"""sitesetting, brandingasset: branding set in the console (issue 10)

Revision ID: 0120
Revises: 0109
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel.sql.sqltypes


revision = '0120'
down_revision = '0109'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'sitesetting',
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('updated_by', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_table(
        'brandingasset',
        sa.Column('filename', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('filename'),
    )


def downgrade() -> None:
    op.drop_table('brandingasset')
    op.drop_table('sitesetting')
