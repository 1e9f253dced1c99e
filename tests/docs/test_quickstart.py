"""The quickstart's Airflow commands, run as the page writes them (docs/quickstart.md, steps 3 and 4).

The shell blocks of those steps are read from the page, so the page cannot drift from what is
tested: the ``export`` lines that prepare Airflow and ``airflow db migrate``; the connection
given as ``AIRFLOW_CONN_PACKLY_DEFAULT`` in JSON and as a URI (read by Airflow in this process,
as a task reads it, and tested with the hook's connection test); the connection added with
``airflow connections add``; and ``airflow connections test packly_default``, which must print
what the page says it prints. Only two things change: the page's ``127.0.0.1:8089`` becomes the
test sandbox's free loopback port, and ``AIRFLOW_HOME`` a temporary folder.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import run_sandbox

PAGE = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"

pytestmark = [
    pytest.mark.airflow_cli,
    pytest.mark.skipif(not PAGE.is_file(), reason="docs/quickstart.md is not here (outside a checkout)"),
]
AIRFLOW = Path(sys.executable).with_name("airflow")
PAGE_ADDRESS = "127.0.0.1:8089"


def section(title_start: str) -> str:
    """The text of the page's ``## <title_start>...`` section."""
    text = PAGE.read_text()
    match = re.search(rf"^## {re.escape(title_start)}.*?$(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"docs/quickstart.md has no section starting '## {title_start}'"
    return match.group(1)


def bash_blocks(text: str) -> list[list[list[str]]]:
    """Each ```bash block of ``text`` as its commands, each split as the shell would (comments dropped).

    A command ends at the end of a line outside quotes: a quoted JSON value may span lines.
    """
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        commands, pending = [], ""
        for line in body.splitlines(keepends=True):
            pending += line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            if words:
                commands.append(words)
            pending = ""
        assert not pending, f"unclosed quote in a bash block of docs/quickstart.md: {pending!r}"
        blocks.append(commands)
    return blocks


def run(command: list[str], env: dict[str, str], sandbox_address: str) -> subprocess.CompletedProcess[str]:
    """Run one of the page's commands: ``export NAME=VALUE`` sets ``env``; ``airflow ...`` runs."""
    command = [word.replace(PAGE_ADDRESS, sandbox_address) for word in command]
    if command[0] == "export":
        for assignment in command[1:]:
            name, value = assignment.split("=", 1)
            env[name] = value
        return subprocess.CompletedProcess(command, 0, "", "")
    assert command[0] == "airflow", command
    return subprocess.run([str(AIRFLOW), *command[1:]], env=env, capture_output=True, text=True, timeout=300)


def test_the_quickstart_connection_commands_work_as_written(tmp_path, monkeypatch):
    prepare = bash_blocks(section("3. Prepare Airflow"))
    connect = bash_blocks(section("4. Create the connection"))
    # Step 4: three ways to give the connection, then the test command with what it prints.
    *ways, (test_command,) = connect
    (json_way,), (uri_way,), (cli_way,) = ways
    assert json_way[:2] == ["export", json_way[1]] and json_way[1].startswith("AIRFLOW_CONN_PACKLY_DEFAULT={")
    assert uri_way[1].startswith("AIRFLOW_CONN_PACKLY_DEFAULT=packly://")
    assert cli_way[:4] == ["airflow", "connections", "add", "packly_default"]
    assert test_command == ["airflow", "connections", "test", "packly_default"]
    assert "prints: Connection success!" in section("4. Create the connection")

    base_env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    with run_sandbox() as sandbox:
        address = sandbox.base_url.removeprefix("http://")

        # The environment-variable forms, read by Airflow as a task reads them (no subprocess:
        # the command line is exercised below).
        for way in (json_way, uri_way):
            variables: dict[str, str] = {}
            run(way, variables, address)
            monkeypatch.setenv("AIRFLOW_CONN_PACKLY_DEFAULT", variables["AIRFLOW_CONN_PACKLY_DEFAULT"])
            ok, message = PacklyHook("packly_default").test_connection()
            assert ok, (way[1][:40], message)
        monkeypatch.delenv("AIRFLOW_CONN_PACKLY_DEFAULT")

        # Step 3 as written, then the command-line form and the connection test as written.
        env = dict(base_env)
        for command in (command for block in prepare for command in block):
            if command[0] == "export" and command[1].startswith("AIRFLOW_HOME="):
                command = ["export", f"AIRFLOW_HOME={tmp_path / 'airflow-home'}"]
            done = run(command, env, address)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert env["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled"
        for command in (cli_way, test_command):
            done = run(command, env, address)
            assert done.returncode == 0, (command[:3], done.stdout[-3000:] + done.stderr[-3000:])
        output = done.stdout + done.stderr
        assert "Connection success!" in output and "sandbox-client-secret" not in output
        # One token per connection test: each form reached this sandbox, not another Packly.
        assert sandbox.state.token_requests_ok == len(ways)
