"""delivery: the (issue, status) index gains the batch, so a claim reads only its batch

Revision ID: 0150
Revises: 0117
Create Date: 2026-12-01

claim() and next_due() ask for one batch's pending rows. Through (issue_id, status)
they read every pending row of the issue to find them: each batch of a 1,000,000-
recipient send scanned up to a million rows, so the send slowed as it went (SQLite,
200 batches over 200,000 rows: 3.1 s of index scans, 0.44 s with the batch in the
index; bench/README.md). (issue_id, status, batch) still serves every query that
used (issue_id, status): the counts by status, pending_batches, finish_if_done.
"""
from alembic import op


revision = '0150'
down_revision = '0117'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        # CONCURRENTLY: a release during a running send must not block the workers'
        # writes to a ledger of millions of rows while the index builds.
        with op.get_context().autocommit_block():
            op.create_index('ix_delivery_issue_status_batch', 'delivery',
                            ['issue_id', 'status', 'batch'], postgresql_concurrently=True)
            op.drop_index('ix_delivery_issue_status', table_name='delivery',
                          postgresql_concurrently=True)
        return
    op.create_index('ix_delivery_issue_status_batch', 'delivery',
                    ['issue_id', 'status', 'batch'])
    op.drop_index('ix_delivery_issue_status', table_name='delivery')


def downgrade() -> None:
    op.create_index('ix_delivery_issue_status', 'delivery', ['issue_id', 'status'])
    op.drop_index('ix_delivery_issue_status_batch', table_name='delivery')
