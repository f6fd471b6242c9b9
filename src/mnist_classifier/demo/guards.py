"""What every request passes before a route sees it: a bounded body, and no writes from other sites.

A page on any other site the user visits can send requests to 127.0.0.1 (a plain
`fetch(..., {mode: "no-cors"})` needs no permission), and `POST /api/examples` would
save its drawings under its labels for `finetune` to learn. Browsers name the page that
sent a request in `Origin`: a write whose Origin is not this server is refused. Scripts and
curl send none and are not affected. A connection to a loopback address is also answered only
under this machine's own names (loopback ones, its host name, or the `--allow-host` names a
reverse proxy serves it as), so a site that re-points its own name at 127.0.0.1 (DNS
rebinding) is not "this server" either.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

import anyio
from fastapi import HTTPException
from fastapi.responses import JSONResponse

# 8 MB: a drawn canvas is ~2 kB; a 12-megapixel phone photo (4000x3000, under images.MAX_SIDE)
# is 2-5 MB as a JPEG, which the 1 MB of before refused
MAX_BODY = 8 << 20
# Seconds for a whole request body (8 MB at 70 kB/s, a slow phone uplink; 30 s refused a 4 MB
# photo at 1 Mbit/s): a client that trickles its body is cut off with 408 instead of holding its
# connection forever. (Its head has its own deadline: connections.HEAD_TIMEOUT.)
BODY_TIMEOUT = 120.0
# A body refused by its Content-Length is still read up to this much, so that the client sees the 413
DRAINED_AT_MOST = 2 * MAX_BODY
DRAIN_IDLE = 2.0  # seconds without a byte of it: the client is not sending the rest
SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


class SameOrigin:
    """ASGI middleware: 403 for a write sent by another site's page, or any request that reached a
    loopback address under a name that is not one of this machine's."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] = ()):
        self.app = app
        self.allowed_hosts = tuple(name.lower() for name in allowed_hosts)  # `serve --allow-host`: a proxy's name

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = refused(scope, self.allowed_hosts)
            if refusal:
                return await JSONResponse({"detail": refusal}, 403)(scope, receive, send)
        await self.app(scope, receive, send)


def refused(scope, allowed_hosts: tuple[str, ...] = ()) -> str | None:
    """Why this request is refused, or None. `allowed_hosts`: names a reverse proxy serves the page as."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    host = headers.get("host", "")
    server = (scope.get("server") or ("", None))[0] or ""
    name = urlsplit(f"//{host}").hostname or ""
    if host and is_loopback(server) and not (is_own_name(name) or name in allowed_hosts):
        return (f"host {host!r} refused: this connection came in on {server}, which answers to localhost, "
                "127.0.0.1, [::1] or this machine's name; open it by one of those (behind a reverse proxy: "
                "serve --allow-host NAME)")
    origin = headers.get("origin")
    if scope["method"].encode() in SAFE_METHODS or origin is None:
        return None
    page = urlsplit(origin)
    if page.netloc.lower() != host.lower() and (page.hostname or "") not in allowed_hosts:
        return (f"request from the page at {origin} refused: only the page this server serves may save or "
                "send drawings from a browser (scripts and curl, which send no Origin, may; behind a reverse "
                "proxy: serve --allow-host NAME)")
    return None


def is_own_name(host: str) -> bool:
    """A loopback name or address, or this machine's own name (Debian maps it to 127.0.1.1): names
    an outside site cannot point at 127.0.0.1 for itself (`.local` is never a public domain)."""
    return is_loopback(host) or is_unspecified(host) or host.lower().rstrip(".") in machine_names()


@functools.cache
def machine_names() -> tuple[str, str]:
    machine = socket.gethostname().lower()
    return machine, f"{machine}.local"


def is_unspecified(host: str) -> bool:
    """0.0.0.0 or [::]: what `serve --host 0.0.0.0` prints; browsers connect to this machine for it."""
    address = ip_address(host)
    return address is not None and address.is_unspecified


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        return True  # browsers resolve every *.localhost to loopback themselves
    address = ip_address(host)
    return address is not None and address.is_loopback


def ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host name spells out ("[::1]" as in a URL), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class BodyLimit:
    """ASGI middleware: 413 once a body passes `limit` bytes, 408 if it takes over `timeout` s.

    Content-Length is checked up front, but chunked uploads have none (and a client
    may lie), so the bytes are also counted as they arrive; reading stops at the limit.
    The deadline covers the whole body, so a byte every few seconds does not reset it.
    """

    def __init__(self, app, limit: int, timeout: float = BODY_TIMEOUT):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = HTTPException(413, f"request body larger than {self.limit} bytes ({self.limit / (1 << 20):g} MB)")
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            # A client that waits for "100 Continue" (curl, for big bodies) sends nothing unless we read:
            # it gets the 413 at once. One that sends first is let finish, so that it reads the answer.
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await _discard_body(receive, min(int(declared), DRAINED_AT_MOST), self.timeout)
            return await JSONResponse({"detail": too_large.detail}, 413)(scope, receive, send)
        too_slow = HTTPException(408, f"request body not received within {self.timeout:g} s: send it faster",
                                 headers={"Connection": "close"})  # and drop the slow connection
        received, deadline, body_done = 0, anyio.current_time() + self.timeout, False

        async def counting_receive():
            nonlocal received, body_done
            if body_done:  # later receives only wait for a disconnect: no deadline
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large  # FastAPI's handler turns it into the JSON 413
                return message
            raise too_slow

        await self.app(scope, counting_receive, send)


async def _discard_body(receive, at_most: int, timeout: float) -> None:
    """Read and drop a refused body (up to `at_most` bytes, within `timeout`) before answering:
    a client that sends its whole body before it reads (Python's urllib) would otherwise find
    the connection reset under it and never see the 413."""
    discarded = 0
    with anyio.move_on_after(timeout):
        while discarded < at_most:
            with anyio.move_on_after(DRAIN_IDLE) as idle:
                message = await receive()
            if idle.cancel_called:  # a Content-Length the body never fills: answer now, not in `timeout` s
                return
            discarded += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
