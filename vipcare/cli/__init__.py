"""The ``vipcare`` command line."""

from __future__ import annotations

import typer

from vipcare.cli import (
    audit_cmds,
    bench_cmds,
    care_cmds,
    crm_cmds,
    messages_cmds,
    ops_cmds,
    qa_cmds,
    rules_cmds,
    system_cmds,
    web_cmds,
)

app = typer.Typer(
    name="vipcare",
    help="VIP customer-care automation for telecom operators.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

system_cmds.register(app)
crm_cmds.register(app)
audit_cmds.register(app)
rules_cmds.register(app)
care_cmds.register(app)
web_cmds.register(app)
messages_cmds.register(app)
qa_cmds.register(app)
ops_cmds.register(app)
bench_cmds.register(app)


def main() -> None:
    app()
