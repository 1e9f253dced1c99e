"""Secret scan: run every example DAG with DEBUG logging and search everything it left behind.

Run ``./dev secret-scan``. With a sandbox on loopback (in this process, so every token it issues
is known), it runs ``airflow connections test`` and ``airflow dags test`` for each example DAG
with ``[logging] logging_level = DEBUG`` and DEBUG for ``airflow_provider_packly``, ``httpx`` and
``httpcore`` (Airflow caps httpx at WARN by default), then searches:

* the console output of every command (``dags test`` prints task logs and does not mask);
* every file under ``AIRFLOW_HOME/logs`` (task logs);
* every XCom value and rendered template field in the metadata database, and the raw
  database file;
* every trigger payload: each trigger's ``serialize()`` output, recorded as the DAG runs;

for the client secret, the Basic header value (and its base64 alone) and every access token the
sandbox issued. Required: 0 hits. The suite runs it in full (``tests/reliability``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets as secrets_module
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.run_examples import DAG_IDS, ORDER_STEP_SECONDS, SANDBOX_CLIENT_ID, airflow, airflow_environment

TRIGGER_CAPTURE_ENV = "PACKLY_SECRET_SCAN_TRIGGERS"
DEBUG_NAMESPACES = "airflow_provider_packly=debug httpx=debug httpcore=debug"


@dataclass
class ScanReport:
    secrets_searched: int
    tokens_issued: int
    places: dict[str, int] = field(default_factory=dict)  # where -> how many items searched
    hits: list[str] = field(default_factory=list)  # "where: which secret"
    #: Lines Airflow's own in-process supervisor prints at DEBUG under ``airflow dags test``: it
    #: logs each MaskSecret request with its value (upstream; real task runs do not).
    upstream: list[str] = field(default_factory=list)
    dag_failures: list[str] = field(default_factory=list)
    debug_lines: int = 0  # httpcore/httpx DEBUG lines seen: proof DEBUG was on

    @property
    def ok(self) -> bool:
        return not self.hits and not self.dag_failures and self.debug_lines > 0 and self.tokens_issued > 0


def _secrets(client_secret: str, tokens: Sequence[str]) -> dict[str, str]:
    basic = base64.b64encode(f"{SANDBOX_CLIENT_ID}:{client_secret}".encode()).decode()
    found = {"client secret": client_secret, "Basic header value": basic}
    found.update({f"access token #{n}": token for n, token in enumerate(tokens, start=1)})
    return found


def _search(report: ScanReport, where: str, text: str, secrets: dict[str, str]) -> None:
    _search_into(report.hits, where, text, secrets)


def _search_into(found: list[str], where: str, text: str, secrets: dict[str, str]) -> None:
    for name, secret in secrets.items():
        if secret in text:
            found.append(f"{where}: {name}")


def _database_texts(database: Path) -> dict[str, list[str]]:
    """XCom values and rendered template fields, as stored."""
    texts: dict[str, list[str]] = {"XCom values": [], "rendered template fields": []}
    with sqlite3.connect(database) as connection:
        for (value,) in connection.execute("SELECT value FROM xcom"):
            texts["XCom values"].append(_as_text(value))
        for (fields,) in connection.execute("SELECT rendered_fields FROM rendered_task_instance_fields"):
            texts["rendered template fields"].append(str(fields))
    return texts


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else json.dumps(value)


def run_scan(workdir: Path, dag_ids: Sequence[str] = DAG_IDS) -> ScanReport:
    from airflow_provider_packly.sandbox import SandboxConfig, run_sandbox

    workdir.mkdir(parents=True, exist_ok=True)
    capture = workdir / "trigger-payloads.jsonl"
    capture.unlink(missing_ok=True)
    outputs: dict[str, str] = {}
    # A fresh secret, so that any hit is a leak (the default sandbox secret is quoted in docs).
    client_secret = "scan-" + secrets_module.token_urlsafe(18)
    config = SandboxConfig(
        credentials={"sandbox": (SANDBOX_CLIENT_ID, client_secret)}, order_step_seconds=ORDER_STEP_SECONDS
    )
    with run_sandbox(config, port=0) as sandbox:
        env = airflow_environment(workdir / "airflow-home", sandbox.base_url, client_secret=client_secret)
        env.update(
            {
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
                "AIRFLOW__LOGGING__NAMESPACE_LEVELS": DEBUG_NAMESPACES,
                TRIGGER_CAPTURE_ENV: str(capture),
            }
        )
        migrate = airflow(["db", "migrate"], env)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
        tested = airflow(["connections", "test", "packly_default"], env)
        outputs["airflow connections test"] = tested.stdout + tested.stderr
        failures = [] if "Connection success!" in outputs["airflow connections test"] else ["connections test"]
        for dag_id in dag_ids:
            sandbox.state.reset_clock()
            completed = _dags_test_recording_triggers(dag_id, env)
            outputs[f"airflow dags test {dag_id}"] = completed.stdout + completed.stderr
            if completed.returncode != 0:
                failures.append(dag_id)
        tokens = sandbox.state.issued_tokens

    secrets = _secrets(client_secret, tokens)
    report = ScanReport(secrets_searched=len(secrets), tokens_issued=len(tokens), dag_failures=failures)
    for where, text in outputs.items():
        for line in text.splitlines():
            if "Sending request" in line and "MaskSecret(value=" in line:
                _search_into(report.upstream, f"console of {where}", line, secrets)
            else:
                _search(report, f"console of {where}", line, secrets)
        report.debug_lines += sum(1 for line in text.splitlines() if "httpcore" in line and "debug" in line.lower())
    report.places["console outputs"] = len(outputs)

    log_files = [path for path in (workdir / "airflow-home" / "logs").rglob("*") if path.is_file()]
    for path in log_files:
        _search(report, f"log file {path.name}", path.read_text(errors="replace"), secrets)
    report.places["log files"] = len(log_files)

    database = workdir / "airflow-home" / "airflow.db"
    for where, texts in _database_texts(database).items():
        for text in texts:
            _search(report, where, text, secrets)
        report.places[where] = len(texts)
    _search(report, "metadata database file (raw bytes)", database.read_bytes().decode("latin-1"), secrets)
    report.places["metadata database file"] = 1

    payloads = capture.read_text().splitlines() if capture.exists() else []
    for payload in payloads:
        _search(report, "trigger payload", payload, secrets)
    report.places["trigger payloads"] = len(payloads)
    return report


def _dags_test_recording_triggers(dag_id: str, env: dict[str, str]):
    """``airflow dags test`` in a process that records each trigger's ``serialize()`` output."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "scripts.secret_scan", "--airflow-with-trigger-capture", "dags", "test", dag_id],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _airflow_with_trigger_capture(args: list[str]) -> int:
    """Run the ``airflow`` CLI with ``BaseTrigger.serialize`` recording what it returns."""
    from airflow.triggers.base import BaseTrigger

    capture = Path(os.environ[TRIGGER_CAPTURE_ENV])

    def recording(cls: type[BaseTrigger]) -> None:
        original = cls.__dict__.get("serialize")
        if original is None:
            return

        def serialize(self: BaseTrigger):  # type: ignore[no-untyped-def]
            classpath, kwargs = original(self)
            with capture.open("a") as out:
                out.write(json.dumps([classpath, kwargs], default=str) + "\n")
            return classpath, kwargs

        cls.serialize = serialize  # type: ignore[method-assign]

    import airflow_provider_packly.triggers.packly as triggers

    for value in vars(triggers).values():
        if isinstance(value, type) and issubclass(value, BaseTrigger) and value.__module__ == triggers.__name__:
            recording(value)

    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *args]
    try:
        airflow_main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def print_report(report: ScanReport) -> None:
    print(
        f"Secret scan: searched for {report.secrets_searched} secrets (the client secret, the Basic value, "
        f"{report.tokens_issued} issued tokens)"
    )
    for where, count in report.places.items():
        note = "  (airflow dags test prints task logs to the console)" if where == "log files" and not count else ""
        print(f"  {where:28} {count:5} searched{note}")
    print(f"  httpx/httpcore DEBUG lines seen: {report.debug_lines}")
    if report.dag_failures:
        print(f"  FAILED to run: {', '.join(report.dag_failures)}")
    if report.upstream:
        print(
            f"  Airflow's own in-process supervisor printed {len(report.upstream)} MaskSecret requests with their "
            "values at DEBUG (airflow dags test only; upstream, not counted as hits)"
        )
    print(f"Hits: {len(report.hits)}")
    for hit in report.hits:
        print(f"  {hit}")
    print("SECRET SCAN PASSED" if report.ok else "SECRET SCAN FAILED")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--airflow-with-trigger-capture"]:
        return _airflow_with_trigger_capture(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="keep the Airflow home and logs here")
    options = parser.parse_args(argv)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="packly-secret-scan-"))
    report = run_scan(workdir)
    print_report(report)
    print(f"(Airflow home and logs: {workdir})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
