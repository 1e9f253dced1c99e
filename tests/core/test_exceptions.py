"""The provider's errors: one module, one serialisation (``to_dict``/``from_dict``) that pickling
and trigger events share, so an error keeps its class and fields across either trip."""

from __future__ import annotations

import json
import pickle

import httpx
import pytest

from airflow_provider_packly.core import errors as exceptions  # where every error class is defined
from airflow_provider_packly.exceptions import (
    PacklyAPIError,
    PacklyAuthError,
    PacklyConnectionConfigError,
    PacklyError,
    PacklyErrorItem,
    PacklyEventError,
    PacklyIncompleteBodyError,
    PacklyOrderNotFound,
    PacklyTransportError,
    PacklyValidationError,
)
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.sensors.packly import PacklyOrderStatusSensor
from airflow_provider_packly.triggers.packly import PacklyOrderStatusTrigger
from airflow_provider_packly.triggers.rules import (
    OrderCondition,
    deadline_after,
    error_from_payload,
    error_to_payload,
    is_transient,
)

from ..fakes import SECRET, fake_connection

API_ERROR = PacklyAPIError(
    http_status=422,
    method="GET",
    path="/v1/reseller/dieline",
    code="DLN_1100",
    message="Invalid parameters",
    errors=[PacklyErrorItem("DLN_1101", "material", "unknown material"), PacklyErrorItem(None, None, None)],
    detail=None,
    attempts=3,
)
AUTH_ERROR = PacklyAuthError(
    "invalid_client: Client authentication failed",
    environment="sandbox",
    client_id="client-42",
    token_url="https://sandbox.packly.example/v1/oauth2/token",
    http_status=401,
    code="invalid_client",
)

#: One instance of every class the provider raises, with every field set.
EVERY_ERROR: list[PacklyError] = [
    PacklyError("Packly's orders answer has no response list; the API may have changed."),
    PacklyTransportError("GET https://packly.example/v1/reseller/orders failed before Packly answered."),
    PacklyIncompleteBodyError("The answer's gzip body ended before its end."),
    PacklyConnectionConfigError("timeout must be a positive number of seconds; got 'x'."),
    PacklyValidationError("width must be a positive number of millimetres; got -1."),
    PacklyOrderNotFound("No Packly order 'ORD-9' among the first 3 pages."),
    PacklyEventError("The Packly trigger sent an event with unknown status 'odd'."),
    API_ERROR,
    PacklyAPIError(http_status=502, method="POST", path="/v1/x", detail="the response body was empty"),
    AUTH_ERROR,
    PacklyAuthError("the token endpoint could not be reached"),
]


def fields(error: BaseException) -> tuple[type, str, dict]:
    """What must survive a trip: the class, the message and every attribute."""
    return type(error), str(error), dict(vars(error))


def test_every_error_class_lives_in_exceptions_and_is_covered():
    defined = {
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, PacklyError) and value.__module__ == exceptions.__name__
    }
    assert defined == {type(error) for error in EVERY_ERROR}
    assert set(exceptions._ERROR_TYPES.values()) == defined


def test_old_import_paths_still_work():
    from airflow_provider_packly.resources import PacklyOrderNotFound as FromResources
    from airflow_provider_packly.resources import PacklyValidationError as ValidationFromResources
    from airflow_provider_packly.triggers.rules import PacklyEventError as FromRules

    assert (FromResources, ValidationFromResources, FromRules) == (
        PacklyOrderNotFound,
        PacklyValidationError,
        PacklyEventError,
    )


@pytest.mark.parametrize("error", EVERY_ERROR, ids=lambda e: type(e).__name__)
def test_to_dict_from_dict_round_trip(error):
    data = error.to_dict()
    assert data["type"] == type(error).__name__
    assert json.loads(json.dumps(data)) == data  # plain JSON-able data
    assert fields(PacklyError.from_dict(data)) == fields(error)


@pytest.mark.parametrize("error", EVERY_ERROR, ids=lambda e: type(e).__name__)
def test_pickle_round_trip(error):
    assert fields(pickle.loads(pickle.dumps(error))) == fields(error)


@pytest.mark.parametrize("error", EVERY_ERROR, ids=lambda e: type(e).__name__)
def test_trigger_event_round_trip_keeps_class_fields_and_transience(error):
    payload = json.loads(json.dumps(error_to_payload(error)))
    again = error_from_payload(payload)
    assert fields(again) == fields(error)
    assert is_transient(again) is is_transient(error)


def test_serialised_forms_hold_no_secret():
    auth = PacklyAuthError("refused", client_id="client-42", environment="sandbox")
    auth.__cause__ = RuntimeError(f"Basic header held {SECRET}")  # causes are not carried
    assert SECRET not in json.dumps(auth.to_dict())
    assert SECRET.encode() not in pickle.dumps(auth)


def test_data_from_another_version_becomes_a_plain_packly_error():
    assert type(PacklyError.from_dict({"type": "RuntimeError", "message": "boom"})) is PacklyError
    assert str(PacklyError.from_dict({"type": "RuntimeError", "message": "boom"})) == "boom"
    # An older triggerer sent only the message of an auth error: kept, as a PacklyError.
    old = PacklyError.from_dict({"type": "PacklyAuthError", "message": "Packly did not issue a token"})
    assert type(old) is PacklyError and str(old) == "Packly did not issue a token"
    broken = PacklyError.from_dict({"type": "PacklyAPIError", "http_status": "not a number"})
    assert type(broken) is PacklyError and "without details" in str(broken)
    assert "without details" in str(error_from_payload(None))


class ElsewhereError(PacklyError):
    """A user's own subclass: not one ``from_dict`` knows."""


def test_a_subclass_defined_elsewhere_pickles_as_itself():
    again = pickle.loads(pickle.dumps(ElsewhereError("mine")))
    assert type(again) is ElsewhereError and str(again) == "mine"


# -- end to end: a refused token on the triggerer is a PacklyAuthError on the worker ----------------


def _refusing_token_endpoint(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/oauth2/token":
        return httpx.Response(
            401, json={"error": "invalid_client", "error_description": "Client authentication failed"}
        )
    raise AssertionError(f"no API call without a token: {request.method} {request.url}")


@pytest.mark.anyio
async def test_auth_error_from_the_trigger_is_an_auth_error_on_the_worker(mocker):
    transport = httpx.MockTransport(_refusing_token_endpoint)

    def make_hook(self):
        return PacklyHook(connection=fake_connection(), transport=transport, async_transport=transport)

    mocker.patch.object(PacklyOrderStatusTrigger, "_make_hook", make_hook)
    condition = OrderCondition("order_status", ("closed",), ("canceled",)).to_dict()
    trigger = PacklyOrderStatusTrigger(
        order_id="ORD-0001", condition=condition, deadline=deadline_after(60), packly_conn_id="packly_default"
    )
    events = [event.payload async for event in trigger.run()]
    assert [event["status"] for event in events] == ["error"]
    event = json.loads(json.dumps(events[0]))  # what the triggerer stores and the worker reads
    assert SECRET not in json.dumps(event)

    sensor = PacklyOrderStatusSensor(task_id="wait", order_id="ORD-0001", poke_interval=0.01, timeout=60)
    with pytest.raises(PacklyAuthError) as caught:
        sensor.execute_complete({"params": {}}, event=event)
    assert caught.value.client_id == "fake-client-id"
    assert caught.value.http_status == 401 and caught.value.code == "invalid_client"
    assert str(caught.value) == event["message"]
