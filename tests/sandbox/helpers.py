"""Shared helpers for the sandbox tests: a structural PDF check, the command line (the fake clock
is :class:`tests.fakes.FakeClock`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.fakes import FakeClock  # noqa: F401 - moved to tests.fakes; importable here as before

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CliSandbox:
    """A ``python -m airflow_provider_packly.sandbox`` process: where it listens, what it said."""

    process: subprocess.Popen[str]
    first_line: str
    base_url: str
    out: str = ""
    err: str = ""


@contextmanager
def sandbox_cli(*args: str) -> Iterator[CliSandbox]:
    """Start the sandbox's command line on a free port; on exit stop it with SIGTERM.

    ``out``/``err`` hold the rest of its output once the block has ended; the test checks
    ``process.returncode`` (a clean stop is 0).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_packly.sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        running = CliSandbox(process, line, match.group(1))
        yield running
        process.send_signal(signal.SIGTERM)
        running.out, running.err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def assert_valid_pdf(data: bytes) -> None:
    """Check header, trailer, every xref offset and the content stream's /Length."""
    assert data.startswith(b"%PDF-1.")
    assert data.rstrip(b"\r\n").endswith(b"%%EOF")
    match = re.search(rb"startxref\r?\n(\d+)\r?\n%%EOF\s*$", data)
    assert match, "no startxref before %%EOF"
    xref_at = int(match.group(1))
    assert data[xref_at:].startswith(b"xref\n")
    lines = data[xref_at:].split(b"\n")
    first, count = (int(part) for part in lines[1].split())
    assert first == 0
    entries = lines[2 : 2 + count]
    assert entries[0] == b"0000000000 65535 f "
    in_use = 0
    for number, entry in enumerate(entries):
        assert len(entry) + 1 == 20, "xref entries are exactly 20 bytes"
        offset, generation, kind = entry.split()
        if kind == b"n":
            in_use += 1
            assert generation == b"00000"
            assert data[int(offset) :].startswith(b"%d 0 obj" % number), f"object {number}"
    assert in_use == count - 1
    trailer = data[xref_at:].split(b"trailer", 1)[1]
    assert b"/Size %d" % count in trailer
    assert b"/Root 1 0 R" in trailer
    for length_match in re.finditer(rb"/Length (\d+) >>\nstream\n", data):
        end = length_match.end() + int(length_match.group(1))
        assert data[end:].startswith(b"endstream"), "stream /Length is wrong"
