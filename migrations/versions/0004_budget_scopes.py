"""budgets on any scope and period, attribution (user, tags), alerts; ids scoped to their project (issues 10, 9 item 4)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:20:00
"""

from __future__ import annotations

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled in by its issue's branch


def downgrade() -> None:
    pass
