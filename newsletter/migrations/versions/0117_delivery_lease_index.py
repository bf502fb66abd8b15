"""delivery: partial index on leases held (for the sweep); no foreign keys (for planning)

Revision ID: 0117
Revises: 0120
Create Date: 2026-12-01

The ledger's two foreign keys cost two trigger calls per row written: measured, half
the time of planning a send on PostgreSQL (100,000 rows: 4.6 s of 9 s on a loaded
machine, see bench/README.md). Rows are only written by plan_send's INSERT ... SELECT
from the issue and subscriber tables themselves, and neither table deletes rows
(subscribers are anonymised, issues cancelled), so the keys guarded nothing.
"""
from alembic import op
import sqlalchemy as sa


revision = '0117'
down_revision = '0120'
branch_labels = None
depends_on = None

# SQLite's foreign keys have no names; this names them so batch mode can drop them.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
FOREIGN_KEYS = (('issue_id', 'issue'), ('subscriber_id', 'subscriber'))


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('delivery', recreate='always',
                                  naming_convention=NAMING) as batch_op:
            for column, table in FOREIGN_KEYS:
                batch_op.drop_constraint(_fk_name(column, table), type_='foreignkey')
    else:
        for column, table in FOREIGN_KEYS:
            op.drop_constraint(_fk_name(column, table), 'delivery', type_='foreignkey')
    # Only rows a worker holds right now (a few batches' worth), however large the
    # ledger grows: the sweep finds expired leases without reading the table.
    op.create_index(
        'ix_delivery_lease_held', 'delivery', ['lease_until'],
        postgresql_where=sa.text("status = 'sending'"),
        sqlite_where=sa.text("status = 'sending'"),
    )


def _fk_name(column: str, table: str) -> str:
    if op.get_bind().dialect.name == 'sqlite':
        return f'fk_delivery_{column}_{table}'  # what NAMING gives an unnamed one
    return f'delivery_{column}_fkey'  # PostgreSQL's own name


def downgrade() -> None:
    op.drop_index('ix_delivery_lease_held', table_name='delivery')
    with op.batch_alter_table('delivery', recreate='always') as batch_op:
        for column, table in FOREIGN_KEYS:
            batch_op.create_foreign_key(_fk_name(column, table), table, [column], ['id'])
