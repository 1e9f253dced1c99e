"""Moved to :mod:`tests.fakes` (one FakePackly for every test); kept so older imports work."""

from __future__ import annotations

from tests.fakes import (  # noqa: F401
    ORDERS_PATH,
    SECRET,
    TOKEN,
    TOKEN_PATH,
    FakePackly,
    Handler,
    envelope,
    fake_connection,
    order,
    page,
    sandbox_connection_json,
)
