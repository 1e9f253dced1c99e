"""Triggerer scale: many ``PacklyOrderStatusTrigger``s waiting in one event loop.

The parent (``run``) starts the provider's sandbox in one subprocess and this module's
``main`` in another, so that the numbers (sockets in /proc/self/fd, tracemalloc, loop lag) are
those of a process that does nothing but run the triggers, as a triggerer does. The orders
watched stay open for the whole run (``--order-step-seconds`` far longer than the run).

The child runs two phases, each in its own event loop:

1. memory: with tracemalloc on, a few triggers warm everything up (imports, the shared client,
   the token); then ``triggers`` triggers start, each polls once and waits (a long interval);
   the snapshot difference over ``triggers`` is the memory of one waiting trigger. The top
   allocation sites of that difference are kept as the profile.
2. scale, without tracemalloc (it would slow everything): a cold token cache, ``triggers``
   triggers polling every ``poll_interval`` seconds for ``window`` seconds, a 100 ms heartbeat
   measuring the loop's lag and sampling the process's sockets, and the sandbox's counters
   before and after (token requests, order polls). Then every trigger is cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._common import packly_connection_json, percentile, sandbox_server, socket_fds

ORDERS_PATH = "/v1/reseller/orders"
HEARTBEAT_SECONDS = 0.1
#: Orders that are open (neither closed, canceled nor deleted) at the sandbox's time 0.
OPEN_ORDERS = ("ORD-0001", "ORD-0003", "ORD-0004", "ORD-0005", "ORD-0006", "ORD-0008", "ORD-0009")
#: httpx's default pool size (``httpx.Limits.max_connections``): the bound on one pool's sockets.
POOL_MAX_CONNECTIONS = 100


def run(
    *,
    triggers: int,
    window: float,
    poll_interval: float,
    token_lifetime: int,
    token_refresh_margin: float,
    scratch: Path,
    aiohttp_variant: bool = True,
    before_variant: bool = False,
) -> dict[str, Any]:
    """Start the sandbox and the child(ren); return the report.

    The main child uses the triggers as they are (memory and scale phases). Each variant is
    another child repeating the scale phase with the triggers' hooks given one transport per
    event loop: with ``before_variant`` httpx's own ``AsyncHTTPTransport`` (the async path before
    issue 12), with ``aiohttp_variant`` httpx-aiohttp's ``AiohttpTransport``.
    """
    with sandbox_server(order_step_seconds=1e6, token_lifetime=token_lifetime) as sandbox:
        env = {
            **os.environ,
            "AIRFLOW_CONN_PACKLY_DEFAULT": packly_connection_json(
                sandbox.base_url, refresh_margin_seconds=token_refresh_margin
            ),
        }
        argv = [
            sys.executable,
            "-m",
            "benchmarks.triggerer",
            "--base-url",
            sandbox.base_url,
            "--triggers",
            str(triggers),
            "--window",
            str(window),
            "--poll-interval",
            str(poll_interval),
            "--token-lifetime",
            str(token_lifetime),
            "--token-refresh-margin",
            str(token_refresh_margin),
        ]
        report = _child([*argv, "--output", str(scratch / "triggerer.json")], env, scratch / "triggerer.json")
        wanted = [(VARIANTS["httpx"], "httpx")] if before_variant else []
        wanted += [(VARIANTS["aiohttp"], "aiohttp")] if aiohttp_variant else []
        for label, transport in wanted:
            variant_path = scratch / f"triggerer-{transport}.json"
            variant = _child(
                [*argv, "--phases", "scale", "--transport", transport, "--output", str(variant_path)],
                env,
                variant_path,
            )
            report.setdefault("variants", {})[label] = variant["scale"]
    return report


#: The scale-phase variants: ``--transport`` value -> the column's label in the report.
VARIANTS = {"httpx": "before: httpx default transport", "aiohttp": "httpx-aiohttp transport"}


def _child(argv: list[str], env: dict[str, str], output: Path) -> dict[str, Any]:
    with tempfile.TemporaryFile(mode="w+") as log:
        finished = subprocess.run(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if finished.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"the triggerer benchmark failed:\n{log.read()[-4000:]}")
    return json.loads(output.read_text())


def _use_aiohttp_transport() -> None:
    """Give every trigger's hook one httpx-aiohttp ``AiohttpTransport`` per event loop (this process only)."""
    from httpx_aiohttp import AiohttpTransport

    _use_transport(AiohttpTransport)


def _use_httpx_transport() -> None:
    """Give every trigger's hook one ``httpx.AsyncHTTPTransport`` per event loop: the async
    path before issue 12, whatever the hook's default is now (this process only)."""
    import httpx

    _use_transport(httpx.AsyncHTTPTransport)


def _use_transport(factory: Any) -> None:
    import weakref

    from airflow_provider_packly.hooks.packly import PacklyHook
    from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger

    transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def make_hook(self: Any) -> Any:
        loop = asyncio.get_running_loop()
        transport = transports.get(loop)
        if transport is None:
            transport = transports[loop] = factory()
        return PacklyHook(self.packly_conn_id, shared_async_client=True, async_transport=transport)

    PacklyOrderStatusTrigger._make_hook = make_hook  # type: ignore[method-assign]


class _WarningCounter(logging.Handler):
    """Counts the records at WARNING or above (each once, wherever it is attached), keeping a few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.samples: list[str] = []
        self._last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record is self._last:  # the same record, met again higher up the logger tree
            return
        self._last = record
        self.count += 1
        if len(self.samples) < 3:
            self.samples.append(f"{record.name}: {record.getMessage()}"[:300])


def _count_structlog_warnings(counter: _WarningCounter) -> Any:
    """Count structlog's warnings too (Airflow's loggers, the triggers' ``self.log``, bypass the
    standard library's handlers): a first processor added to the configured chain, in place, so
    loggers already bound see it. Returns what removes it; a no-op where structlog is not used."""
    try:
        import structlog

        processors = structlog.get_config()["processors"]
    except Exception:  # noqa: BLE001 - no structlog, or not configured: the stdlib handler suffices
        return lambda: None

    def count(logger: Any, method_name: str, event_dict: Any) -> Any:
        if method_name in ("warning", "warn", "error", "exception", "critical", "fatal"):
            counter.count += 1
            if len(counter.samples) < 3:
                counter.samples.append(str(event_dict.get("event", ""))[:300])
        return event_dict

    processors.insert(0, count)
    return lambda: processors.remove(count)


# -- the child ----------------------------------------------------------------------------------


def _stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(base_url + "/_sandbox/stats", timeout=10) as answer:
        return json.loads(answer.read())


def _polls(stats: dict[str, Any]) -> int:
    return int(stats["api_requests"].get(ORDERS_PATH, 0))


def _make_triggers(count: int, poll_interval: float) -> list[Any]:
    from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
    from airflow_provider_packly.triggers.rules import OrderCondition, deadline_after

    closed = OrderCondition("order_status", ("closed",), ("canceled", "deleted")).to_dict()
    deadline = deadline_after(3600)
    return [
        PacklyOrderStatusTrigger(
            order_id=OPEN_ORDERS[i % len(OPEN_ORDERS)],
            condition=closed,
            deadline=deadline,
            packly_conn_id="packly_default",
            poll_interval=poll_interval,
        )
        for i in range(count)
    ]


async def _drive(trigger: Any, events: list[Any]) -> None:
    async for event in trigger.run():
        events.append(event.payload)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _polls_idle() -> bool:
    """No poll holds or awaits a slot of the loop's poll semaphore."""
    from airflow_provider_packly.triggers import packly as triggers_module

    semaphore = triggers_module._poll_slots.get(asyncio.get_running_loop())
    if semaphore is None:
        return True
    return semaphore._value == triggers_module.PacklyOrderStatusTrigger.max_polls_in_flight and not semaphore._waiters


#: Trigger polls answered in this process: each time a trigger evaluates its condition on an
#: answer (``_count_answers``). With the shared order scan one request answers many triggers,
#: so the server's request count is not the triggers' poll count.
_ANSWERS = [0]


def _count_answers() -> None:
    """Count every evaluation of an order condition (one per trigger poll answered)."""
    from airflow_provider_packly.core.waiting import OrderCondition

    real = OrderCondition.evaluate

    def evaluate(self: Any, order: Any) -> Any:
        _ANSWERS[0] += 1
        return real(self, order)

    OrderCondition.evaluate = evaluate  # type: ignore[method-assign]


async def _wait_until_polled(base_url: str, expected: int, timeout: float) -> bool:
    """Until ``expected`` trigger polls have been answered (``_ANSWERS``) and none is in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ANSWERS[0] >= expected and _polls_idle():
            await asyncio.sleep(0.3)  # responses read, triggers back to sleep
            if _polls_idle():
                return True
        await asyncio.sleep(0.2)
    return False


async def memory_phase(base_url: str, triggers: int) -> dict[str, Any]:
    from airflow_provider_packly.auth import TOKEN_CACHE

    TOKEN_CACHE.clear()
    events: list[Any] = []
    tracemalloc.start(10)
    try:
        before = _ANSWERS[0]
        warm = [asyncio.create_task(_drive(t, events)) for t in _make_triggers(8, 3600)]
        await _wait_until_polled(base_url, before + len(warm), 60)
        await _cancel(warm)
        gc.collect()
        baseline = tracemalloc.take_snapshot()
        start_polls = _ANSWERS[0]
        made = _make_triggers(triggers, 3600)
        tasks = [asyncio.create_task(_drive(t, events)) for t in made]
        all_waiting = await _wait_until_polled(base_url, start_polls + triggers, 120)
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    await _cancel(tasks)
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    differences = snapshot.filter_traces(filters).compare_to(baseline.filter_traces(filters), "lineno")
    total = sum(stat.size_diff for stat in differences)
    top = [
        {
            "where": f"{_short(stat.traceback[0].filename)}:{stat.traceback[0].lineno}",
            "bytes_per_trigger": stat.size_diff / triggers,
            "blocks_per_trigger": stat.count_diff / triggers,
        }
        for stat in sorted(differences, key=lambda s: s.size_diff, reverse=True)[:8]
    ]
    return {
        "all_waiting": all_waiting,
        "bytes_per_trigger": total / triggers,
        "top_allocations": top,
        "events": len(events),
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3."):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.replace(str(Path.cwd()) + "/", "")


async def scale_phase(base_url: str, triggers: int, window: float, poll_interval: float) -> dict[str, Any]:
    from airflow_provider_packly.auth import TOKEN_CACHE

    TOKEN_CACHE.clear()
    lateness: list[float] = []
    steady_lateness: list[float] = []
    socket_counts: list[int] = []
    seen_sockets: set[str] = set()
    before_sockets = socket_fds()
    events: list[Any] = []
    stop = asyncio.Event()
    started = time.perf_counter()

    async def heartbeat() -> None:
        expected = time.perf_counter() + HEARTBEAT_SECONDS
        while not stop.is_set():
            await asyncio.sleep(max(0.0, expected - time.perf_counter()))
            now = time.perf_counter()
            late = now - expected
            lateness.append(late)
            if now - started > poll_interval:
                steady_lateness.append(late)
            current = socket_fds() - before_sockets
            socket_counts.append(len(current))
            seen_sockets.update(current)
            expected = max(expected + HEARTBEAT_SECONDS, now)

    gc_pauses: list[tuple[float, int]] = []
    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started.append(time.perf_counter())
        elif gc_started:
            gc_pauses.append((time.perf_counter() - gc_started.pop(), info["generation"]))

    made = _make_triggers(triggers, poll_interval)
    # Errors: warnings logged (a transient poll failure is logged and polled on), through the
    # standard library's logging (root) or Airflow's structlog loggers (the triggers' own).
    warnings_counter = _WarningCounter()
    logging.getLogger().addHandler(warnings_counter)
    unwatch_structlog = _count_structlog_warnings(warnings_counter)
    stats_before = await asyncio.to_thread(_stats, base_url)
    answers_before = _ANSWERS[0]
    tracked_before = len(gc.get_objects())
    cpu_before = time.process_time()
    gc.callbacks.append(on_gc)
    beating = asyncio.create_task(heartbeat())
    tasks = [asyncio.create_task(_drive(t, events)) for t in made]
    await asyncio.sleep(window)
    stop.set()
    await beating
    gc.callbacks.remove(on_gc)
    logging.getLogger().removeHandler(warnings_counter)
    unwatch_structlog()
    elapsed = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_before
    answers = _ANSWERS[0] - answers_before
    tracked_objects = len(gc.get_objects())
    worst_gc = max(gc_pauses, default=(0.0, 0))
    full_collections = [pause for pause, generation in gc_pauses if generation == 2]
    stats_after = await asyncio.to_thread(_stats, base_url)
    finished_early = sum(task.done() for task in tasks)
    await _cancel(tasks)
    polls = _polls(stats_after) - _polls(stats_before)
    return {
        "elapsed_seconds": elapsed,
        "token_requests": stats_after["token_requests"] - stats_before["token_requests"],
        "polls": polls,
        "cpu_seconds": cpu_seconds,
        "cpu_ms_per_poll": cpu_seconds * 1000 / polls if polls else math.nan,
        # What a trigger's poll costs: each answered poll, however many share one request.
        "trigger_polls": answers,
        "cpu_ms_per_trigger_poll": cpu_seconds * 1000 / answers if answers else math.nan,
        "gc_tracked_objects": tracked_objects,
        "gc_tracked_objects_before": tracked_before,
        "expected_polls": triggers * math.ceil(window / poll_interval),
        "sockets_max": max(socket_counts, default=0),
        "sockets_distinct": len(seen_sockets),
        "lag_worst_ms": max(lateness, default=math.nan) * 1000,
        "lag_p99_ms": percentile(lateness, 0.99) * 1000,
        "steady_lag_worst_ms": max(steady_lateness, default=math.nan) * 1000,
        "steady_lag_p99_ms": percentile(steady_lateness, 0.99) * 1000,
        "gc_pause_worst_ms": worst_gc[0] * 1000,
        "gc_pause_worst_generation": worst_gc[1],
        "gc_collections": len(gc_pauses),
        "gc_full_collections": len(full_collections),
        "gc_full_collections_ms": sum(full_collections) * 1000,
        "finished_early": finished_early,
        # The orders never close: any trigger that ended (an event, an exception) is an error.
        "warnings_logged": warnings_counter.count,
        "warning_samples": warnings_counter.samples,
        "errors": finished_early + warnings_counter.count,
        "events": events[:3],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triggerer")
    parser.add_argument("--base-url")
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--window", type=float, default=25.0)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--token-lifetime", type=int, default=3600)
    parser.add_argument("--token-refresh-margin", type=float, default=60.0)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--phases", default="memory,scale", help="comma-separated: memory, scale")
    parser.add_argument("--transport", choices=["default", *VARIANTS], default="default")
    parser.add_argument("--shared-scan", action="store_true", help="only the shared-scan row (no sandbox needed)")
    parser.add_argument("--orders", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.shared_scan:
        os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="packly-bench-airflow-home-"))
        row = shared_scan_row(triggers=args.triggers, orders=args.orders)
        args.output.write_text(json.dumps(row, indent=2))
        return 0

    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="packly-bench-airflow-home-"))
    # Imported before any measurement.
    import airflow_provider_packly.hooks.packly
    import airflow_provider_packly.triggers.packly  # noqa: F401

    _count_answers()

    if args.transport == "aiohttp":
        _use_aiohttp_transport()
    elif args.transport == "httpx":
        _use_httpx_transport()
    phases = set(args.phases.split(","))
    memory = asyncio.run(memory_phase(args.base_url, args.triggers)) if "memory" in phases else None
    scale = asyncio.run(scale_phase(args.base_url, args.triggers, args.window, args.poll_interval))
    period = args.token_lifetime - min(args.token_refresh_margin, args.token_lifetime / 2)
    lifetimes = 1 + math.floor(scale["elapsed_seconds"] / period)
    report = {
        "triggers": args.triggers,
        "window_seconds": args.window,
        "poll_interval": args.poll_interval,
        "token_lifetime": args.token_lifetime,
        "token_refresh_margin": args.token_refresh_margin,
        "token_lifetimes_in_window": lifetimes,
        "token_requests_per_lifetime": scale["token_requests"] / lifetimes,
        "pool_max_connections": POOL_MAX_CONNECTIONS,
        "transport": args.transport,
        "memory": memory,
        "scale": scale,
    }
    args.output.write_text(json.dumps(report, indent=2, default=str))
    return 0


# -- shared order scan: requests and CPU per poll interval, before and after -----------------------


def shared_scan_row(*, triggers: int = 1000, orders: int = 10_000, page_size: int = 50) -> dict[str, Any]:
    """One poll interval of ``triggers`` order triggers over ``orders`` orders, in this process.

    Packly is a counting ``httpx.MockTransport`` (no server, so the CPU is the triggerer's own).
    "before" is per-trigger paging, as the trigger polled before the shared scan: one
    ``aget_order`` per trigger per interval. "after" is the triggers as they are: one shared
    scan. Each row is the first interval: every trigger has its answer once.
    """
    return {
        "triggers": triggers,
        "orders": orders,
        "pages": math.ceil(orders / page_size),
        "before": asyncio.run(_scan_interval(triggers, orders, page_size, shared=False)),
        "after": asyncio.run(_scan_interval(triggers, orders, page_size, shared=True)),
    }


async def _scan_interval(triggers: int, orders: int, page_size: int, *, shared: bool) -> dict[str, Any]:
    import httpx

    from airflow_provider_packly.connection import PacklyConnection
    from airflow_provider_packly.hooks.packly import PacklyHook
    from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
    from airflow_provider_packly.triggers.rules import OrderCondition, deadline_after

    book = [{"id": f"ORD-{n:05d}", "status": "paid", "items": []} for n in range(1, orders + 1)]
    requests = 0

    def packly(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"token_type": "bearer", "access_token": "t0k3n-x", "expires_in": 3600})
        requests += 1
        number, limit = int(request.url.params["page"]), int(request.url.params["limit"])
        return httpx.Response(200, json={"request": {}, "response": book[number * limit : (number + 1) * limit]})

    transport = httpx.MockTransport(packly)
    connection = PacklyConnection(client_id="bench", client_secret="bench-secret", base_url="http://127.0.0.1:9")

    def make_hook(self: Any = None) -> PacklyHook:
        return PacklyHook(connection=connection, async_transport=transport)

    ids = [book[(i * 7919) % orders]["id"] for i in range(triggers)]
    answered = 0
    cpu_before = time.process_time()
    if shared:
        real_make_hook = PacklyOrderStatusTrigger._make_hook
        PacklyOrderStatusTrigger._make_hook = make_hook  # type: ignore[method-assign]
        condition = OrderCondition("order_status", ("closed",)).to_dict()
        real_evaluate = OrderCondition.evaluate
        done = asyncio.Event()

        def evaluate(self: OrderCondition, order: Any) -> Any:
            nonlocal answered
            answered += 1
            if answered >= triggers:
                done.set()
            return real_evaluate(self, order)

        OrderCondition.evaluate = evaluate  # type: ignore[method-assign]
        made = [
            PacklyOrderStatusTrigger(
                order_id=order_id,
                condition=condition,
                deadline=deadline_after(3600),
                poll_interval=3600,
                page_size=page_size,
            )
            for order_id in ids
        ]
        tasks = [asyncio.create_task(_drive(t, [])) for t in made]
        await done.wait()
        cpu_seconds = time.process_time() - cpu_before
        await _cancel(tasks)
        OrderCondition.evaluate = real_evaluate  # type: ignore[method-assign]
        PacklyOrderStatusTrigger._make_hook = real_make_hook  # type: ignore[method-assign]
    else:
        slots = asyncio.Semaphore(PacklyOrderStatusTrigger.max_polls_in_flight)

        async def poll(order_id: str) -> None:
            nonlocal answered
            async with make_hook() as hook, slots:
                await hook.aget_order(order_id, limit=page_size)
            answered += 1

        await asyncio.gather(*(poll(order_id) for order_id in ids))
        cpu_seconds = time.process_time() - cpu_before
    return {"requests_per_interval": requests, "cpu_seconds_per_interval": cpu_seconds, "answered": answered}


if __name__ == "__main__":
    sys.exit(main())
