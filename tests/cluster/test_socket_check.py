"""The cluster suite's shared-socket check can fail: a connection inherited across a fork is seen.

The scale-out run asserts that no request reached the sandbox over a socket held by two
processes. This proves the check would notice one: a keep-alive connection opened before
``os.fork()`` and still open in the child is reported with both PIDs, and the same client without
a fork with one. Fast and needs no cluster, so it runs in the default suite too.
"""

from __future__ import annotations

import os

import httpx

from ..real_airflow.harness import ControlledClock
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
