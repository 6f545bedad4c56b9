"""The CRM database: models, sessions, queries, migrations, audit log and ledger."""
