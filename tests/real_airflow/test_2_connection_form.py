"""The ``packly`` connection form in a real browser: Debian's chromium, headless, via Playwright.

A user signs in (simple auth manager, the generated admin password), goes Admin > Connections >
Add Connection, chooses Packly, and sees the form Airflow renders from the provider's declared
metadata (``get_provider_info()``): every label, description, placeholder and default must be
what the provider declares, the secret masked, schema and port hidden. Then the user saves it
with the defaults plus a Base URL, client ID and secret, and a task uses the saved connection.

Screenshots go to the run's folder, and to ``docs/images/`` when ``PACKLY_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_packly.get_provider_info import get_provider_info

from .conftest import require_chromium
from .harness import CLIENT_ID, CLIENT_SECRET, ROOT, Harness

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOC_IMAGES = ROOT / "docs" / "images"
SAVED_CONN_ID = "packly_from_ui"


def packly_connection_type() -> dict[str, Any]:
    (item,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "packly"]
    return item


def shown_default(schema: dict[str, Any]) -> str:
    """How the form should show a declared default: the number or string as typed, else empty."""
    if "default" not in schema or schema["default"] is None:
        return ""
    return str(schema["default"])


@pytest.fixture
def page(real_airflow: Harness, tmp_path: Path) -> Iterator[Any]:
    """A signed-in chromium page (fresh user-data-dir) on Admin > Connections > Add > Packly."""
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(real_airflow.base_url + "/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(real_airflow.admin_password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)
            page.get_by_role("button", name="Admin").click()
            page.get_by_role("menuitem", name="Connections").click()
            page.wait_for_url(lambda url: url.endswith("/connections"))
            page.get_by_role("button", name="Add Connection").click()
            page.get_by_role("combobox", name="Connection Type").fill("Packly")
            page.keyboard.press("Enter")
            page.get_by_label("Client Secret").wait_for()
            yield page
        finally:
            context.close()


def screenshot(page: Any, name: str, workdir: Path) -> Path:
    path = workdir / name
    page.get_by_role("dialog").screenshot(path=str(path))
    if os.environ.get("PACKLY_UPDATE_SCREENSHOTS") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_IMAGES / name)
    return path


def test_the_add_form_shows_every_declared_field_label_and_default(page: Any, real_airflow: Harness) -> None:
    declared = packly_connection_type()
    behaviour = declared["ui-field-behaviour"]
    dialog = page.get_by_role("dialog")
    problems: list[str] = []

    # Standard fields: relabelled, placeholders, the secret masked, schema and port hidden.
    for field, label in behaviour["relabeling"].items():
        box = dialog.locator(f"input[name={field}]")
        if box.count() != 1:
            problems.append(f"{field}: no input")
            continue
        if not dialog.get_by_text(label, exact=True).first.is_visible():
            problems.append(f"{field}: label {label!r} not shown")
        if box.get_attribute("placeholder") != behaviour["placeholders"].get(field):
            problems.append(f"{field}: placeholder {box.get_attribute('placeholder')!r}")
    assert dialog.locator("input[name=password]").get_attribute("type") == "password", "the Client Secret is not masked"
    for hidden in behaviour["hidden-fields"]:
        assert dialog.locator(f"input[name={hidden}]").count() == 0, f"{hidden} is shown"
        assert dialog.get_by_text(hidden.capitalize(), exact=True).count() == 0, f"{hidden}'s label is shown"
    screenshot(page, "connection-form.png", real_airflow.workdir)

    # Extra fields: every conn-field, with its label, description and declared default.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    fields: dict[str, dict[str, Any]] = declared["conn-fields"]
    for name, spec in fields.items():
        if not dialog.get_by_text(spec["label"], exact=True).first.is_visible():
            problems.append(f"{name}: label {spec['label']!r} not shown")
        if spec.get("description") and not dialog.get_by_text(spec["description"], exact=True).first.is_visible():
            problems.append(f"{name}: description not shown")
        box = dialog.locator(f"input[name=element_{name}]")
        if box.count() != 1:
            problems.append(f"{name}: no input element_{name}")
            continue
        if "boolean" in spec["schema"]["type"]:  # a checkbox: its state, not its value attribute
            shown, expected = str(box.is_checked()), str(bool(spec["schema"].get("default")))
        else:
            shown, expected = box.input_value(), shown_default(spec["schema"])
        if shown != expected:
            problems.append(f"{name}: the form shows {shown!r}, the provider declares {expected!r}")

    # The environment dropdown offers exactly the declared choices.
    environment = fields["environment"]["schema"]
    field_group = dialog.get_by_role("group").filter(has_text=fields["environment"]["label"])
    field_group.get_by_role("combobox").click()
    options = [text.strip() for text in page.get_by_role("option").all_inner_texts()]
    page.get_by_role("option", name=shown_default(environment), exact=True).click()  # Escape would close the dialog
    if options != environment["enum"]:
        problems.append(f"environment: dropdown offers {options}, the provider declares {environment['enum']}")
    page.set_viewport_size({"width": 1400, "height": 2600})  # the whole dialog, not its scrolled part
    screenshot(page, "connection-form-extra-fields.png", real_airflow.workdir)
    assert not problems, "\n".join(problems)


def test_the_form_saved_with_defaults_works_from_a_task(page: Any, real_airflow: Harness) -> None:
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=connection_id]").fill(SAVED_CONN_ID)
    dialog.locator("input[name=host]").fill(real_airflow.sandbox.base_url)
    dialog.locator("input[name=login]").fill(CLIENT_ID)
    dialog.locator("input[name=password]").fill(CLIENT_SECRET)
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="hidden")

    saved = real_airflow.api.get(f"/connections/{SAVED_CONN_ID}")
    assert saved.status_code == 200, saved.text
    connection = saved.json()
    assert connection["conn_type"] == "packly"
    assert connection["host"] == real_airflow.sandbox.base_url and connection["login"] == CLIENT_ID

    run_id = real_airflow.trigger("real_airflow_use_connection", {"conn_id": SAVED_CONN_ID})
    state = real_airflow.wait_for_run("real_airflow_use_connection", run_id)

    # What was stored (the REST API would redact "sensitive" keys itself): the declared defaults.
    extra = json.loads(stored_extra(real_airflow, SAVED_CONN_ID))
    declared = {name: spec["schema"].get("default") for name, spec in packly_connection_type()["conn-fields"].items()}
    wrong = {name: value for name, value in extra.items() if name in declared and str(value) != str(declared[name])}
    assert not wrong, (
        f"saved with defaults, the stored extra differs from the declared defaults: {wrong}; the task run: {state}"
    )
    assert state == "success", real_airflow.task_log("real_airflow_use_connection", run_id, "list_orders")[-3000:]


def stored_extra(harness: Harness, conn_id: str) -> str:
    """The connection's extra as stored in the metadata DB, decrypted with the run's Fernet key."""
    import sqlite3

    from cryptography.fernet import Fernet

    with sqlite3.connect(harness.home / "airflow.db") as db:
        extra, encrypted = db.execute(
            "SELECT extra, is_extra_encrypted FROM connection WHERE conn_id = ?", (conn_id,)
        ).fetchone()
    return Fernet(harness.fernet_key.encode()).decrypt(extra.encode()).decode() if encrypted else str(extra)
