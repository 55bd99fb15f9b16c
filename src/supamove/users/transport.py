"""The HTTP/1.1 transport under the Stack Auth client: the standard library's http.client, one kept-alive
connection per thread.

Why not httpx's own transport: migrate-users sends one request per user, and httpcore spends 0.5 to 0.7 ms
of processor time on each (its pool's lock, h11's parsing in Python), where http.client spends under
0.2 ms. On a small machine shared with both databases, that time is the users step's: it halves
what creating users costs the processor. httpx stays the client above it (requests, responses,
timeouts, the errors the retries are decided on); this only moves bytes. Through a proxy the
environment names, httpx's own transport carries the requests (client.py).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from typing import Any

import httpx


class _Connection(http.client.HTTPConnection):
    """A request's head and its body (bytes) in one send(): http.client sends them apart, two TCP segments and
    twice the system calls on both sides."""

    _body: bytes | None = None

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            self._body, message_body = message_body, None
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)
        finally:
            self._body = None  # never sent with another request's head

    def send(self, data: Any) -> None:
        if self._body is not None and isinstance(data, bytes):  # the head endheaders sends: the body follows it
            data, self._body = data + self._body, None
        super().send(data)


class _TLSConnection(_Connection, http.client.HTTPSConnection):
    pass


class StdlibTransport(httpx.BaseTransport):
    """A connection per thread and origin, reused while the server keeps it open; errors as httpx's own."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl = ssl_context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._busy: set[http.client.HTTPConnection] = set()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        conn = self._connection(request, timeout)
        try:
            conn.request(request.method, request.url.raw_path.decode("ascii"), body=request.read() or None,
                         headers=dict(request.headers.items()))  # as dict(request.headers), in one pass
            answer = conn.getresponse()
            content = answer.read()
        except TimeoutError as exc:
            self._discard(conn)
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from None
        except http.client.RemoteDisconnected:
            self._discard(conn)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                            request=request) from None
        except (http.client.HTTPException, OSError) as exc:
            self._discard(conn)
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None
        self._release(conn, keep=not answer.will_close)
        return httpx.Response(answer.status, headers=answer.getheaders(), stream=httpx.ByteStream(content),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason.encode()})

    def close(self) -> None:
        """Every connection shut, a busy one's too: a thread waiting on an answer gets an error at once."""
        with self._lock:
            self._closed = True
            conns, busy = list(self._open), set(self._busy)
            self._open.clear()
        for conn in conns:
            _shut(conn)
            if conn not in busy:
                conn.close()

    def _connection(self, request: httpx.Request, timeout: dict[str, Any]) -> http.client.HTTPConnection:
        """This thread's connection to the request's origin, kept alive and still open, or a new one."""
        origin = (request.url.scheme, request.url.host, request.url.port)
        conns: dict[tuple[Any, ...], http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(origin)
        if conn is not None and (self._closed or conn.sock is None or _readable(conn.sock)):
            self._discard(conn)  # closed by the server while idle (or data it should not have sent): not reusable
            conn = None
        if conn is None:
            conn = conns[origin] = self._connect(request, timeout)
        with self._lock:
            self._busy.add(conn)
        return conn

    def _connect(self, request: httpx.Request, timeout: dict[str, Any]) -> http.client.HTTPConnection:
        url = request.url
        if url.scheme == "https":
            conn: http.client.HTTPConnection = _TLSConnection(
                url.host, url.port, timeout=timeout.get("connect"), context=self._ssl)
        else:
            conn = _Connection(url.host, url.port, timeout=timeout.get("connect"))
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(str(exc) or "timed out", request=request) from None
        except OSError as exc:  # a refused connection, an unknown host, a certificate not trusted
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        if conn.sock is not None:
            conn.sock.settimeout(timeout.get("read"))
        with self._lock:
            self._open.add(conn)
        return conn

    def _release(self, conn: http.client.HTTPConnection, keep: bool) -> None:
        with self._lock:
            self._busy.discard(conn)
            keep = keep and not self._closed
        if not keep:
            self._discard(conn)

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(conn)
            self._busy.discard(conn)
        conns = self._local.__dict__.get("conns", {})
        for origin in [o for o, c in conns.items() if c is conn]:
            del conns[origin]
        conn.close()


def _readable(sock: socket.socket) -> bool:
    """An idle kept-alive connection with something to read has been closed by the server (or is out of step)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _shut(conn: http.client.HTTPConnection) -> None:
    if conn.sock is not None:
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
