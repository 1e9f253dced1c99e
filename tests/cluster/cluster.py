"""A local Airflow cluster on loopback: PostgreSQL, Redis, CeleryExecutor with two prefork workers.

Built on the real-Airflow harness (tests/real_airflow/harness.py): the same sandbox, token
attribution, REST client and start/stop-by-PID. What this adds:

* PostgreSQL (the metadata DB) and Redis (the Celery broker) from Debian's packages, each
  started here as a child process with a known PID (``postgres -D``, ``redis-server``), on free
  loopback ports, data in a temporary folder, and stopped by that PID.
* ``ClusterHarness``: the harness's environment switched to PostgreSQL and, for the Celery run,
  to ``CeleryExecutor``; ``airflow celery worker`` processes (prefork pool), each with its own
  log-server port and node name (``PACKLY_CLUSTER_NODE``, recorded as the task instance's
  ``hostname`` through ``tests.cluster.hostname``).
* A sandbox whose every request is checked for a shared socket: while the request is open, every
  process holding the client's end of that TCP connection is listed. A connection opened before a
  fork and inherited by the child would be held by two processes: that is what Celery's prefork
  pool (and the task runner's own fork) must never produce.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
import psutil
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_provider_packly.sandbox import SandboxConfig, create_app

from ..real_airflow.harness import (
    BIN,
    CLIENT_ID,
    CLIENT_SECRET,
    EXAMPLE_DAGS,
    Component,
    ControlledClock,
    Harness,
    Sandbox,
    TokenRequest,
    _AttributeTokenRequests,
    free_port,
    wait_for,
)

CLUSTER_DAGS = Path(__file__).resolve().parent / "dags"
ROOT = Path(__file__).resolve().parents[2]
WORKER_CONCURRENCY = 2  # prefork pool processes per Celery worker; two workers: 4 task slots
PARALLELISM = 4  # the scheduler's limit, the same for the LocalExecutor run


# -- PostgreSQL and Redis ----------------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server programs (``/usr/lib/postgresql/<major>/bin``), newest first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]), reverse=True)
    return Path(found[0]).parent if found else None


def missing_services() -> list[str]:
    """What the cluster needs from the system and does not find (Debian package names)."""
    missing = []
    if postgres_bin() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


@dataclass
class Service:
    """A started server process (PostgreSQL or Redis): its PID, port and log."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self, timeout: float = 30) -> None:
        """SIGINT (PostgreSQL's fast shutdown; Redis exits too) by PID, then SIGKILL if needed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def postgres() -> Iterator[Service]:
    """A throw-away PostgreSQL on 127.0.0.1 (trust auth, superuser ``airflow``, no fsync).

    As root the server runs as Debian's ``postgres`` user (PostgreSQL refuses root); its data
    folder is a fresh temporary folder that user owns.
    """
    bindir = postgres_bin()
    assert bindir is not None, "PostgreSQL is not installed: apt-get install postgresql (./dev cluster does it as root)"
    data = Path(tempfile.mkdtemp(prefix="packly-cluster-pg-"))
    user = "postgres" if os.getuid() == 0 else None
    if user:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    log = data.with_name(data.name + ".log")
    port = free_port()
    try:
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True,
            text=True,
            user=user,
            group=user,
            timeout=300,
        )
        assert initdb.returncode == 0, initdb.stdout + initdb.stderr
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=300",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=user,
                group=user,
                start_new_session=True,
            )
        service = Service("postgresql", process, port, log)
        try:
            import psycopg2

            def accepting() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"PostgreSQL exited: {log.read_text(errors='replace')[-2000:]}")
                try:
                    psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname="postgres").close()
                except psycopg2.OperationalError:
                    return False
                return True

            wait_for("PostgreSQL to accept connections", accepting, 120, 0.5)
            yield service
        finally:
            service.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)
        log.unlink(missing_ok=True)


def create_database(pg: Service, name: str) -> str:
    """Create database ``name``; return its SQLAlchemy URL (psycopg2)."""
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=pg.port, user="airflow", dbname="postgres")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return f"postgresql+psycopg2://airflow@127.0.0.1:{pg.port}/{name}"


@contextmanager
def redis(workdir: Path) -> Iterator[Service]:
    """A throw-away Redis on 127.0.0.1 (no persistence), the Celery broker."""
    port = free_port()
    log = workdir / "redis.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(shutil.which("redis-server")),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    service = Service("redis", process, port, log)
    try:
        import redis as redis_client

        def pong() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"Redis exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                with redis_client.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
                    return bool(client.ping())
            except redis_client.RedisError:
                return False

        wait_for("Redis to answer PING", pong, 60, 0.5)
        yield service
    finally:
        service.stop()


# -- the sandbox, with every request checked for a shared socket ------------------------------------------
@dataclass(frozen=True)
class SocketUse:
    """One request at the sandbox: its path and the PIDs holding the client's end of its socket."""

    path: str
    peer_port: int
    holders: tuple[int, ...]


def _socket_inode(peer_port: int, server_port: int) -> str | None:
    """The inode of the client end of the loopback TCP connection ``peer_port`` -> ``server_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.rsplit(":", 1)[1], 16) == peer_port and int(remote.rsplit(":", 1)[1], 16) == server_port:
            return inode
    return None


def _holders_of(peer_port: int, server_port: int) -> tuple[int, ...]:
    """Every PID (this process and its descendants: Airflow, its workers, their task processes)
    with a file descriptor on the client end of the connection ``peer_port`` -> the sandbox.

    Read from ``/proc`` directly: psutil's ``net_connections()`` reports one process per socket,
    so it cannot see a socket two processes hold.
    """
    inode = _socket_inode(peer_port, server_port)
    if inode in (None, "0"):
        return ()
    target = f"socket:[{inode}]"
    me = psutil.Process()
    holders = set()
    for process in (me, *me.children(recursive=True)):
        folder = f"/proc/{process.pid}/fd"
        try:
            fds = os.listdir(folder)
        except OSError:  # the process is gone
            continue
        for fd in fds:
            try:
                if os.readlink(f"{folder}/{fd}") == target:
                    holders.add(process.pid)
                    break
            except OSError:  # closed while we looked
                continue
    return tuple(sorted(holders))


class _CheckSocketSharing:
    """ASGI layer: for every request, list (in a thread, the connection still open) its socket's holders."""

    def __init__(self, app: ASGIApp, uses: list[SocketUse], server_port: list[int]) -> None:
        self.app = app
        self.uses = uses
        self.server_port = server_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("client") and self.server_port:
            peer = int(scope["client"][1])
            holders = await anyio.to_thread.run_sync(_holders_of, peer, self.server_port[0])
            self.uses.append(SocketUse(scope["path"], peer, holders))
        await self.app(scope, receive, send)


@dataclass
class ClusterSandbox(Sandbox):
    """The harness's sandbox plus the socket holders seen for every request."""

    socket_uses: list[SocketUse] = field(default_factory=list)


@contextmanager
def serve_cluster_sandbox(clock: ControlledClock) -> Iterator[ClusterSandbox]:
    """Like the harness's ``serve_sandbox``, with the shared-socket check in front."""
    config = SandboxConfig(credentials={"sandbox": (CLIENT_ID, CLIENT_SECRET), "live": ("l", "l-secret")}, now=clock)
    app = create_app(config)
    requests: list[TokenRequest] = []
    uses: list[SocketUse] = []
    server_port: list[int] = []
    layered = _CheckSocketSharing(_AttributeTokenRequests(app, requests.append), uses, server_port)
    server = uvicorn.Server(uvicorn.Config(layered, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="cluster-sandbox", daemon=True)
    thread.start()
    try:
        wait_for("the Packly sandbox to listen", lambda: server.started or not thread.is_alive(), 10, 0.01)
        assert server.started, "the Packly sandbox did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        server_port.append(port)
        yield ClusterSandbox(f"http://127.0.0.1:{port}", app.state.sandbox, clock, requests, uses)
    finally:
        server.should_exit = True
        thread.join(10)


# -- Airflow on PostgreSQL, with the CeleryExecutor or the LocalExecutor ---------------------------------
class ClusterHarness(Harness):
    """The real-Airflow harness on PostgreSQL; ``executor`` is ``CeleryExecutor`` or ``LocalExecutor``."""

    def __init__(
        self, workdir: Path, sandbox: Sandbox, *, executor: str, database_url: str, broker_url: str | None = None
    ) -> None:
        self.executor = executor
        self.database_url = database_url
        self.broker_url = broker_url
        super().__init__(workdir, sandbox)

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        bundles = [
            {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
            {
                "name": "cluster-tests",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(CLUSTER_DAGS)},
            },
        ]
        env.update(
            {
                "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.cluster.hostname.node_hostname",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
                # Fixed default ports (8793, 8794) would collide with another Airflow on this machine.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # Generous on a loaded machine: a task may wait in Celery's queue for a free slot.
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "1800",
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            }
        )
        if self.broker_url:
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.database_url,  # keeps +psycopg2
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                    "AIRFLOW__CELERY__POOL": "prefork",
                    "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                    "AIRFLOW__CELERY__OPERATION_TIMEOUT": "30",
                }
            )
        return env

    def start_worker(self, n: int) -> Component:
        """``airflow celery worker`` (prefork, its own node name and log port), in its own group."""
        role = "celery-worker"
        log = self.logs / f"{role}-{n}.log"
        env = dict(self.env)
        env["PACKLY_CLUSTER_NODE"] = f"worker-{n}"
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        args = [
            str(BIN / "airflow"),
            "celery",
            "worker",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--celery-hostname",
            f"worker-{n}@%h",
        ]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                args,
                env=env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        component = Component(role, process, log)
        self.components.append(component)
        return component
