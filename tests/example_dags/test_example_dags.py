"""The example DAGs: parsed like the DAG processor does, and run end to end with ``airflow dags test``.

The end-to-end tests work like Airflow's own system tests: a Packly sandbox on a free loopback
port (in this process, so the test can read its state and drive its clock), a throw-away
AIRFLOW_HOME migrated once for the module, the ``packly_default`` connection in the
environment, then one ``airflow dags test <dag_id>`` subprocess per DAG. They check what the
DAG did, not only the exit status: the ``Packly result:`` line each DAG's last task logs, the
file the dieline DAG wrote, and the evidence that the order sensor deferred and resumed.

What ``airflow dags test`` prints (Airflow 3.2/3.3): task logs go to stdout as structlog lines,
including ``[DAG TEST] starting task_id=...``, the operators' own log lines, ``Done. Returned
value was: ...`` for ``@task`` functions, and for a deferral ``[DAG TEST] running trigger in
line`` ... ``[DAG TEST] Trigger completed`` before the task runs again; the run ends with
``DagRun Finished: dag_id=..., ..., state=success``. Secrets are not masked there (the notes
say so), so the test also checks that no token or client secret was printed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox
from scripts.run_examples import DAG_IDS, airflow_environment

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "example_dags"
AIRFLOW = Path(sys.executable).with_name("airflow")
RUN_TIMEOUT = 180


# -- parsing (fast, no subprocess) ----------------------------------------------------------------


def test_example_dags_parse_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    kwargs: dict[str, Any] = {"dag_folder": str(DAGS)}
    if "include_examples" in inspect.signature(DagBag).parameters:  # Airflow 3.2
        kwargs["include_examples"] = False
    bag = DagBag(**kwargs)
    assert bag.import_errors == {}
    assert set(DAG_IDS) <= set(bag.dags)
    for dag_id in DAG_IDS:
        dag = bag.dags[dag_id]
        assert dag.schedule is None
        assert dag.catchup is False
        assert set(dag.tags) == {"packly", "example"}
        assert dag.start_date is not None and dag.start_date.year == 2026
    sensor = bag.dags["packly_quote_then_wait_for_order"].get_task("wait_for_order_closed")
    assert sensor.deferrable is True and sensor.poke_interval == 2 and sensor.timeout == 120


def test_example_dags_do_not_import_the_sandbox_or_the_hook_at_parse_time():
    code = (
        "import runpy, sys\n"
        f"for name in {[str(p) for p in sorted(DAGS.glob('example_*.py'))]!r}:\n"
        "    runpy.run_path(name)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('airflow_provider_packly'))\n"
        "print(loaded)\n"
        "heavy = ('airflow_provider_packly.sandbox', 'airflow_provider_packly.hooks')\n"
        "assert not any(m.startswith(heavy) for m in loaded), loaded\n"
        "assert 'airflow_provider_packly.triggers.packly' not in loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


# -- end to end ------------------------------------------------------------------------------------


class GateClock:
    """The sandbox's clock, stopped until the test starts it, so order timelines wait for the DAG."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frozen_at: float | None = time.monotonic()
        self._offset = 0.0

    def __call__(self) -> float:
        with self._lock:
            return self._frozen_at if self._frozen_at is not None else time.monotonic() - self._offset

    def freeze(self) -> None:
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = time.monotonic() - self._offset

    def start(self) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._offset = time.monotonic() - self._frozen_at
                self._frozen_at = None


@pytest.fixture(scope="module")
def clock() -> GateClock:
    return GateClock()


@pytest.fixture(scope="module")
def sandbox(clock):
    # One step a second (default 2): ORD-0001 closes 4 s after the clock starts, within the
    # sensor's 2 s polls and 120 s timeout either way; this only keeps the test short.
    with run_sandbox(SandboxConfig(now=clock, order_step_seconds=1.0)) as running:
        yield running


@pytest.fixture(scope="module")
def airflow_env(sandbox, tmp_path_factory) -> dict[str, str]:
    # The same environment as the README's main command (scripts/run_examples.py).
    env = airflow_environment(tmp_path_factory.mktemp("airflow-home"), sandbox.base_url)
    env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are logged
    # `airflow dags test` runs tasks through Airflow's in-process execution API. If Airflow cannot
    # build that API in this environment (a dependency of Airflow's: see the floor group's pins in
    # pyproject.toml), no DAG can run: fail with that cause rather than three opaque task errors.
    # The probe needs no database, so it runs while the database is migrated.
    probe = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from airflow.sdk.execution_time.supervisor import in_process_api_server; in_process_api_server().app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        migrate = subprocess.run(
            [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        _, probe_errors = probe.communicate(timeout=RUN_TIMEOUT)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.communicate()
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    if probe.returncode != 0:
        errors = [
            line
            for line in probe_errors.splitlines()
            if line[:1].isalpha() and ("Error" in line or "Exception" in line)
        ]
        last = errors[-1] if errors else (probe_errors.strip().splitlines() or ["?"])[-1]
        pytest.fail(
            f"airflow dags test cannot run any DAG in this environment (Airflow's in-process API fails: {last})"
        )
    return env


def run_dag(
    env: dict[str, str], dag_id: str, *args: str, on_line: Callable[[str], None] | None = None
) -> tuple[int, str]:
    """``airflow dags test dag_id``: its exit status and output, read line by line as it comes."""
    process = subprocess.Popen(
        [str(AIRFLOW), "dags", "test", dag_id, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(RUN_TIMEOUT, process.kill)
    watchdog.start()
    lines = []
    try:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                lines.append(line)
                if on_line is not None:
                    on_line(line)
        returncode = process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    return returncode, "".join(lines)


def packly_result(output: str) -> dict[str, Any]:
    """The JSON after ``Packly result:`` (exactly one such line)."""
    marker = "Packly result: "
    found = [line for line in output.splitlines() if marker in line]
    assert len(found) == 1, f"expected one {marker!r} line, got {len(found)}:\n{output[-5000:]}"
    line = found[0]
    value, _ = json.JSONDecoder().raw_decode(line, line.index(marker) + len(marker))
    return value


def assert_succeeded(returncode: int, output: str, dag_id: str, sandbox) -> None:
    assert returncode == 0, output[-5000:]
    finished = [line for line in output.splitlines() if f"DagRun Finished: dag_id={dag_id}," in line]
    assert finished and "state=success" in finished[-1], output[-5000:]
    assert "Traceback" not in output, output[-5000:]
    for token in sandbox.state.issued_tokens:
        assert token not in output
    assert "sandbox-client-secret" not in output


def run_dag_on_a_gated_clock(env: dict[str, str], sandbox, clock: GateClock, dag_id: str, start_at: str) -> str:
    """Run ``dag_id`` with every order timeline restarted and the sandbox's clock stopped until an
    output line holds ``start_at`` (or the run ends); check that it succeeded; its output."""
    clock.freeze()
    sandbox.state.reset_clock()

    def start_clock(line: str) -> None:
        if start_at in line:
            clock.start()

    returncode, output = run_dag(env, dag_id, on_line=start_clock)
    clock.start()
    assert_succeeded(returncode, output, dag_id, sandbox)
    return output


@pytest.mark.airflow_cli
@pytest.mark.integration
def test_quickstart(airflow_env, sandbox):
    tokens_before = sandbox.state.token_requests_ok
    returncode, output = run_dag(airflow_env, "packly_quickstart")
    assert_succeeded(returncode, output, "packly_quickstart", sandbox)
    result = packly_result(output)
    assert result["token_ok"] is True
    assert result["quotation_total"] > 0 and result["currency"] == "EUR"
    assert result["orders"] == 20  # max_orders
    assert sum(result["statuses"].values()) == 20
    assert set(result["statuses"]) <= {
        "waiting_execute_payment",
        "pending_payment",
        "paid",
        "in_processing",
        "closed",
        "canceled",
        "deleted",
    }
    assert sandbox.state.token_requests_ok > tokens_before
    assert sandbox.state.api_requests["/v1/reseller/quotation"] >= 1


@pytest.mark.airflow_cli
@pytest.mark.integration
def test_dieline_to_storage(airflow_env, sandbox, tmp_path):
    out_dir = tmp_path / "dielines"
    conf = json.dumps({"output_dir": f"file://{out_dir}"})
    returncode, output = run_dag(airflow_env, "packly_dieline_to_storage", "-c", conf)
    assert_succeeded(returncode, output, "packly_dieline_to_storage", sandbox)
    result = packly_result(output)
    url = urlsplit(result["path"])
    assert url.scheme == "file"
    written = Path(url.path)
    assert written.parent == out_dir
    data = written.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(data) == result["bytes"] > 0
    assert hashlib.sha256(data).hexdigest() == result["sha256"]
    assert [p.name for p in out_dir.iterdir()] == [written.name]  # no temporary file left


@pytest.mark.airflow_cli
@pytest.mark.integration
def test_quote_then_wait_for_order_defers_and_resumes(airflow_env, sandbox, clock):
    # ORD-0001 starts at waiting_execute_payment and closes 4 steps (4 s) after the clock runs.
    # The clock starts when the sensor task starts, so its first poke cannot see "closed" and it
    # must defer, however long Airflow took to start.
    orders_before = sandbox.state.api_requests["/v1/reseller/orders"]
    output = run_dag_on_a_gated_clock(
        airflow_env,
        sandbox,
        clock,
        "packly_quote_then_wait_for_order",
        start_at="[DAG TEST] starting task_id=wait_for_order_closed",
    )

    lines = output.splitlines()

    def first(text: str) -> int:
        matches = [i for i, line in enumerate(lines) if text in line]
        assert matches, f"{text!r} not in the output:\n{output[-5000:]}"
        return matches[0]

    # The sensor deferred, the trigger ran and the sensor resumed, in that order.
    deferred = first("Deferring: waiting on the triggerer for Packly order ORD-0001")
    trigger_started = first("[DAG TEST] running trigger in line")
    trigger_done = first("[DAG TEST] Trigger completed")
    resumed = first("Packly order ORD-0001 reached status 'closed'")
    assert deferred < trigger_started < trigger_done < resumed
    assert any("new_state=deferred" in line for line in lines[deferred:trigger_started])
    result = packly_result(output)
    assert result == {
        "order_id": "ORD-0001",
        "final_status": "closed",
        "sensor_status": "closed",
        "quotation_total": result["quotation_total"],
    }
    assert result["quotation_total"] > 0
    assert sandbox.state.api_requests["/v1/reseller/orders"] - orders_before >= 3  # poke, trigger polls, summary


@pytest.mark.airflow_cli
@pytest.mark.integration
def test_taskflow_chain_defers_on_an_upstream_order_id_and_maps(airflow_env, sandbox, clock):
    # The order id comes from an upstream @task (an XComArg). The sandbox's clock stands still until
    # the trigger runs, so the sensor's first poke finds the order open and defers however long its
    # task took to start (on a busy machine, more than the 4 s ORD-0001 takes to close).
    quotations_before = sandbox.state.api_requests["/v1/reseller/quotation"]
    output = run_dag_on_a_gated_clock(
        airflow_env, sandbox, clock, "packly_taskflow_chain", start_at="[DAG TEST] running trigger in line"
    )

    lines = output.splitlines()
    deferred = [
        i for i, line in enumerate(lines) if "Deferring: waiting on the triggerer for Packly order ORD-0001" in line
    ]
    assert deferred, output[-5000:]
    assert any("new_state=deferred" in line for line in lines[deferred[0] :])
    assert any("[DAG TEST] Trigger completed" in line for line in lines[deferred[0] :])
    result = packly_result(output)
    assert result["order_id"] == "ORD-0001" and result["order_status"] == "closed"
    totals = result["quotation_totals"]
    assert len(totals) == 3 and all(total > 0 for total in totals)  # one per mapped task instance
    assert sandbox.state.api_requests["/v1/reseller/quotation"] - quotations_before == 3
