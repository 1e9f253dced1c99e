"""Provider registration: a bad provider info makes every `airflow` command fail, so check it for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_packly.get_provider_info import get_provider_info

AIRFLOW_PACKAGE = Path(airflow.__file__).parent


def test_entry_point_points_at_get_provider_info():
    (entry,) = [
        ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider_packly")
    ]
    assert entry.load() is get_provider_info
    assert (
        entry.dist is not None and entry.dist.name == get_provider_info()["package-name"] == "airflow-provider-packly"
    )


def test_valid_against_the_schema_airflow_ships():
    schema = json.loads((AIRFLOW_PACKAGE / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_connection_type_valid_against_the_provider_yaml_schema():
    """The stricter provider.yaml schema also describes conn-fields and ui-field-behaviour."""
    schema = json.loads((AIRFLOW_PACKAGE / "provider.yaml.schema.json").read_text())
    item_schema = schema["properties"]["connection-types"]
    jsonschema.validate(get_provider_info()["connection-types"], item_schema)


def test_every_extra_field_is_optional_labelled_and_described():
    (connection_type,) = get_provider_info()["connection-types"]
    for name, field in connection_type["conn-fields"].items():
        assert field["label"] and field["description"], name
        assert "null" in field["schema"]["type"], f"{name} would be required in the UI"
    assert connection_type["conn-fields"]["environment"]["schema"]["enum"] == ["sandbox", "live"]


def test_every_declared_module_and_class_imports():
    import importlib

    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(section, []):
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for connection_type in info["connection-types"]:
        module, _, name = connection_type["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == connection_type["connection-type"]
        assert "get_connection_form_widgets" not in hook.__dict__ and "get_ui_field_behaviour" not in hook.__dict__


def test_the_ui_form_metadata_airflow_builds():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    environment = widgets["extra__packly__environment"]
    assert environment.field["schema"]["enum"] == ["sandbox", "live"]
    assert environment.field["schema"]["title"] == "Environment"
    assert {"extra__packly__scope", "extra__packly__timeout", "extra__packly__refresh_margin_seconds"} <= set(widgets)
    behaviour = manager.field_behaviours["packly"]
    assert behaviour["hidden_fields"] == ["schema", "port"]
    assert behaviour["relabeling"] == {"login": "Client ID", "password": "Client Secret", "host": "Base URL"}


def _packly_conn_fields() -> dict:
    (connection_type,) = get_provider_info()["connection-types"]
    return connection_type["conn-fields"]


def _maskers_hide_functions() -> list:
    """Airflow's own ``should_hide_value_for_key``: the API server's copy (which redacts
    ``GET /ui/connections/hook_meta`` and the connections API) and the task SDK's copy
    (which masks extras in task logs). Same module path in Airflow 3.2 and 3.3."""
    from airflow._shared.secrets_masker import should_hide_value_for_key as server_side
    from airflow.sdk._shared.secrets_masker import should_hide_value_for_key as task_side

    return [server_side, task_side]


@pytest.mark.parametrize("hides", _maskers_hide_functions())
def test_no_extra_field_name_is_one_airflow_hides(hides):
    """A field whose name contains a sensitive word (token, secret, proxy, ...) is served to the
    UI form as '***', and the Add form then saves '***' as its value: the connection breaks.

    Every conn-field counts, including the TLS and proxy ones, and also with the legacy
    ``extra__packly__`` prefix, so a future field cannot reintroduce the problem."""
    assert hides("token_refresh_margin") and hides("proxy_url"), "the masker check is switched off here"
    hidden = [key for name in _packly_conn_fields() for key in (name, f"extra__packly__{name}") if hides(key)]
    assert hidden == [], f"Airflow's secrets masker hides these extra fields; rename them: {hidden}"


def test_hook_meta_serves_every_declared_default_unredacted():
    """What ``GET /ui/connections/hook_meta`` returns (the UI's Add form reads it): each packly
    field's value is the default the provider declares, never '***'."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    (packly,) = [meta for meta in HookMetaService.hook_meta_data() if meta.connection_type == "packly"]
    declared = _packly_conn_fields()
    served = packly.model_dump(mode="json")["extra_fields"]  # as the API serialises it
    assert set(served) == set(declared)
    for name, field in declared.items():
        assert served[name]["value"] == field["schema"].get("default"), name
        assert served[name]["schema"]["title"] == field["label"], name
    assert packly.standard_fields.url_schema.hidden and packly.standard_fields.port.hidden


@pytest.mark.airflow_cli
@pytest.mark.parametrize(
    ("command", "expected"),
    [("list", "airflow-provider-packly"), ("hooks", "airflow_provider_packly.hooks.packly.PacklyHook")],
)
def test_airflow_cli_lists_the_provider(tmp_path, command, expected):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow_cli = Path(sys.executable).with_name("airflow")
    completed = subprocess.run(
        [str(airflow_cli), "providers", command, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    listed = json.loads(completed.stdout[completed.stdout.index("[") :])
    assert any(expected in json.dumps(row) for row in listed)
    if command == "hooks":
        (row,) = [row for row in listed if row.get("connection_type") == "packly"]
        assert row["package_name"] == "airflow-provider-packly"
