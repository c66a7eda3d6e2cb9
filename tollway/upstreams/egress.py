"""How Tollway reaches an upstream over the network: the TLS context (verification on by
default, CA bundles global or per upstream) and the outbound HTTP proxy (per upstream, or
from HTTPS_PROXY / HTTP_PROXY / NO_PROXY). Resolved once per upstream, never per request;
the relay's client and the background aiohttp clients use the same answers."""

from __future__ import annotations

import base64
import os
import ssl
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from tollway.core.settings import Settings

DIRECT = "direct"  # `proxy: direct`: never a proxy for this upstream, whatever the environment


@dataclass(frozen=True, slots=True)
class Egress:
    """One upstream's own network settings (YAML); unset ones follow the global settings."""

    ca_bundle: str | None = None  # a PEM file of CAs to trust instead of the global ones
    verify: bool = True  # False: no certificate check at all (warned about at start)
    proxy: str | None = None  # http://[user:pass@]host:port, "direct", or None: environment


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy, parsed once. `where` names it without its credentials (for messages)."""

    host: str
    port: int
    where: str
    auth_line: bytes  # b"proxy-authorization: Basic ...\r\n", or b""
    url: str  # without userinfo (aiohttp takes the credentials apart)
    user: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> Proxy:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            # A TLS connection to the proxy itself (https://) would need TLS inside TLS.
            raise ValueError("proxy must be an http:// URL (host and port of an HTTP proxy)")
        port = parts.port or 80
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        where = f"{name}:{port}"
        user = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        auth = b""
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            auth = f"proxy-authorization: Basic {token}\r\n".encode()
        return cls(parts.hostname, port, where, auth, f"http://{where}", user, password)


def proxy_url_for(target_url: str, egress: Egress | None, trust_env: bool) -> str | None:
    """The proxy URL to reach `target_url` through, or None for a direct connection: the
    upstream's `proxy:` first, then (with trust_env) the environment's HTTPS_PROXY or
    HTTP_PROXY per the target's scheme, unless NO_PROXY names its host."""
    if egress is not None and egress.proxy is not None:
        return None if egress.proxy in ("", DIRECT) else egress.proxy
    if not trust_env:
        return None
    parts = urlsplit(target_url)
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(parts.scheme)
    if not url or not parts.hostname:
        return None
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed
    if bypass(host, proxies):
        return None
    return url


def proxy_for(target_url: str, egress: Egress | None, trust_env: bool) -> Proxy | None:
    url = proxy_url_for(target_url, egress, trust_env)
    return Proxy.parse(url) if url else None


def system_store_present() -> bool:
    """Whether OpenSSL's default CA file or directory exists (slim images may have none)."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return True
    return bool(paths.capath and os.path.isdir(paths.capath) and any(os.scandir(paths.capath)))


@lru_cache(maxsize=64)
def tls_context(ca_bundle: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client context: the system's CA store (certifi's when the system has none), or only
    the CAs of `ca_bundle`; hostname checked. `verify=False` checks nothing. Cached: one
    context per setting, shared by every connection (OpenSSL keeps its store once)."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_bundle is not None:
        path = Path(ca_bundle)
        if not path.is_file():
            raise ValueError(f"CA bundle {ca_bundle} is not a readable file")
        return ssl.create_default_context(cafile=str(path))
    if system_store_present():
        return ssl.create_default_context()
    import certifi  # only on systems without a CA store

    return ssl.create_default_context(cafile=certifi.where())


def context_for(egress: Egress | None, global_ca: str | None) -> ssl.SSLContext:
    """The upstream's own CA bundle, else the global one, else the system store."""
    if egress is not None and not egress.verify:
        return tls_context(None, False)
    ca = egress.ca_bundle if egress is not None and egress.ca_bundle else global_ca
    return tls_context(ca, True)


@dataclass(frozen=True, slots=True)
class EgressDefaults:
    """The global settings (TOLLWAY_UPSTREAM_CA_BUNDLE, TOLLWAY_UPSTREAM_TRUST_ENV)."""

    ca_bundle: str | None = None
    trust_env: bool = True

    def aiohttp_options(self, url: str, egress: Egress | None = None) -> dict[str, Any]:
        """Per-request options for an aiohttp call to `url` (balance probes, health checks,
        discovery, PocketBase): the same CA and proxy the relay would use."""
        options: dict[str, Any] = {}
        if url.startswith("https:"):
            options["ssl"] = context_for(egress, self.ca_bundle)
        proxy = proxy_for(url, egress, self.trust_env)
        if proxy is not None:
            import aiohttp  # background clients only: keeps this module light for the gateway

            options["proxy"] = proxy.url
            if proxy.user is not None:
                options["proxy_auth"] = aiohttp.BasicAuth(proxy.user, proxy.password or "")
        return options


def egress_defaults(settings: Settings) -> EgressDefaults:
    """The global settings; a CA bundle that is not a file stops the start (ValueError)."""
    ca = settings.upstream_ca_bundle
    if ca is not None and not ca.is_file():
        raise ValueError(f"TOLLWAY_UPSTREAM_CA_BUNDLE {ca} is not a readable file")
    return EgressDefaults(str(ca) if ca is not None else None, settings.upstream_trust_env)
