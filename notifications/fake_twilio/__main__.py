"""Run the fake Twilio in the foreground: ``python -m notifications.fake_twilio --port 8099``.

Point vipcare at it with ``VIPCARE_TWILIO_API_BASE=http://127.0.0.1:8099`` and the
printed account SID and auth token. Drive faults through ``POST /_fake/<action>``;
``--latency 0.1`` makes it answer like a provider 100 ms away.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from notifications.fake_twilio.server import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notifications.fake_twilio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument(
        "--auto-deliver",
        action="store_true",
        help="post signed 'sent' and 'delivered' callbacks for every accepted message",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay every API answer this long, without holding the others (a distant provider)",
    )
    args = parser.parse_args(argv)
    try:
        fake = FakeTwilio(
            account_sid=args.account_sid,
            auth_token=args.auth_token,
            host=args.host,
            port=args.port,
            auto_deliver=args.auto_deliver,
            latency=args.latency,
        ).start()
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        sys.stderr.write(f"fake Twilio: {exc.strerror or exc}\n")
        return 1
    # The token is a test double's, chosen by the caller: printing it is the point.
    sys.stdout.write(
        f"fake Twilio listening on {fake.base_url}\n"
        f"TWILIO_ACCOUNT_SID={fake.account_sid}\n"
        f"TWILIO_AUTH_TOKEN={fake.auth_token}\n"
        f"VIPCARE_TWILIO_API_BASE={fake.base_url}\n"
    )
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
