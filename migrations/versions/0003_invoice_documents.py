"""invoices as documents: issuer, customers, credit notes; a voided month can be issued again

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 17:00:00

``invoices`` gains ``state`` (``issued`` | ``void``) and ``voided_at``; the unique
(project, month) constraint becomes a partial unique index over issued invoices only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

ISSUED = sa.text("state = 'issued'")


def upgrade() -> None:
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=10), server_default='issued',
                                      nullable=False))
        batch_op.add_column(sa.Column('voided_at', sa.BigInteger(), nullable=True))
        batch_op.drop_constraint('uq_invoices_project_month', type_='unique')
    op.create_index('ix_invoices_project_month_issued', 'invoices', ['project', 'month'],
                    unique=True, sqlite_where=ISSUED, postgresql_where=ISSUED)
    op.create_table('credit_notes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('number', sa.BigInteger(), nullable=False),
    sa.Column('invoice_number', sa.BigInteger(), nullable=False),
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('issued_at', sa.BigInteger(), nullable=False),
    sa.Column('total_units', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credit_notes')),
    sa.UniqueConstraint('number', name=op.f('uq_credit_notes_number')),
    sa.UniqueConstraint('invoice_number', name=op.f('uq_credit_notes_invoice_number'))
    )
    op.create_table('issuer',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('tax_id', sa.String(length=100), nullable=False),
    sa.Column('payment_terms_days', sa.Integer(), nullable=False),
    sa.Column('payment_details', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_issuer'))
    )
    op.create_table('customers',
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('address', sa.Text(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('tax_id', sa.String(length=100), nullable=False),
    sa.Column('tax_rate', sa.BigInteger(), nullable=False),
    sa.Column('tax_name', sa.String(length=50), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project', name=op.f('pk_customers'))
    )


def downgrade() -> None:
    op.drop_table('customers')
    op.drop_table('issuer')
    op.drop_table('credit_notes')
    op.drop_index('ix_invoices_project_month_issued', table_name='invoices')
    op.execute("DELETE FROM invoices WHERE state <> 'issued'")
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_invoices_project_month', ['project', 'month'])
        batch_op.drop_column('voided_at')
        batch_op.drop_column('state')
