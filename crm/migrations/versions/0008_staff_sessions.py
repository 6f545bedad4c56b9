"""staff_sessions: workspace sessions kept server-side, so that they can be ended;
outbound_messages.variables: what a queued text was rendered with, to render it again

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
import crm.types


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('staff_sessions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('manager_id', sa.Integer(), nullable=False),
    sa.Column('csrf', sa.String(length=64), nullable=False),
    sa.Column('created_at', crm.types.UTCDateTime(), nullable=False),
    sa.Column('expires_at', crm.types.UTCDateTime(), nullable=False),
    sa.Column('ended_at', crm.types.UTCDateTime(), nullable=True),
    sa.Column('end_reason', sa.String(length=24), nullable=True),
    sa.CheckConstraint("end_reason IS NULL OR end_reason IN ('signed_out', 'password_changed', 'role_changed')", name=op.f('ck_staff_sessions_end_reason')),
    sa.ForeignKeyConstraint(['manager_id'], ['managers.id'], name=op.f('fk_staff_sessions_manager_id_managers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_staff_sessions_token_hash'))
    )
    with op.batch_alter_table('staff_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_staff_sessions_expires', ['expires_at'], unique=False)
        batch_op.create_index('ix_staff_sessions_manager', ['manager_id', 'ended_at'], unique=False)
    with op.batch_alter_table('outbound_messages') as batch_op:
        batch_op.add_column(sa.Column('variables', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbound_messages') as batch_op:
        batch_op.drop_column('variables')
    with op.batch_alter_table('staff_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_staff_sessions_manager')
        batch_op.drop_index('ix_staff_sessions_expires')
    op.drop_table('staff_sessions')
