"""Run in a subprocess by ``test_connection_test_api.py``: Airflow's own connection-test route.

Migrates a fresh metadata DB in ``$AIRFLOW_HOME``, builds Airflow's FastAPI app in process and
calls it through Starlette's ``TestClient`` (no server, no port), as the UI and REST users do.
Also runs ``airflow connections test`` through Airflow's CLI parser in this process. Prints one
JSON document: every answer, for the test to check. ``PACKLY_SANDBOX_URL`` is the sandbox the
test runs; ``PACKLY_SECRET`` its client secret.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def main() -> None:
    from importlib.metadata import version

    from airflow.utils import db

    db.initdb()

    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    base_url = os.environ["PACKLY_SANDBOX_URL"]
    secret = os.environ["PACKLY_SECRET"]
    extra = json.dumps({"environment": "sandbox"})
    stored = {"conn_type": "packly", "host": base_url, "login": "sandbox-client-id", "extra": extra}
    results: dict[str, object] = {"airflow": version("apache-airflow")}

    with TestClient(create_app()) as client:

        def post(path: str, body: dict) -> dict:
            response = client.post(path, json=body)
            return {"status_code": response.status_code, "body": response.json()}

        created = post("/api/v2/connections", {"connection_id": "packly_stored", "password": secret, **stored})
        assert created["status_code"] == 201, created
        wrong = post("/api/v2/connections", {"connection_id": "packly_wrong", "password": "wrong-secret-Q7", **stored})
        assert wrong["status_code"] == 201, wrong
        # What the UI's Test button sends for a saved connection without a port: the masked
        # secret and port Number(null) == 0 (apache/airflow#73298).
        ui_body = {"connection_id": "packly_stored", "password": "***", "port": 0, "schema": "", **stored}
        results["ui_saved"] = post("/api/v2/connections/test", ui_body)
        # Workaround in the UI: type the Client Secret again, then Test.
        results["ui_saved_secret_retyped"] = post("/api/v2/connections/test", {**ui_body, "password": secret})
        # The Add form, before saving: nothing stored under that id.
        results["ui_new"] = post(
            "/api/v2/connections/test", {**ui_body, "connection_id": "packly_new", "password": secret}
        )
        results["ui_new_bad_setting"] = post(
            "/api/v2/connections/test",
            {
                **ui_body,
                "connection_id": "packly_new",
                "password": secret,
                "extra": json.dumps({"environment": "prod"}),
            },
        )
        # Workaround through the REST API: leave the port out (the stored secret is used).
        results["rest_saved_no_port"] = post(
            "/api/v2/connections/test", {"connection_id": "packly_stored", "conn_type": "packly"}
        )

    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    for name in ("packly_stored", "packly_wrong"):
        args = parser.parse_args(["connections", "test", name])
        out = io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out):
            try:
                args.func(args)
            except SystemExit as exc:
                code = exc.code
        results[f"cli_{name}"] = {"exit": code, "output": out.getvalue()}

    sys.stdout.write("\nRESULTS " + json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
