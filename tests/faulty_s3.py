"""A fault-injecting HTTP proxy in front of the real local S3 server, for tests of what transient
S3 errors do: it answers the next N requests with ``503 SlowDown`` (what S3 says when throttling)
and forwards every other request, byte for byte, to the server.

Requests are signed for the proxy's address (the client is pointed at it with
``AWS_ENDPOINT_URL``) and forwarded with their own ``Host`` header, so the server checks the
same signature the client computed.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
# Hop-by-hop headers, and Expect (this proxy already answered "100 Continue" and sends the body).
_NOT_FORWARDED = frozenset({"connection", "keep-alive", "expect"})


class FaultyS3Proxy:
    """``with FaultyS3Proxy("http://127.0.0.1:PORT") as proxy:`` -- then ``proxy.url`` is the
    endpoint to use, ``proxy.fail_next(n)`` makes the next ``n`` requests fail with 503, and
    ``proxy.requests`` lists ``(method, path, status)`` of every request seen."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._failures_left = 0
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = count

    def failed(self) -> int:
        """Requests answered with the injected 503 so far."""
        return sum(1 for _, _, status in self.requests if status == 503)

    def _take_failure(self) -> bool:
        with self._lock:
            if self._failures_left <= 0:
                return False
            self._failures_left -= 1
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the base class's name
                pass

            def _read_body(self) -> bytes:
                """The request body as sent: raw chunks (aws-chunked uploads) or Content-Length bytes."""
                if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
                    length = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(length) if length else b""
                raw = bytearray()
                while True:
                    line = self.rfile.readline()
                    raw += line
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        break
                    raw += self.rfile.read(size + 2)  # the chunk and its CRLF
                while True:  # trailers, up to the empty line
                    line = self.rfile.readline()
                    raw += line
                    if line in (b"\r\n", b"\n", b""):
                        return bytes(raw)

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                proxy.requests.append((self.command, self.path, status))
                self.send_response(status)
                # A HEAD answer has no body but the Content-Length of the object: keep the server's.
                length = next((value for name, value in headers if name.lower() == "content-length"), None)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "content-length", *_NOT_FORWARDED):
                        self.send_header(name, value)
                self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._read_body()
                if proxy._take_failure():
                    self._reply(503, [("Content-Type", "application/xml")], SLOW_DOWN)
                    return
                connection = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                try:
                    connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() not in _NOT_FORWARDED:
                            connection.putheader(name, value)
                    connection.endheaders(body or None)
                    response = connection.getresponse()
                    self._reply(response.status, response.getheaders(), response.read())
                finally:
                    connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        return Handler

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
