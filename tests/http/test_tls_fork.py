"""A child forked while another thread holds the TLS contexts' lock can still build a context.

Airflow's task runner and Celery's prefork workers fork; a hook in another thread of the parent
may be building a TLS context at that moment. The child inherits the lock held, and without the
after-fork reset its first TLS call with new settings waits forever.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

import airflow_provider_packly.hooks.packly  # noqa: F401  (registers the after-fork reset)
from airflow_provider_packly.connection import TlsSettings
from airflow_provider_packly.tls import SSL_CONTEXTS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="os.fork")

CHILD_SECONDS = 10


def test_a_child_forked_while_the_lock_is_held_builds_its_context():
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with SSL_CONTEXTS._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: build a context in a thread, report by exit code
        built = threading.Event()
        threading.Thread(target=lambda: (SSL_CONTEXTS.get(TlsSettings(verify=False)), built.set()), daemon=True).start()
        os._exit(0 if built.wait(CHILD_SECONDS) else 1)
    release.set()
    holder.join(10)
    deadline = time.monotonic() + CHILD_SECONDS + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child never finished")
    assert os.waitstatus_to_exitcode(status) == 0, "the child waited forever on the lock it inherited held"
