"""The cluster suite's shared-socket check can fail: a connection inherited across a fork is seen.

The scale-out run asserts that no request reached the sandbox over a socket held by two
processes. This proves the check would notice one: a keep-alive connection opened before
``os.fork()`` and still open in the child is reported with both PIDs, and the same client without
a fork with one. Likewise the token-request attribution: it names the process by both ends of
the connection. Fast and needs no cluster, so it runs in the default suite too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx

from ..real_airflow.harness import ControlledClock, _owner_of_peer
from .cluster import serve_cluster_sandbox


def test_a_connection_inherited_across_a_fork_is_reported_with_both_processes() -> None:
    with serve_cluster_sandbox(ControlledClock()) as sandbox, httpx.Client(base_url=sandbox.base_url) as client:
        assert client.get("/v1/reseller/orders").status_code in (200, 401)
        alone = sandbox.socket_uses[-1]
        assert alone.holders == (os.getpid(),)

        release_read, release_write = os.pipe()
        child = os.fork()
        if child == 0:  # the child holds the inherited socket until the parent has made its request
            os.close(release_write)
            os.read(release_read, 1)
            os._exit(0)
        os.close(release_read)
        try:
            client.get("/v1/reseller/orders")  # the same keep-alive connection, now also the child's
            shared = sandbox.socket_uses[-1]
        finally:
            os.write(release_write, b"x")
            os.close(release_write)
            os.waitpid(child, 0)
        assert shared.peer_port == alone.peer_port
        assert shared.holders == tuple(sorted((os.getpid(), child)))


def test_a_token_request_is_attributed_by_both_ends_of_its_connection() -> None:
    """Linux gives one ephemeral port to connections with different destinations, so another
    process may hold the same local port (towards PostgreSQL, say) while a task asks for a token.
    A CI run once credited a sensor's token request to the api-server that way."""
    with socket.create_server(("127.0.0.1", 0)) as sandbox, socket.create_server(("127.0.0.1", 0)) as elsewhere:
        mine = socket.socket()
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        mine.bind(("127.0.0.1", 0))
        port = mine.getsockname()[1]
        other = subprocess.Popen(  # another process, same local port, another destination
            [sys.executable, "-c", HOLD_A_CONNECTION, str(port), str(elsewhere.getsockname()[1])],
            stdout=subprocess.PIPE,
        )
        try:
            assert other.stdout is not None and other.stdout.readline() == b"connected\n"
            mine.connect(sandbox.getsockname())
            assert _owner_of_peer(port, sandbox.getsockname()[1]).pid == os.getpid()
            assert _owner_of_peer(port, elsewhere.getsockname()[1]).pid == other.pid
        finally:
            other.kill()
            other.wait()
            other.stdout.close()
            mine.close()


HOLD_A_CONNECTION = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.connect(("127.0.0.1", int(sys.argv[2])))
print("connected", flush=True)
time.sleep(60)
"""
