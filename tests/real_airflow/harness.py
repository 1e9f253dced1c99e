"""A real Airflow on loopback for the real-path suite: its processes, its REST API, the sandbox.

Airflow's components (api-server, scheduler, dag-processor, triggerer) are started one by one
from this project's environment, each with ``subprocess.Popen`` in its own process group, so
each has a known PID and is stopped by that PID (its group: the LocalExecutor's workers and the
task processes go with it). The Packly sandbox runs in this process (uvicorn in a thread) so the
tests can drive its order clock and read what it saw; a small ASGI layer in front of it records,
for every token request, which process sent it (the peer port's owner, found with psutil while
the connection is open), so token requests can be counted per task run and per triggerer.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_provider_packly.sandbox import SandboxConfig, create_app
from airflow_provider_packly.sandbox.faults import TOKEN_PATH
from airflow_provider_packly.sandbox.state import SandboxState

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
TEST_DAGS = Path(__file__).resolve().parent / "dags"
BIN = Path(sys.executable).parent
CLIENT_ID = "real-airflow-client"
#: Generated per run, so a hit in the secret scan cannot be a coincidence with another string.
CLIENT_SECRET = "rs-" + base64.b32encode(os.urandom(15)).decode().lower()
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


# -- the sandbox's clock ------------------------------------------------------------------------------
class ControlledClock:
    """Monotonic time the test can freeze, restart and jump (the sandbox's ``config.now``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at: float | None = None

    def __call__(self) -> float:
        with self._lock:
            return self._frozen_at if self._frozen_at is not None else time.monotonic() + self._offset

    def freeze(self) -> None:
        """Stop time: order timelines stay where they are until :meth:`run`."""
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = time.monotonic() + self._offset

    def run(self) -> None:
        """Let time run again from where it was frozen."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.monotonic()
                self._frozen_at = None

    def jump(self, seconds: float) -> None:
        """Move time forward at once, frozen or not (as if the sandbox had been up that long)."""
        with self._lock:
            self._offset += seconds
            if self._frozen_at is not None:
                self._frozen_at += seconds


# -- the sandbox, with token requests attributed to processes ------------------------------------------
@dataclass(frozen=True)
class TokenRequest:
    """One ``POST /v1/oauth2/token``: the sending process, as seen while it was connected."""

    pid: int | None
    cmdline: str
    ancestors: tuple[int, ...]  # parent, grandparent, ... PIDs


def _owner_of_peer(peer_port: int, server_port: int) -> TokenRequest:
    """The process holding the client end of the loopback connection ``peer_port`` -> ``server_port``.

    Both ends must match: Linux hands out one ephemeral port to several connections that go to
    different destinations, so another process (the api-server talking to PostgreSQL, say) can
    hold a socket on the same local port at the same moment.
    """
    for conn in psutil.net_connections(kind="tcp4"):
        if conn.laddr and conn.laddr.port == peer_port and conn.raddr and conn.raddr.port == server_port and conn.pid:
            try:
                process = psutil.Process(conn.pid)
                return TokenRequest(conn.pid, " ".join(process.cmdline()), tuple(p.pid for p in process.parents()))
            except psutil.Error:
                return TokenRequest(conn.pid, "", ())
    return TokenRequest(None, "", ())


class _AttributeTokenRequests:
    """ASGI layer: before the sandbox answers a token request, note which process sent it."""

    def __init__(self, app: ASGIApp, record: Callable[[TokenRequest], None]) -> None:
        self.app = app
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == TOKEN_PATH and scope.get("client") and scope.get("server"):
            self.record(_owner_of_peer(int(scope["client"][1]), int(scope["server"][1])))
        await self.app(scope, receive, send)


@dataclass
class Sandbox:
    """The in-process sandbox: URL, live state, clock, and the attributed token requests."""

    base_url: str
    state: SandboxState
    clock: ControlledClock
    token_requests: list[TokenRequest] = field(default_factory=list)


@contextmanager
def serve_sandbox(clock: ControlledClock) -> Iterator[Sandbox]:
    """Serve a sandbox app (credentials ``CLIENT_ID``/``CLIENT_SECRET``) on a free loopback port."""
    config = SandboxConfig(credentials={"sandbox": (CLIENT_ID, CLIENT_SECRET), "live": ("l", "l-secret")}, now=clock)
    app = create_app(config)
    requests: list[TokenRequest] = []
    server = uvicorn.Server(
        uvicorn.Config(
            _AttributeTokenRequests(app, requests.append), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, name="real-airflow-sandbox", daemon=True)
    thread.start()
    try:
        wait_for("the Packly sandbox to listen", lambda: server.started or not thread.is_alive(), 10, 0.01)
        assert server.started, "the Packly sandbox did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Sandbox(f"http://127.0.0.1:{port}", app.state.sandbox, clock, requests)
    finally:
        server.should_exit = True
        thread.join(10)


# -- Airflow's processes ---------------------------------------------------------------------------------
@dataclass
class Component:
    """One started process: its role, PID, and where its stdout/stderr went."""

    role: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


class Harness:
    """A real Airflow: environment, processes (by PID), REST client, and the sandbox."""

    def __init__(self, workdir: Path, sandbox: Sandbox) -> None:
        self.workdir = workdir
        self.home = workdir / "airflow-home"
        self.logs = workdir / "process-logs"
        self.home.mkdir(parents=True)
        self.logs.mkdir()
        self.sandbox = sandbox
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        from cryptography.fernet import Fernet

        self.fernet_key = Fernet.generate_key().decode()
        self.components: list[Component] = []  # every process ever started, stopped or not
        self.env = self._environment()
        self._client: httpx.Client | None = None

    def _environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        bundles = [
            {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
            {
                "name": "real-airflow-tests",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(TEST_DAGS)},
            },
        ]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": base64.b64encode(os.urandom(16)).decode(),
                "AIRFLOW__API_AUTH__JWT_SECRET": base64.b64encode(os.urandom(32)).decode(),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__WEBSERVER__EXPOSE_CONFIG": "False",
                "AIRFLOW_CONN_PACKLY_DEFAULT": json.dumps(
                    {
                        "conn_type": "packly",
                        "login": CLIENT_ID,
                        "password": CLIENT_SECRET,
                        "host": self.sandbox.base_url,
                        "extra": {"environment": "sandbox"},
                    }
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # -- processes ---------------------------------------------------------------------------------
    def airflow(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` command to completion (a known PID too: it is our child)."""
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=env or self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, role: str) -> Component:
        """Start ``airflow <role>`` in its own process group; stdout/stderr to a file."""
        n = sum(1 for c in self.components if c.role == role) + 1
        log = self.logs / f"{role}-{n}.log"
        args = [str(BIN / "airflow"), role]
        if role == "api-server":
            args += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                args,
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        component = Component(role, process, log)
        self.components.append(component)
        return component

    def running(self, role: str) -> Component:
        """The running process of ``role`` (exactly one)."""
        alive = [c for c in self.components if c.role == role and c.process.poll() is None]
        assert len(alive) == 1, f"expected one running {role}, found {len(alive)}"
        return alive[0]

    def stop(self, component: Component, timeout: float = 30) -> None:
        """SIGTERM the component's process group (its PID), wait; SIGKILL what is left."""
        pid = component.pid
        if component.process.poll() is None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                component.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Anything left in the group (a task process, a worker) goes too, then we reap.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        component.process.wait(10)

    def stop_all(self) -> None:
        """Stop every started process by its PID, the last started first."""
        for component in reversed(self.components):
            self.stop(component)

    def role_of(self, request: TokenRequest) -> str:
        """Who sent a token request: ``<role>-<n>`` of a started component (or a process under
        it), ``cli`` for an ``airflow`` command this test ran, else ``unknown``."""
        ours = {c.pid: f"{c.role}-{i}" for i, c in enumerate(self.components)}
        for pid in (request.pid, *request.ancestors):
            if pid in ours:
                return ours[pid]
        if os.getpid() in request.ancestors and "airflow" in request.cmdline:
            return "cli"
        return "unknown"

    # -- REST ---------------------------------------------------------------------------------------
    def admin_password(self) -> str:
        generated = self.home / "simple_auth_manager_passwords.json.generated"
        passwords: dict[str, str] = json.loads(generated.read_text())
        return passwords["admin"]

    @property
    def api(self) -> httpx.Client:
        """An httpx client for ``/api/v2`` with a JWT from ``POST /auth/token``."""
        if self._client is None:
            response = httpx.post(
                f"{self.base_url}/auth/token", json={"username": "admin", "password": self.admin_password()}, timeout=30
            )
            response.raise_for_status()
            token = response.json()["access_token"]
            self._client = httpx.Client(
                base_url=f"{self.base_url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def health(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause ``dag_id`` and create a run now; return its run id."""
        wait_for(
            f"the DAG processor to parse {dag_id}", lambda: self.api.get(f"/dags/{dag_id}").status_code == 200, 180, 1.0
        )
        self.api.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        from datetime import datetime, timezone

        response = self.api.post(
            f"/dags/{dag_id}/dagRuns", json={"logical_date": datetime.now(timezone.utc).isoformat(), "conf": conf or {}}
        )
        assert response.status_code == 200, response.text
        run_id: str = response.json()["dag_run_id"]
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        response = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        state: str = response.json()["state"]
        return state

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        response = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        tis: list[dict[str, Any]] = response.json()["task_instances"]
        return tis

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        """Wait until the run is finished; return its state."""
        state = wait_for(
            f"DAG run {dag_id}/{run_id} to finish",
            lambda: s if (s := self.run_state(dag_id, run_id)) in ("success", "failed") else None,
            timeout,
            1.0,
        )
        return str(state)

    def executor_events(self, dag_id: str, task_id: str, run_id: str) -> int:
        """How many executor events the scheduler has processed for this task instance.

        A deferring task's process exits after the TI is already ``deferred`` in the database;
        if the trigger fires and the TI runs again before the scheduler has processed that
        first exit, Airflow 3.3 takes it for an external state change and fails the running
        try ("finished with state success, but the task instance's state attribute is
        running"). A fast trigger can do that to a user too; the tests wait for the event
        before letting an order close, so they test the provider, not that race.
        """
        needle = (
            "Received executor event with state success for task instance"
            f" TaskInstanceKey(dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}'"
        )
        return sum(c.log.read_text(errors="replace").count(needle) for c in self.components if c.role == "scheduler")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        response = self.api.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": True},
        )
        response.raise_for_status()
        content = response.json()["content"]
        return "\n".join(json.dumps(line) if not isinstance(line, str) else line for line in content)
