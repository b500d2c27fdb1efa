"""proxy keys, stored as hashes (issue 13)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:20:00
"""

from __future__ import annotations

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled in by its issue's branch


def downgrade() -> None:
    pass
