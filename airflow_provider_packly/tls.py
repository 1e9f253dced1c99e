"""TLS contexts for the hook's clients: one ``ssl.SSLContext`` per distinct ``TlsSettings``.

httpx builds a new context per client otherwise (loading the CA bundle: about 15 ms measured),
which would stall an event loop each time a hook opens its first async client. So contexts
are built once per process per setting and shared by every sync and async client, and the
async path builds a missing one in a worker thread.

No Airflow import here: the rules are plain functions over ``TlsSettings``.
"""

from __future__ import annotations

import os
import ssl
import threading

import httpx

from airflow_provider_packly.connection import PacklyConnection, TlsSettings
from airflow_provider_packly.exceptions import PacklyConnectionConfigError

__all__ = ["SSL_CONTEXTS", "SslContexts", "build_ssl_context", "unverified_tls_warning"]


def build_ssl_context(settings: TlsSettings, where: str = "The Packly connection") -> ssl.SSLContext:
    """A new context for ``settings``; unreadable or unusable files raise
    ``PacklyConnectionConfigError`` naming the setting and the path (paths are not secrets)."""
    if not settings.verify:
        context = httpx.create_ssl_context(verify=False)
    elif settings.ca_bundle_path:
        path = settings.ca_bundle_path
        try:
            if os.path.isdir(path):
                context = ssl.create_default_context(capath=path)
            else:
                context = ssl.create_default_context(cafile=path)
        except OSError as exc:  # FileNotFoundError, PermissionError, and ssl.SSLError for bad PEM
            raise PacklyConnectionConfigError(
                f"{where} has CA bundle (ca_bundle_path) {path!r}, which could not be loaded "
                f"({_reason(exc)}); give a readable PEM file of the CA certificates to trust, on every "
                "machine that runs Packly tasks."
            ) from None
    else:
        context = httpx.create_ssl_context()  # certifi's CAs, or SSL_CERT_FILE/SSL_CERT_DIR
    if settings.client_cert_path:
        try:
            # A passphrase callback that gives none: OpenSSL would otherwise prompt on a
            # terminal for an encrypted key, and a worker has none (the task would hang).
            context.load_cert_chain(settings.client_cert_path, settings.client_key_path, password=_no_passphrase)
        except (OSError, ValueError) as exc:
            key = f" and key {settings.client_key_path!r}" if settings.client_key_path else ""
            raise PacklyConnectionConfigError(
                f"{where} has client certificate (client_cert_path) {settings.client_cert_path!r}{key}, "
                f"which could not be loaded ({_reason(exc)}); give readable PEM files that belong "
                "together, with the key unencrypted (the provider takes no passphrase)."
            ) from None
    return context


def unverified_tls_warning(connection: PacklyConnection) -> str | None:
    """The warning to log when a connection turns certificate verification off, else ``None``
    (``PacklyConnection`` already refuses that for ``live``)."""
    if connection.tls.verify:
        return None
    return (
        f"{connection.where} has TLS certificate verification turned off (verify_tls = false): anyone "
        "on the network path can read the client secret and tokens. Use this only with a test sandbox; "
        "for a private CA set ca_bundle_path instead."
    )


def _no_passphrase() -> bytes:
    return b""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


class SslContexts:
    """One shared context per ``TlsSettings`` value per process, built on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: dict[TlsSettings, ssl.SSLContext] = {}

    def get(self, settings: TlsSettings, where: str = "The Packly connection") -> ssl.SSLContext:
        """The context for ``settings`` (built here the first time; blocking)."""
        context = self._contexts.get(settings)
        if context is not None:
            return context
        with self._lock:
            context = self._contexts.get(settings)
            if context is None:
                context = self._contexts[settings] = build_ssl_context(settings, where)
            return context

    async def aget(self, settings: TlsSettings, where: str = "The Packly connection") -> ssl.SSLContext:
        """``get`` from a coroutine: a first build runs in a worker thread, off the event loop."""
        context = self._contexts.get(settings)
        if context is not None:
            return context
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.get, settings, where)

    def __len__(self) -> int:
        return len(self._contexts)

    def forget_after_fork(self) -> None:
        """In a forked child: a new lock, since another thread of the parent may have held this one
        at the fork (the child would then wait for it forever). The contexts hold no connection
        and are kept."""
        self._lock = threading.Lock()


#: The process-wide contexts every ``PacklyHook`` uses.
SSL_CONTEXTS = SslContexts()
