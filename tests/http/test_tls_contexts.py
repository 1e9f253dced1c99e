"""One ``ssl.SSLContext`` per distinct TLS setting per process, shared by sync and async clients."""

from __future__ import annotations

import asyncio
import threading

import pytest

from airflow_provider_packly._http.aiohttp_transport import AiohttpTransport
from airflow_provider_packly.connection import TlsSettings
from airflow_provider_packly.exceptions import PacklyConnectionConfigError
from airflow_provider_packly.hooks.packly import PacklyHook
from airflow_provider_packly.tls import SslContexts, build_ssl_context

from ..fakes import FakePackly
from ..hooks.test_packly import hook_for


@pytest.fixture
def contexts(monkeypatch):
    import airflow_provider_packly._http.shell as module

    fresh = SslContexts()
    monkeypatch.setattr(module, "SSL_CONTEXTS", fresh)
    return fresh


def _context_of(client) -> object:
    transport = client.transport
    if isinstance(transport, AiohttpTransport):  # the async default
        return transport.ssl_context
    return transport._pool._ssl_context


def test_hooks_share_a_context_per_setting_sync_and_async(make_connection, pki, contexts):
    ca = TlsSettings(ca_bundle_path=str(pki.ca))
    mtls = TlsSettings(
        ca_bundle_path=str(pki.ca), client_cert_path=str(pki.client_cert), client_key_path=str(pki.client_key)
    )
    for tls in (TlsSettings(), ca, ca, mtls, mtls):
        with hook_for(FakePackly(), make_connection(tls=tls)) as hook:
            hook.get_client()  # a MockTransport client: the context is read from the cache below
    assert len(contexts) == 3
    assert contexts.get(ca) is contexts.get(TlsSettings(ca_bundle_path=str(pki.ca)))
    assert contexts.get(ca) is not contexts.get(mtls)

    async def main() -> list:
        seen = []
        for tls in (ca, mtls, TlsSettings(verify=False)):
            async with PacklyHook(connection=make_connection(tls=tls)) as hook:
                seen.append(_context_of(await hook.aget_client()))
        return seen

    seen = asyncio.run(main())
    assert seen[0] is contexts.get(ca) and seen[1] is contexts.get(mtls)
    assert len(contexts) == 4  # only verify=False was new
    with PacklyHook(connection=make_connection(tls=mtls)) as hook:
        assert _context_of(hook.get_client()) is contexts.get(mtls)


def test_a_new_setting_is_built_off_the_event_loop(make_connection, pki, contexts, mocker):
    import airflow_provider_packly.tls as tls_module

    real = tls_module.build_ssl_context
    built_on: list[str] = []

    def recording(*args, **kwargs):
        built_on.append(threading.current_thread().name)
        return real(*args, **kwargs)

    mocker.patch.object(tls_module, "build_ssl_context", side_effect=recording)

    async def main() -> None:
        for _ in range(3):
            async with PacklyHook(connection=make_connection(tls=TlsSettings(ca_bundle_path=str(pki.ca)))) as hook:
                await hook.aget_client()

    asyncio.run(main())
    assert len(built_on) == 1 and built_on[0] != threading.main_thread().name


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            lambda pki: TlsSettings(ca_bundle_path=str(pki.ca) + ".missing"),
            "which could not be loaded (No such file or directory)",
        ),
        (lambda pki: TlsSettings(ca_bundle_path=str(pki.client_key)), "CA bundle (ca_bundle_path)"),
        (lambda pki: TlsSettings(client_cert_path=str(pki.client_cert)), "client certificate (client_cert_path)"),
        (
            lambda pki: TlsSettings(
                client_cert_path=str(pki.client_cert), client_key_path=str(pki.client_key_encrypted)
            ),
            "with the key unencrypted (the provider takes no passphrase)",
        ),
        (
            lambda pki: TlsSettings(client_cert_path=str(pki.client_cert), client_key_path=str(pki.server_key)),
            "give readable PEM files that belong together",
        ),
    ],
)
def test_unusable_files_are_named(pki, settings, expected):
    """An encrypted key fails at once: OpenSSL must not prompt for a passphrase (a worker would hang)."""
    tls = settings(pki)
    with pytest.raises(PacklyConnectionConfigError) as caught:
        build_ssl_context(tls, "Packly connection 'packly_tls'")
    assert str(caught.value).startswith("Packly connection 'packly_tls' has ")
    assert expected in str(caught.value)


def test_connection_test_reports_an_unusable_ca_bundle(make_connection, monkeypatch, pki):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PACKLY_BADCA",
        '{"conn_type": "packly", "login": "id", "password": "pw", "host": "https://packly.example.com",'
        f' "extra": {{"environment": "sandbox", "ca_bundle_path": "{pki.ca}.missing"}}}}',
    )
    ok, message = PacklyHook("packly_badca").test_connection()
    assert not ok
    assert message.startswith("The Packly connection has CA bundle (ca_bundle_path)")


def test_a_ca_bundle_replaces_the_default_cas(pki):
    """What the README says: the bundle's CAs are trusted *instead of* the default ones."""
    assert len(build_ssl_context(TlsSettings()).get_ca_certs()) > 10  # certifi's
    (only,) = build_ssl_context(TlsSettings(ca_bundle_path=str(pki.ca))).get_ca_certs()
    assert only["subject"] == ((("commonName", "Packly test CA"),),)


def test_proxy_password_is_given_to_the_masker_once_per_process(make_connection, mocker, monkeypatch):
    """Defence in depth (the provider never logs it): Airflow's masker hides the decoded proxy
    password, registered once however many hooks use it (each registration is a round trip)."""
    from airflow.sdk import log as sdk_log

    import airflow_provider_packly._http.masking as module

    monkeypatch.setattr(module, "_masked_proxy_passwords", set())
    mask = mocker.patch("airflow.sdk.log.mask_secret")
    amask = mocker.patch.object(sdk_log, "amask_secret", create=True, new=mocker.AsyncMock())
    conn = make_connection(proxy_url="http://user:p%40ss-w0rd@127.0.0.1:3128")
    for _ in range(3):
        with PacklyHook(connection=conn) as hook:
            hook.get_client()
    mask.assert_called_once_with("p@ss-w0rd")

    async def main() -> None:
        async with PacklyHook(connection=make_connection(proxy_url="http://user:other-pass@127.0.0.1:3128")) as hook:
            for _ in range(3):
                await hook.aget_client()

    asyncio.run(main())
    amask.assert_awaited_once_with("other-pass")
