"""``packly-sandbox`` / ``python -m airflow_provider_packly.sandbox``: run the sandbox server.

Runs uvicorn in the foreground; uvicorn stops cleanly on SIGINT (Ctrl-C) and SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

from airflow_provider_packly.sandbox.fault_kinds import FAULT_KINDS

SECRET_ENV_VAR = "PACKLY_SANDBOX_CLIENT_SECRET"
#: The default fault kinds, as ``--fault-kinds`` spells them (fault_kinds imports no server code).
ALL_FAULT_KINDS = ",".join(FAULT_KINDS)

SANDBOX_EPILOG = """\
seeded orders (GET /v1/reseller/orders, 25 orders ORD-0001..ORD-0025):
  An order's timeline starts the first time a listing serves it, not when the
  sandbox starts, and moves one state per --order-step-seconds (a "step"):
    ORD-0001  waiting_execute_payment, pending_payment at 1 step, paid at 2,
              in_processing at 3, closed from 4 steps on (8 s by default)
    ORD-0002  deleted, forever
    ORD-0007  waiting_execute_payment, pending_payment at 1 step, canceled from 2
              on; every 7th order (7, 14, 21) ends canceled
    ORD-0017  closed from the start
  The others start between 12 steps behind and already closed, so during the
  16 steps after the first listing some are mid-way. Products follow their
  order (shipped once it is closed).

control endpoints (no authentication; never faulted):
  GET  /_sandbox/stats          counters (token and API requests, faults, writes);
                                never a token or a secret
  POST /_sandbox/revoke-tokens  forget every outstanding token (next call: 401)
  POST /_sandbox/reset-clock    restart every order: each starts again at its
                                first state the next time it is listed

sandbox-only API (bearer token; faulted like the API):
  POST /_sandbox/v1/writes      a write counted per key (tests: no duplicated POST)
  GET  /_sandbox/v1/writes/{key}  its read-back
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (kept separate so ``--help`` needs no server import)."""
    parser = argparse.ArgumentParser(
        prog="packly-sandbox",
        description=(
            "Run a local imitation of the Packly REST API (token, dieline, quotation, orders)"
            " for example DAGs and tests. Default credentials: sandbox-client-id /"
            " sandbox-client-secret (live environment: live-client-id / live-client-secret);"
            " these are public test values. Control endpoints under /_sandbox/ need no"
            " authentication, so keep the default loopback host."
        ),
        epilog=SANDBOX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8089, help="port, 0 for any free port (default: %(default)s)")
    parser.add_argument(
        "--environment",
        choices=["live", "sandbox"],
        default="sandbox",
        help="which Packly environment this server plays (default: %(default)s)",
    )
    parser.add_argument(
        "--client-id",
        help="client ID of the played environment (default: <environment>-client-id)",
    )
    parser.add_argument(
        "--client-secret",
        help=(
            "client secret of the played environment (default: $"
            f"{SECRET_ENV_VAR}, else <environment>-client-secret); never printed"
        ),
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=3600,
        help="access token lifetime in seconds, the expires_in returned (default: %(default)s)",
    )
    parser.add_argument(
        "--order-step-seconds",
        type=float,
        default=2.0,
        help="seconds between two order state changes (default: %(default)s)",
    )
    faults = parser.add_argument_group(
        "fault injection",
        "Deterministic faults for testing a client's retries: off unless --fault-rate or"
        " --token-fault-rate is above 0. Eligible: /v1/reseller/* and /_sandbox/v1/writes*;"
        " the token endpoint has its own rate and only the status faults; /_sandbox control"
        " endpoints never.",
    )
    faults.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="probability (0..1) that an API or write request gets a fault (default: %(default)s)",
    )
    faults.add_argument(
        "--fault-seed",
        type=int,
        default=0,
        help="seed of the fault sequence (default: %(default)s)",
    )
    faults.add_argument(
        "--fault-kinds",
        default=ALL_FAULT_KINDS,
        help="comma-separated kinds, each optionally KIND=WEIGHT (default: %(default)s)",
    )
    faults.add_argument(
        "--slow-seconds",
        type=float,
        default=2.0,
        help="delay of a 'slow' response, in seconds (default: %(default)s)",
    )
    faults.add_argument(
        "--retry-after",
        type=int,
        default=0,
        help="Retry-After of 429s and of half the 503s, whole seconds (default: %(default)s)",
    )
    faults.add_argument(
        "--retry-after-as-date",
        action="store_true",
        help="send Retry-After as an HTTP-date instead of seconds",
    )
    faults.add_argument(
        "--token-fault-rate",
        type=float,
        default=0.0,
        help="probability (0..1) that a token request gets a 500/502/503/429 (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, announce where the server listens, and serve until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)

    import uvicorn

    from airflow_provider_packly.sandbox.app import create_app
    from airflow_provider_packly.sandbox.config import SandboxConfig, default_credentials
    from airflow_provider_packly.sandbox.faults import FaultConfig, parse_fault_kinds

    faults: FaultConfig | None = None
    if args.fault_rate > 0 or args.token_fault_rate > 0:
        try:
            faults = FaultConfig(
                seed=args.fault_seed,
                rate=args.fault_rate,
                kinds=parse_fault_kinds(args.fault_kinds),
                token_rate=args.token_fault_rate,
                slow_seconds=args.slow_seconds,
                retry_after_seconds=args.retry_after,
                retry_after_as_date=args.retry_after_as_date,
            )
        except ValueError as exc:
            parser.error(str(exc))
    fault_note = (
        f" ; faults: rate {faults.rate} ({','.join(k for k, w in faults.weights if w > 0)}),"
        f" token rate {faults.token_rate}, seed {faults.seed}"
        if faults is not None
        else ""
    )

    credentials = default_credentials()
    default_id, default_secret = credentials[args.environment]
    client_id: str = args.client_id or default_id
    client_secret: str = args.client_secret or os.environ.get(SECRET_ENV_VAR) or default_secret
    credentials[args.environment] = (client_id, client_secret)
    secret_hint = (
        "the default public test secret (see --help)" if client_secret == default_secret else "the one you configured"
    )
    config = SandboxConfig(
        environment=args.environment,
        credentials=credentials,
        token_lifetime=args.token_lifetime,
        order_step_seconds=args.order_step_seconds,
        faults=faults,
    )

    class _AnnouncingServer(uvicorn.Server):
        """A uvicorn server that prints one line once it listens (the real port if 0)."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.servers and self.servers[0].sockets:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                print(
                    f"Packly sandbox ({args.environment} environment) listening on"
                    f" http://{shown}:{port} ; client ID: {client_id} ; client secret:"
                    f" {secret_hint}{fault_note}",
                    flush=True,
                )

    def exit_quietly(signum: int, frame: FrameType | None) -> None:
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the
        # handler that was installed before it started: make that handler a clean exit
        # (status 0, no KeyboardInterrupt traceback, no death by signal).
        raise SystemExit(0)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, exit_quietly)

    server = _AnnouncingServer(
        uvicorn.Config(create_app(config), host=args.host, port=args.port, log_level="info", lifespan="off")
    )
    try:
        server.run()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
