"""Run the sandbox app under uvicorn in a background thread (for tests and notebooks)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from airflow_provider_packly.sandbox.app import create_app
from airflow_provider_packly.sandbox.config import SandboxConfig
from airflow_provider_packly.sandbox.state import SandboxState


@dataclass(frozen=True)
class RunningSandbox:
    """A sandbox server listening on loopback: where it is and its live state."""

    base_url: str
    """E.g. ``http://127.0.0.1:54321``, with the port actually bound (also when 0 was asked)."""
    state: SandboxState
    app: Starlette
    server: uvicorn.Server


def _url_host(host: str) -> str:
    """Bracket an IPv6 literal for use in a URL."""
    return f"[{host}]" if ":" in host else host


@contextmanager
def run_sandbox(
    config: SandboxConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    ssl_ca_certs: str | None = None,
    ssl_cert_reqs: int = ssl.CERT_NONE,
) -> Iterator[RunningSandbox]:
    """Serve a fresh sandbox app with uvicorn in a daemon thread for the ``with`` block.

    ``port=0`` lets the OS choose a free port; read it from ``base_url``. Waits until uvicorn
    listens (``RuntimeError`` if the server thread dies first, e.g. the port is taken;
    ``TimeoutError`` after ``startup_timeout``). On exit asks uvicorn to stop
    (``should_exit``) and joins the thread, so the listening socket is closed afterwards.
    uvicorn logs only warnings, and never request headers.

    With ``ssl_certfile`` (and ``ssl_keyfile``) the sandbox serves HTTPS and ``base_url``
    starts with ``https://``; ``ssl_cert_reqs=ssl.CERT_REQUIRED`` with ``ssl_ca_certs`` makes
    it demand a client certificate signed by that CA (uvicorn's own TLS options).
    """
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            ssl_ca_certs=ssl_ca_certs,
            ssl_cert_reqs=ssl_cert_reqs,
        )
    )
    exit_statuses: list[object] = []

    def serve() -> None:
        # uvicorn calls sys.exit() when it cannot start (e.g. the port is taken): keep that
        # SystemExit inside the thread and report it from here instead.
        try:
            server.run()
        except SystemExit as exc:
            exit_statuses.append(exc.code)

    thread = threading.Thread(target=serve, name="packly-sandbox", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(
                    f"the Packly sandbox failed to start on {host}:{port} (uvicorn exit status"
                    f" {exit_statuses[0] if exit_statuses else None}; is the port in use?)"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Packly sandbox did not start within {startup_timeout} s")
            time.sleep(0.005)
        bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
        yield RunningSandbox(
            base_url=f"{'https' if ssl_certfile else 'http'}://{_url_host(bound_host)}:{bound_port}",
            state=app.state.sandbox,
            app=app,
            server=server,
        )
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout)
