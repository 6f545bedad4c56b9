"""A Prefect API for this process: the configured one, or one temporary server that dies with us.

Prefect runs flows against an API server. When ``PREFECT_API_URL`` is set (an
operator's ``prefect server start``), that is used. Otherwise vipcare starts one
temporary server for the whole process, once: the scheduler keeps it warm for
every job instead of paying its start-up (6–12 s) per run.

The server is our child and cannot outlive us: it is started with
``PR_SET_PDEATHSIG`` (Linux), so the kernel sends it SIGTERM when the vipcare
process ends in any way, SIGKILL included, and it stays in our process group,
so a signal to the group reaches it too. A normal exit stops it explicitly.
Prefect's own temporary server (``SubprocessASGIServer``) does neither and is
left running, using ~200 MB, when its parent is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PR_SET_PDEATHSIG = 1
START_TIMEOUT = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))


class PrefectServerError(RuntimeError):
    """The temporary Prefect server did not come up."""


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with(parent: int) -> Callable[[], None]:
    """``preexec_fn``: ask the kernel for SIGTERM when the parent goes (Linux only)."""

    def prepare() -> None:
        name = ctypes.util.find_library("c")
        if name:
            libc = ctypes.CDLL(name, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)

    return prepare


class TemporaryPrefectServer:
    """One Prefect API server subprocess, bound to 127.0.0.1 on a free port."""

    def __init__(self, timeout: float = START_TIMEOUT) -> None:
        self.timeout = timeout
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> str:
        """Start the server and wait until it answers; returns its API URL."""
        import prefect

        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(prefect.__file__).resolve().parent.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=_die_with(os.getpid()),
        )
        self._wait_until_healthy()
        return self.api_url

    def _wait_until_healthy(self) -> None:
        import httpx

        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise PrefectServerError(
                        f"the temporary Prefect server exited with status {self.process.returncode}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                time.sleep(0.1)
        self.stop()
        raise PrefectServerError(
            f"the temporary Prefect server did not answer within {self.timeout:.0f} s; "
            "set PREFECT_API_URL to a running server (`prefect server start`)"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _refresh_global_settings() -> None:
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


def configured_api_url() -> str | None:
    """The Prefect API this process is configured to use (environment, profile), if any."""
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return str(value) if value else None


@contextlib.contextmanager
def prefect_api(announce: Callable[[str], None] | None = None) -> Iterator[str]:
    """Use the configured Prefect API, or start a temporary server for the block.

    ``announce`` is told when a temporary server is being started (it takes a
    few seconds). Nested use inside a block that already started one reuses it.
    """
    configured = configured_api_url()
    if configured:
        yield configured
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = TemporaryPrefectServer()
    if announce is not None:
        announce(f"starting a temporary Prefect server on port {server.port}")
    try:
        url = server.start()
        if announce is not None:
            announce(f"temporary Prefect server ready at {url} (pid {server.pid})")
        previous = os.environ.get("PREFECT_API_URL")
        # Threads (the scheduler's jobs) have no settings context of their own: they read
        # Prefect's process-global one, rebuilt here from the environment.
        os.environ["PREFECT_API_URL"] = url
        _refresh_global_settings()
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
            _refresh_global_settings()
    finally:
        server.stop()
