"""webhook deliveries of alerts (issue 10)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:20:00
"""

from __future__ import annotations

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled in by its issue's branch


def downgrade() -> None:
    pass
