"""events.reasoning_tokens: the reasoning tokens a server reports (issue 9 item 6)

They stay inside completion_tokens for pricing; the column only records them. NULL where the
server did not report them (and for every call recorded before this revision).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reasoning_tokens', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('reasoning_tokens')
