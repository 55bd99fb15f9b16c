"""The HTTP/1.1 transport under the Stack Auth client: the standard library's http.client, one kept-alive
connection per thread.

Why not httpx's own transport: migrate-users sends one request per user, and httpcore spends 0.5 to 0.7 ms
of processor time on each (its pool's lock, h11's parsing in Python), where http.client spends under
0.2 ms. Nor httpx's Request and Response models: building them took 0.15 ms more of each request (headers
normalised twice, the URL, the streams), for the three things the client reads of an answer. On a small
machine shared with both databases, that time is the users step's. httpx's exceptions stay the errors
the retries are decided on. Through a proxy the environment names, httpx carries the requests (client.py).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import httpx

Origin = tuple[str, str, int]  # scheme, host, port


@dataclass(slots=True)
class Answer:
    """An HTTP answer as the Stack Auth client reads it, and the request it answers (for its messages)."""

    method: str
    path: str  # without the query
    status_code: int
    headers: dict[str, str]  # names in lower case
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        """An answer httpx read (through a proxy)."""
        return cls(response.request.method, response.request.url.path, response.status_code,
                   {name.lower(): value for name, value in response.headers.items()}, response.content)


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


class StdlibTransport:
    """A connection per thread and origin, reused while the server keeps it open; errors as httpx's own."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl = ssl_context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._busy: set[http.client.HTTPConnection] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def exchange(self, method: str, origin: Origin, target: str, headers: dict[str, str], body: bytes | None,
                 timeout: tuple[float | None, float | None]) -> Answer:
        """One request (`target`: its path and query) and its answer; `timeout`: (to connect, to read)."""
        conn = self._connection(origin, timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            answer = conn.getresponse()
            content = answer.read()
        except TimeoutError as exc:
            self._discard(conn)
            raise httpx.ReadTimeout(str(exc) or "timed out") from None
        except http.client.RemoteDisconnected:
            self._discard(conn)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from None
        except (http.client.HTTPException, OSError) as exc:
            self._discard(conn)
            raise httpx.ReadError(str(exc) or type(exc).__name__) from None
        self._release(conn, keep=not answer.will_close)
        names = {name.lower(): value for name, value in answer.getheaders()}
        return Answer(method, target.partition("?")[0], answer.status, names,
                      _decoded(content, names.get("content-encoding", "")))

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

    def _connection(self, origin: Origin, timeout: tuple[float | None, float | None]) -> http.client.HTTPConnection:
        """This thread's connection to the origin, kept alive and still open, or a new one."""
        conns: dict[Origin, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(origin)
        if conn is not None and (self._closed or conn.sock is None or _readable(conn.sock)):
            self._discard(conn)  # closed by the server while idle (or data it should not have sent): not reusable
            conn = None
        if conn is None:
            conn = conns[origin] = self._connect(origin, timeout)
        with self._lock:
            self._busy.add(conn)
        return conn

    def _connect(self, origin: Origin, timeout: tuple[float | None, float | None]) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            conn: http.client.HTTPConnection = _TLSConnection(host, port, timeout=timeout[0], context=self._ssl)
        else:
            conn = _Connection(host, port, timeout=timeout[0])
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(str(exc) or "timed out") from None
        except OSError as exc:  # a refused connection, an unknown host, a certificate not trusted
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        if conn.sock is not None:
            conn.sock.settimeout(timeout[1])
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


def _decoded(content: bytes, coding: str) -> bytes:
    """The body as sent before a compression a proxy applied anyway (http.client asks for none, as httpx
    decoded it); one supamove cannot undo is left as it is, to be refused as no JSON."""
    coding = coding.strip().lower()
    try:
        if coding in ("gzip", "x-gzip"):
            return zlib.decompress(content, 16 + zlib.MAX_WBITS)
        if coding == "deflate":  # zlib-wrapped as the standard says, or raw as some servers send it
            return zlib.decompress(content) if content[:1] == b"\x78" else zlib.decompress(content, -zlib.MAX_WBITS)
    except zlib.error:
        pass
    return content


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
