"""``vipcare web`` (the account-manager workspace) and ``vipcare webhooks`` (Twilio only)."""

from __future__ import annotations

import logging

import typer

from vipcare.cli.common import engine, input_errors, live_ruleset, now_utc, settings
from vipcare.console import console


def register(app: typer.Typer) -> None:
    app.command("web")(web)
    app.command("webhooks")(webhooks)


def _mask_logs(secrets: list[str]) -> None:
    from notifications.logging import install_masking

    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            install_masking(handler, secrets)


@input_errors
def web(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
) -> None:
    """Serve the account-manager workspace (My day, tasks, team, call QA).

    Managers sign in with their manager id and the password set by
    `vipcare managers set-password ID`. When TWILIO_AUTH_TOKEN and
    VIPCARE_PUBLIC_URL are set, the Twilio webhooks (/twilio/...) are served too.
    """
    import uvicorn

    from notifications.logging import twilio_secrets
    from notifications.webhooks import create_app as create_webhooks
    from vipcare.web import Dispatcher, create_app
    from vipcare.web.serve import server_options

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = settings()
    eng = engine()
    ruleset = live_ruleset(eng)  # a refused edit is warned about; its last good version runs
    workspace = create_app(eng, cfg, clock=now_utc, ruleset=ruleset)
    hooks = None
    token = cfg.twilio_auth_token.get_secret_value() if cfg.twilio_auth_token else ""
    if token and cfg.public_url:
        policy = ruleset.contact_policy
        hooks = create_webhooks(
            eng,
            cfg.notifications(),
            clock=now_utc,
            opt_out_keywords=policy.opt_out_keywords,
            opt_in_keywords=policy.opt_in_keywords,
            lead_time=ruleset.precall_lead_time,
        )
    config = uvicorn.Config(
        Dispatcher(workspace, hooks), host=host, port=port, log_level="info", **server_options(cfg)
    )
    secret = cfg.web_secret.get_secret_value() if cfg.web_secret else ""
    _mask_logs([*twilio_secrets(cfg.notifications()), *([secret] if secret else [])])
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    console.print(
        f"workspace listening on [bold]{url}[/]"
        + (" (and the Twilio webhooks under /twilio/)" if hooks else ""),
        highlight=False,
    )
    uvicorn.Server(config).run()


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

    from notifications.logging import install_masking, twilio_secrets
    from notifications.webhooks import create_app
    from vipcare.web.serve import server_options

    eng = engine()  # before logging is set up: a missing database is one line, nothing more
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    cfg = settings()
    ruleset = live_ruleset(eng)
    policy = ruleset.contact_policy
    app = create_app(
        eng,
        cfg.notifications(),
        clock=now_utc,
        opt_out_keywords=policy.opt_out_keywords,
        opt_in_keywords=policy.opt_in_keywords,
        lead_time=ruleset.precall_lead_time,
    )
    # the signatures cover VIPCARE_PUBLIC_URL, not a forwarded host: no proxy header matters
    config = uvicorn.Config(app, host=host, port=port, log_level="info", **server_options(cfg))
    # uvicorn has configured its loggers by now; mask phones and the secrets in all of them.
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            install_masking(handler, twilio_secrets(cfg.notifications()))
    console.print(
        f"webhooks for [bold]{cfg.public_url}[/] listening on http://{host}:{port} "
        "(POST /twilio/status, POST /twilio/inbound)",
        highlight=False,
    )
    uvicorn.Server(config).run()
