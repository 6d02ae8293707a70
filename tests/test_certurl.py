"""Client certificate URLs (RFC 6066 §5, CRT-7): the default fetcher against a real HTTP(S)
server on loopback and real files, its limits, and the hash check of fetch_client_chain."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization

from iotdtls.certurl import (
    DEFAULT_MAX_URLS,
    CertificateFetchError,
    _within,
    default_fetcher,
    fetch_client_chain,
    make_fetcher,
)
from iotdtls.crypto.x509 import DEFAULT_MAX_CHAIN_DEPTH, TrustStore, verify_client_chain
from iotdtls.errors import AlertDescription, ProtocolError
from tests.local_http import LocalHttpServer, Route
from tests.peers import holds_within
from tests.pki import NOW, ca_chain, client_leaf, ip, root, server_leaf

pytestmark = pytest.mark.req("CRT-7")

LIMIT = 4096
CERT = b"\x30\x82" + bytes(range(256)) * 3  # any bytes: the fetcher does not parse


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


#: Every scheme the fetcher knows: file URLs are fetched only when asked for.
WITH_FILES = ("http", "https", "file")


def fetch_error(url: str, limit: int = LIMIT, timeout: float = 5.0) -> str:
    with pytest.raises(CertificateFetchError) as info:
        make_fetcher(schemes=WITH_FILES)(url, limit, timeout)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture
def web() -> Iterator[LocalHttpServer]:
    with LocalHttpServer({"/cert.der": Route(CERT)}) as server:
        yield server


def no_fetch_worker() -> bool:
    return not any(t.name == "iotdtls-certurl" for t in threading.enumerate())


# -- the default fetcher ----------------------------------------------------------------------


def test_http_fetch_returns_the_body(web: LocalHttpServer) -> None:
    assert default_fetcher(web.url("/cert.der"), LIMIT, 5.0) == CERT
    assert web.hits == ["/cert.der"]


def _tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 and a client context that trusts it."""
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_before": now - datetime.timedelta(days=1),
             "not_after": now + datetime.timedelta(days=1)}
    anchor = root(**valid)
    leaf = server_leaf(anchor, san=ip("127.0.0.1"), **valid)
    (tmp_path / "cert.pem").write_bytes(leaf.pem)
    (tmp_path / "key.pem").write_bytes(leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server_side, ssl.create_default_context(cadata=anchor.pem.decode())


def test_https_fetch_checks_the_server_with_the_given_trust(tmp_path: Path) -> None:
    server_side, trusting = _tls_pair(tmp_path)
    with LocalHttpServer({"/cert.der": Route(CERT)}, tls=server_side) as web:
        url = web.url("/cert.der")
        assert url.startswith("https://")
        assert make_fetcher(ssl_context=trusting)(url, LIMIT, 5.0) == CERT
        assert "certificate" in fetch_error(url)  # the system trust store does not know it
        assert web.hits == ["/cert.der"]


def test_size_limit_with_and_without_content_length(web: LocalHttpServer) -> None:
    web.routes["/close"] = Route(CERT, chunked_close=True)
    assert default_fetcher(web.url("/cert.der"), len(CERT), 5.0) == CERT
    assert default_fetcher(web.url("/close"), len(CERT), 5.0) == CERT
    assert f"{len(CERT)} bytes, more than" in fetch_error(web.url("/cert.der"), len(CERT) - 1)
    assert "/close: more than" in fetch_error(web.url("/close"), len(CERT) - 1)


def test_a_body_of_many_reads_arrives_whole(web: LocalHttpServer, tmp_path: Path) -> None:
    big = os.urandom(40 * 1024)  # several reads of the fetcher's 16 KiB chunks
    web.routes["/big"] = Route(big, chunked_close=True)
    (tmp_path / "big.der").write_bytes(big)
    for url in (web.url("/big"), (tmp_path / "big.der").as_uri()):
        assert make_fetcher(schemes=WITH_FILES)(url, 64 * 1024, 5.0) == big


@pytest.mark.parametrize("route", [Route(CERT, delay=3.0), Route(CERT[:200], dribble=0.02)])
def test_time_limit_covers_a_silent_and_a_dribbling_server(web: LocalHttpServer,
                                                           route: Route) -> None:
    web.routes["/slow"] = route
    started = time.monotonic()
    fetch_error(web.url("/slow"), timeout=0.5)
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("timeout", [1e10, math.inf])
def test_a_timeout_past_what_a_thread_or_socket_waits_is_as_good_as_for_ever(
    web: LocalHttpServer, tmp_path: Path, timeout: float
) -> None:
    """Probe CH: ServerConfig takes any certificate_url_timeout > 0, inf included (as its other
    timeouts); a thread join or a socket timeout past threading.TIMEOUT_MAX (~292 years)
    raised a raw OverflowError for every URL, and the client got internal_error. The waits
    are clamped there: with and without a `cancel` event (which polls the worker instead of
    joining it once), over http and from a file."""
    assert timeout > threading.TIMEOUT_MAX
    assert default_fetcher(web.url("/cert.der"), LIMIT, timeout) == CERT
    (tmp_path / "c.der").write_bytes(CERT)
    assert make_fetcher(schemes=("file",))((tmp_path / "c.der").as_uri(), LIMIT, timeout) == CERT
    entries = [(web.url("/cert.der"), sha1(CERT))]
    cancel = threading.Event()
    assert fetch_client_chain(entries, default_fetcher, LIMIT, timeout, cancel=cancel) == (CERT,)


def test_a_stalled_lookup_is_cut_at_the_time_limit() -> None:
    """Name resolution has no timeout of its own: the fetch runs in a worker the caller stops
    waiting for."""
    hung = threading.Event()
    started = time.monotonic()
    with pytest.raises(CertificateFetchError, match=r"no answer within 0\.05 s"):
        _within(0.05, lambda: bytes(hung.wait(5.0)), urlsplit("http://stalled.example/"))
    assert time.monotonic() - started < 0.8
    (worker,) = [t for t in threading.enumerate() if t.name == "iotdtls-certurl"]
    assert worker.daemon  # a worker still stuck does not hold the process at exit
    hung.set()
    worker.join(2.0)


@pytest.mark.parametrize(("failure", "reason"), [
    (OSError(2, "No such file or directory"), "No such file or directory"),
    (OSError(), "OSError"),
    (ValueError("two\n  lines"), "two lines"),
])
def test_a_failed_fetch_gives_its_reason_on_one_line(failure: Exception, reason: str) -> None:
    def job() -> bytes:
        raise failure

    with pytest.raises(CertificateFetchError) as info:
        _within(5.0, job, urlsplit("http://ca.example/leaf.der"))
    assert str(info.value) == f"http://ca.example/leaf.der: {reason}"


@pytest.mark.parametrize("route", [Route(CERT, delay=2.5), Route(CERT[:200], dribble=0.02)])
def test_a_worker_stops_reading_at_the_deadline(web: LocalHttpServer, route: Route) -> None:
    """Silent or slow, the server does not keep the worker: its socket has the time limit."""
    web.routes["/slow"] = route
    fetch_error(web.url("/slow"), timeout=0.3)
    assert holds_within(no_fetch_worker, 2.0), "the fetch worker outlived its deadline"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_server_trickling_its_headers_loses_the_worker_and_connection_at_the_deadline(
    scheme: str, tmp_path: Path
) -> None:
    """http.client reads headers a line at a time, each read bounded by the socket timeout
    only: the deadline shuts the connection, so the worker ends and the socket closes."""
    tls, trusting = _tls_pair(tmp_path) if scheme == "https" else (None, None)
    with LocalHttpServer({"/trickle": Route(trickle_headers=0.05)}, tls=tls) as web:
        started = time.monotonic()
        with pytest.raises(CertificateFetchError, match=r"no answer within 0\.5 s"):
            make_fetcher(ssl_context=trusting)(web.url("/trickle"), LIMIT, 0.5)
        assert time.monotonic() - started < 1.0
        assert holds_within(lambda: no_fetch_worker() and web.hung_up, 1.0), (
            "the fetch outlived its deadline"
        )
        assert web.hung_up == ["/trickle"]


def test_http_errors_and_refused_connections(web: LocalHttpServer) -> None:
    assert "HTTP status 404" in fetch_error(web.url("/missing"))
    for status in (300, 399):
        web.routes[f"/{status}"] = Route(status=status)
        assert fetch_error(web.url(f"/{status}")).endswith(
            f": redirect not followed (HTTP status {status})")
    web.routes["/400"] = Route(status=400)
    assert fetch_error(web.url("/400")).endswith("/400: HTTP status 400")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert fetch_error(f"http://127.0.0.1:{port}/cert.der") == (
        f"http://127.0.0.1:{port}/cert.der: Connection refused")


@pytest.mark.parametrize(("url", "shown"), [
    ("ftp://ca.example/leaf.der", "ftp://ca.example/leaf.der"),
    ("ftp://ca.example:2121/leaf.der", "ftp://ca.example:2121/leaf.der"),
    # No such port: shown as written (dropped, it read as the default port).
    ("ftp://ca.example:99999/leaf.der", "ftp://ca.example:99999/leaf.der"),
    ("ftp://ca.example:x\x07y/leaf.der", "ftp://ca.example:x?y/leaf.der"),
    ("ftp://ca.example/l\x07\u00e9af.der?key=s3cret", "ftp://ca.example/l??af.der"),
    ("ftp://ca.example/" + "x" * 62, "ftp://ca.example/" + "x" * 62),  # 79 characters
    ("ftp://ca.example/" + "x" * 63, "ftp://ca.example/" + "x" * 63),  # 80
    ("ftp://ca.example/" + "x" * 64, "ftp://ca.example/" + "x" * 60 + "..."),
])
def test_messages_show_urls_printable_and_bounded(url: str, shown: str) -> None:
    assert fetch_error(url) == f"{shown}: the URL scheme is not one of file, http, https"


def test_a_url_that_does_not_parse_is_unobtainable_not_a_fetcher_fault() -> None:
    """A client's malformed URL is its own problem (certificate_unobtainable), and the URL,
    which may hold user information, is not shown."""
    assert fetch_error("http://user:s3cret@[::1/leaf.der") == (
        "a URL that does not parse (Invalid IPv6 URL)")
    assert fetch_error("http:///leaf.der") == "http:///leaf.der: no host given"
    unobtainable = AlertDescription.certificate_unobtainable
    assert refused(unobtainable, [("http://[x/leaf.der", sha1(CERT))], make_fetcher()) == (
        "certificate URL 1 could not be fetched: a URL that does not parse (Invalid IPv6 URL)")
    # A fetcher of the application's may take such a URL; the mismatch message still reads.
    assert "(a URL that does not parse)" in refused(
        AlertDescription.bad_certificate_hash_value, [("http://[x/", sha1(CERT))],
        lambda *_: CERT + b"x")


def test_user_information_never_reaches_a_message(web: LocalHttpServer) -> None:
    message = fetch_error(web.url("/missing").replace("//", "//admin:s3cret@"))
    assert "s3cret" not in message and "admin" not in message


@pytest.mark.parametrize(("url", "message"), [
    # The part at fault is named, never a name lookup's "Name or service not known".
    ("http://user:s3cret@127.0.0.1:1/c.der",
     "http://127.0.0.1:1/c.der: user information (before '@') in an http(s) URL is refused"),
    ("https://user@127.0.0.1/c.der",
     "https://127.0.0.1/c.der: user information (before '@') in an http(s) URL is refused"),
    # The invalid port is shown, not dropped (which read as the default port's failure).
    ("http://127.0.0.1:99999/c.der",
     "http://127.0.0.1:99999/c.der: the port is not a number from 1 to 65535"),
    ("http://127.0.0.1:0/c.der",
     "http://127.0.0.1:0/c.der: the port is not a number from 1 to 65535"),
    ("http://127.0.0.1:abc/c.der",
     "http://127.0.0.1:abc/c.der: the port is not a number from 1 to 65535"),
    ("https://[::1]:-1/c.der",
     "https://[::1]:-1/c.der: the port is not a number from 1 to 65535"),
    # A second "]" after the port: what follows the host's first "]" (M18: `_port_text` 10).
    ("http://[::1]:99999]/c.der",
     "http://[::1]:99999]/c.der: the port is not a number from 1 to 65535"),
    # A second ":" in the port: all that follows the host, as urllib reads it (M18:
    # `_port_text` 15; the last ":"'s part alone named a port that is a number).
    ("http://ca.example:12:34/c.der",
     "http://ca.example:12:34/c.der: the port is not a number from 1 to 65535"),
    ("http://[::1]:1:2/c.der",
     "http://[::1]:1:2/c.der: the port is not a number from 1 to 65535"),
])  # fmt: skip
def test_a_bad_url_part_is_named(url: str, message: str) -> None:
    """Probe BW #7: one line naming the URL's part at fault, before any connection."""
    assert fetch_error(url) == message


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/cert.der", "data:,hello", "gopher://x/",
                                 "cert.der", "//127.0.0.1/cert.der"])
def test_other_schemes_are_refused(url: str) -> None:
    assert "scheme" in fetch_error(url)


def test_file_urls_are_fetched_only_when_asked_for(tmp_path: Path) -> None:
    """Probe CH: the fetch runs before the client's chain is validated, and the default
    fetcher read file URLs, so a client nobody trusts learned from the alert whether a path
    on the server existed as a readable regular file of at most the size limit
    (bad_certificate_hash_value) or not (certificate_unobtainable). RFC 6066 §5 asks for
    http only; the default fetches http and https, file only when named."""
    present = tmp_path / "present.txt"
    present.write_bytes(b"not a certificate")
    entries = [(present.as_uri(), sha1(CERT))], [((tmp_path / "absent").as_uri(), sha1(CERT))]
    for fetcher in (default_fetcher, make_fetcher()):
        with pytest.raises(CertificateFetchError) as info:
            fetcher(present.as_uri(), LIMIT, 5.0)
        assert str(info.value).endswith(": the URL scheme is not one of http, https")
        for urls in entries:  # present or absent: the same alert, for the scheme
            assert "scheme" in refused(AlertDescription.certificate_unobtainable, urls, fetcher)
    assert make_fetcher(schemes=WITH_FILES)(present.as_uri(), LIMIT, 5.0) == b"not a certificate"
    assert "hash" in refused(AlertDescription.bad_certificate_hash_value, entries[0],
                             make_fetcher(schemes=WITH_FILES))


def test_a_fetcher_with_fewer_schemes(web: LocalHttpServer, tmp_path: Path) -> None:
    (tmp_path / "c.der").write_bytes(CERT)
    https_only = make_fetcher(schemes=("https",))
    for url in (web.url("/cert.der"), (tmp_path / "c.der").as_uri()):
        with pytest.raises(CertificateFetchError, match="scheme"):
            https_only(url, LIMIT, 5.0)
    assert web.hits == []
    with pytest.raises(ValueError):
        make_fetcher(schemes=("ftp",))


def test_redirects_stay_on_the_same_scheme(web: LocalHttpServer, tmp_path: Path) -> None:
    (tmp_path / "c.der").write_bytes(CERT)
    for path, target in (("/moved", web.url("/cert.der")),
                         ("/to-file", (tmp_path / "c.der").as_uri()),
                         ("/to-https", web.url("/cert.der").replace("http:", "https:")),
                         ("/to-ftp", "ftp://127.0.0.1/cert.der"),
                         ("/loop", web.url("/loop"))):
        web.routes[path] = Route(status=302, headers={"Location": target})
    assert default_fetcher(web.url("/moved"), LIMIT, 5.0) == CERT
    for path in ("/to-file", "/to-https", "/to-ftp"):
        assert "redirect" in fetch_error(web.url(path))
    fetch_error(web.url("/loop"))
    assert "/cert.der" in web.hits and web.hits.count("/loop") <= 6


def test_a_redirects_body_is_not_read(web: LocalHttpServer) -> None:
    """urllib reads a redirect's body whole before following it: the server (one the peer
    named) could fill memory for as long as the fetch's time allows. The body is left
    unread: here one that would take ten seconds to arrive."""
    web.routes["/moved"] = Route(
        b"x" * 500, status=302, headers={"Location": web.url("/cert.der")}, dribble=0.02
    )
    started = time.monotonic()
    assert default_fetcher(web.url("/moved"), LIMIT, 3.0) == CERT
    assert time.monotonic() - started < 1.5
    assert web.hits == ["/moved", "/cert.der"]


def test_file_urls(tmp_path: Path) -> None:
    target = tmp_path / "a cert.der"
    target.write_bytes(CERT)
    fetch = make_fetcher(schemes=("file",))
    assert fetch(target.as_uri(), LIMIT, 5.0) == CERT
    assert fetch("file://localhost" + target.as_uri()[7:], LIMIT, 5.0) == CERT
    assert fetch(target.as_uri(), len(CERT), 5.0) == CERT
    assert "more than" in fetch_error(target.as_uri(), len(CERT) - 1)
    # A size the file system does not know (0 in /proc): the read itself stops at the limit.
    assert fetch_error("file:///proc/self/status", 10) == (
        "file:///proc/self/status: more than 10 bytes")
    assert "regular file" in fetch_error(tmp_path.as_uri())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert "regular file" in fetch_error(fifo.as_uri(), timeout=5.0)
    assert time.monotonic() - started < 2.0
    fetch_error((tmp_path / "missing").as_uri())
    assert "local file" in fetch_error("file://example.com" + target.as_uri()[7:])


def test_a_fifo_or_device_is_refused_without_being_opened(tmp_path: Path) -> None:
    """Opening has side effects: a FIFO's writer, blocked in open(), is let go (and a watchdog,
    tape or tty device reacts). The file: fetcher looks before it opens (probe BW #4): the
    writer stays blocked, and it refuses the FIFO as before."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    released = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # blocks until a reader opens the FIFO
        released.set()
        os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)  # the writer is blocked in open()
        assert not released.is_set()
        assert "not a regular file" in fetch_error(fifo.as_uri(), timeout=5.0)
        assert not released.wait(0.3), "the fetch opened the FIFO"
    finally:  # let the writer go: a reader of our own
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        thread.join(5.0)
        os.close(reader)
    assert not thread.is_alive()


def test_a_file_swapped_for_another_regular_file_once_looked_at_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file opened must be the one looked at (same st_dev and st_ino), a regular file
    also: a path swapped in between for another regular file is refused as one that is no
    longer what was checked (M18: `_read_file` 24 refused only what was neither)."""
    target = tmp_path / "cert.der"
    target.write_bytes(CERT)
    other = tmp_path / "other.der"
    other.write_bytes(CERT)
    real_open = os.open

    def swapping_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == str(target) and other.exists():
            os.replace(other, target)  # after the fetcher's os.stat, before its open
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", swapping_open)
    assert "not a regular file" in fetch_error(target.as_uri())
    assert not other.exists()


def test_refused_files_leave_no_descriptor_open(tmp_path: Path) -> None:
    big = tmp_path / "big.der"
    big.write_bytes(CERT)
    for url in (big.as_uri(), tmp_path.as_uri()):
        fetch_error(url, 10)

    def opened_here() -> list[str]:
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile (the listing's own)
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        return [target for target in targets if target.startswith(str(tmp_path))]

    assert opened_here() == []


# -- fetch_client_chain -----------------------------------------------------------------------


def test_the_fetched_chain_is_the_clients_and_validates() -> None:
    top, (middle,) = ca_chain(1)
    leaf = client_leaf(middle)
    routes = {"/leaf.der": Route(leaf.der), "/ca.der": Route(middle.der)}
    with LocalHttpServer(routes) as web:
        entries = [(web.url("/leaf.der"), sha1(leaf.der)), (web.url("/ca.der"), sha1(middle.der))]
        chain = fetch_client_chain(entries, default_fetcher, LIMIT, 5.0)
    assert chain == (leaf.der, middle.der)
    identity, _ = verify_client_chain(chain, TrustStore([top.der]), when=NOW,
                                      max_depth=DEFAULT_MAX_CHAIN_DEPTH)
    assert identity.name == "01-23-45-67-89-AB-CD-EF"


def refused(alert: AlertDescription, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        fetch_client_chain(*args, **kwargs)
    assert info.value.alert is alert, str(info.value)
    return str(info.value)


def test_a_hash_mismatch_is_bad_certificate_hash_value(web: LocalHttpServer) -> None:
    entries = [(web.url("/cert.der"), sha1(CERT)), (web.url("/cert.der"), sha1(CERT + b"x"))]
    message = refused(AlertDescription.bad_certificate_hash_value, entries, default_fetcher)
    assert "URL 2" in message
    assert AlertDescription.bad_certificate_hash_value == 114


def test_an_unobtainable_certificate_is_certificate_unobtainable(web: LocalHttpServer) -> None:
    unobtainable = AlertDescription.certificate_unobtainable
    assert unobtainable == 111
    entries = [(web.url("/cert.der"), sha1(CERT)), (web.url("/gone"), sha1(CERT))]
    assert "URL 2" in refused(unobtainable, entries, default_fetcher)
    most = [(web.url("/cert.der"), sha1(CERT))] * DEFAULT_MAX_URLS
    assert fetch_client_chain(most, default_fetcher) == (CERT,) * DEFAULT_MAX_URLS
    too_many = [(web.url("/cert.der"), sha1(CERT))] * (DEFAULT_MAX_URLS + 1)
    hits = len(web.hits)
    refused(unobtainable, too_many, default_fetcher)
    refused(unobtainable, [], default_fetcher)
    assert len(web.hits) == hits


def test_the_timeout_covers_the_whole_chain(web: LocalHttpServer) -> None:
    web.routes["/slow"] = Route(CERT, delay=0.6)
    entries = [(web.url("/slow"), sha1(CERT))] * 3
    started = time.monotonic()
    refused(AlertDescription.certificate_unobtainable, entries, default_fetcher, LIMIT, 1.0)
    assert time.monotonic() - started < 3.0


def test_the_fetcher_is_pluggable_and_gets_the_time_left() -> None:
    calls: list[tuple[str, int, float]] = []

    def cached(url: str, size_limit: int, timeout: float) -> bytes:
        calls.append((url, size_limit, timeout))
        if url == "cache:broken":
            raise OSError("cache offline")
        time.sleep(0.3)
        return CERT

    entries = [("cache:leaf", sha1(CERT)), ("cache:ca", sha1(CERT))]
    assert fetch_client_chain(entries, cached, 100, 2.0) == (CERT, CERT)
    assert [call[:2] for call in calls] == [("cache:leaf", 100), ("cache:ca", 100)]
    assert 1.7 < calls[0][2] <= 2.0
    assert 0 < calls[1][2] <= 1.7
    assert "cache offline" in refused(AlertDescription.certificate_unobtainable,
                                      [("cache:broken", sha1(CERT))], cached)


def test_a_chain_past_its_time_is_unobtainable_even_when_each_fetch_succeeds() -> None:
    def slow(url: str, size_limit: int, timeout: float) -> bytes:
        time.sleep(0.4)
        return CERT

    entries = [("cache:leaf", sha1(CERT)), ("cache:ca", sha1(CERT))]
    message = refused(AlertDescription.certificate_unobtainable, entries, slow, LIMIT, 0.3)
    assert message == "the client's certificate URLs took longer than 0.3 s"
    # Under a second is a time limit like any other.
    assert fetch_client_chain(entries, lambda *_: CERT, LIMIT, 0.5) == (CERT, CERT)


def test_a_fetcher_failing_without_a_text_is_named_by_its_type() -> None:
    def broken(url: str, size_limit: int, timeout: float) -> bytes:
        raise OSError

    message = refused(AlertDescription.certificate_unobtainable, [("cache:x", sha1(CERT))], broken)
    assert message == "certificate URL 1 could not be fetched: OSError"


def test_a_cancelled_fetch_stops_at_once_and_shuts_its_connection() -> None:
    """The handshake has ended (the server sets `cancel`): the fetch does not wait for its
    time limit, and the connection to a server trickling its headers is shut; a fetch
    cancelled before it starts fetches nothing."""
    unobtainable = AlertDescription.certificate_unobtainable
    with LocalHttpServer({"/trickle": Route(trickle_headers=0.05)}) as web:
        entries = [(web.url("/trickle"), sha1(CERT))]
        cancel = threading.Event()
        timer = threading.Timer(0.2, cancel.set)
        timer.start()
        started = time.monotonic()
        try:
            message = refused(unobtainable, entries, default_fetcher, LIMIT, 5.0, cancel=cancel)
        finally:
            timer.cancel()
        assert time.monotonic() - started < 1.0
        assert message.endswith("/trickle: cancelled, the handshake has ended")
        assert holds_within(lambda: no_fetch_worker() and web.hung_up, 1.0), (
            "the cancelled fetch kept its connection"
        )
        assert web.hung_up == ["/trickle"]
        hits = len(web.hits)
        message = refused(unobtainable, entries, default_fetcher, cancel=cancel)
        assert message == "the certificate fetch was cancelled: the handshake has ended"
        assert len(web.hits) == hits
