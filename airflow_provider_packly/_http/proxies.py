"""The environment's proxy for a URL: one rule for the sync and async clients and for a
hand-made ``AiohttpTransport``, the rule httpx and aiohttp both follow (``urllib``'s)."""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit

__all__ = ["env_proxy_for"]


def env_proxy_for(url: str) -> str | None:
    """``HTTPS_PROXY`` (``HTTP_PROXY`` for an ``http`` URL), else ``ALL_PROXY``, unless ``NO_PROXY``
    names the URL's host; ``None`` when none applies."""
    environment = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    proxy = environment.get(parts.scheme) or environment.get("all")
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    if proxy and not urllib.request.proxy_bypass(host):
        return proxy
    return None
