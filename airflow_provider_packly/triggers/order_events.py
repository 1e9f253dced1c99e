"""Event-driven DAG starts on Packly orders: ``PacklyOrderEventTrigger`` for ``AssetWatcher``.

Packly documents no webhooks, so an order event is found by looking at the order list: one
complete listing per poll interval, shared with every other Packly trigger of the triggerer's
event loop on the same connection (``order_scan``), and compared with what was seen before:

* ``mode="status"``: an event when an order *reaches* one of ``statuses`` (it was seen in
  another status, or not at all, before);
* ``mode="new"``: an event when an order appears that was not in the list before.

The event payload is plain JSON: ``order_id``, ``status``, ``previous_status`` (``None`` for
an order not seen before), ``reason`` (the mode), ``packly_conn_id`` and ``order`` (the order
as ``/v1/reseller/orders`` lists it). Airflow stores it in the asset event's ``extra`` under
``payload``: a task reads it as
``triggering_asset_events[asset][0].extra["payload"]["order"]``.

No duplicate events for one transition
    What was already seen (the watermark: the orders in a watched status, or every order id in
    ``new`` mode) is kept in Airflow 3.3's asset state store (``asset_state_store``, injected by
    the triggerer into event triggers), compressed, under a key naming the connection, the mode
    and the statuses. It is written *before* the events of a poll are handed to Airflow:
    a triggerer that dies in between loses those events rather than sending them twice. A
    triggerer restart reads it back and goes on where it was.

    On Airflow 3.2 there is no asset state store: the watermark lives in memory only. A running
    triggerer still never sends an event twice, but after a restart the trigger takes a new
    baseline, and orders that changed while no triggerer was looking are not reported (they are
    missed, not duplicated). The same holds on 3.3 for a watcher whose asset state cannot be
    read (logged as a warning).

The first look (no watermark yet) is the baseline: orders already in a watched status (or
already listed) then are not events, unless ``emit_existing=True``.

Many watchers share one poll: Airflow 3.3's triggerer runs ``open_shared_stream`` once for all
watchers with the same ``shared_stream_key`` (connection, page size, interval) and gives each
the listings through ``filter_shared_stream``; watchers of different intervals (and the order
sensors' triggers) still share the scans themselves through ``order_scan``. On 3.2 each watcher
runs ``run()``, and the scans are shared the same way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import zlib
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_packly.exceptions import PacklyError, PacklyValidationError
from airflow_provider_packly.resources import ORDER_STATUSES
from airflow_provider_packly.triggers import order_scan
from airflow_provider_packly.triggers.rules import is_transient, normalise_statuses

if TYPE_CHECKING:
    from airflow_provider_packly.hooks.packly import PacklyHook

__all__ = ["PacklyOrderEventTrigger", "order_events"]

_log = logging.getLogger(__name__)
Mode = Literal["status", "new"]
_MODES = ("status", "new")
#: The version of the stored watermark's format.
_WATERMARK_VERSION = 1


def order_events(
    orders: Iterable[Mapping[str, Any]],
    known: Mapping[str, str] | None,
    *,
    mode: Mode,
    statuses: tuple[str, ...] = (),
    emit_existing: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The events one complete listing holds, and the watermark to keep: the pure rule.

    ``known`` maps order id -> status as last seen (``None``: nothing seen yet, the listing is
    the baseline). In ``status`` mode only orders in ``statuses`` are kept (an order that
    leaves them and comes back is a new transition); in ``new`` mode every listed order.
    Orders no longer listed are dropped.
    """
    events: list[dict[str, Any]] = []
    kept: dict[str, str] = {}
    baseline = known is None
    previous: Mapping[str, str] = known or {}
    for order in orders:
        if not isinstance(order, Mapping) or order.get("id") is None:
            continue
        order_id = str(order["id"])
        status = str(order.get("status"))
        if mode == "status":
            if status not in statuses:
                continue
            kept[order_id] = status
            fires = previous.get(order_id) != status
        else:
            kept[order_id] = status
            fires = order_id not in previous
        if fires and (emit_existing or not baseline):
            events.append(
                {
                    "order_id": order_id,
                    "status": status,
                    "previous_status": previous.get(order_id),
                    "reason": mode,
                    "order": dict(order),
                }
            )
    return events, kept


def _pack(known: Mapping[str, str]) -> dict[str, Any]:
    """The watermark as a small JSON value (zlib + base64: ids compress well)."""
    raw = json.dumps(known, separators=(",", ":"), sort_keys=True).encode()
    return {"v": _WATERMARK_VERSION, "orders": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


def _unpack(value: Any) -> dict[str, str] | None:
    """``_pack``'s input again; ``None`` for no (or an unreadable) watermark."""
    if not isinstance(value, Mapping) or value.get("v") != _WATERMARK_VERSION:
        return None
    try:
        known = json.loads(zlib.decompress(base64.b64decode(str(value["orders"]))))
    except (KeyError, ValueError, zlib.error):
        return None
    return {str(k): str(v) for k, v in known.items()} if isinstance(known, dict) else None


class PacklyOrderEventTrigger(BaseEventTrigger):
    """Fire an event per Packly order transition, for ``Asset(..., watchers=[AssetWatcher(...)])``.

    :param mode: ``"status"`` (an order reaches one of ``statuses``) or ``"new"`` (an order
        appears in the list).
    :param statuses: For ``mode="status"``: the order statuses to report (at least one).
    :param packly_conn_id: The ``packly`` connection.
    :param poll_interval: Seconds between two looks at the order list.
    :param page_size: ``limit`` used when paging through the orders.
    :param emit_existing: Report the orders the first look finds (default: they are the
        baseline, not events).

    See the module for the payload, the watermark and what happens on Airflow 3.2.
    """

    def __init__(
        self,
        *,
        mode: Mode = "status",
        statuses: Iterable[str] | str = (),
        packly_conn_id: str = "packly_default",
        poll_interval: float = 60.0,
        page_size: int = 50,
        emit_existing: bool = False,
    ) -> None:
        # BaseEventTrigger.__init__ is unannotated (python/mypy#16653, as for the other triggers).
        super().__init__()  # type: ignore[no-untyped-call]
        if mode not in _MODES:
            raise PacklyValidationError(f"mode must be 'status' or 'new'; got {mode!r}.")
        checked = normalise_statuses(statuses, name="statuses", allowed=ORDER_STATUSES)
        if mode == "status" and not checked:
            raise PacklyValidationError("mode='status' needs at least one status in statuses, e.g. ['closed'].")
        if mode == "new" and checked:
            raise PacklyValidationError("mode='new' reports every new order: leave statuses empty.")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise PacklyValidationError(f"poll_interval must be a positive number of seconds; got {poll_interval!r}.")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
            raise PacklyValidationError(f"page_size must be a positive whole number; got {page_size!r}.")
        self.mode: Mode = mode
        self.statuses = checked
        self.packly_conn_id = packly_conn_id
        self.poll_interval = float(poll_interval)
        self.page_size = page_size
        self.emit_existing = bool(emit_existing)
        self._known: dict[str, str] | None = None  # the watermark in memory (all Airflow 3.2 has)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__name__}",
            {
                "mode": self.mode,
                "statuses": list(self.statuses),
                "packly_conn_id": self.packly_conn_id,
                "poll_interval": self.poll_interval,
                "page_size": self.page_size,
                "emit_existing": self.emit_existing,
            },
        )

    # -- the shared poll ------------------------------------------------------------------------

    def shared_stream_key(self) -> Hashable | None:
        """Watchers on one connection with the same page size and interval share one poll."""
        return ("packly-order-listing", self.packly_conn_id, self.page_size, self.poll_interval)

    @classmethod
    def _make_hook(cls, packly_conn_id: str) -> PacklyHook:
        from airflow_provider_packly.hooks.packly import PacklyHook

        return PacklyHook(packly_conn_id, shared_async_client=True)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Yield one complete order listing per ``poll_interval``, forever.

        Transient errors (network, 408/429/5xx) and a connection not created yet are logged and
        the next poll tries again; any other error ends the stream for every watcher sharing it
        (Airflow shows the trigger as failed, with the message saying what to fix).
        """
        conn_id = str(kwargs.get("packly_conn_id", "packly_default"))
        page_size = int(kwargs.get("page_size", 50))
        interval = float(kwargs.get("poll_interval", 60.0))
        async with order_scan.subscribe(
            ("orders", conn_id, page_size), lambda: cls._make_hook(conn_id), order_id=None, page_size=page_size
        ) as scan:
            while True:
                try:
                    orders = await scan.listing(max_age=interval)
                except PacklyError as exc:
                    if not is_transient(exc):
                        raise
                    _log.warning("Packly order watcher on %s: transient error, polling on: %s", conn_id, exc)
                except Exception as exc:
                    if type(exc).__name__ != "AirflowNotFoundException":
                        raise
                    _log.warning(
                        "Packly order watcher: the connection %r does not exist (yet); create it, the "
                        "watcher looks again every %s s.",
                        conn_id,
                        interval,
                    )
                else:
                    yield {"orders": orders}
                await asyncio.sleep(interval)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """This watcher's events from the shared listings, past its watermark."""
        known = await self._load_watermark()
        async for snapshot in shared_stream:
            events, kept = order_events(
                snapshot["orders"],
                known,
                mode=self.mode,
                statuses=self.statuses,
                emit_existing=self.emit_existing,
            )
            if kept != known:
                await self._save_watermark(kept)  # before the events: never twice, see the module
            known = kept
            for event in events:
                self.log.info("Packly order %s: %s (%s).", event["order_id"], event["status"], self.mode)
                yield TriggerEvent({**event, "packly_conn_id": self.packly_conn_id})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The same, for a triggerer without shared streams (Airflow 3.2) or a direct caller."""
        async for event in self.filter_shared_stream(type(self).open_shared_stream(self.serialize()[1])):
            yield event

    # -- the watermark --------------------------------------------------------------------------

    @property
    def watermark_key(self) -> str:
        """The asset-state key of this watcher's watermark (one asset may have several watchers)."""
        what = self.mode if self.mode == "new" else "status:" + ",".join(sorted(self.statuses))
        return f"packly.order_events.{self.packly_conn_id}.{what}"

    def _accessors(self) -> list[Any]:
        """The asset state accessors of the watched asset(s): none on Airflow 3.2.

        ``AssetStateStoreAccessors`` answers ``aget``/``aset`` itself only for exactly one
        asset; a trigger shared by several assets keeps the watermark in each of them.
        """
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return []
        several = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
        return several if len(several) > 1 else [store]

    async def _load_watermark(self) -> dict[str, str] | None:
        if self._known is not None:
            return self._known
        for accessor in self._accessors():
            try:
                known = _unpack(await accessor.aget(self.watermark_key))
            except Exception as exc:  # noqa: BLE001 - a new baseline rather than a dead watcher
                self.log.warning("Could not read the Packly order watermark (%s): taking a new baseline.", exc)
                continue
            if known is not None:
                self._known = known
                return known
        return None

    async def _save_watermark(self, known: dict[str, str]) -> None:
        self._known = known
        packed = _pack(known)
        for accessor in self._accessors():
            try:
                await accessor.aset(self.watermark_key, packed)
            except Exception as exc:  # noqa: BLE001 - the in-memory watermark still holds
                self.log.warning("Could not store the Packly order watermark (%s).", exc)
