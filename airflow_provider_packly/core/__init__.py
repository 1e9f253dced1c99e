"""The provider's pure core: every rule and default, written once, with no I/O and no Airflow.

In the sans-I/O style (as h11 does for HTTP): these modules decide, the hook, the auth flow,
the retry loop and the triggers send and wait. Nothing here opens a socket, reads a file,
sleeps or imports Airflow, so each rule is unit-tested on plain data and the sync and async
paths cannot drift apart.

* ``settings``: the ``packly`` connection's settings, their defaults and their checks
  (imports neither Airflow nor httpx: ``get_provider_info`` reads the defaults from it);
* ``errors``: every exception, its one serialisation, and the ``Redactor`` (no httpx either);
* ``retry``: whether a failed send may be retried and how long to wait;
* ``api``: Packly's endpoints as small specs (path, query builder, answer reader);
* ``waiting``: order and product statuses, order conditions, deadlines, the trigger event
  contract, and which errors are worth polling through.

``retry`` and ``api`` may use httpx's data types (``Request``, ``Response``, its exception
classes); none of them sends anything.
"""
