"""``core.errors``: every error in one module, importable without httpx, one serialisation."""

from __future__ import annotations

import pickle
import ssl
from types import SimpleNamespace

import pytest

from airflow_provider_packly import exceptions as exceptions_shim
from airflow_provider_packly.core import errors
from airflow_provider_packly.core.errors import (
    PacklyAPIError,
    PacklyAuthError,
    PacklyError,
    PacklyErrorItem,
    PacklyTransportError,
    Redactor,
    is_permanent_tls_failure,
    transport_error,
)

from .purity import modules_loaded_by


def test_errors_import_neither_airflow_nor_httpx():
    loaded = modules_loaded_by("airflow_provider_packly.core.errors")
    assert not loaded & {"airflow", "httpx", "httpcore", "anyio"}


def test_the_exceptions_module_is_a_shim_of_the_same_objects():
    for name in exceptions_shim.__all__:
        assert getattr(exceptions_shim, name) is getattr(errors, name), name


def test_every_error_class_is_defined_in_core_errors():
    defined = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, PacklyError) and value.__module__ == errors.__name__
    }
    assert set(errors._ERROR_TYPES.values()) == defined
    assert {name for name in vars(exceptions_shim) if name.startswith("Packly")} >= {k.__name__ for k in defined}


@pytest.mark.parametrize(
    "error",
    [
        PacklyAPIError(
            http_status=422,
            method="GET",
            path="/v1/reseller/dieline",
            code="VALIDATION_ERROR",
            message="bad",
            errors=[PacklyErrorItem("DLN_1101", "material", "required")],
        ),
        PacklyAuthError("refused", environment="live", client_id="an-id", http_status=401, code="invalid_client"),
        PacklyTransportError("dropped"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_one_serialisation_keeps_class_and_fields(error):
    again = PacklyError.from_dict(error.to_dict())
    assert type(again) is type(error) and str(again) == str(error) and again.to_dict() == error.to_dict()
    unpickled = pickle.loads(pickle.dumps(error))
    assert type(unpickled) is type(error) and unpickled.to_dict() == error.to_dict()


def test_a_pickle_naming_the_old_module_still_loads():
    """Errors pickled before the move name ``airflow_provider_packly.exceptions._error_from_dict``."""
    error = PacklyAuthError("refused", client_id="an-id")
    new = pickle.dumps(error, protocol=0)  # protocol 0 names the module as plain text
    old = new.replace(b"airflow_provider_packly.core.errors", b"airflow_provider_packly.exceptions")
    assert b"airflow_provider_packly.exceptions" in old
    assert pickle.loads(old).to_dict() == error.to_dict()


def _request() -> SimpleNamespace:
    """A request as ``transport_error`` reads it: duck-typed, so no httpx is needed here."""
    return SimpleNamespace(method="GET", url=_Url(), extensions={}, headers={})


class _Url:
    scheme = "https"

    def __str__(self) -> str:
        return "https://api.packly.io/v1/reseller/orders"


class ConnectError(Exception):
    """Named as httpx names it: ``transport_error`` reads only the class name."""


def test_transport_error_needs_no_httpx():
    error = transport_error(ConnectError("refused"), _request())
    assert isinstance(error, PacklyTransportError)
    assert "GET https://api.packly.io/v1/reseller/orders failed before Packly answered" in str(error)


def test_a_permanent_tls_failure_is_found_under_the_wrappers():
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    wrapper = ConnectError("wrapped")
    wrapper.__cause__ = cause
    assert is_permanent_tls_failure(wrapper)
    assert not is_permanent_tls_failure(ConnectError("refused"))


def test_the_redactor_removes_a_secret_in_its_encoded_forms():
    redact = Redactor("s3cr3t/value+x")
    assert redact("echo: s3cr3t%2Fvalue%2Bx and czNjcjN0L3ZhbHVlK3g=") == "echo: *** and ***"
