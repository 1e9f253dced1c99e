"""The scale-out run: the example DAGs and ``packly_scale_out`` on a local Celery cluster, then the
same DAG on the LocalExecutor, against one sandbox. Run with ``./dev cluster``.

One test, in steps, because each step needs the cluster the previous one brought up:

1. PostgreSQL and Redis start (by PID); Airflow on PostgreSQL with the CeleryExecutor: api-server,
   scheduler, dag-processor, triggerer and two ``airflow celery worker`` (prefork, 2 slots each).
2. Every example DAG runs (their order sensors deferred on the triggerer first), then
   ``packly_scale_out``: 50 mapped quotations and 20 mapped sensors, all 20 deferred at once on
   the triggerer before the sandbox's orders are let close.
3. The cluster stops; Airflow on the LocalExecutor (same PostgreSQL, its own database, same
   parallelism) runs ``packly_scale_out`` the same way, for the wall-time comparison.
4. Checks and the report (printed, and written beside the run's logs): every task succeeded on
   its first try, tasks per worker (both workers used), one token request per Packly task run and
   one per triggerer process (token lifetime 3600 s), no socket held by two processes at any
   request (no connection crossed a fork), no run hung (every wait has a generous limit).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum

from ..real_airflow import test_1_dag_runs as real
from ..real_airflow.harness import COMPONENTS, EXAMPLE_DAGS, ControlledClock, Harness, wait_for
from ..real_airflow.test_3_after_the_run import WORKER_TITLE
from .cluster import (
    PARALLELISM,
    WORKER_CONCURRENCY,
    ClusterHarness,
    ClusterSandbox,
    Service,
    create_database,
    postgres,
    redis,
    serve_cluster_sandbox,
)
from .dags.packly_scale_out import DAG_ID, ORDER_IDS, POOL, QUOTATIONS

SENSOR = "wait_for_order"
WORKERS = 2
POOL_SLOTS = 3  # fewer than the 4 task slots, so the pool, not the executor, is what bounds the quotations
RUN_TIMEOUT = 1800.0  # a whole DAG run, on two cores shared with other work
START_TIMEOUT = 600.0


@dataclass
class Outcome:
    """What one Airflow (Celery or Local) did, for the checks and the report."""

    executor: str
    task_instances: list[dict[str, Any]] = field(default_factory=list)  # every TI of every run
    scale_wall_seconds: float = 0.0
    max_deferred_at_once: int = 0
    token_roles: Counter[str] = field(default_factory=Counter)
    tokens_per_ti: Counter[str] = field(default_factory=Counter)
    task_token_requests: int = 0
    triggerer_tokens: dict[str, int] = field(default_factory=dict)
    requests_checked: int = 0
    shared_sockets: list[str] = field(default_factory=list)
    unattributed_sockets: int = 0


# -- bringing Airflow up and down --------------------------------------------------------------------------
def start_airflow(harness: ClusterHarness, workers: int) -> None:
    migrated = harness.airflow("db", "migrate", timeout=START_TIMEOUT)
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    pool = harness.airflow("pools", "set", POOL, str(POOL_SLOTS), "Packly API calls (cluster suite)")
    assert pool.returncode == 0, pool.stdout + pool.stderr
    for role in COMPONENTS:
        harness.start(role)
    for n in range(1, workers + 1):
        harness.start_worker(n)

    def up() -> bool:
        for component in harness.components:
            if component.process.poll() is not None:
                raise RuntimeError(
                    f"{component.role} (PID {component.pid}) exited with {component.process.returncode}:"
                    f" {component.log.read_text(errors='replace')[-3000:]}"
                )
        health = harness.health() or {}
        healthy = all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )
        ready = all(
            " ready." in c.log.read_text(errors="replace") for c in harness.components if c.role == "celery-worker"
        )
        return healthy and ready

    wait_for("every Airflow component healthy and every Celery worker ready", up, START_TIMEOUT, 2.0)


# -- the runs ----------------------------------------------------------------------------------------------
def run_examples(harness: Harness, sandbox: ClusterSandbox) -> list[tuple[str, str]]:
    """Every example DAG once, order sensors deferred before the orders may close."""
    files = sorted(EXAMPLE_DAGS.glob("*.py"))
    known = real.wait_until_parsed(harness, files)
    dag_ids = sorted(d for d, f in known.items() if Path(f).parent == EXAMPLE_DAGS)
    assert len(dag_ids) >= len(files), (dag_ids, files)
    sandbox.state.reset_clock()
    sandbox.clock.freeze()
    runs = [(dag_id, harness.trigger(dag_id)) for dag_id in dag_ids]
    for dag_id, run_id in runs:
        for ti in harness.task_instances(dag_id, run_id):
            if real.is_order_sensor(ti):
                real.wait_for_deferred(harness, dag_id, run_id, ti["task_id"], timeout=RUN_TIMEOUT)
    sandbox.clock.jump(60)
    sandbox.clock.run()
    for dag_id, run_id in runs:
        harness.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    return runs


def run_scale_out(harness: Harness, sandbox: ClusterSandbox) -> tuple[str, float, int]:
    """``packly_scale_out`` once: all sensors deferred at once, then the orders close.

    Returns the run id, the wall time from triggering to the run's end, and how many sensors were
    deferred on the triggerer at the same moment.
    """
    real.wait_until_parsed(harness, [Path(__file__).parent / "dags" / "packly_scale_out.py"])
    sandbox.state.reset_clock()
    sandbox.clock.freeze()
    started = time.monotonic()
    run_id = harness.trigger(DAG_ID)

    def all_deferred() -> int | None:
        sensors = [ti for ti in run_task_instances(harness, run_id) if ti["task_id"] == SENSOR]
        finished = [ti for ti in sensors if ti["state"] in ("success", "failed", "upstream_failed", "skipped")]
        assert not finished, f"sensors finished before the orders could close: {finished}"
        deferred = [ti for ti in sensors if ti["state"] == "deferred" and ti.get("triggerer_job")]
        return len(deferred) if len(deferred) == len(ORDER_IDS) else None

    deferred_at_once: int = wait_for(
        f"all {len(ORDER_IDS)} order sensors deferred on the triggerer", all_deferred, RUN_TIMEOUT, 2.0
    )
    wait_for(  # see Harness.executor_events: let the scheduler see each deferring process exit first
        "the scheduler to see every deferring sensor process exit",
        lambda: harness.executor_events(DAG_ID, SENSOR, run_id) >= len(ORDER_IDS),
        RUN_TIMEOUT,
        1.0,
    )
    sandbox.clock.jump(60)  # every order closes
    sandbox.clock.run()
    state = harness.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    wall = time.monotonic() - started
    assert state == "success", [
        (ti["task_id"], ti["map_index"], ti["state"]) for ti in run_task_instances(harness, run_id)
    ]
    return run_id, wall, deferred_at_once


def run_task_instances(harness: Harness, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of one ``packly_scale_out`` run (71: past the API's default page of 50)."""
    response = harness.api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
    response.raise_for_status()
    tis: list[dict[str, Any]] = response.json()["task_instances"]
    return tis


def all_task_instances(harness: Harness) -> list[dict[str, Any]]:
    response = harness.api.get("/dags/~/dagRuns/~/taskInstances", params={"limit": 1000})
    response.raise_for_status()
    tis: list[dict[str, Any]] = response.json()["task_instances"]
    return tis


def account(harness: Harness, sandbox: ClusterSandbox, outcome: Outcome, first_token: int, first_use: int) -> None:
    """Token requests and socket uses of this Airflow (from the given positions on)."""
    requests = sandbox.token_requests[first_token:]
    outcome.token_roles = Counter(harness.role_of(r) for r in requests)
    task_roles = ("celery-worker-", "scheduler-")  # task processes run under a worker / the LocalExecutor
    task_requests = [r for r in requests if harness.role_of(r).startswith(task_roles)]
    outcome.task_token_requests = len(task_requests)
    outcome.tokens_per_ti = Counter(m.group(1) for r in task_requests if (m := WORKER_TITLE.search(r.cmdline)))
    outcome.triggerer_tokens = {
        f"triggerer-{i}": outcome.token_roles[f"triggerer-{i}"]
        for i, c in enumerate(harness.components)
        if c.role == "triggerer"
    }
    uses = sandbox.socket_uses[first_use:]
    outcome.requests_checked = len(uses)
    outcome.shared_sockets = [f"{u.path} from port {u.peer_port}: PIDs {u.holders}" for u in uses if len(u.holders) > 1]
    outcome.unattributed_sockets = sum(1 for u in uses if not u.holders)


def run_airflow(
    workdir: Path, sandbox: ClusterSandbox, pg: Service, *, executor: str, broker: Service | None, examples: bool
) -> Outcome:
    outcome = Outcome(executor)
    database = create_database(pg, executor.lower())
    broker_url = f"redis://127.0.0.1:{broker.port}/0" if broker else None
    harness = ClusterHarness(workdir, sandbox, executor=executor, database_url=database, broker_url=broker_url)
    first_token, first_use = len(sandbox.token_requests), len(sandbox.socket_uses)
    try:
        start_airflow(harness, WORKERS if broker else 0)
        if examples:
            run_examples(harness, sandbox)
        _, outcome.scale_wall_seconds, outcome.max_deferred_at_once = run_scale_out(harness, sandbox)
        outcome.task_instances = all_task_instances(harness)
        account(harness, sandbox, outcome, first_token, first_use)
    finally:
        harness.close()
        harness.stop_all()
    return outcome


# -- the report --------------------------------------------------------------------------------------------
def packly_tis(outcome: Outcome) -> list[dict[str, Any]]:
    """Task instances that call Packly in their own process (operators, sensors, the hook tasks)."""
    return [
        ti for ti in outcome.task_instances if ti["id"] in outcome.tokens_per_ti or "Packly" in (ti["operator"] or "")
    ]


def report(celery: Outcome, local: Outcome, seconds: float) -> str:
    per_worker = Counter(ti["hostname"] for ti in celery.task_instances)
    scale_per_worker = Counter(ti["hostname"] for ti in celery.task_instances if ti["dag_id"] == DAG_ID)
    rows = [
        ("task instances, all succeeded on try 1", len(celery.task_instances), len(local.task_instances)),
        (f"`{DAG_ID}` wall time, trigger to success", seconds_of(celery), seconds_of(local)),
        (
            f"most quotations running at once (pool of {POOL_SLOTS})",
            most_at_once(celery, "quote"),
            most_at_once(local, "quote"),
        ),
        ("order sensors deferred on the triggerer at once", celery.max_deferred_at_once, local.max_deferred_at_once),
        ("task runs calling Packly / token requests from them", tasks_and_tokens(celery), tasks_and_tokens(local)),
        ("token requests per task run (goal 1)", fmt_range(celery.tokens_per_ti), fmt_range(local.tokens_per_ti)),
        (
            "token requests per triggerer process (goal 1)",
            fmt_values(celery.triggerer_tokens),
            fmt_values(local.triggerer_tokens),
        ),
        ("sandbox requests checked / socket held by 2+ processes", sockets(celery), sockets(local)),
    ]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Cluster run (./dev cluster), {when}, {seconds / 60:.1f} min in all",
        "",
        "| | CeleryExecutor (2 workers x 2 prefork slots) | LocalExecutor (parallelism 4) |",
        "|---|---|---|",
        *(f"| {label} | {a} | {b} |" for label, a, b in rows),
        "",
        "Task instances per Celery worker (hostname): "
        + ", ".join(f"{host}: {n}" for host, n in sorted(per_worker.items()))
        + f"; of them `{DAG_ID}`: "
        + ", ".join(f"{host}: {n}" for host, n in sorted(scale_per_worker.items())),
    ]
    return "\n".join(lines)


def seconds_of(outcome: Outcome) -> str:
    return f"{outcome.scale_wall_seconds:.0f} s"


def tasks_and_tokens(outcome: Outcome) -> str:
    return f"{len(packly_tis(outcome))} / {outcome.task_token_requests}"


def sockets(outcome: Outcome) -> str:
    return f"{outcome.requests_checked} / {len(outcome.shared_sockets)}"


def most_at_once(outcome: Outcome, task_id: str) -> int:
    """The most ``task_id`` instances of the scale-out run that were running at the same moment
    (from their start and end dates: a start counts before an end at the same instant)."""
    edges = (
        (stamp, step)
        for ti in outcome.task_instances
        if ti["dag_id"] == DAG_ID and ti["task_id"] == task_id
        for stamp, step in ((pendulum.parse(ti["start_date"]), 1), (pendulum.parse(ti["end_date"]), -1))
    )
    running = most = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], -edge[1])):
        running += step
        most = max(most, running)
    return most


def fmt_range(counts: Counter[str]) -> str:
    values = set(counts.values())
    return "none" if not values else (str(min(values)) if len(values) == 1 else f"{min(values)}-{max(values)}")


def fmt_values(counts: dict[str, int]) -> str:
    return ", ".join(str(n) for n in counts.values()) or "none"


# -- the test ----------------------------------------------------------------------------------------------
def test_scale_out_on_celery_and_local_executors() -> None:
    began = time.monotonic()
    # Kept after the run (logs, report), outside pytest's rotating temporary folders.
    workdir = Path(tempfile.mkdtemp(prefix="packly-cluster-"))
    with serve_cluster_sandbox(ControlledClock()) as sandbox, postgres() as pg, redis(workdir) as broker:
        celery = run_airflow(workdir / "celery", sandbox, pg, executor="CeleryExecutor", broker=broker, examples=True)
        local = run_airflow(workdir / "local", sandbox, pg, executor="LocalExecutor", broker=None, examples=False)
    text = report(celery, local, time.monotonic() - began)
    (workdir / "report.md").write_text(text + "\n")
    (workdir / "outcomes.json").write_text(
        json.dumps({o.executor: o.__dict__ for o in (celery, local)}, default=str, indent=1)
    )
    print(f"\n{text}\n\n(report and outcomes in {workdir})")

    for outcome in (celery, local):
        name = outcome.executor
        not_ok = [
            (ti["dag_id"], ti["task_id"], ti["map_index"], ti["state"], ti["try_number"])
            for ti in outcome.task_instances
            if ti["state"] != "success" or ti["try_number"] != 1
        ]
        assert not not_ok, f"{name}: task instances that did not succeed on their first try: {not_ok}"
        scale = [ti for ti in outcome.task_instances if ti["dag_id"] == DAG_ID]
        assert sum(ti["task_id"] == "quote" for ti in scale) == QUOTATIONS, name
        assert sum(ti["task_id"] == SENSOR for ti in scale) == len(ORDER_IDS) >= 20, name
        assert outcome.max_deferred_at_once >= 20, name
        assert 1 <= most_at_once(outcome, "quote") <= POOL_SLOTS, name  # the pool bounds them
        # One token per Packly task run: every such TI asked once, and no task request went unattributed.
        assert outcome.token_roles["unknown"] == 0, (name, outcome.token_roles)
        assert sum(outcome.tokens_per_ti.values()) == outcome.task_token_requests, name
        missing = [
            f"{ti['dag_id']}.{ti['task_id']}[{ti['map_index']}]"
            for ti in packly_tis(outcome)
            if ti["id"] not in outcome.tokens_per_ti
        ]
        assert not missing, f"{name}: Packly task runs that made no token request: {missing}"
        assert set(outcome.tokens_per_ti.values()) == {1}, (name, outcome.tokens_per_ti)
        assert list(outcome.triggerer_tokens.values()) == [1], (name, outcome.triggerer_tokens)
        assert not any(role.startswith("dag-processor") for role in outcome.token_roles), outcome.token_roles
        # No connection crossed a fork: every request's socket was held by exactly one process.
        assert outcome.shared_sockets == [], (name, outcome.shared_sockets)
        assert outcome.requests_checked > QUOTATIONS and outcome.unattributed_sockets == 0, (
            name,
            outcome.requests_checked,
            outcome.unattributed_sockets,
        )
    per_worker = Counter(ti["hostname"] for ti in celery.task_instances if ti["dag_id"] == DAG_ID)
    assert set(per_worker) == {f"worker-{n}" for n in range(1, WORKERS + 1)}, per_worker
    assert all(n >= 1 for n in per_worker.values()), per_worker
    assert WORKER_CONCURRENCY * WORKERS == PARALLELISM
