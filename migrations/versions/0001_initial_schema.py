"""initial schema, with RunAPI's published prices (kimi-k2.5, kimi-k2.6: $0.020 per 1K tokens)

Revision ID: 0001
Revises:
Create Date: 2026-11-25 04:32:49.261977
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('budgets',
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('limit_units', sa.BigInteger(), nullable=False),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project', name=op.f('pk_budgets'))
    )
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('call_id', sa.String(length=64), nullable=True),
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('estimated', sa.Boolean(), nullable=False),
    sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
    sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cached_tokens', sa.BigInteger(), nullable=False),
    sa.Column('est_prompt_tokens', sa.BigInteger(), nullable=True),
    sa.Column('input_price', sa.BigInteger(), nullable=False),
    sa.Column('output_price', sa.BigInteger(), nullable=False),
    sa.Column('cached_price', sa.BigInteger(), nullable=True),
    sa.Column('cost', sa.BigInteger(), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('invoice_id', sa.BigInteger(), nullable=True),
    sa.Column('recorded_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('call_id', name=op.f('uq_events_call_id'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_month_project_id'), ['month', 'project', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_project_month_model'), ['project', 'month', 'model'], unique=False)

    op.create_table('holds',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('input_price', sa.BigInteger(), nullable=False),
    sa.Column('output_price', sa.BigInteger(), nullable=False),
    sa.Column('cached_price', sa.BigInteger(), nullable=True),
    sa.Column('est_prompt_tokens', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holds'))
    )
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_holds_project_month_state_expires_at'), ['project', 'month', 'state', 'expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_holds_state_expires_at'), ['state', 'expires_at'], unique=False)

    op.create_table('invoices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('number', sa.BigInteger(), nullable=False),
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('issued_at', sa.BigInteger(), nullable=False),
    sa.Column('total_units', sa.BigInteger(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoices')),
    sa.UniqueConstraint('number', name=op.f('uq_invoices_number')),
    sa.UniqueConstraint('project', 'month', name=op.f('uq_invoices_project_month'))
    )
    prices = op.create_table('prices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('effective_from', sa.BigInteger(), nullable=False),
    sa.Column('input_price', sa.BigInteger(), nullable=False),
    sa.Column('output_price', sa.BigInteger(), nullable=False),
    sa.Column('cached_price', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prices')),
    sa.UniqueConstraint('model', 'effective_from', name=op.f('uq_prices_model_effective_from'))
    )
    op.create_table('totals',
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('settled', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('held', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('project', 'month', name=op.f('pk_totals'))
    )
    # Prices are integer 10^-7 USD per 1K tokens: 200_000 is $0.020. In force since the epoch.
    op.bulk_insert(prices, [
        {"model": model, "effective_from": 0, "input_price": 200_000, "output_price": 200_000,
         "cached_price": None, "created_at": 0}
        for model in ("kimi-k2.5", "kimi-k2.6")
    ])


def downgrade() -> None:
    op.drop_table('totals')
    op.drop_table('prices')
    op.drop_table('invoices')
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_holds_state_expires_at'))
        batch_op.drop_index(batch_op.f('ix_holds_project_month_state_expires_at'))

    op.drop_table('holds')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_project_month_model'))
        batch_op.drop_index(batch_op.f('ix_events_month_project_id'))

    op.drop_table('events')
    op.drop_table('budgets')
