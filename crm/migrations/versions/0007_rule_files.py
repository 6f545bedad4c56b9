"""rule_files: the last good version of each rule file, kept while an edit does not load

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa
import crm.types


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rule_files',
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('file_name', sa.String(length=255), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('accepted_at', crm.types.UTCDateTime(), nullable=True),
        sa.Column('refused_sha256', sa.String(length=64), nullable=True),
        sa.Column('refused_at', crm.types.UTCDateTime(), nullable=True),
        sa.Column('refused_problems', sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_rule_files')),
    )


def downgrade() -> None:
    op.drop_table('rule_files')
