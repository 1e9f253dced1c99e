"""Check an operator's arguments when the DAG file is parsed if they are known, else at execute.

A DAG author wants a negative width to be a DAG import error, not a failed run. But many
arguments are not known when the file is parsed: an upstream task's output (an ``XComArg``:
a ``@task``'s return value, ``op.output``), a mapped argument, or a Jinja template. Airflow
resolves those only when the task runs, and only for the operator's ``template_fields``.

So every Packly operator and sensor lists its rules once, as ``ArgumentCheck`` items, and
``check_arguments`` runs them from two places:

* at the end of ``__init__`` (``parsing=True``): a rule whose arguments are all literal runs
  now; a rule touching any value that Airflow resolves later is skipped;
* at the start of ``execute`` (``parsing=False``): every rule runs on the rendered values,
  with the same messages.

Every argument a rule reads must be a template field, or an ``XComArg`` given to it would
never be resolved (``test_every_checked_argument_is_a_template_field`` holds each class to it).
Mapped tasks (``.partial().expand()``) are built on the worker with the mapped values, where
the same two steps apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow.sdk.definitions._internal.mixins import ResolveMixin
from airflow.sdk.definitions._internal.types import ArgNotSet

from airflow_provider_packly.triggers.rules import is_templated

__all__ = ["ArgumentCheck", "CheckedArgumentsMixin", "resolved_at_runtime"]


def resolved_at_runtime(value: Any) -> bool:
    """Whether ``value`` is, or holds anywhere inside it, something Airflow fills in at run time.

    That is an Airflow resolvable (``XComArg``, ``MappedArgument``: anything that is a
    ``ResolveMixin``), an unset argument (``ArgNotSet``), or a Jinja template string.
    """
    if isinstance(value, (ResolveMixin, ArgNotSet)):
        return True
    if isinstance(value, str):
        return is_templated(value)
    if isinstance(value, Mapping):
        return any(resolved_at_runtime(key) or resolved_at_runtime(item) for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(resolved_at_runtime(item) for item in value)
    return False


@dataclass(frozen=True)
class ArgumentCheck:
    """One rule over some arguments: ``check(*values)`` raises ``PacklyValidationError`` if wrong.

    ``names`` are attribute names of the operator (set from the arguments of the same name).
    """

    names: tuple[str, ...]
    check: Callable[..., Any]


class CheckedArgumentsMixin:
    """``check_arguments``: the operator's ``argument_checks`` now if literal, else at execute."""

    #: The class's rules; each argument a rule names must be one of ``template_fields``.
    argument_checks: ClassVar[Sequence[ArgumentCheck]] = ()

    def check_arguments(self, *, parsing: bool = False) -> None:
        """Run every rule (``parsing``: only those whose values are all known already)."""
        for rule in self.argument_checks:
            values = [getattr(self, name) for name in rule.names]
            if parsing and any(resolved_at_runtime(value) for value in values):
                continue  # checked once Airflow has rendered it, at execute
            rule.check(*values)
