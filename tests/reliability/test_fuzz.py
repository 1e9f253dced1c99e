"""Property-based fuzzing of everything Packly (or a proxy in front of it) can send back.

Hypothesis generates token responses, API error bodies, headers (``Retry-After``,
``Content-Encoding``, ``Content-Length``) and connection extras; a raw loopback server
(``tests/loopback.py``) sends them byte for byte. For every example:

* the outcome is a success with the right data, or a ``PacklyError`` (never a bare
  ``ValueError``, ``OverflowError`` or an ``httpx`` exception);
* no error text, ``repr``, trigger event payload or log line (DEBUG included) contains the
  client secret, the Basic value or the access token, raw or escaped;
* no call outlives the connection's overall deadline.

In the test suite the example count is bounded and the seed fixed (``derandomize``), so CI is
repeatable; ``./dev fuzz`` runs the same properties with many more examples
(``HYPOTHESIS_PROFILE=packly-long``).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import math
import os
import time
import zlib
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from airflow_provider_packly.auth import TOKEN_CACHE
from airflow_provider_packly.connection import PacklyConnection
from airflow_provider_packly.exceptions import PacklyConnectionConfigError, PacklyError
from airflow_provider_packly.get_provider_info import get_provider_info
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.triggers.rules import error_to_payload
from tests.loopback import Answer, RawRequest, http_response, loopback_server
from tests.loopback import trickle as trickled  # the name "trickle" is a drawn parameter below

settings.register_profile(
    "packly-ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "packly-long",
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "packly-ci"))

CLIENT_ID = "fuzz-client"
#: Each call's timeouts are short so that a slow answer is cheap; the overall deadline
#: (``connection.request_deadline``) bounds a call however the server trickles.
TIMEOUT = 0.5
#: Slack on top of the deadline for thread scheduling on a loaded two-core machine.
DEADLINE_SLACK = 3.0

# Each secret and token starts with a marker no ordinary log line or message holds, so that
# finding one is a leak and never a coincidence (a drawn secret "application/" would be).
secrets_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=36).map(
    lambda s: "Zq8S" + s
)
tokens_text = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=", min_size=12, max_size=60
).map(lambda s: "T0kn" + s)


def _connection(base_url: str, secret: str, **overrides: Any) -> PacklyConnection:
    settings: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "environment": "sandbox",
        "base_url": base_url,
        "timeout": TIMEOUT,
        "retry_max_attempts": 2,
        "retry_max_seconds": 1.0,
        "retry_backoff_seconds": 0.0,
        "retry_backoff_max_seconds": 0.0,
        "retry_after_max_seconds": 0.2,
    }
    settings.update(overrides)
    return PacklyConnection(**settings)


def _secret_forms(*values: str) -> set[str]:
    """Every spelling of a secret that would still give it away in a message."""
    forms: set[str] = set()
    for value in values:
        forms |= {
            value,
            repr(value)[1:-1],
            json.dumps(value)[1:-1],
            quote(value, safe=""),
            quote_plus(value),
            base64.b64encode(value.encode()).decode(),
        }
    return {form for form in forms if len(form) >= 8}


def _basic(secret: str) -> str:
    return base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()


def _texts_of(exc: BaseException) -> list[str]:
    """What a person or a tool can see of an exception and its chain."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 30:
        seen += [str(current), repr(current), repr(current.args)]
        if isinstance(current, PacklyError):
            seen.append(json.dumps(error_to_payload(current), default=str))
        current = current.__cause__ or current.__context__
    return seen


def _assert_nothing_leaks(texts: list[str], secrets: set[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret ({len(secret)} chars) leaked into: {text[:300]!r}"


@pytest.fixture
def server():
    with loopback_server(lambda request: http_response(500)) as running:
        yield running


@pytest.fixture(autouse=True)
def _all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def _run(call, caplog) -> tuple[Any, BaseException | None, list[str]]:
    TOKEN_CACHE.clear()
    caplog.clear()
    try:
        result, error = call(), None
    except PacklyError as exc:
        result, error = None, exc
    logs = [record.getMessage() for record in caplog.records] + [caplog.text]
    return result, error, logs


# -- token responses ---------------------------------------------------------------------------

expires_values = st.one_of(
    st.none(),
    st.integers(min_value=-(10**3), max_value=10**6),
    st.integers(min_value=10**15, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["3600", "0.5", "²", "1e400", "nan", "inf", "-1", "", "  60 ", True, [], {}]),
)
token_values = st.one_of(
    tokens_text,
    st.text(max_size=40),  # control characters, non-ASCII, whitespace
    st.sampled_from(["", " ", "tok\r\nX-Evil: 1", "tok\x00en", "t\u00e9st-token-value"]),
    st.integers(),
    st.none(),
)


@st.composite
def token_documents(draw) -> tuple[dict[str, Any], bool]:
    """A token document, and whether it is well formed (so the call must succeed)."""
    token = draw(tokens_text)
    document: dict[str, Any] = {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": draw(st.integers(60, 86400)),
    }
    well_formed = True
    for name, values in (
        ("access_token", token_values),
        ("token_type", st.one_of(st.sampled_from(["Bearer", "mac", "", "BEARER"]), st.text(max_size=30), st.none())),
        ("expires_in", expires_values),
    ):
        if draw(st.booleans()):
            document[name] = draw(values)
            well_formed = False
        if draw(st.integers(0, 9)) == 0:
            document.pop(name, None)
            well_formed = False
    return document, well_formed


@st.composite
def encoded_bodies(draw, body: bytes) -> tuple[bytes, dict[str, str], bool]:
    """``body`` with a Content-Encoding that may lie; whether the client can read it back intact."""
    encoding = draw(st.sampled_from(["identity", "gzip", "gzip-lie", "gzip-truncated", "deflate", "bogus"]))
    if encoding == "identity":
        return body, {}, True
    if encoding == "gzip":
        return gzip.compress(body), {"Content-Encoding": "gzip"}, True
    if encoding == "gzip-lie":
        return body, {"Content-Encoding": "gzip"}, False
    if encoding == "gzip-truncated":
        packed = gzip.compress(body)
        return packed[: max(1, len(packed) - draw(st.integers(1, 12)))], {"Content-Encoding": "gzip"}, False
    if encoding == "deflate":
        return zlib.compress(body), {"Content-Encoding": "deflate"}, True
    return body, {"Content-Encoding": "x-bogus"}, False


@given(
    secret=secrets_text,
    status=st.sampled_from([200, 200, 200, 201, 400, 401, 403, 404, 429, 500, 503]),
    shape=token_documents(),
    raw=st.one_of(st.none(), st.binary(max_size=300)),
    data=st.data(),
)
def test_token_responses_give_a_token_or_a_packly_error(server, _all_logs, secret, status, shape, raw, data):
    document, well_formed = shape
    body = raw if raw is not None else json.dumps(document, default=str).encode()
    sent, headers, intact = data.draw(encoded_bodies(body))
    headers["Content-Type"] = "application/json"
    if data.draw(st.booleans()):
        headers["Retry-After"] = data.draw(
            st.sampled_from(["1", "²", "-5", "999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", ""])
        )
    answer = http_response(status, sent, headers)
    server.respond = lambda request: answer
    connection = _connection(server.base_url, secret)
    with PacklyHook(connection=connection) as hook:
        started = time.monotonic()
        token, error, logs = _run(hook.get_token, _all_logs)
        elapsed = time.monotonic() - started
    secrets = _secret_forms(secret, _basic(secret))
    if isinstance(document.get("access_token"), str) and document["access_token"].startswith("T0kn"):
        secrets |= _secret_forms(document["access_token"])
    if error is not None:
        _assert_nothing_leaks(_texts_of(error) + logs, secrets)
    else:
        assert isinstance(token, str) and token == document.get("access_token") and raw is None
        assert all(0x21 <= ord(ch) <= 0x7E for ch in token), "a token must be a visible-ASCII header value"
        _assert_nothing_leaks(logs, secrets)
    if status == 200 and well_formed and intact and raw is None:
        assert error is None, f"a well-formed token response was refused: {error}"
    assert elapsed < _deadline(connection) + DEADLINE_SLACK


# -- API error bodies that echo what they were sent ---------------------------------------------


@st.composite
def echoing_bodies(draw, token: str, secret: str) -> tuple[bytes, str]:
    """An error page quoting the request's credentials the way proxies and debug pages do."""
    authorization = f"Bearer {token}"
    pieces = [
        f"Authorization: {authorization}",
        token,
        secret,
        quote(token, safe=""),
        quote(secret, safe=""),
        base64.b64encode(token.encode()).decode(),
        f"Basic {_basic(secret)}",
        _basic(secret),
    ]
    quoted = draw(st.lists(st.sampled_from(pieces), min_size=1, max_size=4))
    filler = draw(st.text(max_size=260))
    cut = draw(st.integers(0, len(filler)))
    text = filler[:cut] + " ".join(quoted) + filler[cut:]
    kind = draw(st.sampled_from(["html", "envelope", "errors", "oauth", "plain"]))
    if kind == "html":
        return f"<html><body><pre>{text}</pre></body></html>".encode(), "text/html"
    if kind == "envelope":
        return json.dumps({"response": {"code": "E_FUZZ", "message": text}}).encode(), "application/json"
    if kind == "errors":
        items = [{"code": "E1", "path": "x", "message": text}] + [{"code": "E2", "message": piece} for piece in quoted]
        return json.dumps(
            {"response": {"code": "E_FUZZ", "message": "bad", "errors": items}}
        ).encode(), "application/json"
    if kind == "oauth":
        return json.dumps({"error": "invalid_request", "error_description": text}).encode(), "application/json"
    return text.encode("utf-8", "surrogatepass"), "text/plain"


TOKEN = "fuzz-access-token-0123456789abcdef"


@given(
    secret=secrets_text,
    status=st.sampled_from([400, 401, 403, 404, 409, 422, 429, 500, 502, 503]),
    use_async=st.booleans(),
    data=st.data(),
)
def test_error_bodies_never_carry_a_secret_into_errors_or_logs(server, _all_logs, secret, status, use_async, data):
    token_answer = http_response(
        200,
        json.dumps({"access_token": TOKEN, "token_type": "bearer", "expires_in": 3600}).encode(),
        {"Content-Type": "application/json"},
    )
    body, content_type = data.draw(echoing_bodies(TOKEN, secret))
    error_answer = http_response(status, body, {"Content-Type": content_type, "Retry-After": "0"})

    def respond(request: RawRequest) -> bytes:
        return token_answer if request.path.startswith("/v1/oauth2/token") else error_answer

    server.respond = respond
    connection = _connection(server.base_url, secret)
    hook = PacklyHook(connection=connection)

    def call() -> Any:
        if use_async:
            import anyio

            async def go() -> Any:
                async with hook:
                    return await hook.arequest("GET", "/v1/reseller/orders", params={"page": 0})

            return anyio.run(go)
        with hook:
            return hook.request("GET", "/v1/reseller/orders", params={"page": 0})

    result, error, logs = _run(call, _all_logs)
    assert result is None and error is not None, "a non-2xx answer must raise"
    _assert_nothing_leaks(_texts_of(error) + logs, _secret_forms(secret, _basic(secret), TOKEN))


# -- headers around an ordinary JSON answer ------------------------------------------------------


@given(
    status=st.sampled_from([200, 200, 429, 503]),
    retry_after=st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["²", "1e9", "-1", "0", "NaN", "١"])),
    length_change=st.sampled_from([0, 0, 0, -1, -10]),
    trickle=st.booleans(),
    data=st.data(),
)
def test_odd_headers_give_the_right_body_or_a_packly_error(
    server, _all_logs, status, retry_after, length_change, trickle, data
):
    payload = json.dumps({"response": [{"id": "ORD-1", "status": "paid"}], "pad": "x" * 200}).encode()
    sent, headers, intact = data.draw(encoded_bodies(payload))
    if retry_after is not None:
        headers["Retry-After"] = (
            retry_after.encode("latin-1", "replace").decode("latin-1").replace("\r", "").replace("\n", "")
        )
    headers["Content-Type"] = "application/json"
    answer = http_response(status, sent, headers, content_length=max(0, len(sent) + length_change))
    token_answer = http_response(
        200,
        json.dumps({"access_token": TOKEN, "token_type": "bearer", "expires_in": 3600}).encode(),
        {"Content-Type": "application/json"},
    )

    def respond(request: RawRequest) -> Answer:
        if request.path.startswith("/v1/oauth2/token"):
            return token_answer
        return trickled(answer, chunk=7, every=0.02, limit=10) if trickle else answer

    server.respond = respond
    connection = _connection(server.base_url, "fuzz-secret-value-xyz")
    with PacklyHook(connection=connection) as hook:
        started = time.monotonic()
        response, error, logs = _run(lambda: hook.request("GET", "/v1/reseller/orders"), _all_logs)
        elapsed = time.monotonic() - started
    if error is None:
        # A Content-Length shorter than what was sent frames a shorter body: for an uncompressed
        # one that is all HTTP can tell, so the framed bytes are the right answer.
        framed = sent[: max(0, len(sent) + length_change)]
        assert response.status_code == 200
        assert response.content == payload or (
            length_change < 0
            and headers.get("Content-Encoding") not in ("gzip", "deflate")
            and response.content == framed
        )
    elif status == 200 and intact and length_change == 0 and not trickle and _legal_header(retry_after):
        pytest.fail(f"an intact 200 answer was refused: {error}")
    assert elapsed < _deadline(connection) * 2 + DEADLINE_SLACK  # token call + API call
    _assert_nothing_leaks((_texts_of(error) if error else []) + logs, _secret_forms("fuzz-secret-value-xyz", TOKEN))


def _legal_header(value: str | None) -> bool:
    """Whether HTTP allows ``value`` as a header value (control characters other than tab do not)."""
    return value is None or not any(ord(ch) < 0x20 and ch != "\t" or ord(ch) == 0x7F for ch in value)


# -- connection extras --------------------------------------------------------------------------

FIELDS = sorted(get_provider_info()["connection-types"][0]["conn-fields"])
extra_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["inf", "-inf", "nan", "NaN", "1e400", "0.5", "0", "-1", "", " ", "²", "live", "sandbox", "***", "10"]
    ),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
)


@given(
    extra=st.dictionaries(st.sampled_from(FIELDS), extra_values, max_size=len(FIELDS)),
    environment=st.sampled_from(["sandbox", "live"]),
)
def test_connection_extras_are_accepted_as_finite_settings_or_refused_clearly(extra, environment):
    extra = {**extra, "environment": environment} if "environment" not in extra else extra
    try:
        connection = PacklyConnection.from_fields(
            login=CLIENT_ID, password="fuzz-secret-value-xyz", host="http://127.0.0.1:9", extra=extra, conn_id="fuzzed"
        )
    except PacklyConnectionConfigError as exc:
        message = str(exc)
        assert "fuzz-secret-value-xyz" not in message and message.strip()
        return
    for name, value in vars(connection).items():
        if isinstance(value, float):
            assert math.isfinite(value), f"{name} = {value!r} was accepted"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "port":
            assert value >= 0, f"{name} = {value!r} was accepted"
    assume(True)


def _deadline(connection: PacklyConnection) -> float:
    """The longest a single call (retries included) may take, as the connection promises."""
    deadline = getattr(connection, "request_deadline", None)
    if callable(deadline):
        deadline = deadline()
    if isinstance(deadline, (int, float)):
        return float(deadline)
    # Before the overall deadline existed: attempts x every phase, plus the retry budget.
    return connection.retry_max_attempts * sum(connection.phase_timeouts().values()) + connection.retry_max_seconds
