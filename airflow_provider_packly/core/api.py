"""Packly's documented endpoints: how each request is built and checked, and each answer read.

Pure (no I/O): shared by the hook's sync and async methods, the operators (which validate
their arguments with the same rules at DAG parse time) and the triggers. Each endpoint is
one small spec (``Endpoint``: path, query builder, answer reader); ``ENDPOINTS`` lists them.
``airflow_provider_packly.resources`` re-exports this module.

Where Packly's documentation is silent this module says so and makes the choice replaceable:
the query-string encoding of quotation items (``QueryEncoder``) and the spelling of ``sort``.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

# Defined in ``core.errors`` with every other error; importable from here as before.
from airflow_provider_packly.core.errors import PacklyError, PacklyOrderNotFound, PacklyValidationError

if TYPE_CHECKING:
    from airflow_provider_packly.core.settings import PacklyConnection

__all__ = [
    "DIELINE",
    "DIELINE_PATH",
    "DIELINE_TYPES",
    "ENDPOINTS",
    "MANUFACTURING_TIMES",
    "ORDERS",
    "ORDERS_PATH",
    "QUOTATION",
    "QUOTATION_PATH",
    "SORT_ORDERS",
    "Endpoint",
    "OrderPager",
    "PacklyOrderNotFound",
    "PacklyValidationError",
    "QueryEncoder",
    "Reply",
    "bracket_encode",
    "dieline_params",
    "dimension",
    "endpoint_path",
    "find_order",
    "is_last_page",
    "is_order",
    "json_reader",
    "order_not_found",
    "orders_page_params",
    "quotation_params",
    "read_dieline",
    "read_dieline_json",
    "read_document",
    "read_orders_page",
    "validate_code",
    "validate_quotation_item",
    "validate_shipping",
]

DIELINE_PATH = "/v1/reseller/dieline"
QUOTATION_PATH = "/v1/reseller/quotation"
ORDERS_PATH = "/v1/reseller/orders"

DIELINE_TYPES = ("pdf", "json")
MANUFACTURING_TIMES = ("economy", "standard", "express")
#: Packly says "ascending or descending" without the spelling; ``asc``/``desc`` is the usual one.
SORT_ORDERS = ("asc", "desc")
_OPTION_FLAGS = ("printing", "gold", "silver", "varnish")
_ARTICLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Turns a nested value into query-string pairs. Packly does not document how a list of
#: objects goes into a query string; ``bracket_encode`` is the common convention.
QueryEncoder = Callable[[str, Any], list[tuple[str, str]]]


def dimension(value: Any, name: str) -> str:
    """A millimetre measure as Packly wants it: positive, at most two decimals."""
    if isinstance(value, bool):
        raise PacklyValidationError(f"{name} must be a number of millimetres, not {value!r}.")
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise PacklyValidationError(f"{name} must be a number of millimetres, not {value!r}.") from None
    if not number.is_finite() or number <= 0:
        raise PacklyValidationError(f"{name} must be a positive number of millimetres; got {value!r}.")
    if number != number.quantize(Decimal("0.01")):
        raise PacklyValidationError(f"{name} may have at most two decimals (Packly's rule); got {value!r}.")
    return format(number.normalize(), "f")


def _code(value: Any, name: str) -> str:
    """A Packly code (article or material), checked; ``name`` says which argument it came from."""
    if not isinstance(value, str) or not _ARTICLE.match(value.strip()):
        raise PacklyValidationError(f"{name} must be a Packly code such as 's020_v1' or 'SBS300'; got {value!r}.")
    return value.strip()


validate_code = _code


def dieline_params(
    article: Any, material: Any, width: Any, depth: Any, height: Any, type: str = "pdf"
) -> dict[str, str]:
    """Query parameters of ``GET /v1/reseller/dieline``, checked."""
    if type not in DIELINE_TYPES:
        raise PacklyValidationError(f"type must be 'pdf' or 'json'; got {type!r}.")
    return {
        "article": _code(article, "article"),
        "material": _code(material, "material"),
        "width": dimension(width, "width"),
        "depth": dimension(depth, "depth"),
        "height": dimension(height, "height"),
        "type": type,
    }


def read_dieline_json(document: Any) -> dict[str, Any]:
    """The ``type=json`` answer's ``response`` with ``pdf`` (the decoded bytes) added."""
    response = document.get("response") if isinstance(document, dict) else None
    if not isinstance(response, dict) or not isinstance(response.get("buffer"), str):
        raise PacklyError("Packly's dieline answer (type=json) has no response.buffer; the API may have changed.")
    try:
        pdf = base64.b64decode(response["buffer"], validate=True)
    except ValueError:
        raise PacklyError("Packly's dieline answer (type=json) has a buffer that is not base64.") from None
    return {**response, "pdf": pdf}


def validate_quotation_item(item: Any, index: int = 0) -> dict[str, Any]:
    """One quotation item, checked and normalised (values as Packly's query wants them)."""
    where = f"items[{index}]"
    if not isinstance(item, Mapping):
        raise PacklyValidationError(
            f"{where} must be a mapping with article, material, width, depth, height; got {type(item).__name__}."
        )
    missing = [key for key in ("article", "material", "width", "depth", "height") if key not in item]
    if missing:
        raise PacklyValidationError(f"{where} is missing {', '.join(missing)}.")
    normalised: dict[str, Any] = {
        "article": _code(item["article"], f"{where}.article"),
        "material": _code(item["material"], f"{where}.material"),
        **{key: dimension(item[key], f"{where}.{key}") for key in ("width", "depth", "height")},
    }
    references = item.get("references")
    if references is None and "quantity" in item:
        references = [{"quantity": item["quantity"]}]
    if references is not None:
        if not isinstance(references, Sequence) or isinstance(references, (str, bytes)) or len(references) > 1:
            raise PacklyValidationError(
                f"{where}.references must be a list of at most one {{'quantity': n}} (Packly's rule)."
            )
        normalised["references"] = [
            {"quantity": _quantity(ref, f"{where}.references[{i}]")} for i, ref in enumerate(references)
        ]
    for flag in _OPTION_FLAGS:
        if flag in item:
            if not isinstance(item[flag], bool):
                raise PacklyValidationError(f"{where}.{flag} must be true or false; got {item[flag]!r}.")
            normalised[flag] = item[flag]
    if "manufacturing_time" in item:
        if item["manufacturing_time"] not in MANUFACTURING_TIMES:
            raise PacklyValidationError(
                f"{where}.manufacturing_time must be one of {', '.join(MANUFACTURING_TIMES)}; "
                f"got {item['manufacturing_time']!r}."
            )
        normalised["manufacturing_time"] = item["manufacturing_time"]
    unknown = sorted(set(item) - set(normalised) - {"quantity"})
    if unknown:
        raise PacklyValidationError(f"{where} has unknown keys {', '.join(unknown)}.")
    return normalised


def _quantity(reference: Any, where: str) -> int:
    quantity = reference.get("quantity") if isinstance(reference, Mapping) else None
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise PacklyValidationError(f"{where}.quantity must be a positive whole number; got {quantity!r}.")
    return quantity


def validate_shipping(shipping: Any) -> str | None:
    if shipping is None:
        return None
    if not isinstance(shipping, str) or not re.fullmatch(r"[A-Za-z]{2}", shipping.strip()):
        raise PacklyValidationError(
            f"shipping must be an ISO 3166 two-letter country code such as 'IT'; got {shipping!r}."
        )
    return shipping.strip().upper()


def bracket_encode(prefix: str, value: Any) -> list[tuple[str, str]]:
    """``items=[{"a": 1}]`` as ``items[0][a]=1``: the common convention (PHP, Rails, qs)."""
    if isinstance(value, Mapping):
        return [pair for key, inner in value.items() for pair in bracket_encode(f"{prefix}[{key}]", inner)]
    if isinstance(value, (list, tuple)):
        return [pair for index, inner in enumerate(value) for pair in bracket_encode(f"{prefix}[{index}]", inner)]
    if isinstance(value, bool):
        return [(prefix, "true" if value else "false")]
    return [(prefix, str(value))]


def quotation_params(
    items: Iterable[Any], shipping: str | None = None, *, encode: QueryEncoder = bracket_encode
) -> list[tuple[str, str]]:
    """Query of ``GET /v1/reseller/quotation``: the items, checked, then encoded by ``encode``."""
    checked = [validate_quotation_item(item, index) for index, item in enumerate(items)]
    if not checked:
        raise PacklyValidationError("A quotation needs at least one item.")
    pairs = encode("items", checked)
    country = validate_shipping(shipping)
    if country is not None:
        pairs.append(("shipping", country))
    return pairs


def orders_page_params(page: int, limit: int, sort: str) -> dict[str, str]:
    """Query of one page of ``GET /v1/reseller/orders`` (``page`` is zero-based)."""
    if sort not in SORT_ORDERS:
        raise PacklyValidationError(f"sort must be 'asc' or 'desc'; got {sort!r}.")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise PacklyValidationError(f"limit must be a positive whole number; got {limit!r}.")
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        raise PacklyValidationError(f"page must be 0 or more (pages are zero-based); got {page!r}.")
    return {"page": str(page), "limit": str(limit), "sort": sort}


def read_orders_page(document: Any) -> list[dict[str, Any]]:
    """The orders of one page (the ``response`` list)."""
    orders = document.get("response") if isinstance(document, dict) else None
    if not isinstance(orders, list):
        raise PacklyError("Packly's orders answer has no response list; the API may have changed.")
    return orders


def is_last_page(orders: Sequence[Any], limit: int | None = None) -> bool:
    """An empty page is the last; Packly sends no total or next link.

    A page shorter than ``limit`` is not: Packly documents no maximum for ``limit``, and a
    server that caps it (20 orders when 50 were asked for) would otherwise end the listing
    after its first page. ``limit`` is accepted for compatibility and not used.
    """
    return not orders


class OrderPager:
    """Where paging through ``/v1/reseller/orders`` stands: the sync and async loops share it.

    Stops at an empty page, or at a page with the same orders as the one before (a server
    that ignores ``page`` answers page 0 again): that page is not returned a second time.
    Costs one more request than "a short page is the last", and is right whatever page
    size the server really uses.
    """

    def __init__(self, *, limit: int = 50, sort: str = "desc") -> None:
        orders_page_params(0, limit, sort)  # check the arguments now, not at the first page
        self.limit = limit
        self.sort = sort
        self.page = 0
        self.done = False
        self._previous_ids: list[Any] | None = None

    def params(self) -> dict[str, str]:
        return orders_page_params(self.page, self.limit, self.sort)

    def args(self) -> tuple[int, int, str]:
        """``ORDERS``' arguments for the next page: ``(page, limit, sort)``."""
        return self.page, self.limit, self.sort

    def accept(self, document: Any) -> list[dict[str, Any]]:
        """``take`` for a whole JSON answer."""
        return self.take(read_orders_page(document))

    def take(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The page's orders to hand on (none once the listing has ended)."""
        ids = [order.get("id") if isinstance(order, Mapping) else None for order in orders]
        if is_last_page(orders) or ids == self._previous_ids:
            self.done = True
            return []
        self._previous_ids = ids
        self.page += 1
        return orders


def is_order(order: Mapping[str, Any], order_id: str) -> bool:
    """Whether ``order`` is the one with ``order_id`` (Packly sends ids as strings)."""
    return str(order.get("id")) == order_id


def find_order(orders: Iterable[Mapping[str, Any]], order_id: str) -> dict[str, Any] | None:
    for order in orders:
        if is_order(order, order_id):
            return dict(order)
    return None


def order_not_found(order_id: str) -> PacklyOrderNotFound:
    """The error for an order id that paging through every order did not find."""
    return PacklyOrderNotFound(
        f"No Packly order with id {order_id!r} was found in /v1/reseller/orders; check the id and the "
        "connection's environment (sandbox and live orders are separate)."
    )


def read_document(document: Any) -> Any:
    """The whole JSON answer, as Packly sent it: for endpoints whose answer past ``request``
    Packly does not document (the quotation)."""
    return document


# -- where a request may go --------------------------------------------------------------------


def endpoint_path(connection: PacklyConnection, endpoint: str) -> str:
    """``endpoint`` as a path under the connection's base URL, dot segments resolved.

    A full URL is accepted only under the base URL: the bearer token must never be sent to
    another host. Only the path is looked at (a query may hold a URL: ``?next=https://...``).
    ``.`` and ``..`` segments, also percent-encoded (``%2e%2e``), are resolved here, and an
    endpoint whose ``..`` would climb above the base URL's path is refused: the server (or a
    proxy) would resolve them otherwise, and reach paths the connection does not name.
    """
    return _endpoint_path(connection.base_url, endpoint)


@functools.lru_cache(maxsize=1024)
def _endpoint_path(base_url: str, endpoint: str) -> str:
    """``endpoint_path``, once per Base URL and endpoint (a call's hot path; errors are not cached)."""
    cut = min((i for i in (endpoint.find("?"), endpoint.find("#")) if i >= 0), default=len(endpoint))
    path, rest = endpoint[:cut], endpoint[cut:]
    if "://" in path:
        if not (path == base_url or path.startswith(base_url + "/")):
            raise PacklyError(
                f"Endpoint {endpoint!r} is not under the connection's Base URL {base_url!r}; "
                "give a path such as '/v1/reseller/orders' so the token is only sent to Packly."
            )
        path = path[len(base_url) :]
    return _resolve_dot_segments(path.lstrip("/"), endpoint, base_url) + rest


def _resolve_dot_segments(path: str, endpoint: str, base_url: str) -> str:
    """``/`` + ``path`` with ``.``/``..`` segments resolved (RFC 3986 5.2.4), plain or percent-encoded."""
    kept: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        decoded = _fully_unquoted(segment)
        last = index == len(segments) - 1
        if decoded in (".", ".."):
            if decoded == "..":
                if not kept:
                    raise _outside_base(endpoint, base_url)
                kept.pop()
            if last:
                kept.append("")  # "a/b/.." is "a/", as in RFC 3986
            continue
        if any(part in (".", "..") for part in re.split(r"[/\\]", decoded)):
            # "..%2F.." or "..%5C": a server that decodes the slash would climb with it.
            raise _outside_base(endpoint, base_url)
        kept.append(segment)
    return "/" + "/".join(kept)


def _fully_unquoted(segment: str) -> str:
    """``segment`` percent-decoded until it no longer changes (``%252e`` is a dot to a server
    that decodes twice)."""
    for _ in range(4):
        decoded = urllib.parse.unquote(segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def _outside_base(endpoint: str, base_url: str) -> PacklyError:
    base_path = urllib.parse.urlsplit(base_url).path or "/"
    return PacklyError(
        f"Endpoint {endpoint!r} leads outside the connection's Base URL path {base_path!r} (its '..' segments, "
        "plain or percent-encoded, climb above it); give a path under it such as '/v1/reseller/orders'."
    )


# -- the endpoint specs ---------------------------------------------------------------------

QueryParams = Mapping[str, str] | Sequence[tuple[str, str]]
_Args = ParamSpec("_Args")
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class Reply:
    """A successful answer as plain data, for the readers: what was asked, what came back.

    The I/O shell builds it from an ``httpx.Response`` (``_http.reply_of``); ``query`` is the
    query string that was sent, so a reader can depend on it (the dieline's ``type``).
    """

    method: str
    path: str
    status: int
    content_type: str
    content: bytes
    query: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON, or a ``PacklyError`` that says what it was instead."""
        try:
            return json.loads(self.content)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            kind = self.content_type.split(";")[0] or "no content type"
            raise PacklyError(
                f"Packly answered {self.method} {self.path} with HTTP {self.status} but the body was not JSON "
                f"({kind}, {len(self.content)} bytes)."
            ) from None


def json_reader(read: Callable[[Any], _Result]) -> Callable[[Reply], _Result]:
    """A reader of the JSON document as a reader of the ``Reply``."""

    def read_reply(reply: Reply) -> _Result:
        return read(reply.json())

    return read_reply


def read_dieline(reply: Reply) -> bytes | dict[str, Any]:
    """The dieline answer: the PDF's bytes, or for ``type=json`` ``read_dieline_json``'s dict."""
    return read_dieline_json(reply.json()) if reply.query.get("type") == "json" else reply.content


@dataclass(frozen=True)
class Endpoint(Generic[_Args, _Result]):
    """One GET endpoint: its path, how its query is built and checked, how its answer is read.

    The hook calls every spec the same way (``PacklyHook.call_endpoint``/``acall_endpoint``:
    ``spec.read(reply of GET spec.path with spec.query(...))``), sync or async alike; an
    operator checks its arguments at DAG parse time with the same ``spec.query``. Adding a
    GET endpoint is one spec here, one hook method (and its async twin) and its operator.
    """

    path: str
    #: Builds the query from the caller's arguments, raising ``PacklyValidationError`` first.
    params: Callable[_Args, QueryParams]
    #: Reads the answer (raising ``PacklyError`` when it lacks what is documented).
    read: Callable[[Reply], _Result]

    def query(self, *args: _Args.args, **kwargs: _Args.kwargs) -> QueryParams:
        """The checked query parameters for these arguments."""
        return self.params(*args, **kwargs)


#: The PDF's bytes (``type="pdf"``, the default) or, for ``type="json"``, a dict with ``pdf``.
DIELINE = Endpoint(DIELINE_PATH, dieline_params, read_dieline)
#: The whole JSON answer (its shape past ``request`` is undocumented).
QUOTATION = Endpoint(QUOTATION_PATH, quotation_params, json_reader(read_document))
#: One page of orders; ``OrderPager`` walks the pages and says when the listing ends.
ORDERS = Endpoint(ORDERS_PATH, orders_page_params, json_reader(read_orders_page))
#: Every documented endpoint, by path.
ENDPOINTS: dict[str, Endpoint[..., Any]] = {spec.path: spec for spec in (DIELINE, QUOTATION, ORDERS)}
