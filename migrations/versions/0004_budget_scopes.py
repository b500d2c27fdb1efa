"""budgets on any scope and period, attribution (user, tags), alerts; ids scoped to their project (issues 10, 9 item 4)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:20:00

* ``budgets`` becomes dated versions (project, user, tag, period, limit, hard, alerts,
  effective_from, removed): each old budget becomes a project/month budget in force since the
  epoch, with the same limit and hardness.
* ``totals`` is keyed by (project, scope, period, window): each old (project, month) row
  becomes the project's (scope ``''``) month window, unchanged.
* ``holds`` gains ``user``, ``tags``, ``max_completion`` and ``counters`` (NULL for holds made
  before: they reserved their project's month only); ``events`` gains ``user`` and ``tags``,
  and ``call_id`` is unique per project instead of globally.
* ``alerts``: one row per (budget, window, end user, threshold) crossed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
SCOPE = 420


def _new_budgets() -> None:
    op.create_table('budgets',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('user', sa.String(length=200), server_default='', nullable=False),
    sa.Column('tag', sa.String(length=SCOPE), server_default='', nullable=False),
    sa.Column('period', sa.String(length=5), nullable=False),
    sa.Column('limit_units', sa.BigInteger(), nullable=False),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('alerts', sa.String(length=200), nullable=False),
    sa.Column('effective_from', sa.BigInteger(), nullable=False),
    sa.Column('removed', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budgets')),
    sa.UniqueConstraint('project', 'user', 'tag', 'period', 'effective_from',
                        name=op.f('uq_budgets_project_user_tag_period_effective_from'))
    )


def _new_totals() -> None:
    op.create_table('totals',
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('scope', sa.String(length=SCOPE), nullable=False),
    sa.Column('period', sa.String(length=5), nullable=False),
    sa.Column('window', sa.String(length=10), nullable=False),
    sa.Column('settled', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('held', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('project', 'scope', 'period', 'window', name=op.f('pk_totals'))
    )
    op.create_index(op.f('ix_totals_period_window'), 'totals', ['period', 'window'],
                    unique=False)


def upgrade() -> None:
    conn = op.get_bind()
    old_budgets = conn.execute(sa.text(
        "SELECT project, limit_units, hard, updated_at FROM budgets")).all()
    old_totals = conn.execute(sa.text("SELECT project, month, settled, held FROM totals")).all()
    op.drop_table('budgets')
    op.drop_table('totals')
    _new_budgets()
    _new_totals()
    budgets = sa.table('budgets', *(sa.column(c) for c in (
        'project', 'user', 'tag', 'period', 'limit_units', 'hard', 'alerts', 'effective_from',
        'removed', 'created_at')))
    totals = sa.table('totals', *(sa.column(c) for c in (
        'project', 'scope', 'period', 'window', 'settled', 'held')))
    if old_budgets:
        op.bulk_insert(budgets, [  # type: ignore[arg-type]
            {'project': p, 'user': '', 'tag': '', 'period': 'month', 'limit_units': int(limit),
             'hard': bool(hard), 'alerts': '80,100', 'effective_from': 0, 'removed': False,
             'created_at': int(updated)} for p, limit, hard, updated in old_budgets])
    if old_totals:
        op.bulk_insert(totals, [  # type: ignore[arg-type]
            {'project': p, 'scope': '', 'period': 'month', 'window': m, 'settled': int(s),
             'held': int(h)} for p, m, s, h in old_totals])

    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('tags', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('max_completion', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('counters', sa.Text(), nullable=True))
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('tags', sa.Text(), nullable=True))
        batch_op.drop_constraint('uq_events_call_id', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_events_project_call_id'),
                                          ['project', 'call_id'])
        batch_op.create_index(batch_op.f('ix_events_project_at'), ['project', 'at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_events_project_user_at'),
                              ['project', 'user', 'at'], unique=False)

    op.create_table('alerts',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('budget_user', sa.String(length=200), server_default='', nullable=False),
    sa.Column('budget_tag', sa.String(length=SCOPE), server_default='', nullable=False),
    sa.Column('period', sa.String(length=5), nullable=False),
    sa.Column('window', sa.String(length=10), nullable=False),
    sa.Column('user', sa.String(length=200), server_default='', nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('spent_units', sa.BigInteger(), nullable=False),
    sa.Column('limit_units', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts')),
    sa.UniqueConstraint('project', 'budget_user', 'budget_tag', 'period', 'window', 'user',
                        'threshold',
                        name=op.f('uq_alerts_project_budget_user_budget_tag_period_window_user_threshold'))
    )


def downgrade() -> None:
    """Back to one project/month budget per project (the newest project/month version in
    force now is kept; other scopes and periods are dropped) and (project, month) totals."""
    conn = op.get_bind()
    op.drop_table('alerts')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_project_user_at'))
        batch_op.drop_index(batch_op.f('ix_events_project_at'))
        batch_op.drop_constraint(batch_op.f('uq_events_project_call_id'), type_='unique')
        batch_op.create_unique_constraint('uq_events_call_id', ['call_id'])
        batch_op.drop_column('tags')
        batch_op.drop_column('user')
    with op.batch_alter_table('holds', schema=None) as batch_op:
        batch_op.drop_column('counters')
        batch_op.drop_column('max_completion')
        batch_op.drop_column('tags')
        batch_op.drop_column('user')
    rows = conn.execute(sa.text(
        "SELECT project, limit_units, hard, created_at, removed FROM budgets "
        "WHERE \"user\" = '' AND tag = '' AND period = 'month' "
        "ORDER BY project, effective_from")).all()
    newest: dict[str, tuple[int, bool, int, bool]] = {}
    for project, limit, hard, created, removed in rows:
        newest[project] = (int(limit), bool(hard), int(created), bool(removed))
    old_totals = conn.execute(sa.text(
        "SELECT project, \"window\", settled, held FROM totals "
        "WHERE scope = '' AND period = 'month'")).all()
    op.drop_table('totals')
    op.drop_table('budgets')
    op.create_table('budgets',
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('limit_units', sa.BigInteger(), nullable=False),
    sa.Column('hard', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project', name=op.f('pk_budgets'))
    )
    op.create_table('totals',
    sa.Column('project', sa.String(length=200), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('settled', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('held', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('project', 'month', name=op.f('pk_totals'))
    )
    budgets = sa.table('budgets', *(sa.column(c) for c in (
        'project', 'limit_units', 'hard', 'updated_at')))
    totals = sa.table('totals', *(sa.column(c) for c in ('project', 'month', 'settled', 'held')))
    kept = [{'project': p, 'limit_units': limit, 'hard': hard, 'updated_at': created}
            for p, (limit, hard, created, removed) in newest.items() if not removed]
    if kept:
        op.bulk_insert(budgets, kept)  # type: ignore[arg-type]
    if old_totals:
        op.bulk_insert(totals, [  # type: ignore[arg-type]
            {'project': p, 'month': w, 'settled': int(s), 'held': int(h)}
            for p, w, s, h in old_totals])
