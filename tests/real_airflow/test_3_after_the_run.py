"""After the real run: count the token requests per process, then scan everything left for secrets.

Token requests: each task run is its own process under the LocalExecutor, and the token cache is
per process, so a Packly-using task run must make exactly one token request (token lifetime
3600 s, no revocation here), each triggerer process one for all its triggers, each
``airflow connections test`` one, and the api-server one per connection test it ran. The
sandbox's ASGI layer recorded which process sent each request (see harness.py).
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from collections import Counter
from typing import Any

from .harness import CLIENT_ID, CLIENT_SECRET, Harness
from .test_1_dag_runs import REST_CONNECTION_TESTS

WORKER_TITLE = re.compile(r"airflow worker -- ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def all_task_instances(harness: Harness) -> list[dict[str, Any]]:
    response = harness.api.get("/dags/~/dagRuns/~/taskInstances", params={"limit": 1000})
    response.raise_for_status()
    tis: list[dict[str, Any]] = response.json()["task_instances"]
    return tis


def test_one_token_request_per_task_run_and_per_triggerer_process(real_airflow: Harness) -> None:
    harness, sandbox = real_airflow, real_airflow.sandbox
    requests = list(sandbox.token_requests)
    assert len(requests) == sandbox.state.token_requests, "a token request was not attributed"
    by_role = Counter(harness.role_of(r) for r in requests)
    # Left beside the run's logs for whoever reads a failure: who asked for each token.
    (harness.workdir / "token-requests.json").write_text(
        json.dumps([{"role": harness.role_of(r), "pid": r.pid, "cmdline": r.cmdline} for r in requests], indent=1)
    )
    assert by_role["unknown"] == 0, [r for r in requests if harness.role_of(r) == "unknown"]

    # Task runs: processes under the scheduler (the LocalExecutor's workers) titled with their TI.
    task_requests = [r for r in requests if harness.role_of(r).startswith("scheduler-")]
    per_process = Counter(r.pid for r in task_requests)
    assert set(per_process.values()) == {1}, per_process
    per_ti = Counter(m.group(1) for r in task_requests if (m := WORKER_TITLE.search(r.cmdline)))
    assert sum(per_ti.values()) == len(task_requests), [r.cmdline for r in task_requests]
    tis = all_task_instances(harness)
    packly_operators = {
        ti["id"]: f"{ti['dag_id']}.{ti['task_id']}" for ti in tis if (ti.get("operator") or "").startswith("Packly")
    }
    assert packly_operators, "no Packly operator ran"
    missing = {name for ti_id, name in packly_operators.items() if ti_id not in per_ti}
    assert not missing, f"Packly tasks that made no token request: {missing}"
    # A deferred sensor resumes in a new process that only reads the trigger's event: no token.
    assert set(per_ti.values()) == {1}, {ti_id: n for ti_id, n in per_ti.items() if n != 1}

    triggerers = [c for c in harness.components if c.role == "triggerer"]
    assert len(triggerers) == 2  # the first, stopped while a sensor was deferred, and the second
    per_triggerer = {
        f"triggerer-{harness.components.index(c)}": by_role[f"triggerer-{harness.components.index(c)}"]
        for c in triggerers
    }
    assert set(per_triggerer.values()) == {1}, per_triggerer

    assert by_role["cli"] == 2  # airflow connections test, right and wrong secret
    assert sum(n for role, n in by_role.items() if role.startswith("api-server")) == len(REST_CONNECTION_TESTS)
    # Parsing DAG files never calls Packly.
    assert not any(role.startswith("dag-processor") for role in by_role), by_role


def secrets_to_find(harness: Harness) -> dict[str, str]:
    found = {
        "client secret": CLIENT_SECRET,
        "Basic value": base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode(),
        "wrong secret": CLIENT_SECRET + "-wrong",
        "wrong Basic value": base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}-wrong".encode()).decode(),
    }
    tokens = harness.sandbox.state.issued_tokens
    assert tokens, "the sandbox issued no token: nothing ran"
    found.update({f"access token #{n}": token for n, token in enumerate(tokens, 1)})
    return found


def database_texts(harness: Harness) -> dict[str, str]:
    """Every text cell of every table (the encrypted ``connection.password`` excepted), with
    the encrypted columns Airflow can read back (connection extra, trigger kwargs) decrypted."""
    from cryptography.fernet import Fernet, InvalidToken

    fernet = Fernet(harness.fernet_key.encode())
    texts: dict[str, str] = {}
    with sqlite3.connect(harness.home / "airflow.db") as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"connection", "trigger", "xcom", "task_instance", "log"} <= set(tables), tables
        for table in tables:
            columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                if (table, column) == ("connection", "password"):
                    continue
                for n, (value,) in enumerate(db.execute(f'SELECT "{column}" FROM "{table}"')):
                    if value is None:
                        continue
                    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                    texts[f"{table}.{column}[{n}]"] = text
                    if (table, column) in (("connection", "extra"), ("trigger", "kwargs")):
                        try:
                            texts[f"{table}.{column}[{n}] decrypted"] = fernet.decrypt(text.encode()).decode()
                        except InvalidToken:
                            pass
    return texts


def test_secret_scan_of_every_log_and_every_table(real_airflow: Harness) -> None:
    harness = real_airflow
    harness.close()
    harness.stop_all()  # flush and close every log; the DB is quiet
    secrets = secrets_to_find(harness)
    places: dict[str, str] = {}
    for root in (harness.home / "logs", harness.logs):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            places[str(path.relative_to(harness.workdir))] = path.read_text(errors="replace")
    assert any("trigger" in place for place in places), "no trigger log to scan"
    assert any(place.startswith("process-logs/api-server") for place in places)
    assert any(place.startswith("process-logs/triggerer") for place in places)
    task_logs = [place for place in places if "task_id=" in place]
    assert task_logs, "no task log to scan"
    places.update(database_texts(harness))
    hits = [f"{place}: {name}" for place, text in places.items() for name, secret in secrets.items() if secret in text]
    assert hits == [], hits
    # The DB file as bytes: deleted rows and free pages too (the password column is encrypted).
    for path in harness.home.glob("airflow.db*"):
        raw = path.read_bytes()
        assert not [name for name, secret in secrets.items() if secret.encode() in raw], path
    assert len(places) > 100, len(places)
