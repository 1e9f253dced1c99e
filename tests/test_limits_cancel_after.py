"""``limits.cancel_after``: the overall deadline of an async call and the transport's wait for a
pool slot, on both of its paths.

On asyncio (Python 3.11+) it is asyncio's own timeout, else an anyio scope; both must cut the
call wherever it is, hand back what a call in time returns, and never take a ``TimeoutError``
of the call's own for the deadline.
"""

from __future__ import annotations

import sys

import anyio
import anyio.lowlevel
import pytest

from airflow_provider_packly import limits

pytestmark = pytest.mark.anyio

PATHS = [
    pytest.param(
        True,
        id="asyncio-timeout",
        marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+"),
    ),
    pytest.param(False, id="anyio-scope"),
]


@pytest.fixture(params=PATHS)
def native(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(limits, "NATIVE_TIMEOUT", request.param)
    return bool(request.param)


async def test_a_call_in_time_gives_its_result(native: bool) -> None:
    async def answer() -> str:
        await anyio.lowlevel.checkpoint()
        return "answer"

    assert await limits.cancel_after(5.0, answer) == "answer"


async def test_a_call_past_the_deadline_is_cut_where_it_waits(native: bool) -> None:
    reached = []

    async def stuck() -> str:
        await anyio.sleep(30)
        reached.append("after the sleep")
        return "late"

    with anyio.fail_after(10):  # the test's own guard: the deadline below must come first
        assert await limits.cancel_after(0.05, stuck) is None
    assert reached == []


async def test_a_timeout_error_of_the_call_itself_is_not_the_deadline(native: bool) -> None:
    async def own_timeout() -> str:
        await anyio.lowlevel.checkpoint()
        raise TimeoutError("a wait of the call's own")

    with pytest.raises(TimeoutError, match="a wait of the call's own"):
        await limits.cancel_after(5.0, own_timeout)


async def test_a_call_that_ends_with_its_own_error_raises_it(native: bool) -> None:
    async def broken() -> str:
        raise ValueError("the call's own failure")

    with pytest.raises(ValueError, match="the call's own failure"):
        await limits.cancel_after(5.0, broken)
