"""Run every example DAG against a local Packly sandbox and show what each produced.

What ``./dev demo`` runs. Step by step, as a user would by hand:

1. start the sandbox server (``python -m airflow_provider_packly.sandbox``) on loopback;
2. point a ``packly_default`` connection at it (an ``AIRFLOW_CONN_PACKLY_DEFAULT`` variable);
3. ``airflow db migrate`` in a throwaway ``AIRFLOW_HOME`` under ``.demo/``;
4. ``airflow connections test packly_default``;
5. ``airflow dags test <dag_id>`` for each example DAG, printing its ``Packly result:`` lines.

Importable (``run_examples``) so the test suite runs exactly what the README promises.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = ROOT / "example_dags"
RESULT_MARKER = "Packly result:"
#: The sandbox's default credentials: public test values, documented in the README.
SANDBOX_CLIENT_ID = "sandbox-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret"
#: In the order they are shown.
DAG_IDS = (
    "packly_quickstart",
    "packly_dieline_to_storage",
    "packly_quote_then_wait_for_order",
    "packly_taskflow_chain",
)
#: The sandbox's orders advance one status per this many seconds from a clock reset; slow
#: enough that the order DAG's sensor finds ORD-0001 still open and defers (it closes at 4 steps).
ORDER_STEP_SECONDS = 4.0
DEFERRAL_MARKERS = ("[DAG TEST] running trigger in line", "[DAG TEST] Trigger completed")


@dataclass
class DagRun:
    dag_id: str
    returncode: int
    results: list[str]
    log_path: Path
    output: str = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.results)

    @property
    def deferred(self) -> bool:
        """Whether a task deferred to a trigger, which ran and let the task resume."""
        return all(marker in self.output for marker in DEFERRAL_MARKERS)


@dataclass
class ExampleRun:
    base_url: str
    connection_test: str
    connection_ok: bool
    dag_runs: list[DagRun]
    sandbox_stats: dict[str, object]

    @property
    def ok(self) -> bool:
        return self.connection_ok and all(run.ok for run in self.dag_runs)


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free loopback port")


@contextmanager
def sandbox(port: int, log_path: Path, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """The sandbox server in a subprocess, until the block ends."""
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_packly.sandbox", "--port", str(port), *extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_listening(port, process, log_path)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox server exited early; see {log_path}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the sandbox server did not listen on port {port} within 30 s; see {log_path}")


def airflow_environment(
    airflow_home: Path, base_url: str, client_secret: str = SANDBOX_CLIENT_SECRET
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW_CONN_PACKLY_DEFAULT": json.dumps(
                {
                    "conn_type": "packly",
                    "login": SANDBOX_CLIENT_ID,
                    "password": client_secret,
                    "host": base_url,
                    "extra": {"environment": "sandbox"},
                }
            ),
        }
    )
    return env


def airflow(args: Sequence[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    airflow_cli = Path(sys.executable).with_name("airflow")
    return subprocess.run(
        [str(airflow_cli), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def run_examples(
    workdir: Path, *, port: int = 8089, dag_ids: Sequence[str] = DAG_IDS, echo: bool = False
) -> ExampleRun:
    """Run it all in ``workdir`` (wiped first); returns what happened, printing as it goes if ``echo``."""

    def say(text: str) -> None:
        if echo:
            print(text, flush=True)

    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)
    port = free_port(port)
    with sandbox(port, workdir / "logs" / "sandbox.log", ["--order-step-seconds", str(ORDER_STEP_SECONDS)]) as base_url:
        say(f"1. Packly sandbox listening at {base_url} (client ID {SANDBOX_CLIENT_ID!r})")
        env = airflow_environment(workdir / "airflow-home", base_url)
        say("2. Connection packly_default -> the sandbox (AIRFLOW_CONN_PACKLY_DEFAULT)")
        migrate = airflow(["db", "migrate"], env)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
        say("3. airflow db migrate: done")
        tested = airflow(["connections", "test", "packly_default"], env)
        connection_output = (tested.stdout + tested.stderr).strip()
        connection_ok = tested.returncode == 0 and "Connection success!" in connection_output
        say(f"4. airflow connections test packly_default: {'success' if connection_ok else 'FAILED'}")
        if not connection_ok:
            say(connection_output)
        dag_runs = []
        for number, dag_id in enumerate(dag_ids, start=5):
            reset_order_clock(base_url)
            started = time.monotonic()
            completed = airflow(["dags", "test", dag_id], env)
            output = completed.stdout + completed.stderr
            log_path = workdir / "logs" / f"{dag_id}.log"
            log_path.write_text(output)
            results = [_result_text(line) for line in output.splitlines() if RESULT_MARKER in line]
            run = DagRun(dag_id, completed.returncode, results, log_path, output)
            dag_runs.append(run)
            status = "success" if run.ok else f"FAILED (exit {run.returncode}; log: {log_path})"
            say(f"{number}. airflow dags test {dag_id}: {status} in {time.monotonic() - started:.0f} s")
            if run.deferred:
                say("     a sensor deferred to the triggerer, the trigger fired, the sensor resumed")
            for result in results:
                say(f"     {result}")
        stats = _sandbox_stats(base_url)
    return ExampleRun(base_url, connection_output, connection_ok, dag_runs, stats)


def _result_text(line: str) -> str:
    """The JSON a DAG logged after ``Packly result:``, as ``key=value`` pairs (log decoration dropped)."""
    text = line.split(RESULT_MARKER, 1)[1]
    try:
        result = json.loads(text[text.index("{") : text.rindex("}") + 1])
    except ValueError:
        return text.strip()
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in result.items())


def reset_order_clock(base_url: str) -> None:
    """Restart the sandbox's order timelines, so each DAG finds orders at their start."""
    import httpx

    httpx.post(f"{base_url}/_sandbox/reset-clock", timeout=5).raise_for_status()


def _sandbox_stats(base_url: str) -> dict[str, object]:
    import httpx

    try:
        return httpx.get(f"{base_url}/_sandbox/stats", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8089, help="sandbox port (a free one is used if taken)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo", help="where logs and AIRFLOW_HOME go")
    parser.add_argument("dag_ids", nargs="*", default=list(DAG_IDS), help="example DAGs to run (default: all)")
    options = parser.parse_args(argv)
    run = run_examples(options.workdir, port=options.port, dag_ids=options.dag_ids, echo=True)
    token_requests = run.sandbox_stats.get("token_requests", "?")
    print(f"Sandbox served {token_requests} token requests. Logs: {options.workdir / 'logs'}")
    print("All example DAGs succeeded." if run.ok else "Some steps FAILED: see the logs above.")
    return 0 if run.ok else 1


if __name__ == "__main__":
    sys.exit(main())
