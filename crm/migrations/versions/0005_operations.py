"""operations: claim leases on messages, job runs, the scheduler's lease, job days, job store

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
import crm.types


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

RUN_STATUSES = ("running", "succeeded", "failed", "skipped")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table('outbound_messages') as batch:
        batch.add_column(sa.Column('claimed_by', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('claimed_at', crm.types.UTCDateTime(), nullable=True))
        batch.create_index('ix_outbound_messages_expiry', ['status', 'valid_until'], unique=False)
    op.create_table(
        'job_runs',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('care_day', sa.Date(), nullable=True),
        sa.Column('shard', sa.String(length=16), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('started_at', crm.types.UTCDateTime(), nullable=False),
        sa.Column('finished_at', crm.types.UTCDateTime(), nullable=True),
        sa.Column('owner', sa.String(length=200), nullable=True),
        sa.Column('details', sa.JSON(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.CheckConstraint(_in('status', RUN_STATUSES), name=op.f('ck_job_runs_status')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_job_runs')),
    )
    op.create_index('ix_job_runs_name', 'job_runs', ['kind', 'name', 'started_at'], unique=False)
    op.create_table(
        'scheduler_lease',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('acquired_at', crm.types.UTCDateTime(), nullable=False),
        sa.Column('heartbeat_at', crm.types.UTCDateTime(), nullable=False),
        sa.Column('expires_at', crm.types.UTCDateTime(), nullable=False),
        sa.Column('released_at', crm.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduler_lease')),
    )
    op.create_table(
        'job_days',
        sa.Column('job', sa.String(length=64), nullable=False),
        sa.Column('last_day', sa.Date(), nullable=False),
        sa.Column('completed_at', crm.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('job', name=op.f('pk_job_days')),
    )
    op.create_table(
        'scheduler_jobs',
        sa.Column('id', sa.Unicode(length=191), nullable=False),
        sa.Column('next_run_time', sa.Float(precision=25), nullable=True),
        sa.Column('job_state', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_scheduler_jobs')),
    )
    op.create_index(
        op.f('ix_scheduler_jobs_next_run_time'), 'scheduler_jobs', ['next_run_time'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_scheduler_jobs_next_run_time'), table_name='scheduler_jobs')
    op.drop_table('scheduler_jobs')
    op.drop_table('job_days')
    op.drop_table('scheduler_lease')
    op.drop_index('ix_job_runs_name', table_name='job_runs')
    op.drop_table('job_runs')
    with op.batch_alter_table('outbound_messages') as batch:
        batch.drop_index('ix_outbound_messages_expiry')
        batch.drop_column('claimed_at')
        batch.drop_column('claimed_by')
