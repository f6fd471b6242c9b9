"""How long serve waits for a request's head: uvicorn's HTTP protocol with a deadline.

uvicorn reads a request's line and headers with no time limit, so a client that opens
connections and sends a byte now and then (slowloris) holds them until the process runs out
of files: with `serve --host 0.0.0.0`, anyone on the network. Each connection here gets
HEAD_TIMEOUT seconds for its next request's head, from when it opened or its last answer
went out; the body has its own limit (guards.BODY_TIMEOUT).
"""
from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# A head is a few hundred bytes; Apache's mod_reqtimeout gives it 20 s by default too.
HEAD_TIMEOUT = 20.0


class HeadDeadline(HttpToolsProtocol):
    """httptools (a dependency) as uvicorn runs it, closing a connection whose head is overdue: with
    a 408 if part of it came, silently if nothing did (browsers open spare connections to use later).

    Defined at module level: `serve --workers N` pickles it into each worker process."""

    _head_deadline = None  # the timer for the next head, while one is awaited
    _head_begun = False  # a request's first bytes came since the timer was set

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_message_begin(self) -> None:
        self._head_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()  # one timer at a time: the last answer's
        self._head_begun = False
        self._head_deadline = self.loop.call_later(HEAD_TIMEOUT, self._head_overdue)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_overdue(self) -> None:
        # A head that came disarmed the timer; a pipelined one, come before it was armed, may still be answered
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        # Part of a head came. (Nothing, or only the rest of a body answered before it all came, a refused
        # upload's or a 404's: the connection is closed without a word, its answer went out already.)
        if self._head_begun:
            detail = f"request headers not received within {HEAD_TIMEOUT:g} s: send them faster\n".encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(detail), detail))
        self.transport.close()
