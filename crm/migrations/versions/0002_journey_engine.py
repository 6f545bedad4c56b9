"""journey engine: loyalty points, expiring messages, care tasks, grace endings

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import crm.types


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

MESSAGE_STATUSES_OLD = ("queued", "sending", "sent", "delivered", "undelivered", "failed", "suppressed")
MESSAGE_STATUSES = (*MESSAGE_STATUSES_OLD, "expired")
TASK_KINDS_OLD = ("callback", "plan_fit", "grace_followup", "birthday")
TASK_KINDS = (*TASK_KINDS_OLD, "care")
GRACE_STATUSES_OLD = ("open", "repaid", "suspended")
GRACE_STATUSES = (*GRACE_STATUSES_OLD, "expired", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _recheck(table: str, name: str, column: str, values: tuple[str, ...]) -> None:
    with op.batch_alter_table(table) as batch:
        batch.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
        batch.create_check_constraint(name, _in(column, values))


def upgrade() -> None:
    with op.batch_alter_table('customers') as batch:
        batch.add_column(sa.Column('points', sa.Integer(), server_default='0', nullable=False))
        batch.create_check_constraint('points', 'points >= 0')
    with op.batch_alter_table('outbound_messages') as batch:
        batch.add_column(sa.Column('valid_until', crm.types.UTCDateTime(), nullable=True))
    _recheck('outbound_messages', 'status', 'status', MESSAGE_STATUSES)
    _recheck('call_tasks', 'kind', 'kind', TASK_KINDS)
    _recheck('grace_periods', 'status', 'status', GRACE_STATUSES)


def downgrade() -> None:
    _recheck('grace_periods', 'status', 'status', GRACE_STATUSES_OLD)
    _recheck('call_tasks', 'kind', 'kind', TASK_KINDS_OLD)
    _recheck('outbound_messages', 'status', 'status', MESSAGE_STATUSES_OLD)
    with op.batch_alter_table('outbound_messages') as batch:
        batch.drop_column('valid_until')
    with op.batch_alter_table('customers') as batch:
        batch.drop_constraint(op.f("ck_customers_points"), type_="check")
        batch.drop_column('points')
