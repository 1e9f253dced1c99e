"""The benchmark suite of airflow-provider-packly: ``python -m benchmarks`` (``./dev bench``).

It compares ``PacklyHook`` with what an Airflow user would use instead (raw httpx with a static
bearer header, httpx-auth, Authlib, Airflow's ``HttpHook``/``HttpAsyncHook``) on the same work,
and measures the provider's own guarantees: token economy, the event loop while a token is
fetched, many triggers in one triggerer loop, and the cost of importing it at DAG-parse time.

Modules: ``contenders`` (the clients), ``overhead`` (per-call cost, in process and over
loopback), ``tokens`` (token economy, loop stall), ``triggerer`` (triggerer scale, run in a
child process), ``importcost`` (DAG-parse cost), ``server`` (the tiny loopback server, run in a
child process), ``ceiling`` (the limit: a raw asyncio server's requests/s and the fastest raw
client's time per call), ``report`` (console table, ``docs/benchmarks.md``, plots).

Ratios, never absolute times: contenders run interleaved in the same process, several rounds,
and each round's times are divided by the baseline's time in that round. Needs the ``bench``
dependency group (``uv sync --group bench``).
"""
