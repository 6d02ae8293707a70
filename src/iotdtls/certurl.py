"""Client certificate URLs (RFC 6066 §5, CRT-7): the server fetches the client's chain.

A client that negotiated client_certificate_url may send a CertificateURL message (a list of
URLs, each with the SHA-1 of what it points to) instead of its Certificate. This module is the
server's side of that: a pluggable fetcher and the check of every fetched item against its
hash. It does blocking I/O and is meant for the adapters (run it in a worker thread); the
sans-I/O core never imports it.

* `CertificateFetcher`: `(url, size_limit, timeout) -> bytes`, the bytes at `url`, at most
  `size_limit` of them, within `timeout` seconds; failures raise `CertificateFetchError` (or
  `OSError`).
* `default_fetcher`: http and https URLs with those limits (RFC 6066 §5: a server MUST
  support http and MAY support other schemes). `make_fetcher` builds one with another TLS
  context or other schemes: file URLs (RFC 8089, local regular files) only when asked for,
  `make_fetcher(schemes=("http", "https", "file"))`. Redirects are followed only to the same
  scheme, at most `MAX_REDIRECTS` times; an http(s) URL with user information or a port
  outside 1..65535 is refused, its message naming that part.
  Mind what it means on a server: the fetch runs before the client's chain is validated, so
  a client with no credentials at all makes the server send GET requests wherever it likes,
  and learns from the alert: bad_certificate_hash_value (rather than
  certificate_unobtainable) says the URL answered, in time, with at most `size_limit` bytes,
  and an alert of the chain's own (a hash that matched) that those bytes are the ones it
  guessed. Over http(s) that tells whether a host and port the server can reach serves there
  (and, from how long the alert takes, whether an address answers at all); with file URLs,
  whether a path exists, is a regular file of at most `size_limit` bytes and is readable by
  the server's user, and whether its content is what the client guessed. A server that faces
  untrusted clients should pass a fetcher limited to its own certificate host
  (`make_fetcher(schemes=("https",))` and a wrapper that checks the host).
* `fetch_client_chain`: fetch each `individual_certs` URL in order (leaf first, RFC 6066 §5),
  compare its SHA-1 with the one sent, in constant time, and return the DER chain. A failure to
  fetch is certificate_unobtainable(111), a hash mismatch bad_certificate_hash_value(114), as
  RFC 6066 §5 prescribes. Its `cancel` event, set when the handshake has ended, stops the
  fetch early: no further URL, and `make_fetcher`'s fetchers give up at once, shutting their
  connections (a fetcher of the application's is not interrupted: its URL is let finish).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import socket
import ssl
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Sequence
from typing import IO, Any, Final, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

from iotdtls.crypto import constant_time_equal
from iotdtls.errors import AlertDescription, ProtocolError

__all__ = [
    "DEFAULT_CERTIFICATE_SIZE_LIMIT",
    "DEFAULT_FETCH_TIMEOUT",
    "DEFAULT_MAX_URLS",
    "MAX_REDIRECTS",
    "CertificateFetchError",
    "CertificateFetcher",
    "default_fetcher",
    "fetch_client_chain",
    "make_fetcher",
]

CertificateFetcher = Callable[[str, int, float], bytes]
"""`(url, size_limit, timeout_seconds) -> the bytes at url`."""

DEFAULT_CERTIFICATE_SIZE_LIMIT: Final = 16 * 1024
"""Bytes per fetched certificate: a P-256 certificate is well under 1 KiB, a large RSA one with
many names a few KiB."""
DEFAULT_FETCH_TIMEOUT: Final = 10.0
"""Seconds for the whole chain: well inside a client's retransmission budget."""
DEFAULT_MAX_URLS: Final = 4
"""URLs fetched at most: a leaf, two CAs (DEFAULT_MAX_CHAIN_DEPTH) and a root sent along."""
MAX_REDIRECTS: Final = 4

_HTTP_SCHEMES = frozenset({"http", "https"})
_ALL_SCHEMES = ("http", "https", "file")
#: What `make_fetcher` and `default_fetcher` fetch unless told: file URLs would let any
#: client, before it is authenticated, probe the server's files (see the module's text).
_DEFAULT_SCHEMES = ("http", "https")
_READ_CHUNK = 16 * 1024
_SHOWN_URL = 80
#: How often a fetch looks at its `cancel` event (seconds).
_CANCEL_POLL = 0.02
#: The longest a thread join or a socket timeout waits (seconds; both count nanoseconds in a
#: signed 64-bit integer: about 292 years). A longer `timeout`, inf included, which the
#: configuration accepts as it does for its other timeouts, waits that long: as good as for
#: ever, where the raw value made every fetch raise OverflowError.
_LONGEST_WAIT: Final = threading.TIMEOUT_MAX

#: The `cancel` event of the `fetch_client_chain` running in this thread, for `_within` (a
#: fetcher is called as `(url, size_limit, timeout)`, also through an application's wrapper).
_current = threading.local()


class CertificateFetchError(Exception):
    """A certificate URL could not be fetched; the message is one line saying why."""


def make_fetcher(
    *,
    ssl_context: ssl.SSLContext | None = None,
    schemes: Collection[str] = _DEFAULT_SCHEMES,
) -> CertificateFetcher:
    """A fetcher for the URL `schemes` (of http, https, file; default http and https: file
    only when named, RFC 6066 §5 leaves other schemes to the server and their security
    implications with it); https checks the server with `ssl_context` (default: the
    system's trust store)."""
    allowed = frozenset(schemes)
    if not allowed or not allowed <= set(_ALL_SCHEMES):
        raise ValueError(f"certificate URL schemes must be among {', '.join(_ALL_SCHEMES)}")

    def fetch(url: str, size_limit: int, timeout: float) -> bytes:
        parts = _split(url)
        scheme = parts.scheme.lower()
        if scheme not in allowed:
            raise CertificateFetchError(
                f"{_describe(parts)}: the URL scheme is not one of {', '.join(sorted(allowed))}"
            )
        if scheme == "file":
            return _within(timeout, functools.partial(_read_file, parts, size_limit), parts)
        _check_authority(parts)
        deadline = _Deadline(timeout)
        job = functools.partial(_read_http, url, size_limit, deadline, ssl_context)
        return _within(timeout, job, parts, deadline.expire)

    return fetch


def _within(
    timeout: float,
    job: Callable[[], bytes],
    parts: SplitResult,
    expire: Callable[[], None] | None = None,
) -> bytes:
    """Run `job` in a worker thread and give up after `timeout` seconds (name resolution has
    no time limit of its own), or at once when the `cancel` event of the `fetch_client_chain`
    calling it is set. `expire`, called when the time is up (or cancelled), makes the worker
    end: an HTTP fetch's `_Deadline.expire` shuts its connection, which wakes a blocked read."""
    outcome: list[bytes | Exception] = []

    def run() -> None:
        try:
            outcome.append(job())
        except Exception as exc:  # handed to the caller below
            outcome.append(exc)

    worker = threading.Thread(target=run, name="iotdtls-certurl", daemon=True)
    worker.start()
    cancel: threading.Event | None = getattr(_current, "cancel", None)
    if cancel is None:
        worker.join(min(max(timeout, 0.0), _LONGEST_WAIT))
    else:
        end = time.monotonic() + timeout
        while worker.is_alive() and not cancel.is_set() and (left := end - time.monotonic()) > 0:
            worker.join(min(left, _CANCEL_POLL))
    if not outcome and expire is not None:
        expire()
    if not outcome and cancel is not None and cancel.is_set():
        raise CertificateFetchError(f"{_describe(parts)}: cancelled, the handshake has ended")
    if not outcome:
        raise CertificateFetchError(f"{_describe(parts)}: no answer within {timeout:g} s")
    result = outcome[0]
    if isinstance(result, CertificateFetchError):
        raise result
    if isinstance(result, (OSError, http.client.HTTPException, ValueError)):
        raise CertificateFetchError(f"{_describe(parts)}: {_reason(result)}") from None
    if isinstance(result, Exception):
        raise result
    return result


def _read_http(
    url: str, size_limit: int, deadline: _Deadline, context: ssl.SSLContext | None
) -> bytes:
    """GET `url` (and its redirects) over connections `deadline` can shut."""
    opener = urllib.request.build_opener(
        _SameSchemeRedirects(), _HttpHandler(deadline), _HttpsHandler(deadline, context)
    )
    try:
        with opener.open(url, timeout=deadline.remaining()) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > size_limit:
                raise CertificateFetchError(
                    f"{_describe(urlsplit(url))}: {length} bytes, more than {size_limit}"
                )
            return _read_limited(response, size_limit, urlsplit(url))
    finally:
        deadline.release()


class _Deadline:
    """The end of one HTTP fetch (RFC 6066 §5: it must not outlive its handshake) and the
    TCP connections it opened. http.client reads the status line and headers line by line,
    the socket timeout bounding each read only: a server trickling one byte at a time would
    keep the worker and its connection for ever. `expire` shuts every connection down (on a
    duplicate descriptor, so that a socket closed meanwhile is never confused with another),
    which ends a blocked read, TLS handshake included, at once."""

    def __init__(self, timeout: float) -> None:
        self.at = time.monotonic() + timeout
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = False

    def remaining(self) -> float:
        """Seconds left, as a socket timeout (never 0: that would make it non-blocking; at most
        `_LONGEST_WAIT`, which `settimeout` takes)."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise CertificateFetchError("no time left")
        return min(left, _LONGEST_WAIT)

    def watch(self, sock: socket.socket) -> None:
        twin = sock.dup()
        with self._lock:
            self._sockets.append(twin)
            if self._expired:
                _shut(twin)

    def expire(self) -> None:
        with self._lock:
            self._expired = True
            for twin in self._sockets:
                _shut(twin)

    def release(self) -> None:
        """Close the duplicates (the worker is done with the connections)."""
        with self._lock:
            for twin in self._sockets:
                twin.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedConnection(http.client.HTTPConnection):
    """A TCP connection made within the time left and handed to its `_Deadline`."""

    deadline: _Deadline

    def connect(self) -> None:
        self.timeout = self.deadline.remaining()
        super().connect()
        self.deadline.watch(self.sock)


class _WatchedTlsConnection(http.client.HTTPSConnection, _WatchedConnection):
    """https: `HTTPSConnection.connect` makes the TCP connection with `_WatchedConnection`'s
    (next in the method order), so it is watched during the TLS handshake too."""


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(_WatchedConnection, self.deadline), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self.deadline = deadline
        self.context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _watched(_WatchedTlsConnection, self.deadline), req, context=self.context
        )


def _watched(
    kind: type[_WatchedConnection], deadline: _Deadline
) -> Callable[..., http.client.HTTPConnection]:
    """What `do_open` calls to make a connection: one of `kind` watched by `deadline`."""

    def make(host: str, /, **options: Any) -> http.client.HTTPConnection:
        connection = kind(host, **options)
        connection.deadline = deadline
        return connection

    return make


def _read_file(parts: SplitResult, size_limit: int) -> bytes:
    """A local regular file (RFC 8089): host empty or localhost; FIFOs, devices and
    directories refused before they are opened (opening one has side effects: a FIFO's writer
    is let go, a watchdog, tape or tty device reacts). The file opened is checked again to be
    the regular file looked at (and it is opened non-blocking, so should the path be swapped
    for a FIFO in between, by someone who may write to its directory, it cannot hang the
    worker)."""
    if parts.netloc not in ("", "localhost"):
        raise CertificateFetchError(f"{_describe(parts)}: file URLs must name a local file")
    path = urllib.request.url2pathname(unquote(parts.path))
    seen = os.stat(path)
    if not stat.S_ISREG(seen.st_mode):
        raise CertificateFetchError(f"{_describe(parts)}: not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # close-on-exec already (PEP 446)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (
            seen.st_dev,
            seen.st_ino,
        ):
            raise CertificateFetchError(f"{_describe(parts)}: not a regular file")
        if info.st_size > size_limit:
            raise CertificateFetchError(
                f"{_describe(parts)}: {info.st_size} bytes, more than {size_limit}"
            )
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        # st_size can be short (a file still growing, or 0 as in /proc): the read is bounded too.
        return _read_limited(file, size_limit, parts)


class _Stream(Protocol):
    def read1(self, size: int, /) -> bytes: ...


def _read_limited(stream: _Stream, size_limit: int, parts: SplitResult) -> bytes:
    """At most `size_limit` bytes of `stream` (a slow one is ended by its fetch's deadline,
    which shuts its connection)."""
    data = bytearray()
    while chunk := stream.read1(_READ_CHUNK):
        data += chunk
        if len(data) > size_limit:
            raise CertificateFetchError(f"{_describe(parts)}: more than {size_limit} bytes")
    return bytes(data)


class _SameSchemeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the scheme of the request (http to http, https to https),
    without reading the redirect's body: urllib reads it whole before following, so a server
    the peer named could send it as fast, and as long, as the fetch's time allows."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        old, new = urlsplit(req.full_url), urlsplit(newurl)
        if new.scheme.lower() != old.scheme.lower() or new.scheme.lower() not in _HTTP_SCHEMES:
            raise CertificateFetchError(
                f"{_describe(old)}: redirect to another scheme ({new.scheme or 'none'}) refused"
            )
        new_request = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new_request is not None:
            fp.close()  # urllib's read of the body to discard then finds nothing to read
        return new_request


def _split(url: str) -> SplitResult:
    """`url` in parts; `CertificateFetchError` for one that does not parse (a bracketed host
    that is not an IPv6 address, say): the client sent it, so it is unobtainable, not a fault
    of the fetcher. The URL is not shown: it could hold user information."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise CertificateFetchError(f"a URL that does not parse ({exc})") from None


def _check_authority(parts: SplitResult) -> None:
    """An http(s) URL's user information and port, refused with a line naming the part (else
    the fetch fails later as a failed name lookup, or at the default port)."""
    if "@" in parts.netloc:  # RFC 9110 §4.2.4: deprecated, and a sender must not generate it
        raise CertificateFetchError(
            f"{_describe(parts)}: user information (before '@') in an http(s) URL is refused"
        )
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        port = 0
    if port == 0:
        raise CertificateFetchError(f"{_describe(parts)}: the port is not a number from 1 to 65535")


def _port_text(parts: SplitResult) -> str | None:
    """The port of `parts` as written (None without one): all that follows the host's first
    ":", as urllib reads it (`SplitResult.port`), a second ":" included."""
    host_port = parts.netloc.rpartition("@")[2]
    if host_port.startswith("["):
        host_port = host_port.partition("]")[2]
    _, colon, port = host_port.partition(":")
    return port if colon else None


def _shown(url: str) -> str:
    """`url` as `_describe` shows it, whether or not it parses."""
    try:
        return _describe(urlsplit(url))
    except ValueError:
        return "a URL that does not parse"


def _describe(parts: SplitResult) -> str:
    """A URL for messages: no user information and no query, printable, bounded."""
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # shown as written: dropping it would name the default port
        port = f":{_port_text(parts)}"
    host = parts.hostname or ""
    text = f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}{parts.path}"
    shown = "".join(c if c.isprintable() and c.isascii() else "?" for c in text)
    return shown if len(shown) <= _SHOWN_URL else shown[: _SHOWN_URL - 3] + "..."


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        if 300 <= exc.code < 400:  # urllib refuses the scheme, or the redirects loop
            return f"redirect not followed (HTTP status {exc.code})"
        return f"HTTP status {exc.code}"
    # A URLError stands for its reason: an exception (a refused connection), or a text.
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return " ".join(str(text).split())


default_fetcher: Final[CertificateFetcher] = make_fetcher()
"""Fetches http and https (system trust store) URLs; file URLs are refused (see `make_fetcher`)."""


def fetch_client_chain(
    urls_and_hashes: Sequence[tuple[str, bytes]],
    fetcher: CertificateFetcher,
    size_limit: int = DEFAULT_CERTIFICATE_SIZE_LIMIT,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    *,
    max_urls: int = DEFAULT_MAX_URLS,
    cancel: threading.Event | None = None,
) -> tuple[bytes, ...]:
    """The client's chain (DER, in the order sent: leaf first) from a CertificateURL of type
    individual_certs (RFC 6066 §5); `timeout` bounds all the fetches together. `cancel`, set
    when the handshake has ended, stops the fetch early (see the module's text).

    Raises `ProtocolError` with certificate_unobtainable when a URL cannot be fetched in time
    (or the fetch was cancelled) or there are more than `max_urls`, and with
    bad_certificate_hash_value when what was fetched does not have the SHA-1 that was sent
    (RFC 6066 §5).
    """
    outer = getattr(_current, "cancel", None)
    _current.cancel = cancel
    try:
        return _fetch_chain(urls_and_hashes, fetcher, size_limit, timeout, max_urls, cancel)
    finally:
        _current.cancel = outer


def _fetch_chain(
    urls_and_hashes: Sequence[tuple[str, bytes]],
    fetcher: CertificateFetcher,
    size_limit: int,
    timeout: float,
    max_urls: int,
    cancel: threading.Event | None,
) -> tuple[bytes, ...]:
    unobtainable = AlertDescription.certificate_unobtainable
    if not urls_and_hashes or len(urls_and_hashes) > max_urls:
        raise ProtocolError(
            f"the client sent {len(urls_and_hashes)} certificate URLs (1 to {max_urls} accepted)",
            unobtainable,
        )
    deadline = time.monotonic() + timeout
    chain: list[bytes] = []
    for number, (url, sha1_hash) in enumerate(urls_and_hashes, 1):
        if cancel is not None and cancel.is_set():
            raise ProtocolError(
                "the certificate fetch was cancelled: the handshake has ended", unobtainable
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolError(
                f"the client's certificate URLs took longer than {timeout:g} s", unobtainable
            )
        try:
            data = fetcher(url, size_limit, remaining)
        except (CertificateFetchError, OSError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ProtocolError(
                f"certificate URL {number} could not be fetched: {reason}", unobtainable
            ) from None
        if not constant_time_equal(hashlib.sha1(data, usedforsecurity=False).digest(), sha1_hash):
            raise ProtocolError(
                f"the certificate at URL {number} ({_shown(url)}) does not match "
                "the SHA-1 hash sent with it",
                AlertDescription.bad_certificate_hash_value,
            )
        chain.append(data)
    return tuple(chain)
