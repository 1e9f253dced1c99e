"""Fork safety and event-loop changes: a hook's clients and the token cache survive both.

Celery's prefork workers and Airflow's task runner fork; a forked child inherits the parent's
memory (pools holding the parent's keep-alive sockets, a token fetch "in flight") but not its
other threads. Each fork test runs the child's part in a real ``os.fork()`` child that reports
by exit status; the parent waits at most 20 s and kills it after that (a hang is a failure).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

import httpx
import pytest

from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sandbox import run_sandbox

from ..loopback import RawRequest, loopback_server, token_answer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only"),
    # Python 3.12+ warns that forking a process with threads may deadlock: that is the point.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

ORDERS = "/v1/reseller/orders"


def run_in_child(body: Callable[[], int], timeout: float = 20.0) -> int:
    """Fork; the child runs ``body`` and exits with its result (70 + traceback if it raised)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 70
        try:
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    give_up_at = time.monotonic() + timeout
    while time.monotonic() < give_up_at:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child hung: still running after {timeout} s")


def sandbox_settings(sandbox) -> PacklyConnection:
    return PacklyConnection(
        client_id="sandbox-client-id", client_secret="sandbox-client-secret", base_url=sandbox.base_url
    )


def local_port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_a_child_forked_while_a_token_fetch_is_in_flight_fetches_its_own():
    arrived, release = threading.Event(), threading.Event()
    count = itertools.count()

    def token(request: RawRequest) -> bytes:
        if next(count) == 0:  # the parent's fetch: held until the child is done
            arrived.set()
            release.wait(30)
        return token_answer("hostile-test-token")

    with loopback_server(token) as server:
        settings = PacklyConnection(client_id="fork-client", client_secret="fork-secret-P3", base_url=server.base_url)
        parent_hook = PacklyHook(connection=settings)
        tokens: list[str] = []
        leader = threading.Thread(target=lambda: tokens.append(parent_hook.get_token()))
        leader.start()
        try:
            assert arrived.wait(10)

            def child() -> int:
                with PacklyHook(connection=settings) as hook:
                    return 0 if hook.get_token() == "hostile-test-token" else 1

            status = run_in_child(child)
        finally:
            release.set()
            leader.join(10)
            parent_hook.close()
    assert status == 0
    assert tokens == ["hostile-test-token"]  # the parent's own fetch completed, unaffected
    assert server.calls.count(("POST", "/v1/oauth2/token")) == 2  # one each


def test_a_hook_used_before_a_fork_gives_the_child_its_own_connection():
    with run_sandbox() as sandbox, PacklyHook(connection=sandbox_settings(sandbox)) as hook:
        first = hook.request("GET", ORDERS)
        port = local_port(first)

        def child() -> int:
            response = hook.request("GET", ORDERS)
            if response.status_code != 200 or not isinstance(response.json().get("response"), list):
                return 2
            return 3 if local_port(response) == port else 0  # 3: the parent's socket was reused

        assert run_in_child(child) == 0
        again = hook.request("GET", ORDERS)
        again_port = local_port(again)
    assert again.status_code == 200
    assert again_port == port  # the parent's keep-alive connection was neither used nor cut


def test_a_child_forked_inside_an_event_loop_drops_the_async_clients_it_inherited():
    with run_sandbox() as sandbox:

        async def main() -> int:
            own = PacklyHook(connection=sandbox_settings(sandbox))
            shared = PacklyHook(connection=sandbox_settings(sandbox), shared_async_client=True)
            for hook in (own, shared):
                assert (await hook.arequest("GET", ORDERS)).status_code == 200
            from airflow_provider_packly._http import SHARED_ASYNC_CLIENTS

            def child() -> int:
                return 0 if own._aclient is None and not SHARED_ASYNC_CLIENTS._by_loop else 4

            status = run_in_child(child)
            await own.aclose()
            return status

        assert asyncio.run(main()) == 0


def test_a_forked_child_draws_other_retry_waits_than_its_parent():
    """Prefork workers that all retried with the parent's jitter sequence would retry in step."""
    import random

    from airflow_provider_packly import retries

    parent_next = random.Random()
    parent_next.setstate(retries._jitter.getstate())
    expected = [parent_next.random() for _ in range(3)]
    assert run_in_child(lambda: 5 if [retries._jitter.random() for _ in range(3)] == expected else 0) == 0


def test_one_hook_across_two_asyncio_runs_leaves_no_client_open_and_closes_cleanly():
    leaks: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda report: leaks.append(f"{report.exc_type.__name__}: {report.exc_value}")
    try:
        with run_sandbox() as sandbox:
            hook = PacklyHook(connection=sandbox_settings(sandbox))
            clients: list[httpx.AsyncClient] = []

            async def use() -> None:
                assert (await hook.arequest("GET", ORDERS)).status_code == 200
                clients.append(await hook.aget_client())

            asyncio.run(use())
            asyncio.run(use())
            assert clients[0] is not clients[1]
            assert clients[0].is_closed and clients[1].is_closed  # each closed with its own loop
            asyncio.run(hook.aclose())  # no "Event loop is closed"
            gc.collect()
    finally:
        sys.unraisablehook = previous
    assert leaks == []
