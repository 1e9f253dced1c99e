"""The real user path: a real Airflow 3.3 (api-server, scheduler, dag-processor, triggerer) runs
every example DAG against the sandbox, through the REST API, as a new user would.

The tests share one Airflow (session fixture) and run in file order: here the DAG runs, the
triggerer restart and the connection tests; then the UI form in a browser
(test_2_connection_form.py); then the token accounting and the secret scan of everything the
run left behind (test_3_after_the_run.py).
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

from .harness import CLIENT_ID, CLIENT_SECRET, TEST_DAGS, Harness, wait_for

ORDER_DAG = "packly_quote_then_wait_for_order"
ORDER_SENSOR = "wait_for_order_closed"
#: The sandbox's clock jumps this far before the example DAGs run: "up for a long time".
LONG_UPTIME = 6 * 3600.0


# -- helpers -------------------------------------------------------------------------------------------
def dag_files(harness: Harness) -> dict[str, str]:
    """dag_id -> the file it came from, for every DAG Airflow knows."""
    dags = harness.api.get("/dags", params={"limit": 100}).json()["dags"]
    return {d["dag_id"]: d["fileloc"] for d in dags}


def import_errors(harness: Harness) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = harness.api.get("/importErrors", params={"limit": 100}).json()["import_errors"]
    return errors


def wait_until_parsed(harness: Harness, files: list[Path]) -> dict[str, str]:
    """Wait until each file has a DAG or an import error; return dag_id -> file."""

    def parsed() -> dict[str, str] | None:
        known = dag_files(harness)
        seen = set(known.values()) | {e["filename"] for e in import_errors(harness)}
        missing = [f for f in files if not any(s.endswith(f.name) for s in seen)]
        return None if missing else known

    found: dict[str, str] = wait_for(f"the DAG processor to parse {[f.name for f in files]}", parsed, 180, 2.0)
    return found


def is_order_sensor(ti: dict[str, Any]) -> bool:
    return "OrderStatusSensor" in (ti.get("operator") or "") or "OrderProductsShippedSensor" in (
        ti.get("operator") or ""
    )


def trigger_row(harness: Harness, trigger_id: int) -> dict[str, Any]:
    """A trigger's row in the metadata DB, kwargs decrypted (the REST API empties them)."""
    from cryptography.fernet import Fernet

    with sqlite3.connect(harness.home / "airflow.db") as db:
        row = db.execute("SELECT kwargs, triggerer_id FROM trigger WHERE id = ?", (trigger_id,)).fetchone()
    assert row is not None, f"trigger {trigger_id} is not in the trigger table"
    encrypted, triggerer_id = row
    text = (
        encrypted
        if encrypted.startswith("{")
        else Fernet(harness.fernet_key.encode()).decrypt(encrypted.encode()).decode()
    )
    return {"kwargs_text": text, "triggerer_id": triggerer_id}


def deadline_in(kwargs_text: str) -> str:
    """The ``deadline`` value inside a trigger's serialized kwargs."""

    def find(value: Any) -> Any:
        if isinstance(value, dict):
            if "deadline" in value:
                return value["deadline"]
            for item in value.values():
                if (found := find(item)) is not None:
                    return found
        if isinstance(value, list):
            for item in value:
                if (found := find(item)) is not None:
                    return found
        return None

    deadline = find(json.loads(kwargs_text))
    assert deadline is not None, "no deadline in the trigger's kwargs"
    return json.dumps(deadline, sort_keys=True)


def wait_for_deferred(harness: Harness, dag_id: str, run_id: str, task_id: str, timeout: float = 180) -> dict[str, Any]:
    """Poll the task instance until it is ``deferred`` with its trigger picked up; return it."""

    def deferred() -> dict[str, Any] | None:
        ti = harness.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").json()
        if ti.get("state") in ("success", "failed", "skipped", "upstream_failed"):
            raise AssertionError(f"{dag_id}.{task_id} finished ({ti['state']}) without being seen deferred")
        trigger = ti.get("trigger") or {}
        return ti if ti.get("state") == "deferred" and trigger.get("id") and ti.get("triggerer_job") else None

    ti: dict[str, Any] = wait_for(f"{dag_id}.{task_id} to be deferred on the triggerer", deferred, timeout, 0.5)
    wait_for(
        f"the scheduler to see {dag_id}.{task_id}'s deferring process exit",
        lambda: harness.executor_events(dag_id, task_id, run_id) >= 1,
        timeout,
        0.5,
    )
    return ti


# -- the tests -----------------------------------------------------------------------------------------
def test_every_example_dag_and_test_dag_parses_without_import_errors(
    real_airflow: Harness, example_files: list[Path]
) -> None:
    files = [*example_files, *sorted(TEST_DAGS.glob("*.py"))]
    wait_until_parsed(real_airflow, files)
    errors = import_errors(real_airflow)
    assert errors == [], "\n\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)


RUNS: dict[str, str] = {}  # dag_id -> run id of the example runs (for the later tests)


def test_every_example_dag_runs_and_the_order_sensor_defers_after_a_long_uptime(
    real_airflow: Harness, example_files: list[Path]
) -> None:
    harness, sandbox = real_airflow, real_airflow.sandbox
    known = wait_until_parsed(harness, example_files)
    example_dag_ids = sorted(d for d, f in known.items() if Path(f).parent == example_files[0].parent)
    assert len(example_dag_ids) >= len(example_files), (example_dag_ids, example_files)

    # Issue 8 item 7: the sandbox has been up for hours (its clock jumps) and no order has been
    # listed yet. Frozen, so the orders wait for us while Airflow starts the tasks.
    sandbox.clock.freeze()
    sandbox.clock.jump(LONG_UPTIME)
    for dag_id in example_dag_ids:
        RUNS[dag_id] = harness.trigger(dag_id)

    sensor = wait_for_deferred(harness, ORDER_DAG, RUNS[ORDER_DAG], ORDER_SENSOR)
    # Other DAGs' order sensors (e.g. a TaskFlow chain) must defer too.
    for dag_id in example_dag_ids:
        for ti in harness.task_instances(dag_id, RUNS[dag_id]):
            if is_order_sensor(ti):
                wait_for_deferred(harness, dag_id, RUNS[dag_id], ti["task_id"])
    assert sensor["trigger"]["classpath"].endswith("PacklyOrderStatusTrigger")

    sandbox.clock.jump(60)  # every order reaches its final state
    sandbox.clock.run()
    states = {dag_id: harness.wait_for_run(dag_id, RUNS[dag_id]) for dag_id in example_dag_ids}
    failed = {d: s for d, s in states.items() if s != "success"}
    assert not failed, {d: [(ti["task_id"], ti["state"]) for ti in harness.task_instances(d, RUNS[d])] for d in failed}
    # Resumed by the triggerer: the sensor's try ran its completion method after the trigger fired.
    ti = harness.api.get(f"/dags/{ORDER_DAG}/dagRuns/{RUNS[ORDER_DAG]}/taskInstances/{ORDER_SENSOR}").json()
    assert ti["state"] == "success" and ti["try_number"] == 1
    log = harness.task_log(ORDER_DAG, RUNS[ORDER_DAG], ORDER_SENSOR)
    assert "has status 'waiting_execute_payment'; waiting" in log, log
    deferred_at, resumed_at = log.find("Pausing task as DEFERRED"), log.find("reached status 'closed'")
    assert 0 <= deferred_at < resumed_at, log
    wait_for_fired_trigger_log(harness, RUNS[ORDER_DAG], "*")
    summary = harness.api.get(
        f"/dags/{ORDER_DAG}/dagRuns/{RUNS[ORDER_DAG]}/taskInstances/summarize/xcomEntries/return_value"
    ).json()
    assert '"closed"' in json.dumps(summary["value"]) or "'closed'" in str(summary["value"]), summary


def test_a_triggerer_restart_keeps_the_deferred_sensor_and_its_deadline(real_airflow: Harness) -> None:
    harness, sandbox = real_airflow, real_airflow.sandbox
    sandbox.clock.freeze()
    sandbox.state.reset_clock()  # ORD-0001 starts again at waiting_execute_payment when next listed
    run_id = harness.trigger(ORDER_DAG)
    RUNS[f"{ORDER_DAG} (triggerer restart)"] = run_id
    ti = wait_for_deferred(harness, ORDER_DAG, run_id, ORDER_SENSOR)
    trigger_id = ti["trigger"]["id"]
    before = trigger_row(harness, trigger_id)
    assert before["triggerer_id"] is not None

    old = harness.running("triggerer")
    harness.stop(old)  # by its PID, while the sensor is deferred
    assert old.process.returncode is not None
    new = harness.start("triggerer")
    assert new.pid != old.pid

    def picked_up_by_the_new_triggerer() -> dict[str, Any] | None:
        row = trigger_row(harness, trigger_id)
        return row if row["triggerer_id"] not in (None, before["triggerer_id"]) else None

    after = wait_for("the new triggerer to take over the trigger", picked_up_by_the_new_triggerer, 120, 1.0)
    assert deadline_in(after["kwargs_text"]) == deadline_in(before["kwargs_text"])
    assert harness.run_state(ORDER_DAG, run_id) == "running"

    sandbox.clock.jump(60)  # ORD-0001 closes
    sandbox.clock.run()
    assert harness.wait_for_run(ORDER_DAG, run_id) == "success"
    ti = harness.api.get(f"/dags/{ORDER_DAG}/dagRuns/{run_id}/taskInstances/{ORDER_SENSOR}").json()
    assert ti["state"] == "success" and ti["try_number"] == 1
    wait_for_fired_trigger_log(harness, run_id, str(after["triggerer_id"]))


def wait_for_fired_trigger_log(harness: Harness, run_id: str, triggerer_id: str) -> None:
    """The triggerer writes its log line on its own schedule: the run may be `success` before it."""
    folder = harness.home / f"logs/dag_id={ORDER_DAG}/run_id={run_id}/task_id={ORDER_SENSOR}"

    def fired() -> bool:
        return any("Trigger fired event" in log.read_text() for log in folder.glob(f"*.trigger.{triggerer_id}.log"))

    try:
        wait_for("the triggerer's log to say the trigger fired", fired, 60)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; files there: {sorted(p.name for p in folder.glob('*'))}") from None


#: How many connection tests the api-server ran (each its own token request, see test_3).
REST_CONNECTION_TESTS: list[str] = []


def secret_forms(secret: str) -> dict[str, str]:
    return {"client secret": secret, "Basic value": base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()}


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        for name, value in secret_forms(secret).items():
            assert value not in text, f"the {name} appears in the output"


def test_airflow_connections_test_with_the_right_and_a_wrong_secret(real_airflow: Harness) -> None:
    harness = real_airflow
    right = harness.airflow("connections", "test", "packly_default")
    assert right.returncode == 0, right.stdout + right.stderr
    assert "Connection success!" in right.stdout, right.stdout
    wrong_secret = CLIENT_SECRET + "-wrong"
    env = dict(harness.env)
    env["AIRFLOW_CONN_PACKLY_DEFAULT"] = harness.env["AIRFLOW_CONN_PACKLY_DEFAULT"].replace(CLIENT_SECRET, wrong_secret)
    wrong = harness.airflow("connections", "test", "packly_default", env=env)
    assert "Connection failed!" in wrong.stdout, wrong.stdout + wrong.stderr
    assert "Invalid client credentials" in wrong.stdout or "401" in wrong.stdout, wrong.stdout
    for done in (right, wrong):
        assert_no_secret(done.stdout + done.stderr, CLIENT_SECRET, wrong_secret)


def test_rest_connection_test_with_the_right_and_a_wrong_secret(real_airflow: Harness) -> None:
    harness = real_airflow
    body = {
        "connection_id": "packly_rest_test",
        "conn_type": "packly",
        "login": CLIENT_ID,
        "password": CLIENT_SECRET,
        "host": harness.sandbox.base_url,
        "extra": json.dumps({"environment": "sandbox"}),
    }
    right = harness.api.post("/connections/test", json=body)
    REST_CONNECTION_TESTS.append("right")
    assert right.status_code == 200, right.text
    assert right.json()["status"] is True, right.text
    wrong_secret = CLIENT_SECRET + "-wrong"
    wrong = harness.api.post("/connections/test", json={**body, "password": wrong_secret})
    REST_CONNECTION_TESTS.append("wrong")
    assert wrong.status_code == 200, wrong.text
    assert wrong.json()["status"] is False, wrong.text
    for response in (right, wrong):
        assert_no_secret(response.text, CLIENT_SECRET, wrong_secret)
