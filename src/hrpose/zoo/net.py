"""The network primitives every zoo module shares: one URL's failure (`DownloadError`) and a bounded host lookup."""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request

__all__ = ["DownloadError", "_resolve"]


class DownloadError(Exception):
    """One URL could not deliver the file (after its retries); the caller tries the next URL."""


def _resolve(url: str, timeout: float) -> None:
    """Resolve the URL's host within ``timeout`` (getaddrinfo has no timeout of its own: a machine with no
    network can hang in it); DownloadError when the name does not resolve. Skipped when a proxy is used."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname
    if parsed.scheme not in ("http", "https") or not host:
        return
    proxies = urllib.request.getproxies()
    if parsed.scheme in proxies and not urllib.request.proxy_bypass(host):
        return
    result: list[BaseException | None] = []

    def work() -> None:
        try:
            socket.getaddrinfo(host, parsed.port or (443 if parsed.scheme == "https" else 80),
                               type=socket.SOCK_STREAM)  # fmt: skip
            result.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            result.append(e)

    t = threading.Thread(target=work, name="hrpose-dns", daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise DownloadError(f"name not resolved: {host} did not resolve within {timeout:g} s (no network?)")
    err = result[0]
    if isinstance(err, socket.gaierror):
        raise DownloadError(f"name not resolved: {host} ({err.strerror or err}; no network here, or a wrong host)")
