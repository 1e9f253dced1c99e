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

The rules that more than one operator or sensor applies (an endpoint, a callable, a page size,
a timestamp, a rendered list) are written once, below the mixin.
"""

from __future__ import annotations

import ast
import datetime as dt
import json as jsonlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pendulum
from airflow.sdk.definitions._internal.mixins import ResolveMixin
from airflow.sdk.definitions._internal.types import ArgNotSet

from airflow_provider_packly.resources import PacklyValidationError
from airflow_provider_packly.triggers.rules import is_templated, parse_deadline

__all__ = [
    "ArgumentCheck",
    "CheckedArgumentsMixin",
    "check_callable",
    "check_endpoint",
    "check_page_size",
    "literal",
    "parse_time",
    "resolved_at_runtime",
    "whole_number",
]


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


# -- rules shared by several operators and sensors --------------------------------------------------


def check_endpoint(endpoint: Any) -> str:
    """An endpoint path (``PacklyOperator``, ``PacklySensor``)."""
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise PacklyValidationError(f"endpoint must be a path such as '/v1/reseller/orders'; got {endpoint!r}.")
    return endpoint


def check_callable(name: str, func: Any) -> None:
    """A ``response_check``/``response_filter`` argument: ``None`` or a callable."""
    if func is not None and not callable(func):
        raise PacklyValidationError(f"{name} must be a callable.")


def whole_number(value: Any) -> Any:
    """A whole number rendered from a template (``"50"``) as an int; anything else unchanged."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def check_page_size(page_size: Any, *, name: str = "page_size") -> int:
    """Orders per page (Packly's ``limit``): a positive whole number, or its rendering by a template.

    ``name`` is the argument named in the error (the orders operator's message names ``limit``,
    the query parameter, as it always has).
    """
    page_size = whole_number(page_size)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
        raise PacklyValidationError(f"{name} must be a positive whole number; got {page_size!r}.")
    return page_size


def literal(value: Any, name: str) -> Any:
    """A rendered template that should have been a list or dict: parse JSON or a Python literal.

    Jinja renders ``{{ params.boxes }}`` as the Python ``repr`` of the list unless the DAG sets
    ``render_template_as_native_obj=True``.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith(("[", "(", "{")):
        return value  # e.g. one status, "closed"
    try:
        return jsonlib.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise PacklyValidationError(
            f"{name} rendered to a string that is neither JSON nor a Python literal: {text[:80]!r}."
        ) from None


def parse_time(value: Any, name: str) -> dt.datetime | None:
    """A timestamp argument (datetime or ISO-8601 text) as an aware UTC datetime; naive means UTC.

    ``None`` and ``""`` (an empty rendered template) mean no timestamp. Text is read by pendulum
    (Airflow's date library) as an ISO-8601 date or date-time, UTC where it names no offset; the
    provider's one timestamp rule (``parse_deadline``) then turns it into UTC. A time without a
    date (``"10:00"``) or a duration is refused, not guessed.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed: Any = pendulum.parse(value.strip(), tz=dt.timezone.utc, exact=True)
        except ValueError:  # pendulum's ParserError is a ValueError
            parsed = None
        if isinstance(parsed, dt.date) and not isinstance(parsed, dt.datetime):
            parsed = dt.datetime.combine(parsed, dt.time(), tzinfo=dt.timezone.utc)
        if not isinstance(parsed, dt.datetime):
            raise PacklyValidationError(f"{name} must be an ISO-8601 timestamp; got {value!r}.")
        value = parsed
    elif not isinstance(value, dt.datetime):
        raise PacklyValidationError(f"{name} must be a datetime or an ISO-8601 timestamp; got {value!r}.")
    elif value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return parse_deadline(value)
