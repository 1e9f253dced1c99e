"""Test helpers for users' DAGs: a pytest plugin with a Packly sandbox, a connection and ``dag.test()``.

Installing the provider registers :mod:`airflow_provider_packly.testing.pytest_plugin` with
pytest (entry point ``pytest11``, name ``packly``). Its fixtures are opt-in: a test gets them
by naming them (``packly_sandbox``, ``packly_connection``, ``packly_dag_test``, ...); nothing
runs for tests that do not. See docs/testing.md.

The helpers behind the fixtures are importable too, for tests that manage their own lifetimes:

* :class:`~airflow_provider_packly.testing.sandbox.SandboxClock` and
  :class:`~airflow_provider_packly.testing.sandbox.PacklyTestSandbox` /
  :func:`~airflow_provider_packly.testing.sandbox.start_test_sandbox` (the sandbox, its clock
  and its seeded orders);
* :func:`~airflow_provider_packly.testing.dag_runs.prepare_airflow_home` and
  :func:`~airflow_provider_packly.testing.dag_runs.run_dag` (``dag.test()`` against it).

Importing this package imports neither Airflow nor Starlette: each module imports them when used.
"""
