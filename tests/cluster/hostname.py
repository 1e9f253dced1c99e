"""The host name Airflow records for each task instance, one per Celery worker of the cluster.

Both workers of the local cluster run on this machine, so Airflow's default (the machine's name)
would not tell them apart. Each worker is started with ``PACKLY_CLUSTER_NODE`` set to its own
name, and ``[core] hostname_callable`` points here, so a task instance's ``hostname`` (REST API,
UI) names the worker that ran it. Components without the variable get the machine's name.
"""

from __future__ import annotations

import os
import socket


def node_hostname() -> str:
    """``PACKLY_CLUSTER_NODE`` if set (a worker of the cluster), else the machine's name."""
    return os.environ.get("PACKLY_CLUSTER_NODE") or socket.getfqdn()
