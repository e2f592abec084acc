"""uvicorn's h11 HTTP protocol with the bounds a public server needs against slow or idle clients.

- **Header-read timeout**: a connection must finish its request line and headers within `header_timeout`
  seconds of connecting (or of its previous response): one that sends half a header and waits is closed.
- **Connection bound**: at most `max_connections` open connections. A new one over the bound first evicts the
  oldest connection that has not finished sending its headers (slow clients lose their place, never working
  ones); when every connection is busy with a real request the new one is closed.
- uvicorn's own `limit_concurrency` is not used: it counts *every* open connection, so 100 half-open ones
  make it answer 503 to everything, `/healthz` included. Pose requests have their own admission limit in the
  app (503 + Retry-After before the body is read), and the body has its own read timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "DEFAULT_MAX_CONNECTIONS", "guarded_protocol"]

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 1024


class GuardedH11Protocol(H11Protocol):
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_cycle: Any = None
        self._waiting_since = 0.0

    # a connection is "waiting for headers" from connection_made / the end of a response until its next
    # request's headers are complete (a new RequestResponseCycle exists)
    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._waiting_cycle = self.cycle
        self._waiting_since = time.monotonic()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_handler)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def waiting_for_headers(self) -> bool:
        return self._header_timer is not None

    def _header_timeout_handler(self) -> None:
        self._header_timer = None
        if self.cycle is self._waiting_cycle:  # no request started since the timer was armed
            self._close()

    def _close(self) -> None:
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()
        if len(self.connections) > self.max_connections:
            waiting = [c for c in self.connections
                       if c is not self and isinstance(c, GuardedH11Protocol) and c.waiting_for_headers()]  # fmt: skip
            if waiting:
                min(waiting, key=lambda c: c._waiting_since)._close()
            else:
                self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._waiting_cycle:
            self._disarm_header_timer()  # the headers arrived: the request runs under the app's own timeouts

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is not None and self.cycle.response_complete:
            # keep-alive: the next request's headers must come in time too (uvicorn's keep-alive timeout
            # only covers a connection that sends nothing at all)
            if self._header_timer is None:
                self._arm_header_timer()


def guarded_protocol(header_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with these bounds (uvicorn takes the class as `http=`)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout": float(header_timeout), "max_connections": int(max_connections)})  # fmt: skip
