"""Turn the results into the console table, ``benchmarks.md`` and the plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks._common import Spread

CONCURRENCY_PLOT = "benchmarks-concurrency.png"
OVERHEAD_PLOT = "benchmarks-overhead.png"

LIMIT_SECTION = "### The limit: server ceiling and the fastest raw client"
ISSUE12_SECTION = "## Issue 12 goals"
GOAL1_SECTION = "### Issue 12, goal 1: PacklyHook against HttpAsyncHook by concurrency"

#: The sections of benchmarks.md, in order (the smoke test checks they are all there).
SECTIONS = (
    ISSUE12_SECTION,
    "## Goals",
    "## 1. Per-call overhead in process",
    "## 2. Per-call cost over loopback HTTP",
    LIMIT_SECTION,
    GOAL1_SECTION,
    "## 3. Token economy and the event loop",
    "## 4. Triggerer scale",
    "## 5. DAG parse cost",
    "## Machine",
    "## How to reproduce",
)


def _spread(data: dict[str, float] | None, digits: int = 2, suffix: str = "x") -> str:
    if not data:
        return "n/a"
    return Spread(data["median"], data["min"], data["max"]).text(digits, suffix)


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def comparison_table(comparison: dict[str, Any], labels: dict[str, str], ours: str) -> list[str]:
    ours_ratio = comparison["versus_ours"]
    intro = (
        f"{comparison['title']}, in {comparison.get('slices', 1)} interleaved slices per round; ratios are "
        f"per round, divided by `{comparison['baseline']}`'s time in the same round: median [min-max] over "
        f"{_rounds(comparison)} rounds. The fourth column is the reverse view: PacklyHook's time over that "
        "client's (below 1: PacklyHook is faster)."
    )
    lines = [
        intro,
        "",
        (
            f"| client | time vs `{comparison['baseline']}` | µs per call "
            f"| `{ours}` time vs this client | failed calls | notes |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, row in comparison["contenders"].items():
        label = f"`{name}`: {labels.get(name, '')}".rstrip(": ")
        if row.get("ratio") is None:
            lines.append(f"| {label} | n/a | n/a | n/a | - | {row.get('note', '')} |")
            continue
        versus = ours_ratio.get(name)
        lines.append(
            f"| {label} | {_spread(row['ratio'])} | {_number(row['us_per_call']['median'])} | "
            f"{_spread(versus) if versus and name != ours else '-'} | {row['failures']} | {row.get('note', '')} |"
        )
    return lines


def limit_section(results: dict[str, Any]) -> list[str]:
    """What the clients of section 2 are read against (``benchmarks.ceiling``): the requests per
    second a raw asyncio server answers, and the fastest raw client's time per call."""
    limit = results.get("ceiling")
    if not limit:
        return []
    fastest = limit["fastest"]
    ceiling = limit["ceiling_requests_per_second"]
    floor = limit["fastest_us_per_call"]
    lines = [
        LIMIT_SECTION,
        "",
        (
            f"A raw asyncio server (`benchmarks/ceiling.py`: an `asyncio.Protocol` answering every request "
            f"head with the same body, in its own process) and the benchmark server above, each called "
            f"{limit['calls']:,} times at concurrency {limit['concurrency']} by each raw client of the bench "
            f"group, interleaved over {limit['rounds']} rounds; medians [min-max]. **Server ceiling: "
            f"{_spread(ceiling, 0, ' requests/s')}** (`{fastest}` against the raw server, i.e. "
            f"{1e6 / ceiling['median']:,.0f} µs per call): no client here goes faster on this machine. "
            f"**Fastest raw client: `{fastest}`, {_spread(floor, 0, ' µs')} per call** against the "
            "benchmark server: the floor for the async clients above, on the same server and work."
        ),
        "",
        "| raw client | raw server: requests/s | raw server: µs per call | benchmark server: µs per call |",
        "|---|---|---|---|",
    ]
    for name, row in limit["clients"].items():
        lines.append(
            f"| `{name}`: {row['label']} | {_spread(row['raw_server']['requests_per_second'], 0, '')} | "
            f"{_spread(row['raw_server']['us_per_call'], 0, '')} | "
            f"{_spread(row['bench_server']['us_per_call'], 0, '')} |"
        )
    lines.append("")
    rows = results["loopback"]["async"]["contenders"]
    measured = {name: row for name, row in rows.items() if row.get("ratio")}
    if measured and math.isfinite(floor["median"]) and floor["median"] > 0:
        lines.append(
            f"Each async client of section 2 read against the limit: its µs per call there over `{fastest}`'s "
            "µs per call here (medians of separate runs, so indicative only)."
        )
        lines.append("")
        lines.append(f"| client | µs per call | vs `{fastest}` |")
        lines.append("|---|---|---|")
        for name, row in measured.items():
            micros = row["us_per_call"]["median"]
            lines.append(f"| `{name}` | {_number(micros, 0)} | {micros / floor['median']:.1f}x |")
        lines.append("")
    return lines


def limit_console_lines(results: dict[str, Any]) -> list[str]:
    """The limit in the console table (``limit_section``'s numbers)."""
    limit = results.get("ceiling")
    if not limit:
        return []
    fastest = limit["fastest"]
    ceiling = _spread(limit["ceiling_requests_per_second"], 0, " requests/s")
    floor = _spread(limit["fastest_us_per_call"], 0, " µs")
    return [
        f"limit (concurrency {limit['concurrency']}, {limit['calls']} calls):",
        f"  {'server ceiling':32} {ceiling} ({fastest}, raw asyncio server)",
        f"  {'fastest raw client':32} {floor} per call ({fastest}, benchmark server)",
    ]


def issue12_section(results: dict[str, Any]) -> list[str]:
    """The summary of issue 12's goals (``benchmarks.goals.summary``): first in the report."""
    rows = results.get("issue12")
    if not rows:
        return []
    lines = [
        ISSUE12_SECTION,
        "",
        (
            "Issue 12 (async speed), each goal from this run: ratios are time over time, per round, median "
            "[min-max] over the rounds (below 1: PacklyHook is faster); the triggerer's numbers are one run's. "
            "PASS reads the median against the target. Details: goal 1 in section 2 (its own table by "
            "concurrency, read against the limit there: goal 5), goal 2 in section 4, goal 3 in section 2's "
            "sync table (where the time goes: section 1's breakdown), goal 4 in section 5."
        ),
        "",
        "| # | goal | measured | target | result | notes |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = "PASS" if row["met"] else "**MISS**"
        lines.append(
            f"| {row['goal']} | {row['what']} | {row['measured']} | {row['target']} | {verdict} | {row['note']} |"
        )
    lines += ["", *TRANSPORT_CHOICE, ""]
    return lines


#: Why the async path runs as it does: the choice these figures were measured for.
TRANSPORT_CHOICE = [
    (
        "**The choice.** `PacklyHook`'s async calls go over the provider's own aiohttp-backed transport "
        "(`AiohttpTransport`), and both paths hand each request straight to their transport, skipping "
        "httpx's client code (URL merging, cookies, redirects, mounts), which the provider does not use. "
        "httpx stays at the edges: `arequest` returns an `httpx.Response` and `async_transport=` takes any "
        "httpx transport. Compare `packly-hook-async` (as shipped) with `packly-hook-httpx` (the same hook "
        "on httpx's own transport, as before) and `packly-hook-aiohttp` (on httpx-aiohttp, which breaks the "
        "transport contract) in goal 1's tables. aiohttp is a required dependency, imported on the first "
        "async request only (goal 4). The reasons, the transport contract every transport passes and how "
        "to choose another transport: [Clients and transports](transports.md)."
    ),
    "",
    (
        "**What is left between the hook and `HttpAsyncHook`.** `HttpAsyncHook` hands back aiohttp's own "
        "response; the hook builds an `httpx.Request` and an `httpx.Response` around each call (the public "
        "API), reads the body through httpx's decoders, and keeps its guarantees on every call: the overall "
        "deadline, the retry policy, the token cache and its 401 flow, the bounded error body, the "
        "compressed-body check and the metrics. These run above the transport, so no transport removes "
        "them; section 1's breakdown times the hook's own pieces in process. Goal 1's "
        "`raw-provider-transport` row is the transport alone (an `httpx.Request` in, the `httpx.Response` "
        "read, no hook): the hook's time over that row is what these guarantees cost per call. "
        "`packly-hook-pyreqwest` is the same hook over pyreqwest's own httpx transport, a Rust HTTP engine "
        "(measured raw in section 2's 'The limit'): its time against `packly-hook-async` shows "
        "what an engine faster than aiohttp gives under the same edges and guarantees."
    ),
    "",
    (
        "**The floor the public API sets.** `floor-aiohttp-httpx-edges` and `floor-pyreqwest-httpx-edges` "
        "are raw aiohttp and raw pyreqwest with only an `httpx.Request` and an `httpx.Response` built "
        "around each call: no deadline, retries, token cache, bounded body or metrics. That is the least "
        "any `arequest` returning an `httpx.Response` can cost over either engine. Goal 1's rows in the "
        "table above read both floors against `HttpAsyncHook`: where a floor is above 0.9x, no "
        "implementation on that engine meets the goal at that concurrency while `arequest` returns "
        "an `httpx.Response`, and whatever the hook's guarantees cost comes on top. What the two httpx "
        "objects cost over loopback (the floor row's µs over raw aiohttp's) can be read against what they "
        "cost timed alone in process (section 1's breakdown)."
    ),
]


def goal1_section(results: dict[str, Any]) -> list[str]:
    """Goal 1's comparisons, one table per concurrency (``benchmarks.goals.measure_async``)."""
    goal1 = results.get("goal1")
    if not goal1:
        return []
    from benchmarks.goals import HTTPASYNCHOOK, OURS

    lines = [
        GOAL1_SECTION,
        "",
        (
            f"`PacklyHook(conn_id).arequest` (the hook as shipped, `{OURS}`) and Airflow's `HttpAsyncHook` inside "
            f"one `session()` (`{HTTPASYNCHOOK}`), with the rows of issue 12's table, on the benchmark server "
            f"over loopback: {goal1['calls']:,} GETs per client and round at each concurrency, "
            f"{goal1['rounds']} interleaved rounds. Goal: `{OURS}` at most 0.9x `{HTTPASYNCHOOK}`'s time "
            "(fourth column, that row). `python -m benchmarks.goals` runs these alone."
        ),
        "",
    ]
    labels = results.get("labels", {})
    for level in goal1["levels"]:
        lines.append(f"#### Concurrency {level}")
        lines.append("")
        lines.extend(comparison_table(goal1["by_level"][str(level)], labels, OURS))
        lines.append("")
    return lines


def goal1_console_lines(results: dict[str, Any]) -> list[str]:
    goal1 = results.get("goal1")
    if not goal1:
        return []
    from benchmarks.goals import OURS

    lines = []
    for level in goal1["levels"]:
        comparison = goal1["by_level"][str(level)]
        lines.append(
            f"issue 12 goal 1, concurrency {level} ({comparison['calls']} calls): time vs {comparison['baseline']}; "
            f"{OURS}'s time vs each"
        )
        for name, row in comparison["contenders"].items():
            if not row.get("ratio"):
                lines.append(f"  {name:32} n/a ({row.get('note', '')})")
                continue
            versus = comparison["versus_ours"].get(name) if name != OURS else None
            lines.append(f"  {name:32} {_spread(row['ratio']):22} {_spread(versus) if versus else '-'}")
    return lines


def _rounds(comparison: dict[str, Any]) -> int:
    return max((row.get("rounds", 0) for row in comparison["contenders"].values()), default=0)


def render_markdown(results: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    facts = results["machine"]
    labels = results["labels"]
    add("# Benchmarks")
    add("")
    add(
        "Generated by `python -m benchmarks` (`./dev bench`): do not edit by hand. Every comparison "
        "runs its contenders interleaved in one process, round after round, and reports the median "
        "and [min-max] of per-round ratios, because the machine is small and shared: absolute times "
        "are indicative only. Servers run in their own processes (their own GIL) on loopback."
    )
    if results["mode"] in ("quick", "tiny"):
        add("")
        add("**Quick mode**: a smoke run with a few calls per case; these numbers are not meaningful.")
    add("")
    out.extend(issue12_section(results))
    add("## Goals")
    add("")
    add("| # | goal | measured | met? |")
    add("|---|---|---|---|")
    for goal in results["goals"]:
        add(f"| {goal['section']} | {goal['goal']} | {goal['measured']} | {'met' if goal['met'] else '**missed**'} |")
    add("")

    inproc = results["in_process"]
    add("## 1. Per-call overhead in process")
    add("")
    add(
        "No sockets: `httpx.MockTransport` answers the httpx-based clients (raw httpx, httpx-auth, "
        "Authlib, PacklyHook via `transport=`/`async_transport=`), and a canned `requests` adapter "
        "answers `HttpHook`. The same small JSON body for all. Tokens are fetched during the warm-up, "
        "so what is timed is the steady state: the per-call cost of each client's machinery."
    )
    add("")
    add("### Sync, sequential")
    add("")
    out.extend(comparison_table(inproc["sync"], labels, "packly-hook"))
    add("")
    add(f"### Async, concurrency {results['settings']['concurrency']}")
    add("")
    out.extend(comparison_table(inproc["async"], labels, "packly-hook-async"))
    add("")
    pieces = inproc.get("breakdown")
    if pieces:
        sync_rows = inproc["sync"]["contenders"]
        extra = sync_rows["packly-hook"]["us_per_call"]["median"] - sync_rows["raw-httpx"]["us_per_call"]["median"]
        add("### Where PacklyHook's per-call overhead goes")
        add("")
        add(
            f"PacklyHook's sync call costs {abs(extra):.1f} µs {'more' if extra >= 0 else 'less'} than raw "
            "httpx's in the table above "
            f"(medians). Its pieces timed alone (timeit, {pieces['number']:,} calls, median of "
            f"{pieces['repeat']} repeats):"
        )
        add("")
        add("| piece | µs per call |")
        add("|---|---|")
        for name, value in pieces["us_per_call"].items():
            add(f"| {name} | {_number(value, 2)} |")
        add("")

    loop = results["loopback"]
    add("## 2. Per-call cost over loopback HTTP")
    add("")
    add(
        "A real server in a subprocess (`benchmarks/server.py` under uvicorn: a token endpoint and a "
        "bearer-checked endpoint with a small fixed body, so the clients' costs dominate). The notes "
        "give the TCP connections each client opened for one pass of the same calls before the timed "
        "rounds (distinct client ports seen by the server)."
    )
    add("")
    add("### Sync, sequential")
    add("")
    out.extend(comparison_table(loop["sync"], labels, "packly-hook"))
    add("")
    add(f"### Async, concurrency {results['settings']['concurrency']}")
    add("")
    out.extend(comparison_table(loop["async"], labels, "packly-hook-async"))
    add("")
    sweep = loop.get("sweep")
    if sweep:
        add("### Throughput against concurrency")
        add("")
        add(
            f"{sweep['calls']} calls per point, median of {sweep['rounds']} interleaved rounds "
            "(requests per second; higher is better)."
        )
        add("")
        add(f"![throughput against concurrency]({CONCURRENCY_PLOT})")
        add("")
        levels = sweep["levels"]
        add("| client | " + " | ".join(f"c={level}" for level in levels) + " |")
        add("|---|" + "---|" * len(levels))
        for name, by_level in sweep["throughput"].items():
            cells = [_number(by_level[str(level)]["median"], 0) for level in levels]
            add(f"| `{name}` | " + " | ".join(cells) + " |")
        add("")
    add(f"![time per call relative to raw httpx]({OVERHEAD_PLOT})")
    add("")
    rows = loop["async"]["contenders"]
    wanted = ("packly-hook-async", "packly-hook-aiohttp", "airflow-httpasynchook-session")
    if all(rows.get(n, {}).get("ratio") for n in wanted):
        ours = rows["packly-hook-async"]["us_per_call"]["median"]
        aio = rows["packly-hook-aiohttp"]["us_per_call"]["median"]
        airflow = rows["airflow-httpasynchook-session"]["us_per_call"]["median"]
        add(
            f"At concurrency {results['settings']['concurrency']} over loopback, `packly-hook-async` (the hook as "
            f"shipped) takes {ours:,.0f} µs per call; given httpx-aiohttp's transport "
            f"(`PacklyHook(async_transport=AiohttpTransport())`) {aio:,.0f} µs ({ours / aio:.1f}x less); "
            f"Airflow's `HttpAsyncHook` in a session {airflow:,.0f} µs."
        )
        add("")
    out.extend(limit_section(results))
    out.extend(goal1_section(results))

    tokens = results["tokens"]
    settings = results["settings"]
    add("## 3. Token economy and the event loop")
    add("")
    add(
        f"Token requests counted at the server, on a cold cache, when {settings['coroutines']} "
        f"coroutines, {settings['threads']} threads, or {settings['waiters']} coroutines holding the "
        f"wrong client secret all need a token at once (the token endpoint takes "
        f"{tokens['economy_token_delay_ms']:.0f} ms)."
    )
    add("")
    add(
        f"| client | {settings['coroutines']} coroutines | {settings['threads']} threads | "
        f"{settings['waiters']} waiters, wrong secret |"
    )
    add("|---|---|---|---|")
    for name, row in tokens["counts"].items():
        add(f"| {name} | {row['coroutines']} | {row['threads']} | {row['wrong_credentials']} |")
    add("")
    for note in tokens["notes"]:
        add(f"- {note}")
    if tokens["notes"]:
        add("")
    add(tokens["method"])
    add("")
    add(
        f"Event-loop stall: a {tokens['heartbeat_ms']:.0f} ms heartbeat coroutine runs while each async "
        f"client fetches a token from a token endpoint that takes {tokens['slow_token_delay_ms']:.0f} ms; "
        f"the longest interval between two beats (a loop that never blocks shows about "
        f"{tokens['heartbeat_ms']:.0f} ms), median [min-max] over {tokens['stall_rounds']} rounds."
    )
    add("")
    add("| client | worst heartbeat interval | what is measured |")
    add("|---|---|---|")
    for name, row in tokens["stall"].items():
        add(f"| `{name}` | {_spread(row['worst_gap_ms'], 1, ' ms')} | {row['note']} |")
    add("")
    growth = tokens.get("masker_growth")
    if growth:
        sizes = list(growth)
        add(
            "PacklyHook registers each token it fetches with Airflow's secrets masker (`amask_secret`), which "
            "keeps every secret it is given for the life of the process; so the hook stops registering after "
            "100 tokens per process (`MAX_MASKED_TOKENS`). What one more registration costs (on the event loop, "
            "per new token) and what redacting one log line costs, with N secrets registered (a fresh "
            "interpreter):"
        )
        add("")
        add("| N secrets registered | " + " | ".join(f"{int(n):,}" for n in sizes) + " |")
        add("|---|" + "---|" * len(sizes))
        add("| registering one more | " + " | ".join(f"{growth[n]['add_ms']:.2f} ms" for n in sizes) + " |")
        add("| redacting one log line | " + " | ".join(f"{growth[n]['redact_us']:.1f} µs" for n in sizes) + " |")
        add("")
    creation = tokens.get("async_client_creation_ms")
    if creation:
        add(
            f"Building one `httpx.AsyncClient()` with httpx's defaults takes {_spread(creation, 1, ' ms')} here, "
            "on the calling thread (httpx loads the CA bundle into a new SSL context, even for an http:// base "
            "URL). PacklyHook's clients share one SSL context per process, built once in a worker thread, so "
            "its first call does not pay this on the event loop (`packly-hook-async-first-call` above)."
        )
        add("")

    trig = results["triggerer"]
    scale = trig["scale"]
    memory = trig["memory"]
    add("## 4. Triggerer scale")
    add("")
    add(
        f"{trig['triggers']:,} `PacklyOrderStatusTrigger`s in one event loop, in a process of their own, "
        f"against the provider's sandbox in another (orders that stay open; token lifetime "
        f"{trig['token_lifetime']} s, refreshed {trig['token_refresh_margin']:g} s early). Scale phase: "
        f"poll interval {trig['poll_interval']:g} s for {trig['window_seconds']:g} s, then every trigger is "
        "cancelled. Memory phase (tracemalloc on, separately): every trigger polls once and waits."
        + (
            " The other columns repeat the scale phase, each in another process, with every trigger's hook "
            "given one transport per event loop: httpx's own `AsyncHTTPTransport` (the async path before "
            "issue 12) and httpx-aiohttp's `AiohttpTransport`."
            if trig.get("variants")
            else ""
        )
    )
    add("")
    variants = trig.get("variants", {})
    columns = [("as shipped (the default hook)", scale)] + list(variants.items())
    add("| measure | " + " | ".join(name for name, _ in columns) + " |")
    add("|---|" + "---|" * len(columns))

    def row(label: str, cell: Any) -> None:
        add(f"| {label} | " + " | ".join(cell(data) for _, data in columns) + " |")

    row(
        "token requests",
        lambda d: f"{d['token_requests']} in {d['elapsed_seconds']:.1f} s",
    )
    period = trig["token_lifetime"] - min(trig["token_refresh_margin"], trig["token_lifetime"] / 2)

    def per_lifetime(data: dict[str, Any]) -> str:
        lifetimes = 1 + math.floor(data["elapsed_seconds"] / period)
        return f"{lifetimes}; {data['token_requests'] / lifetimes:.2f}"

    row("token lifetimes in the window; requests per lifetime", per_lifetime)
    row("order-list requests made / trigger polls scheduled", lambda d: f"{d['polls']:,} / {d['expected_polls']:,}")
    row(
        "trigger polls answered (the shared scan answers many per request)",
        lambda d: f"{d['trigger_polls']:,}" if "trigger_polls" in d else "n/a",
    )
    row(
        "CPU time of the triggerer process per trigger poll",
        lambda d: f"{_number(d.get('cpu_ms_per_trigger_poll'), 3)} ms",
    )
    row(
        "CPU time of the triggerer process per order-list request",
        lambda d: f"{_number(d.get('cpu_ms_per_poll'), 2)} ms",
    )
    row(
        "sockets open: most at once; distinct seen",
        lambda d: f"{d['sockets_max']}; {d['sockets_distinct']} (a pool holds at most {trig['pool_max_connections']})",
    )
    add(
        f"| memory per waiting trigger (tracemalloc) | {memory['bytes_per_trigger'] / 1024:.1f} KiB |"
        + " |" * (len(columns) - 1)
    )
    row(
        "loop lag, 100 ms heartbeat: worst / p99",
        lambda d: f"{_number(d['lag_worst_ms'])} ms / {_number(d['lag_p99_ms'])} ms",
    )
    row(
        "the same after the first poll interval",
        lambda d: f"{_number(d['steady_lag_worst_ms'])} ms / {_number(d['steady_lag_p99_ms'])} ms",
    )
    row(
        "longest garbage collection in the window",
        lambda d: f"{_number(d['gc_pause_worst_ms'])} ms (generation {d['gc_pause_worst_generation']})",
    )
    row(
        "full (generation 2) collections: count, total time",
        lambda d: (
            f"{d.get('gc_full_collections', 0)}, {_number(d.get('gc_full_collections_ms'))} ms "
            f"({d['gc_collections']} collections of any generation; "
            f"{d.get('gc_tracked_objects', 0):,} objects tracked)"
        ),
    )
    row("triggers that ended early (an event)", lambda d: str(d["finished_early"]))
    row(
        "errors: triggers ended early + warnings logged",
        lambda d: f"{d.get('errors', d['finished_early'])} ({d.get('warnings_logged', 0)} warning(s))",
    )
    add("")
    if scale["gc_pause_worst_ms"] >= 0.8 * scale["lag_worst_ms"]:
        add(
            f"The worst lag ({_number(scale['lag_worst_ms'])} ms) is a garbage collection: the longest one in the "
            f"window took {_number(scale['gc_pause_worst_ms'])} ms (generation {scale['gc_pause_worst_generation']}, "
            f"{scale['gc_tracked_objects']:,} objects tracked, {scale.get('gc_tracked_objects_before', 0):,} of "
            "them there before any trigger started: Airflow and its libraries), not the provider's code."
        )
        add("")
    add(
        "Where a waiting trigger's memory goes (tracemalloc, top allocation sites of the difference; "
        "`benchmarks/triggerer.py` lines are the trigger objects and their tasks, which the harness creates "
        "as a triggerer would):"
    )
    add("")
    add("| allocated at | bytes per trigger | blocks per trigger |")
    add("|---|---|---|")
    for row in memory["top_allocations"]:
        add(f"| `{row['where']}` | {row['bytes_per_trigger']:,.0f} | {row['blocks_per_trigger']:.1f} |")
    add("")

    imports = results["imports"]
    add("## 5. DAG parse cost")
    add("")
    add(
        f"`{imports['command']}`, {imports['runs']} run(s): the cumulative times of the imports finished "
        f"after `airflow.sdk` up to the sensors (what a DAG file imports) add up to "
        f"{_spread(imports['provider_ms'], 1, ' ms')}"
        + (f"; with the hooks and triggers, {_spread(imports['all_ms'], 1, ' ms')}" if imports.get("all_ms") else "")
        + f" ({imports['modules_imported']} modules)."
    )
    add("")
    if imports.get("stages_ms"):
        add("| imported (in this order) | ms (median [min-max]) |")
        add("|---|---|")
        for stage, ms in imports["stages_ms"].items():
            add(f"| {stage} | {_spread(ms, 1, '')} |")
        add("")
    if "aiohttp_imported" in imports:
        add(
            "**aiohttp imported: "
            + ("yes" if imports["aiohttp_imported"] else "no")
            + "** (issue 12, goal 4: aiohttp costs ~230 ms to import; it may be imported only when an async "
            "client is first created, never by importing the provider's modules)."
        )
        add("")
    add("Heaviest (own time, median):")
    add("")
    add("| module | ms |")
    add("|---|---|")
    for row in imports["heaviest"]:
        add(f"| `{row['module']}` | {row['self_ms']:.2f} |")
    add("")
    add(
        "Nothing outside the provider's own modules is imported beyond `airflow.sdk` (httpx and anyio "
        "come with Airflow already)"
        if not [m for m in imports["third_party"] if m not in ("gc",)]
        else "Packages first imported by the provider: " + ", ".join(f"`{m}`" for m in imports["third_party"])
    )
    add("")

    add("## Machine")
    add("")
    add("| fact | value |")
    add("|---|---|")
    for key in (
        "date",
        "command",
        "mode",
        "run_seconds",
        "cpu_count",
        "cpu_model",
        "python",
        "platform",
    ):
        add(f"| {key.replace('_', ' ')} | {facts[key]} |")
    for package, version in facts["packages"].items():
        add(f"| {package} | {version} |")
    add("")
    add("## How to reproduce")
    add("")
    add("```bash")
    add("./dev bench            # syncs .venv with the bench group, runs the full suite (11 to 14 minutes here)")
    add("./dev bench --quick    # a smoke run in seconds (numbers not meaningful)")
    add("./dev bench --tiny     # the smallest run through every benchmark: what the test suite runs")
    add("python -m benchmarks.goals [--quick]  # in .venv: only issue 12's goals 1, 3 and 4 (a few minutes)")
    add("./dev bench --output-dir /tmp/bench --json /tmp/bench/results.json")
    add("```")
    add("")
    add(
        "The suite rewrites this file and the plots next to it. `./dev test` syncs `.venv` without the "
        "bench group again (uv removes the bench packages), and the smoke test "
        "(`tests/benchmarks/`) is then skipped."
    )
    add("")
    return "\n".join(out)


def console_table(results: dict[str, Any]) -> str:
    from benchmarks.goals import console_lines

    lines = console_lines(results["issue12"]) if results.get("issue12") else []
    for title, comparison, ours in (
        ("in process, sync", results["in_process"]["sync"], "packly-hook"),
        ("in process, async", results["in_process"]["async"], "packly-hook-async"),
        ("loopback, sync", results["loopback"]["sync"], "packly-hook"),
        ("loopback, async", results["loopback"]["async"], "packly-hook-async"),
    ):
        lines.append(f"{title} ({comparison['calls']} calls): time vs {comparison['baseline']}; {ours}'s time vs each")
        for name, row in comparison["contenders"].items():
            if not row.get("ratio"):
                lines.append(f"  {name:32} n/a ({row.get('note', '')})")
                continue
            versus = comparison["versus_ours"].get(name) if name != ours else None
            lines.append(f"  {name:32} {_spread(row['ratio']):22} {_spread(versus) if versus else '-'}")
    lines.extend(limit_console_lines(results))
    lines.extend(goal1_console_lines(results))
    lines.append("token requests (coroutines / threads / wrong secret):")
    for name, row in results["tokens"]["counts"].items():
        lines.append(f"  {name:32} {row['coroutines']} / {row['threads']} / {row['wrong_credentials']}")
    lines.append("goals:")
    for goal in results["goals"]:
        lines.append(f"  [{'met' if goal['met'] else 'MISSED'}] {goal['goal']}: {goal['measured']}")
    if results.get("issue12"):
        lines.extend(console_lines(results["issue12"]))  # again at the end, where a terminal shows it
    return "\n".join(lines)


def plot(results: dict[str, Any], output_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    sweep = results["loopback"].get("sweep")
    if sweep:
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, by_level in sweep["throughput"].items():
            levels = sweep["levels"]
            medians = [by_level[str(level)]["median"] for level in levels]
            lows = [by_level[str(level)]["min"] for level in levels]
            highs = [by_level[str(level)]["max"] for level in levels]
            style = "-" if name.startswith("packly") else "--"
            width = 2.5 if name.startswith("packly") else 1.5
            (line,) = ax.plot(levels, medians, style, marker="o", linewidth=width, label=name)
            ax.fill_between(levels, lows, highs, color=line.get_color(), alpha=0.12)
        ax.set_xscale("log")
        ax.set_xticks(sweep["levels"])
        ax.set_xticklabels([str(level) for level in sweep["levels"]])
        ax.set_xlabel("concurrent coroutines")
        ax.set_ylabel("requests per second (median; band: min-max)")
        ax.set_title(f"Async clients over loopback, {results['machine']['cpu_count']} cores shared with the server")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = output_dir / CONCURRENCY_PLOT
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    panels = [
        ("in process, sync", results["in_process"]["sync"]),
        ("in process, async", results["in_process"]["async"]),
        ("loopback, sync", results["loopback"]["sync"]),
        ("loopback, async", results["loopback"]["async"]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (title, comparison) in zip(axes.flat, panels):
        names = [n for n, row in comparison["contenders"].items() if row.get("ratio")]
        medians = [comparison["contenders"][n]["ratio"]["median"] for n in names]
        lows = [m - comparison["contenders"][n]["ratio"]["min"] for n, m in zip(names, medians)]
        highs = [comparison["contenders"][n]["ratio"]["max"] - m for n, m in zip(names, medians)]
        colors = ["tab:orange" if n.startswith("packly") else "tab:blue" for n in names]
        ax.barh(names, medians, xerr=[lows, highs], color=colors, capsize=3)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_title(f"{title}: time per call vs {comparison['baseline']}", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    path = output_dir / OVERHEAD_PLOT
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
