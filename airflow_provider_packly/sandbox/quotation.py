"""Bracket-notation query parsing, quotation validation and the sandbox's price list.

How Packly expects a list of objects in a query string is not documented; the sandbox
accepts the common bracket notation (``items[0][article]=s020_v1``). The response body past
``request`` is not documented either: the shape and the prices here are the sandbox's own,
deterministic choice (see :func:`quote`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from airflow_provider_packly.sandbox.dieline import Box, validate_box
from airflow_provider_packly.sandbox.errors import EnvelopeError, ErrorItem, validation_error

_KEY_PATTERN = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")
_SEGMENT_PATTERN = re.compile(r"\[([^\[\]]*)\]")

MANUFACTURING_DAYS: dict[str, int] = {"economy": 8, "standard": 5, "express": 2}
"""Documented manufacturing times and their days."""

BOOLEAN_OPTIONS: tuple[str, ...] = ("printing", "gold", "silver", "varnish")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})

# Sandbox price list (not documented by Packly).
OPTION_SURCHARGES: dict[str, Decimal] = {
    "printing": Decimal("0.25"),
    "gold": Decimal("0.15"),
    "silver": Decimal("0.15"),
    "varnish": Decimal("0.10"),
}
MANUFACTURING_FACTORS: dict[str, Decimal] = {
    "economy": Decimal("0.90"),
    "standard": Decimal("1.00"),
    "express": Decimal("1.30"),
}
TAX_RATE = Decimal("0.22")
_SHIPPING_PATTERN = re.compile(r"^[A-Z]{2}$")


class BracketQueryError(ValueError):
    """The query string's bracket notation is inconsistent (e.g. ``a=1&a[b]=2``).

    ``name`` is the top-level parameter concerned (``items`` for ``items[0]...``), used as
    the error path.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.name = key.split("[", 1)[0]


def _listify(node: Any) -> Any:
    """Turn dicts whose keys are exactly ``"0".."n-1"`` into lists, recursively."""
    if isinstance(node, dict):
        converted = {key: _listify(value) for key, value in node.items()}
        indices = [str(i) for i in range(len(converted))]
        if converted and set(converted) == set(indices):
            return [converted[i] for i in indices]
        return converted
    return node


def parse_bracket_query(multi_items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Parse ``(key, value)`` pairs in bracket notation into nested dicts and lists.

    ``items[0][article]=a&items[0][references][0][quantity]=5&shipping=IT`` becomes
    ``{"items": [{"article": "a", "references": [{"quantity": "5"}]}], "shipping": "IT"}``.

    Rules: a mapping whose keys are exactly the indices ``0..n-1`` (in any order) becomes a
    list; other numeric keys (a gap, e.g. ``items[0]`` and ``items[2]``) stay a dict keyed by
    strings, which the validators then reject as "not a list". Empty brackets append, but only
    at the end of a key (``tags[]=a&tags[]=b``). A repeated plain key keeps its last value.
    A key that is not well-formed bracket notation (``items[0``) is kept verbatim. Values
    stay strings. Raises :class:`BracketQueryError` when a key is used both as a value and as
    a container, or for ``[]`` before the last segment.
    """
    root: dict[str, Any] = {}
    for key, value in multi_items:
        match = _KEY_PATTERN.match(key)
        if match is None:
            if isinstance(root.get(key), (dict, list)):
                raise BracketQueryError(key, "used both as a value and as a container")
            root[key] = value
            continue
        segments = [match.group(1), *_SEGMENT_PATTERN.findall(match.group(2))]
        node: dict[str, Any] = root
        for position, segment in enumerate(segments[:-1]):
            following = segments[position + 1]
            if segment == "":
                raise BracketQueryError(key, "empty brackets are only allowed at the end")
            if following == "":
                if position + 1 != len(segments) - 1:
                    raise BracketQueryError(key, "empty brackets are only allowed at the end")
                existing = node.setdefault(segment, [])
                if not isinstance(existing, list):
                    raise BracketQueryError(key, "mixes a list with another kind of value")
                existing.append(value)
                break
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                raise BracketQueryError(key, "used both as a value and as a container")
            node = child
        else:
            last = segments[-1]
            if isinstance(node.get(last), (dict, list)):
                raise BracketQueryError(key, "used both as a value and as a container")
            node[last] = value
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def _boolean(item: Mapping[str, Any], name: str, path: str) -> bool:
    """Read an optional boolean option (``true``/``false``/``1``/``0``, default false)."""
    raw = item.get(name, "false")
    if isinstance(raw, str) and raw in _TRUE:
        return True
    if isinstance(raw, str) and raw in _FALSE:
        return False
    raise validation_error("QUO_1002", path, f"{name} must be true, false, 1 or 0")


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def blank_area_m2(box: Box) -> Decimal:
    """Area of the flat blank of ``box`` in square metres (the sandbox's pricing basis)."""
    length = 2 * (box.width + box.depth) + Decimal(15)
    height = box.height + 2 * box.depth + Decimal(30)
    return length * height / Decimal(1_000_000)


def quote(
    query: Mapping[str, Any],
    *,
    materials: Mapping[str, float],
    max_dimension_mm: float,
) -> dict[str, Any]:
    """Validate a parsed quotation query and return the sandbox's quotation body.

    Validation fails fast, item by item in order (article, material, width, depth, height,
    references/quantity, printing, gold, silver, varnish, manufacturing_time), then
    ``shipping``. Codes (only the ``DLN_*`` ones are documented by Packly; the rest are the
    sandbox's choice):

    * ``QUO_1000`` path ``items``: missing, empty, or not a list of objects;
    * ``DLN_1100``..``DLN_1104`` path ``items[i].<field>``: as for the dieline;
    * ``QUO_1001`` path ``items[i].references``: missing, not a list, or more than one element
      (Packly allows at most one for now);
    * ``QTY_1000`` path ``items[i].references[0].quantity``, top-level code
      ``QUANTITY_ERROR`` (status 400, not documented): not a positive integer;
    * ``QUO_1002`` path ``items[i].<option>``: a boolean other than true/false/1/0
      (options are optional, default false: the sandbox's choice);
    * ``QUO_1003`` path ``items[i].manufacturing_time``: not economy/standard/express
      (optional, default ``standard``: the sandbox's choice);
    * ``QUO_1004`` path ``shipping``: not two upper-case letters (default ``IT``).

    Pricing (not documented by Packly; the sandbox's own): unit price = blank area (m²) x
    material rate (EUR/m², ``SandboxConfig.materials``) x (1 + option surcharges: printing
    25 %, gold 15 %, silver 15 %, varnish 10 %) x manufacturing factor (economy 0.9,
    standard 1.0, express 1.3), rounded to 4 decimals; item total = unit price x quantity
    rounded to cents; tax 22 % of the total whatever the shipping country; no shipping cost.
    """
    items = query.get("items")
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise validation_error("QUO_1000", "items", "items is required and must be a non-empty list of items")
    priced: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        prefix = f"items[{index}]."
        box = validate_box(item, materials=materials, max_dimension_mm=max_dimension_mm, path_prefix=prefix)
        references = item.get("references")
        if not isinstance(references, list) or len(references) != 1:
            raise validation_error(
                "QUO_1001",
                f"{prefix}references",
                "references is required and must be a list of exactly one reference",
            )
        reference = references[0]
        raw_quantity = reference.get("quantity") if isinstance(reference, dict) else None
        if (
            not (isinstance(raw_quantity, str) and raw_quantity.isdigit() and raw_quantity.isascii())
            or int(raw_quantity) <= 0
        ):
            raise EnvelopeError(
                400,
                "QUANTITY_ERROR",
                "The quantity is not valid",
                ErrorItem(
                    "QTY_1000",
                    f"{prefix}references[0].quantity",
                    "quantity is required and must be a positive integer",
                ),
            )
        quantity = int(raw_quantity)
        options = {name: _boolean(item, name, f"{prefix}{name}") for name in BOOLEAN_OPTIONS}
        manufacturing_time = item.get("manufacturing_time", "standard")
        if not isinstance(manufacturing_time, str) or manufacturing_time not in MANUFACTURING_DAYS:
            raise validation_error(
                "QUO_1003",
                f"{prefix}manufacturing_time",
                "manufacturing_time must be one of economy, standard, express",
            )
        factor = Decimal(1) + sum((OPTION_SURCHARGES[name] for name, chosen in options.items() if chosen), Decimal(0))
        unit_price = (
            blank_area_m2(box)
            * Decimal(str(materials[box.material]))
            * factor
            * MANUFACTURING_FACTORS[manufacturing_time]
        ).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
        priced.append(
            {
                "article": box.article,
                "material": box.material,
                "quantity": quantity,
                "manufacturing_time": manufacturing_time,
                "manufacturing_days": MANUFACTURING_DAYS[manufacturing_time],
                "unit_price": unit_price,
                "total_amount_tax_excluded": _money(unit_price * quantity),
            }
        )
    shipping = query.get("shipping", "IT")
    if not isinstance(shipping, str) or not _SHIPPING_PATTERN.match(shipping):
        raise validation_error("QUO_1004", "shipping", "shipping must be an ISO 3166 two-letter country code")
    excluded = sum((p["total_amount_tax_excluded"] for p in priced), Decimal(0))
    tax = _money(excluded * TAX_RATE)
    return {
        "currency": "EUR",
        "shipping": shipping,
        "items": [
            {
                **p,
                "unit_price": float(p["unit_price"]),
                "total_amount_tax_excluded": float(p["total_amount_tax_excluded"]),
            }
            for p in priced
        ],
        "total_amount_tax_excluded": float(excluded),
        "tax_amount": float(tax),
        "total_amount_tax_included": float(excluded + tax),
    }
