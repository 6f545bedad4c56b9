"""The Twilio webhooks: delivery status callbacks and inbound SMS (STOP / TD / 退订 / START).

A small Starlette app. Every request must carry a valid ``X-Twilio-Signature``
computed over the *public* URL Twilio called (``VIPCARE_PUBLIC_URL`` + path +
query) and the form parameters; anything else gets 403 before the database is
touched. Bad input answers 4xx with a short reason, never 500: Twilio logs
those and an operator can read them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from crm import consent
from crm.audit import Actor
from crm.db import transaction
from crm.errors import InvalidTransition, NotFound
from crm.models import Customer
from crm.phones import InvalidPhone, mask, to_e164
from notifications import webhook_fields as fields
from notifications.backends.twilio import STATUS_CALLBACK_PATH, normalise_twilio_status
from notifications.base import Channel
from notifications.config import NotificationConfig
from notifications.errors import ConfigurationError, WebhookError
from notifications.inbound import DEFAULT_OPT_IN, DEFAULT_OPT_OUT, KeywordMatcher
from notifications.logging import install_masking, twilio_secrets
from notifications.outbox import DEFAULT_LEAD_TIME

log = logging.getLogger(__name__)

INBOUND_PATH = "/twilio/inbound"
WEBHOOK_ACTOR = Actor("webhook", "twilio")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MAX_BODY = 64 * 1024
CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
OPTED_OUT_CODE = "21610"
PROVIDER = "twilio"


@dataclass(frozen=True)
class _Form:
    """The verified form body and query (both covered by the signature)."""

    params: ImmutableMultiDict[str, str]
    query: ImmutableMultiDict[str, str] = field(default_factory=ImmutableMultiDict)

    def get(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value not in (None, "") else None


class _Webhooks:
    """The handlers, with their injected engine, settings and clock."""

    def __init__(
        self,
        engine: Engine,
        settings: NotificationConfig,
        clock: Callable[[], datetime],
        keywords: KeywordMatcher,
        lead_time: timedelta,
    ) -> None:
        token = settings.auth_token()
        if not token:
            raise ConfigurationError("webhooks need TWILIO_AUTH_TOKEN to check X-Twilio-Signature")
        if not settings.public_url:
            raise ConfigurationError(
                "webhooks need VIPCARE_PUBLIC_URL: signatures are over the public URL Twilio calls"
            )
        self.engine = engine
        self.public_url = settings.public_url.rstrip("/")
        self.validator = RequestValidator(token)
        self.clock = clock
        self.keywords = keywords
        self.lead_time = lead_time
        install_masking(log, twilio_secrets(settings))

    # -- shared request handling -----------------------------------------------
    async def _verified_form(self, request: Request) -> _Form:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise WebhookError(415, "expected an application/x-www-form-urlencoded body")
        raw = await _read_limited(request, MAX_BODY)
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookError(400, "malformed form body") from exc
        params: ImmutableMultiDict[str, str] = ImmutableMultiDict(pairs)
        signature = request.headers.get("x-twilio-signature")
        url = self.public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        if not signature or not self.validator.validate(url, params, signature):
            log.warning(
                "rejected %s %s: %s X-Twilio-Signature",
                request.method,
                request.url.path,
                "invalid" if signature else "missing",
            )
            raise WebhookError(403, "invalid or missing X-Twilio-Signature")
        query: ImmutableMultiDict[str, str] = ImmutableMultiDict(
            parse_qsl(request.url.query, keep_blank_values=True)
        )
        return _Form(params, query)

    async def _handle(self, request: Request, work: Callable[[_Form], Response]) -> Response:
        try:
            form = await self._verified_form(request)
            return await run_in_threadpool(work, form)
        except WebhookError as exc:
            return PlainTextResponse(exc.reason, status_code=exc.status_code)

    # -- POST /twilio/status ---------------------------------------------------
    async def status(self, request: Request) -> Response:
        return await self._handle(request, self._apply_status)

    def _apply_status(self, form: _Form) -> Response:
        params = form.params
        channel: Channel
        if params.get("MessageSid") or params.get("MessageStatus"):
            sid = fields.required(params, "MessageSid", fields.SID, "a Twilio message sid")
            word = fields.required(params, "MessageStatus", fields.STATUS_WORD, "a status word")
            channel = "sms"
        elif params.get("CallSid") or params.get("CallStatus"):
            sid = fields.required(params, "CallSid", fields.SID, "a Twilio call sid")
            word = fields.required(params, "CallStatus", fields.STATUS_WORD, "a status word")
            channel = "voice"
        else:
            raise WebhookError(
                400, "expected MessageSid and MessageStatus (or CallSid and CallStatus)"
            )
        error_code = fields.optional(
            params, "ErrorCode", fields.ERROR_CODE, "a number of at most 10 ASCII digits"
        )
        message_id, attempt_id = _attempt_of(form.query)
        try:
            status = normalise_twilio_status(word, channel)
        except ValueError as exc:
            raise WebhookError(400, f"unknown {channel} status {fields.shown(word)}") from exc
        from notifications import outbox

        at = self.clock()
        try:
            with transaction(self.engine) as session:
                message = outbox.apply_provider_status(
                    session,
                    sid,
                    status,
                    error_code,
                    at,
                    actor=WEBHOOK_ACTOR,
                    message_id=message_id,
                    attempt_id=attempt_id,
                    provider=PROVIDER,
                    lead_time=self.lead_time,
                )
                if error_code == OPTED_OUT_CODE:
                    _set_opt_out(
                        session,
                        select(Customer.id).where(Customer.id == message.customer_id),
                        True,
                        at,
                        {
                            "source": "provider",
                            "error_code": error_code,
                            "provider_message_id": sid,
                        },
                    )
                final = message.status
        except NotFound as exc:
            raise WebhookError(404, f"unknown message {sid[:40]}") from exc
        except InvalidTransition as exc:
            raise WebhookError(409, exc.reason) from exc
        log.info("status callback: %s → %s (message now %s)", sid, status, final)
        return PlainTextResponse("", status_code=200)

    # -- POST /twilio/inbound --------------------------------------------------
    async def inbound(self, request: Request) -> Response:
        return await self._handle(request, self._apply_inbound)

    def _apply_inbound(self, form: _Form) -> Response:
        params = form.params
        sender = fields.free_text(params, "From", fields.MAX_FROM)
        body = fields.free_text(params, "Body", fields.MAX_INBOUND_BODY)
        if not sender or body is None:
            raise WebhookError(400, "expected From and Body")
        sid = fields.required(params, "MessageSid", fields.SID, "a Twilio message sid")
        try:
            phone = to_e164(sender)
        except InvalidPhone as exc:
            raise WebhookError(400, f"From is not a phone number: {mask(sender)}") from exc
        wanted = self.keywords.classify(body)
        if wanted is None:
            log.info("inbound SMS from %s is not a keyword; nothing to do", mask(phone))
            return _twiml()
        at = self.clock()
        with transaction(self.engine) as session:
            result = consent.apply_inbound_keyword(
                session,
                provider_message_id=sid,
                phone=phone,
                keyword=self.keywords.keyword(body),
                opt_out=wanted,
                # Twilio's inbound webhook carries no send time: first seen is the message time.
                message_at=at,
                received_at=at,
                actor=WEBHOOK_ACTOR,
            )
        log.info(
            "inbound %s %s from %s: %s, %d customer(s) changed",
            "opt-out" if wanted else "opt-in",
            sid,
            mask(phone),
            result.outcome,
            result.changed,
        )
        return _twiml()


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading
    anything; a chunked or lying body is counted as it streams in and reading
    stops at the first chunk past the limit, so memory stays bounded by
    ``limit`` plus one chunk whatever the client sends.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not CONTENT_LENGTH.fullmatch(declared.strip()):
            raise WebhookError(400, "malformed Content-Length header")
        if int(declared) > limit:
            raise WebhookError(413, f"request body too large (limit {limit} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise WebhookError(413, f"request body too large (limit {limit} bytes)")
    return bytes(body)


def _attempt_of(query: ImmutableMultiDict[str, str]) -> tuple[int | None, str | None]:
    """``message_id`` and ``attempt_id`` from the callback URL the dispatcher gave Twilio.

    They let a callback that beats the dispatcher's write-back find its row.
    Both or neither: half a pair cannot name an attempt, so it is ignored.
    """
    raw_id = fields.optional(query, "message_id", fields.MESSAGE_ID, "a message number")
    attempt = fields.optional(query, "attempt_id", fields.ATTEMPT_ID, "an attempt id (hex:number)")
    if raw_id is None or attempt is None:
        return None, None
    return int(raw_id), attempt


def _twiml() -> Response:
    return Response(EMPTY_TWIML, status_code=200, media_type="text/xml")


def _set_opt_out(session: Any, who: Any, value: bool, at: datetime, details: dict[str, Any]) -> int:
    """Set ``sms_opt_out`` through the consent owner, for the customers ``who`` selects."""
    changed = consent.set_flag(
        session,
        "sms_opt_out",
        value,
        Customer.id.in_(who),
        at,
        WEBHOOK_ACTOR,
        source=details.pop("source"),
        details=details,
    )
    return len(changed)


def create_app(
    engine: Engine,
    settings: NotificationConfig,
    *,
    clock: Callable[[], datetime],
    opt_out_keywords: Iterable[str] = DEFAULT_OPT_OUT,
    opt_in_keywords: Iterable[str] = DEFAULT_OPT_IN,
    lead_time: timedelta = DEFAULT_LEAD_TIME,
) -> Starlette:
    """The webhook ASGI app. ``clock`` gives aware UTC instants (the CLI passes the wall clock).

    Keywords normally come from ``ruleset.contact_policy``; the defaults are
    STOP/TD/退订 and START. ``lead_time`` is the pre-call notice lead time
    (``precall_notice`` rule), for a callback that shows a notice sent before
    the dispatcher recorded it. Raises :class:`ConfigurationError` without an auth
    token or public URL: an app that cannot check signatures must not start.
    """
    hooks = _Webhooks(
        engine,
        settings,
        clock,
        KeywordMatcher(opt_out_keywords, opt_in_keywords),
        lead_time,
    )
    routes: Sequence[Route] = [
        Route(STATUS_CALLBACK_PATH, hooks.status, methods=["POST"]),
        Route(INBOUND_PATH, hooks.inbound, methods=["POST"]),
    ]
    app = Starlette(routes=list(routes))
    app.state.webhooks = hooks
    return app
