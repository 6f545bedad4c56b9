"""managers: the name in Latin letters, for texts to customers who read other languages

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('managers') as batch:
        batch.add_column(sa.Column('name_latin', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('managers') as batch:
        batch.drop_column('name_latin')
