"""A real HTTP server on 127.0.0.1 (a fresh port from the kernel) in a thread, for tests that
fetch, or must not fetch, certificates by URL. Helper module, not a test file.

`LocalHttpServer(routes)` serves `routes[path]`, a `Route` (status, body, headers, an optional
delay before the body and a body dribbled out slowly), records every request path in `hits`,
and answers 404 to anything else; with `tls=` (a server-side `ssl.SSLContext`) it speaks
https. It serves from construction until `server_close()` (or the end of its `with` block);
`url(path)` gives the address.
"""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: seconds to wait before sending the status line
    delay: float = 0.0
    #: seconds between single bytes of the body (a slow server)
    dribble: float = 0.0
    #: send no Content-Length (the body ends when the connection closes)
    chunked_close: bool = False
    #: seconds between single bytes of a header line that never ends (after the status line)
    trickle_headers: float = 0.0


class _Handler(http.server.BaseHTTPRequestHandler):
    server: LocalHttpServer

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path, Route(b"not found", 404))
        if route.delay:
            time.sleep(route.delay)
        if route.trickle_headers:
            self._trickle(route.trickle_headers)
            return
        self.send_response(route.status)
        for key, value in route.headers.items():
            self.send_header(key, value)
        if not route.chunked_close:
            self.send_header("Content-Length", str(len(route.body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            if route.dribble:
                for i in range(len(route.body)):
                    self.wfile.write(route.body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(route.dribble)
            else:
                self.wfile.write(route.body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if route.chunked_close:
            self.close_connection = True

    def _trickle(self, pause: float) -> None:
        """A status line, then one header byte at a time until the client hangs up (recorded
        in `hung_up`) or a minute has passed."""
        try:
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            for _ in range(int(60 / pause)):
                self.wfile.write(b"X")
                self.wfile.flush()
                time.sleep(pause)
        except OSError:
            self.server.hung_up.append(self.path)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still dribbling must not hold up the test's exit

    def __init__(
        self, routes: dict[str, Route] | None = None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "http" if tls is None else "https"
        self.routes: dict[str, Route] = dict(routes or {})
        self.hits: list[str] = []
        #: paths whose client closed the connection while a trickled answer was being sent
        self.hung_up: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def server_close(self) -> None:
        """Stop serving (the thread started with the server), then close the socket; the
        context manager of `socketserver` calls this on exit."""
        self.shutdown()
        super().server_close()
        self._thread.join(5.0)
