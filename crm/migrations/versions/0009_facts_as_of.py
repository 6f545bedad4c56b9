"""facts as of their own time: the balances feed history, when facts arrived, real posting times

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

from crm.types import Money, UTCDateTime


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'balance_facts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('as_of', UTCDateTime(), nullable=False),
        sa.Column('balance', Money(2), nullable=False),
        sa.Column('received_at', UTCDateTime(), nullable=False),
        sa.Column('source', sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ['customer_id'],
            ['customers.id'],
            name=op.f('fk_balance_facts_customer_id_customers'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_balance_facts')),
        sa.UniqueConstraint('customer_id', 'as_of', name=op.f('uq_balance_facts_customer_id_as_of')),
    )
    op.create_index('ix_balance_facts_received', 'balance_facts', ['received_at'], unique=False)
    with op.batch_alter_table('customers') as batch:
        batch.add_column(sa.Column('balance_received_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('status_since', UTCDateTime(), nullable=True))
        batch.create_index('ix_customers_balance_received', ['balance_received_at'], unique=False)
    with op.batch_alter_table('monthly_usage') as batch:
        batch.add_column(sa.Column('received_at', UTCDateTime(), nullable=True))
    with op.batch_alter_table('credit_ledger') as batch:
        batch.add_column(sa.Column('care_day', sa.Date(), nullable=True))
        batch.create_index('ix_credit_ledger_created', ['created_at'], unique=False)
    # A balance already stamped by the feed becomes the first row of its history.
    op.execute(
        'INSERT INTO balance_facts (customer_id, as_of, balance, received_at, source) '
        'SELECT id, balance_as_of, balance, balance_as_of, \'before revision 0007\' '
        'FROM customers WHERE balance_as_of IS NOT NULL'
    )
    op.execute(
        'UPDATE customers SET balance_received_at = balance_as_of WHERE balance_as_of IS NOT NULL'
    )


def downgrade() -> None:
    with op.batch_alter_table('credit_ledger') as batch:
        batch.drop_index('ix_credit_ledger_created')
        batch.drop_column('care_day')
    with op.batch_alter_table('monthly_usage') as batch:
        batch.drop_column('received_at')
    with op.batch_alter_table('customers') as batch:
        batch.drop_index('ix_customers_balance_received')
        batch.drop_column('status_since')
        batch.drop_column('balance_received_at')
    op.drop_index('ix_balance_facts_received', table_name='balance_facts')
    op.drop_table('balance_facts')
