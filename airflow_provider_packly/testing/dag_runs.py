"""Run a user's DAG with ``dag.test()`` in the test process, against a throwaway Airflow home.

Airflow reads ``AIRFLOW_HOME`` once, when it is first imported, and keeps its metadata database
there. :func:`prepare_airflow_home` makes sure that is a folder of the test session's own (never
``~/airflow`` by accident) and creates the database once; :func:`run_dag` then runs one DAG with
``dag.test()``: every task in this process, a deferred sensor's trigger run in line by Airflow
itself, and returns a :class:`DagTestResult`.

Airflow is imported inside the functions, never when this module is imported.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG

__all__ = ["AirflowHomeError", "DagTestResult", "prepare_airflow_home", "run_dag"]

#: The environment a throwaway Airflow home gets: no example DAGs to parse on every run.
ISOLATED_ENVIRONMENT: dict[str, str] = {"AIRFLOW__CORE__LOAD_EXAMPLES": "False"}

_BUNDLE_CONFIG = "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"


class AirflowHomeError(RuntimeError):
    """Airflow was set up (or imported) in a way that would make a DAG test use the wrong home."""


def isolate_airflow_home(folder: Path) -> bool:
    """Point ``AIRFLOW_HOME`` at ``folder`` unless it is set already; return whether it did.

    Only works before Airflow is imported (Airflow reads it once). Also turns off the example
    DAGs, which ``dag.test()`` would otherwise parse on every run.
    """
    if os.environ.get("AIRFLOW_HOME"):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(folder)
    for key, value in ISOLATED_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    return True


def prepare_airflow_home(default_home: Path) -> Path:
    """Make sure Airflow uses a known home, create (or migrate) its database, return the home.

    * ``AIRFLOW_HOME`` set (by you, your conftest, or the plugin's ``packly_airflow_home`` ini
      option): that folder is used;
    * not set and Airflow not imported yet: ``default_home`` (a throwaway folder) is used;
    * not set but Airflow already imported: Airflow has settled on ``~/airflow``, and a test
      must not write DAG runs into your own Airflow's database: :class:`AirflowHomeError` says
      how to fix it.
    """
    if not os.environ.get("AIRFLOW_HOME"):
        if "airflow" in sys.modules:
            raise AirflowHomeError(
                "Airflow was imported before the Packly test fixtures could point AIRFLOW_HOME at a "
                "throwaway folder, so it would use ~/airflow and its database. Add "
                "'packly_airflow_home = isolated' to your pytest configuration (it sets AIRFLOW_HOME "
                "before any test module is imported), or set AIRFLOW_HOME yourself."
            )
        isolate_airflow_home(default_home)
    home = Path(os.environ["AIRFLOW_HOME"])
    from airflow.utils import db

    db.initdb()
    return home


@dataclass
class DagTestResult:
    """What one ``dag.test()`` run did: its state, each task's state, and a way to read XComs."""

    dag_run: DagRun
    state: str
    """The run's final state: ``success`` or ``failed``."""
    task_states: dict[str, str | None] = field(default_factory=dict)
    """Task id (``task_id`` or ``task_id[map_index]`` for mapped tasks) -> final state."""

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        """Return the XCom ``key`` that task ``task_id`` pushed in this run (its return value by default)."""
        instances = self.dag_run.get_task_instances()
        if not instances:
            raise LookupError(f"the run of {self.dag_run.dag_id} has no task instances")
        return instances[0].xcom_pull(task_ids=task_id, key=key)

    def __str__(self) -> str:
        tasks = ", ".join(f"{task}={state}" for task, state in sorted(self.task_states.items()))
        return f"dag run {self.dag_run.run_id} of {self.dag_run.dag_id}: {self.state} ({tasks})"


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_dag(
    dag: DAG,
    *,
    run_conf: dict[str, Any] | None = None,
    logical_date: datetime | None = None,
) -> DagTestResult:
    """Run ``dag`` once with ``dag.test()`` in this process and return what happened.

    Airflow 3's ``dag.test()`` runs only DAGs it finds in a DAG bundle, so for the length of
    the call the DAG bundle is the folder of the file that defined ``dag`` (``dag.fileloc``):
    keep test DAGs in their own files, as your real DAGs are. Needs a prepared Airflow home
    (:func:`prepare_airflow_home`). A deferred sensor's trigger runs in line, for real: the
    run takes as long as the trigger waits (its poll interval, the sandbox's order steps).
    """
    folder = Path(dag.fileloc).resolve().parent
    bundle = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(folder), "refresh_interval": 0},
        }
    ]
    kwargs: dict[str, Any] = {"run_conf": run_conf}
    if logical_date is not None:
        kwargs["logical_date"] = logical_date
    with _environment({_BUNDLE_CONFIG: json.dumps(bundle)}):
        dag_run = dag.test(**kwargs)
    states: dict[str, str | None] = {}
    for instance in dag_run.get_task_instances():
        name = instance.task_id if instance.map_index < 0 else f"{instance.task_id}[{instance.map_index}]"
        states[name] = None if instance.state is None else str(instance.state)
    return DagTestResult(dag_run=dag_run, state=str(dag_run.state), task_states=states)
