"""Shared helpers for the sandbox tests: a fake clock and a structural PDF check."""

from __future__ import annotations

import re


class FakeClock:
    """A settable monotonic clock for ``SandboxConfig.now``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


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
