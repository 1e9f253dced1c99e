"""What every Packly operator and sensor shares: the connection, the hook, the argument checks
and calling a user's callable with the context.

``PacklyTaskMixin`` goes first in the bases of an Airflow operator or sensor class
(``class X(PacklyTaskMixin, BaseOperator)``); the argument rules it runs live in
``arguments.py``.

DAG-parse cost: this module imports only the provider's argument rules; the hook (and httpx
behind it) and Airflow's ``determine_kwargs`` are imported when a task runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_packly.arguments import CheckedArgumentsMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_packly.hooks.packly import PacklyHook

__all__ = ["PacklyTaskMixin"]


class PacklyTaskMixin(CheckedArgumentsMixin):
    """The ``packly_conn_id`` argument, ``get_hook`` and ``call_with_context`` of a Packly task.

    A subclass lists its rules in ``argument_checks``, calls ``self.check_arguments(parsing=True)``
    at the end of ``__init__`` and ``self.check_arguments()`` first thing in ``execute``
    (see ``arguments.py``).
    """

    def __init__(self, *, packly_conn_id: str = "packly_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.packly_conn_id = packly_conn_id

    def get_hook(self) -> PacklyHook:
        """A new hook; the caller closes it (``with self.get_hook() as hook``)."""
        from airflow_provider_packly.hooks.packly import PacklyHook

        return PacklyHook(packly_conn_id=self.packly_conn_id)

    @staticmethod
    def call_with_context(func: Callable[..., Any], response: Any, context: Context) -> Any:
        """``func(response, **kwargs)`` with the context keys ``func`` asks for, as Airflow's
        ``HttpOperator`` and ``HttpSensor`` call their ``response_check``.

        ``determine_kwargs`` is imported through ``apache-airflow-providers-common-compat``
        (installed with Airflow itself), as Airflow's HTTP provider does: its module path inside
        the Task SDK is not public.
        """
        from airflow.providers.common.compat.sdk import determine_kwargs

        return func(response, **determine_kwargs(func, [response], context))
