"""``vipcare webhooks``: serve the Twilio status-callback and inbound-SMS webhooks."""

from __future__ import annotations

import logging

import typer

from vipcare.cli.common import engine, input_errors, now_utc, settings
from vipcare.console import console


def register(app: typer.Typer) -> None:
    app.command("webhooks")(webhooks)


@input_errors
def webhooks(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="TCP port."),
) -> None:
    """Serve POST /twilio/status and POST /twilio/inbound (signed requests only).

    Needs TWILIO_AUTH_TOKEN and VIPCARE_PUBLIC_URL (the URL Twilio calls, which
    the signatures cover). Opt-out/opt-in keywords come from the contact policy,
    the pre-call lead time from the precall_notice rule.
    """
    import uvicorn

    from notifications.logging import install_masking
    from notifications.webhooks import create_app
    from rules import load_rules

    eng = engine()  # before logging is set up: a missing database is one line, nothing more
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    cfg = settings()
    ruleset = load_rules(cfg.rules_dir)
    policy = ruleset.contact_policy
    app = create_app(
        eng,
        cfg.notifications(),
        clock=now_utc,
        opt_out_keywords=policy.opt_out_keywords,
        opt_in_keywords=policy.opt_in_keywords,
        lead_time=ruleset.precall_lead_time,
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="info", proxy_headers=True)
    token = cfg.twilio_auth_token.get_secret_value() if cfg.twilio_auth_token else ""
    # uvicorn has configured its loggers by now; mask phones and the token in all of them.
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            install_masking(handler, [token])
    console.print(
        f"webhooks for [bold]{cfg.public_url}[/] listening on http://{host}:{port} "
        "(POST /twilio/status, POST /twilio/inbound)",
        highlight=False,
    )
    uvicorn.Server(config).run()
