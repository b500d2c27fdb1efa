"""webhook deliveries of alerts (issue 10)

Table ``alert_deliveries``: one row per (webhook target, alert id), so ``ledger alerts
deliver`` never delivers an alert twice to a target after a 2xx, and two workers for one
target never deliver the same alert at once (a row is claimed by one worker at a time).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_deliveries',
    sa.Column('target', sa.String(length=1000), nullable=False),
    sa.Column('alert_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('delivered_at', sa.BigInteger(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_attempt_at', sa.BigInteger(), nullable=True),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('claimed_until', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('target', 'alert_id', name=op.f('pk_alert_deliveries'))
    )


def downgrade() -> None:
    op.drop_table('alert_deliveries')
