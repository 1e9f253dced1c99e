"""Operators for the Packly REST API: a generic call, dielines, quotations, orders.

Each operator checks its arguments with the pure rules of ``resources.py`` when the DAG file
is parsed (a negative width is a DAG import error, not a failed run); values that Airflow
fills in at run time (an upstream task's ``XComArg``, a mapped argument, a Jinja template)
are checked once rendered, at execute time, by the same rules (``arguments.py``). Each opens one
``PacklyHook`` and closes it before returning, and returns plain data (dicts, lists, str,
int): never a token, a connection or a response object.

DAG-parse cost: this module imports ``airflow.sdk`` and the provider's pure rules; the hook
(and httpx behind it) is imported when a task runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_provider_packly.arguments import (
    ArgumentCheck,
    check_callable,
    check_endpoint,
    check_page_size,
    literal,
    parse_time,
    resolved_at_runtime,
    whole_number,
)
from airflow_provider_packly.bases import PacklyTaskMixin
from airflow_provider_packly.exceptions import PacklyError, quote_body, redactor_for
from airflow_provider_packly.operators.lineage import LOCAL_PROTOCOLS, asset_uri
from airflow_provider_packly.resources import (
    DIELINE_PATH,
    ORDER_STATUSES,
    ORDERS_PATH,
    QUOTATION_PATH,
    PacklyValidationError,
    dieline_params,
    dimension,
    orders_page_params,
    validate_code,
    validate_quotation_item,
    validate_shipping,
)
from airflow_provider_packly.triggers.rules import normalise_statuses

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context, ObjectStoragePath
    from airflow.sdk.types import Logger

    from airflow_provider_packly.hooks.packly import PacklyHook

__all__ = [
    "PacklyDielineOperator",
    "PacklyOperator",
    "PacklyOrdersOperator",
    "PacklyQuotationOperator",
]

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_PDF_MAGIC = b"%PDF-"


class _PacklyBaseOperator(PacklyTaskMixin, BaseOperator):
    """The Packly operators' base: the connection, the hook and the argument checks
    (``bases.PacklyTaskMixin``), and their OpenLineage facets."""

    ui_color = "#fff1e0"
    #: What this run read (the connection's Base URL, the endpoint) and wrote, set by
    #: ``execute`` for ``get_openlineage_facets_on_complete``.
    _lineage_read: tuple[str, str] | None = None
    _lineage_written: ObjectStoragePath | None = None

    def _note_read(self, hook: PacklyHook, endpoint: str) -> None:
        """Remember the endpoint this run calls, for OpenLineage (no lookup: the hook has the connection)."""
        self._lineage_read = (hook.get_conn().base_url, endpoint)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any]:
        """OpenLineage's inputs and outputs of the run: the Packly endpoint as a dataset, and
        (``PacklyDielineOperator``) the file written. Called by Airflow's OpenLineage provider when
        it is installed (the ``openlineage`` extra); nothing of OpenLineage is imported before."""
        from airflow_provider_packly.operators.lineage import operator_lineage

        return operator_lineage(self._lineage_read, self._lineage_written)


class PacklyOperator(_PacklyBaseOperator):
    """Call any Packly endpoint with a bearer token; return the JSON answer.

    ``response_check(response, **context)`` and ``response_filter(response, **context)`` get the
    ``httpx.Response`` and the context keys their signatures name, as with Airflow's
    ``HttpOperator``. A ``response_check`` returning false fails the task; the
    ``response_filter``'s result is returned instead of the JSON body (return plain data:
    it goes to XCom). A non-2xx answer fails the task with ``PacklyAPIError``.

    :param endpoint: Path under the connection's Base URL, e.g. ``/v1/reseller/orders`` (templated).
    :param method: HTTP method, ``GET`` by default (templated).
    :param request_params: Query parameters (templated). Named as in Airflow's ``HttpSensor``:
        ``params`` is every operator's own argument (the DAG/task params).
    :param json: JSON body (templated).
    :param data: Form body (templated).
    :param headers: Extra headers (templated).
    :param response_check: Fails the task when it returns false.
    :param response_filter: Its result is the task's return value.
    :param packly_conn_id: The ``packly`` connection.
    """

    template_fields = ("endpoint", "method", "request_params", "json", "data", "headers")
    argument_checks = (
        ArgumentCheck(("endpoint",), check_endpoint),
        ArgumentCheck(("method",), lambda method: _check_method(method)),
    )

    def __init__(
        self,
        *,
        endpoint: str,
        method: str = "GET",
        request_params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        response_check: Callable[..., Any] | None = None,
        response_filter: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_callable("response_check", response_check)
        check_callable("response_filter", response_filter)
        self.endpoint = endpoint
        self.method = method
        self.request_params = request_params
        self.json = json
        self.data = data
        self.headers = headers
        self.response_check = response_check
        self.response_filter = response_filter
        self.check_arguments(parsing=True)

    def execute(self, context: Context) -> Any:
        self.check_arguments()
        method = _check_method(self.method)
        self.log.info("Calling Packly: %s %s", method, self.endpoint)
        with self.get_hook() as hook:
            self._note_read(hook, self.endpoint)
            response = hook.request(
                method, self.endpoint, params=self.request_params, json=self.json, data=self.data, headers=self.headers
            )
        if self.response_check is not None and not self.call_with_context(self.response_check, response, context):
            raise AirflowException(
                f"response_check returned a false value for Packly's answer to {method} {self.endpoint} "
                f"(HTTP {response.status_code})."
            )
        if self.response_filter is not None:
            return self.call_with_context(self.response_filter, response, context)
        if not response.content:
            return None
        from airflow_provider_packly.hooks.packly import json_body

        return json_body(response)


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or method.strip().upper() not in _METHODS:
        raise PacklyValidationError(f"method must be one of {', '.join(_METHODS)}; got {method!r}.")
    return method.strip().upper()


class PacklyDielineOperator(_PacklyBaseOperator):
    """Download a box's die-cut template (PDF) to a file or object storage.

    The body is streamed to ``output_path`` chunk by chunk, hashed while written, never held
    whole in memory. A failed download leaves no partial file: a local file is written under a
    temporary name beside the target and renamed into place (an earlier file stays intact); an
    object-storage file is written in place and deleted on failure.

    Returns ``{"path": str, "bytes": int, "sha256": hex}``.

    **Assets.** The written file is an outlet ``Asset`` whose URI is the path's
    (``file:///data/box.pdf``, ``s3://bucket/box.pdf``; no connection id), so a DAG scheduled on
    it runs after each new dieline; the asset event's ``extra`` carries ``bytes`` and ``sha256``.
    When ``output_path`` is known as the DAG file is parsed (and absolute, if local), the
    operator adds that ``Asset`` to ``outlets`` itself. When it is known only at run time (a
    template, an upstream output), list an ``AssetAlias`` in ``outlets``: each run attaches the
    file it wrote to every ``AssetAlias`` there, and DAGs scheduled on the alias run. Hook
    lineage records the final path, never the temporary file.

    :param article: Box type code, e.g. ``s020_v1`` (templated).
    :param material: Material code, e.g. ``SBS300`` (templated).
    :param width: Millimetres, positive, at most two decimals (templated); ``depth`` and
        ``height`` likewise.
    :param output_path: Where to write: a local path, a ``file://``/``s3://``/``gs://``... URL
        (templated), or an ``airflow.sdk.ObjectStoragePath`` (which carries its own ``conn_id``).
        Local parent folders are created.
    :param output_conn_id: Storage connection for a string ``output_path`` (e.g. ``aws_default``
        for ``s3://``) (templated; empty means none).
    :param packly_conn_id: The ``packly`` connection.
    """

    template_fields = ("article", "material", "width", "depth", "height", "output_path", "output_conn_id")
    argument_checks = (
        *(
            ArgumentCheck((name,), lambda value, name=name: validate_code(value, name))
            for name in ("article", "material")
        ),
        *(
            ArgumentCheck((name,), lambda value, name=name: dimension(value, name))
            for name in ("width", "depth", "height")
        ),
        ArgumentCheck(("output_path",), lambda output_path: _check_output_path(output_path)),
    )

    def __init__(
        self,
        *,
        article: str,
        material: str,
        width: float | str,
        depth: float | str,
        height: float | str,
        output_path: str | ObjectStoragePath,
        output_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.article = article
        self.material = material
        self.width = width
        self.depth = depth
        self.height = height
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.check_arguments(parsing=True)
        self._declare_output_asset()

    def _declare_output_asset(self) -> None:
        """Add the output file's ``Asset`` to ``outlets`` when its URI is known now (see the class)."""
        if resolved_at_runtime(self.output_path):
            return  # a template or an upstream output: an AssetAlias in outlets covers it
        uri = asset_uri(self._target(), absolute_only=True)
        if uri is None:
            return  # a relative local path: absolute only where the task runs
        asset = Asset(uri)
        if not any(isinstance(outlet, Asset) and outlet.uri == asset.uri for outlet in self.outlets):
            self.outlets.append(asset)

    def _target(self) -> ObjectStoragePath:
        from airflow.sdk import ObjectStoragePath

        if isinstance(self.output_path, ObjectStoragePath):
            return self.output_path
        conn_id = None if resolved_at_runtime(self.output_conn_id) else self.output_conn_id or None
        return ObjectStoragePath(str(_check_output_path(self.output_path)), conn_id=conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        self.check_arguments()
        params = dieline_params(self.article, self.material, self.width, self.depth, self.height, type="pdf")
        path = self._target()
        local = path.protocol in LOCAL_PROTOCOLS
        if local:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
        else:
            partial = path
        self.log.info("Downloading the Packly dieline %s to %s", params, path)
        digest = hashlib.sha256()
        size = 0
        writing = False  # remove only what this run wrote: never an earlier object at ``path``
        try:
            with (
                self.get_hook() as hook,
                hook.stream(
                    "GET", DIELINE_PATH, params=params, headers={"Accept": "application/pdf, application/json"}
                ) as response,
            ):
                self._note_read(hook, DIELINE_PATH)
                head = b""
                writing = True
                # Through the file system, not ``partial.open``: that records every path it writes
                # as hook lineage, here the temporary file. The final path is recorded below.
                with partial.fs.open(partial.path, "wb") as out:
                    for chunk in response.iter_bytes():
                        if len(head) < len(_PDF_MAGIC):
                            head += chunk[: len(_PDF_MAGIC) - len(head)]
                            if not _PDF_MAGIC.startswith(head):
                                kind = response.headers.get("content-type", "no content type").split(";")[0]
                                raise PacklyError(
                                    f"Packly's dieline answer is not a PDF ({kind}, starting "
                                    f"{quote_body(chunk, redactor_for(response.request), 16)}); "
                                    "nothing was kept."
                                )
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                if size < len(_PDF_MAGIC):
                    raise PacklyError(
                        f"Packly's dieline answer is {size} bytes long, too short to be a PDF; nothing was kept."
                    )
            if local:
                os.replace(partial.path, path.path)  # atomic on one filesystem
        except BaseException:
            if writing:
                _remove_quietly(partial, self.log)
            raise
        result = {"path": str(path), "bytes": size, "sha256": digest.hexdigest()}
        self.log.info("Wrote the dieline: %s (%d bytes, sha256 %s)", result["path"], size, result["sha256"])
        self._record_output(context, path, {"bytes": size, "sha256": result["sha256"]})
        return result

    def _record_output(self, context: Context, path: ObjectStoragePath, extra: dict[str, Any]) -> None:
        """The written file as hook lineage, as this run's event of its outlet ``Asset`` (with
        ``extra``) and of every outlet ``AssetAlias``, and for OpenLineage."""
        from airflow.sdk.lineage import get_hook_lineage_collector

        uri = asset_uri(path)
        assert uri is not None  # only absolute_only gives None
        get_hook_lineage_collector().add_output_asset(context=path, uri=uri)
        self._lineage_written = path
        events = context.get("outlet_events")
        if events is None:
            return  # e.g. execute() called outside a task run
        asset = Asset(uri)
        for outlet in self.outlets:
            if isinstance(outlet, Asset) and outlet.uri == asset.uri:
                events[outlet].extra.update(extra)
            elif isinstance(outlet, AssetAlias):
                events[outlet].add(asset, extra=dict(extra))


def _remove_quietly(path: ObjectStoragePath, log: Logger) -> None:
    """Remove a partial file after a failed write; the write's own error is the one raised, so a
    failed clean-up (of any kind: each object store raises its own) is only logged."""
    try:
        if path.exists():
            path.unlink()
    except Exception as exc:  # noqa: BLE001 - the original error matters more, see the docstring
        log.warning("Could not remove the partial file %s (%s); remove it by hand.", path, type(exc).__name__)


def _check_output_path(output_path: Any) -> Any:
    """A string ``output_path`` stripped; a path object (``ObjectStoragePath``, ``Path``) as it is."""
    if isinstance(output_path, str):
        if not output_path.strip():
            raise PacklyValidationError("output_path must not be empty.")
        return output_path.strip()
    from airflow.sdk import ObjectStoragePath

    if not isinstance(output_path, (ObjectStoragePath, os.PathLike)):
        raise PacklyValidationError(f"output_path must be a path or URL; got {output_path!r}.")
    return output_path


def _check_items(items: Any) -> list[dict[str, Any]]:
    """The quotation items as a list, each checked (a rendered template is read back first)."""
    items = literal(items, "items")
    if isinstance(items, Mapping) or not isinstance(items, Iterable) or isinstance(items, (str, bytes)):
        raise PacklyValidationError(f"items must be a list of quotation items; got {type(items).__name__}.")
    checked: list[dict[str, Any]] = list(items)
    if not checked:
        raise PacklyValidationError("A quotation needs at least one item.")
    for index, item in enumerate(checked):
        validate_quotation_item(item, index)
    return checked


class PacklyQuotationOperator(_PacklyBaseOperator):
    """Get Packly's prices for a list of items; return Packly's JSON answer as it came.

    Each item: ``article``, ``material``, ``width``, ``depth``, ``height``, ``references``
    (``[{"quantity": n}]``) or ``quantity``, optional ``printing``/``gold``/``silver``/
    ``varnish`` booleans and ``manufacturing_time`` (see ``resources.validate_quotation_item``).
    Packly documents the answer's shape only as far as ``request``; the rest is returned as is.

    :param items: The items (templated; a template may render to JSON or a Python literal).
    :param shipping: ISO 3166 two-letter country code; Packly's default is ``IT`` (templated).
    :param packly_conn_id: The ``packly`` connection.
    """

    template_fields = ("items", "shipping")
    argument_checks = (
        ArgumentCheck(("items",), _check_items),
        ArgumentCheck(("shipping",), lambda shipping: validate_shipping(shipping or None)),
    )

    def __init__(
        self,
        *,
        items: Sequence[Mapping[str, Any]] | str,
        shipping: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.items = items
        self.shipping = shipping
        self.check_arguments(parsing=True)

    def execute(self, context: Context) -> Any:
        self.check_arguments()
        items = _check_items(self.items)
        shipping = validate_shipping(self.shipping or None)
        self.log.info(
            "Asking Packly for a quotation of %d item(s)%s", len(items), f" shipped to {shipping}" if shipping else ""
        )
        with self.get_hook() as hook:
            self._note_read(hook, QUOTATION_PATH)
            return hook.get_quotation(items, shipping)


def _flag(value: Any, name: str) -> bool:
    """A bool, or its rendering by a template (``"True"``, ``"false"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise PacklyValidationError(f"{name} must be true or false; got {value!r}.")


def _check_statuses(statuses: Any) -> tuple[str, ...] | None:
    """The order statuses to keep (``None``: all); a rendered list is read back first."""
    if statuses is None:
        return None
    return normalise_statuses(literal(statuses, "statuses"), name="statuses", allowed=ORDER_STATUSES)


def _check_time_filter(since: Any, until: Any, use_data_interval: Any, timestamp_field: Any) -> None:
    wants_time = bool(since) or bool(until) or _flag(use_data_interval, "use_data_interval")
    if wants_time and not (isinstance(timestamp_field, str) and timestamp_field.strip()):
        raise PacklyValidationError(
            "A time filter (since, until or use_data_interval) needs timestamp_field: Packly documents no "
            "timestamp field on orders (the local sandbox's own field is 'created_at')."
        )


def _check_max_orders(max_orders: Any) -> int | None:
    max_orders = whole_number(max_orders)
    if max_orders is not None and (isinstance(max_orders, bool) or not isinstance(max_orders, int) or max_orders <= 0):
        raise PacklyValidationError(f"max_orders must be a positive whole number or None; got {max_orders!r}.")
    return max_orders


class PacklyOrdersOperator(_PacklyBaseOperator):
    """List Packly orders, filtered by status and optionally by time; return them as a list.

    Pages through ``/v1/reseller/orders`` only as far as needed: up to the last page, or until
    ``max_orders`` orders matched.

    **Time filter.** Packly documents no timestamp field on orders. If your orders carry one
    (the local sandbox adds ``created_at``, its own field), name it in ``timestamp_field`` and
    give ``since`` and/or ``until`` (``since <= timestamp < until``), or set
    ``use_data_interval=True`` to use the run's data interval. An order without a readable
    timestamp in that field fails the task, as it means the field name is wrong. Packly
    documents no sort key either, so the time filter cannot stop paging early.

    :param statuses: Keep only orders in these statuses (``None``: all) (templated).
    :param since: Keep orders at or after this time: datetime or ISO-8601 (templated).
    :param until: Keep orders before this time (templated).
    :param use_data_interval: Use ``data_interval_start``/``data_interval_end`` where
        ``since``/``until`` are not given (templated).
    :param timestamp_field: The order field holding a timestamp; required by a time filter
        (templated).
    :param max_orders: Stop after this many matching orders (``None``: no cap) (templated).
    :param sort: ``desc`` (default) or ``asc``, as sent to Packly (templated).
    :param page_size: Orders per page (Packly's ``limit``) (templated).
    :param packly_conn_id: The ``packly`` connection.
    """

    template_fields = (
        "statuses",
        "since",
        "until",
        "use_data_interval",
        "timestamp_field",
        "max_orders",
        "sort",
        "page_size",
    )
    argument_checks = (
        ArgumentCheck(("statuses",), lambda statuses: _check_statuses(statuses)),
        ArgumentCheck(("since",), lambda since: parse_time(since, "since")),
        ArgumentCheck(("until",), lambda until: parse_time(until, "until")),
        ArgumentCheck(
            ("since", "until", "use_data_interval", "timestamp_field"),
            lambda since, until, use_data_interval, timestamp_field: _check_time_filter(
                since, until, use_data_interval, timestamp_field
            ),
        ),
        ArgumentCheck(("max_orders",), lambda max_orders: _check_max_orders(max_orders)),
        ArgumentCheck(
            ("page_size", "sort"),
            lambda page_size, sort: orders_page_params(0, check_page_size(page_size, name="limit"), sort),
        ),
    )

    def __init__(
        self,
        *,
        statuses: Collection[str] | None = None,
        since: dt.datetime | str | None = None,
        until: dt.datetime | str | None = None,
        use_data_interval: bool = False,
        timestamp_field: str | None = None,
        max_orders: int | None = None,
        sort: str = "desc",
        page_size: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.statuses = statuses
        self.since = since
        self.until = until
        self.use_data_interval = use_data_interval
        self.timestamp_field = timestamp_field
        self.max_orders = max_orders
        self.sort = sort
        self.page_size = page_size
        self.check_arguments(parsing=True)

    def _window(self, context: Context) -> tuple[dt.datetime | None, dt.datetime | None]:
        since = parse_time(self.since, "since")
        until = parse_time(self.until, "until")
        if _flag(self.use_data_interval, "use_data_interval"):
            if since is None:
                since = parse_time(context.get("data_interval_start"), "data_interval_start")
            if until is None:
                until = parse_time(context.get("data_interval_end"), "data_interval_end")
            if since is None and until is None:
                self.log.warning("use_data_interval is set but this run has no data interval; no time filter applied.")
        return since, until

    def _timestamp(self, order: Mapping[str, Any]) -> dt.datetime:
        field = str(self.timestamp_field)
        raw = order.get(field)
        try:
            parsed = parse_time(raw, field)
        except PacklyValidationError:
            parsed = None
        if parsed is None:
            raise PacklyError(
                f"Packly order {order.get('id')!r} has no readable timestamp in field {field!r} (found {raw!r}); "
                "Packly documents no timestamp field, so check timestamp_field."
            )
        return parsed

    def execute(self, context: Context) -> list[dict[str, Any]]:
        self.check_arguments()
        wanted = _check_statuses(self.statuses)
        statuses = None if wanted is None else set(wanted)
        max_orders = _check_max_orders(self.max_orders)
        since, until = self._window(context)
        timed = since is not None or until is not None
        orders: list[dict[str, Any]] = []
        seen = 0
        with self.get_hook() as hook:
            self._note_read(hook, ORDERS_PATH)
            pages = hook.iter_orders(sort=self.sort, limit=check_page_size(self.page_size, name="limit"))
            try:
                for order in pages:
                    seen += 1
                    if statuses is not None and order.get("status") not in statuses:
                        continue
                    if timed:
                        stamp = self._timestamp(order)
                        if (since is not None and stamp < since) or (until is not None and stamp >= until):
                            continue
                    orders.append(order)
                    if max_orders is not None and len(orders) >= max_orders:
                        self.log.info("Reached max_orders=%d; paging stopped.", max_orders)
                        break
            finally:
                pages.close()
        self.log.info("Packly listed %d order(s); %d matched.", seen, len(orders))
        return orders
