"""`iotdtls coap` in this process (COAP-1): the requests' flags, payloads, content formats,
output streams and exit statuses against our coaps server (and a plain CoAP one) running in a
thread of this process, the observe mode, the errors, and `coap serve` until SIGTERM.
test_coap_cli.py runs the same commands as subprocesses, against libcoap too."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib.util
import io
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap import resource

import iotdtls.coap
import iotdtls.coap.client
from iotdtls import aio
from iotdtls.chaincache import ChainCache
from iotdtls.cli import aiocoap_failures, main
from iotdtls.cli import coap as coap_cli
from iotdtls.cli import echo as echo_cli
from iotdtls.cli.common import UsageError
from iotdtls.coap import AssociationFailed, observations, uploads
from iotdtls.config import (
    CONSTRAINED_RETRANSMIT,
    RFC6347_RETRANSMIT,
    RetransmitPolicy,
    ServerConfig,
)
from iotdtls.errors import AlertDescription, AlertReceived, DtlsError
from tests.aio_support import client_config, signal_fallback
from tests.coap_support import (
    CoapSite,
    coaps_client,
    coaps_server,
    device,
    get,
    put_block,
    reply,
)
from tests.interop_support import (
    CREDENTIALS,
    WRONG_PSK,
    WRONG_PSK_HEX,
    AlertingServer,
    AnsweringServer,
    FlushedText,
    PlainAnsweringServer,
    SameAddressClient,
)
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    PSK_HEX,
    Pki,
    TakesAnyAddress,
    free_udp_port,
    link_local_addresses,
)

#: What `/hello` answers the test identity.
HELLO = f"Hello, {CLIENT_IDENTITY}!"


class Recorder(resource.Resource):
    """POST and PUT: keep the payload and content format, answer 2.04 with the payload;
    DELETE: 2.02; GET: 2.05 with an empty payload."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[str, bytes, int | None]] = []

    async def _keep(self, request: aiocoap.Message) -> aiocoap.Message:
        number = request.opt.content_format
        self.got.append(
            (str(request.code), request.payload, None if number is None else int(number))
        )
        return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload)

    render_put = render_post = _keep

    async def render_delete(self, request: aiocoap.Message) -> aiocoap.Message:
        self.got.append((str(request.code), request.payload, None))
        return aiocoap.Message(code=aiocoap.DELETED)

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message()


class Served:
    """A server's address, site parts and the recorder, from `served_in_thread`."""

    def __init__(self, site: CoapSite, recorder: Recorder, loop: asyncio.AbstractEventLoop) -> None:
        self.site, self.recorder, self.loop = site, recorder, loop
        self.address: tuple[str, int] = ("", 0)
        #: Set (in the server's thread, `self.stop()`) to shut the server down.
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)

    def uri(self, path: str, scheme: str = "coaps") -> str:
        return f"{scheme}://{self.address[0]}:{self.address[1]}/{path}"


@contextlib.contextmanager
def served_in_thread(
    start: Callable[[Served], contextlib.AbstractAsyncContextManager[tuple[str, int]]],
) -> Iterator[Served]:
    """Run the server `start(served)` opens in a thread with its own event loop (the command
    under test runs `asyncio.run` in this one) until the test is done."""
    loop = asyncio.new_event_loop()
    served = Served(CoapSite(counter_interval=0.05), Recorder(), loop)
    served.site.site.add_resource(["recorder"], served.recorder)
    ready, failed = threading.Event(), []

    async def serve() -> None:
        try:
            async with start(served) as address:
                served.address = address
                ready.set()
                await served.stopping.wait()
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            raise

    thread = threading.Thread(
        target=loop.run_until_complete, args=(asyncio.wait_for(serve(), 120.0),), daemon=True
    )
    thread.start()
    try:
        assert ready.wait(10.0) and not failed, failed
        yield served
    finally:
        served.stop()
        thread.join(10.0)
        loop.close()
        assert not thread.is_alive()


@contextlib.asynccontextmanager
async def coaps(served: Served) -> Any:
    async with coaps_server(served.site) as transport:
        yield transport.address


@contextlib.asynccontextmanager
async def plain_coap(served: Served) -> Any:
    port = free_udp_port()
    context = await aiocoap.Context.create_server_context(served.site.site, bind=(LOCALHOST, port))
    try:
        yield (LOCALHOST, port)
    finally:
        await context.shutdown()


@pytest.fixture
def server() -> Iterator[Served]:
    with served_in_thread(coaps) as served:
        yield served


def coap(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`iotdtls coap ARGS` here: exit status, stdout, stderr."""
    status = main(["coap", *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.req("COAP-1")
def test_get_prints_the_code_on_stderr_and_the_payload_on_stdout(
    server: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coap(capsys, "get", server.uri("hello"), *CREDENTIALS) == (0, HELLO, "2.05 Content\n")
    # An empty payload prints nothing.
    assert coap(capsys, "get", server.uri("recorder"), *CREDENTIALS) == (0, "", "2.05 Content\n")


def test_a_payload_goes_to_a_pipe_exactly_and_to_a_terminal_as_a_line(
    server: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`coap post URI - < in > out` gives out the bytes of the response, nothing added; a
    terminal gets a final newline when the payload has none."""
    binary = bytes(range(256)) * 4
    for wrapper, expected in ((io.TextIOWrapper, binary), (Terminal, binary + b"\n")):
        written = io.BytesIO()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(binary)))
        monkeypatch.setattr(sys, "stdout", wrapper(written))
        assert main(["coap", "post", server.uri("recorder"), "-", *CREDENTIALS]) == 0
        assert written.getvalue() == expected
    assert capsys.readouterr().err == "2.04 Changed\n" * 2


def test_a_payload_with_stdout_closed_is_one_line_and_status_1(
    server: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Started with stdout closed (`>&-`: sys.stdout is None): no traceback."""
    monkeypatch.setattr(sys, "stdout", None)
    status, _out, err = coap(capsys, "get", server.uri("hello"), *CREDENTIALS)
    assert (status, err) == (1, "2.05 Content\niotdtls: cannot print: stdout is closed\n")


def test_an_error_response_exits_1_with_its_code(
    server: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coap(capsys, "get", server.uri("nowhere"), *CREDENTIALS) == (1, "", "4.04 Not Found\n")


@pytest.mark.parametrize(
    ("method", "code"), [("put", "PUT"), ("post", "POST")]
)
def test_put_and_post_send_the_argument_with_its_content_format(
    server: Served, capsys: pytest.CaptureFixture[str], method: str, code: str
) -> None:
    result = coap(capsys, method, server.uri("recorder"), "21.5", "--content-format",
                  "text/plain", *CREDENTIALS)
    assert result == (0, "21.5", "2.04 Changed\n")
    assert server.recorder.got == [(code, b"21.5", 0)]


def test_the_demo_temp_takes_the_readme_put_and_gives_it_back(
    server: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's `echo 21.5 | iotdtls coap put coaps://HOST/temp --content-format text/plain`
    against `iotdtls coap serve`'s demo site: 2.04, and GET answers the reading; a payload
    that is no number, too long or of another content format is refused with its code."""
    assert coap(capsys, "get", server.uri("temp"), *CREDENTIALS) == (0, "", "2.05 Content\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"21.5\n")))
    assert coap(capsys, "put", server.uri("temp"), "--content-format", "text/plain",
                *CREDENTIALS) == (0, "", "2.04 Changed\n")
    assert coap(capsys, "get", server.uri("temp"), *CREDENTIALS) == (0, "21.5", "2.05 Content\n")
    for payload, flags, answer in [
        ("warm", [], (1, "expected a number, such as 21.5", "4.00 Bad Request\n")),
        ("nan", [], (1, "expected a number, such as 21.5", "4.00 Bad Request\n")),
        ("1" * 33, [], (1, "at most 32 bytes", "4.13 Request Entity Too Large\n")),
        ("22", ["--content-format", "50"],
         (1, "text/plain only", "4.15 Unsupported Content Format\n")),
    ]:
        assert coap(capsys, "put", server.uri("temp"), payload, *flags, *CREDENTIALS) == answer
    assert coap(capsys, "put", server.uri("temp"), " -3e1 ", *CREDENTIALS) == (
        0, "", "2.04 Changed\n")
    assert coap(capsys, "get", server.uri("temp"), *CREDENTIALS) == (0, "-3e1", "2.05 Content\n")


def test_the_payload_may_follow_the_flags(
    server: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """`coap post URI [flags] PAYLOAD`, as `coap post URI PAYLOAD [flags]`."""
    result = coap(capsys, "post", server.uri("recorder"), "--content-format", "text/plain",
                  *CREDENTIALS, "21.5")
    assert result[0] == 0, result
    assert server.recorder.got == [("POST", b"21.5", 0)]
    with pytest.raises(SystemExit) as exited:  # one payload only
        main(["coap", "post", server.uri("recorder"), "a", *CREDENTIALS, "b"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "iotdtls: error: unrecognized arguments: 1 value, not shown (see --help)\n"
    )


def test_a_payload_of_dash_or_none_is_read_from_stdin(
    server: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for argument in (["-"], []):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\n")))
        result = coap(capsys, "put", server.uri("recorder"), *argument, "--content-format", "50",
                      *CREDENTIALS)
        assert result == (0, "from stdin\n", "2.04 Changed\n")
    assert server.recorder.got == [("PUT", b"from stdin\n", 50)] * 2


def test_delete_and_a_put_without_content_format(
    server: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert coap(capsys, "delete", server.uri("recorder"), *CREDENTIALS) == (
        0, "", "2.02 Deleted\n")
    assert coap(capsys, "put", server.uri("recorder"), "x", *CREDENTIALS)[0] == 0
    assert server.recorder.got == [("DELETE", b"", None), ("PUT", b"x", None)]


@pytest.mark.parametrize("argument", [["-"], []])
def test_a_payload_with_stdin_closed_is_one_line_and_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argument: list[str]
) -> None:
    """Started with stdin closed (`<&-`: sys.stdin is None): no traceback, no request."""
    monkeypatch.setattr(sys, "stdin", None)
    assert coap(capsys, "post", "coaps://127.0.0.1:9/x", *argument, *CREDENTIALS) == (
        1, "", "iotdtls: cannot read the payload: stdin is closed\n")


class Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def test_payload_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """The argument itself; stdin for '-' or none; nothing at all from a terminal when none is
    given ('-' still reads it)."""
    assert coap_cli._payload("text") == b"text"
    monkeypatch.setattr(sys, "stdin", Terminal(io.BytesIO(b"typed")))
    assert coap_cli._payload(None) == b""
    assert coap_cli._payload("-") == b"typed"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"piped")))
    assert coap_cli._payload(None) == b"piped"


@pytest.mark.parametrize(
    ("text", "number"),
    [("0", 0), ("65535", 65535), ("text/plain", 0), ("text/plain; charset=utf-8", 0),
     ("application/json", 50), ("application/cbor", 60)],
)
def test_content_format_by_number_or_media_type(text: str, number: int) -> None:
    assert coap_cli._content_format(text) == number


@pytest.mark.parametrize("text", ["65536", "text/nonsense", "-1", ""])
def test_an_unknown_content_format_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--content-format: unknown media type "):
        coap_cli._content_format(text)


def test_observe_prints_each_notification_until_the_duration(
    server: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = coap(capsys, "get", server.uri("counter"), "--observe", "--duration",
                            "0.5", *CREDENTIALS)
    values = [int(line) for line in out.splitlines()]
    # The counter ticks every 0.05 s: the first answer, then a notification per tick, each
    # with its code.
    assert len(values) >= 4 and values == sorted(values), values
    assert (status, err) == (0, "2.05 Content\n" * len(values))


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize(
    ("uri", "scheme", "handed"),
    [
        ("coaps://[fe80::1%25lo]:5684/x", "coaps", "coaps://[fe80::1%25lo]:5684/x"),
        ("coap://[fe80::1%25lo]:5683/x", "coap", "coap://[fe80::1%lo]:5683/x"),
        ("coap://[fe80::1%251]/x", "coap", f"coap://[fe80::1%{socket.if_indextoname(1)}]/x"),
        ("coap://[2001:db8::1]/x", "coap", "coap://[2001:db8::1]/x"),
        # only the host: the same text later in the URI stays as written (M15)
        ("coap://[fe80::1%25lo]/x?at=[fe80::1%25lo]&[fe80::1%25lo]", "coap",
         "coap://[fe80::1%lo]/x?at=[fe80::1%25lo]&[fe80::1%25lo]"),
        # the host follows the scheme's "//", not one in the path (M17: `_bracketed_host` 3)
        ("coap://[fe80::1%25lo]/a//b", "coap", "coap://[fe80::1%lo]/a//b"),
    ],
)
def test_only_a_coap_uri_has_its_zone_decoded_for_aiocoap(
    uri: str, scheme: str, handed: str
) -> None:
    """aiocoap reads a coap:// URI's zone undecoded (c1a75b7): it is handed decoded, an index
    by its interface's name; a coaps:// URI, ours to read, and a URI without a zone go as
    they are (M14: `_uri_for_aiocoap`)."""
    assert coap_cli._uri_for_aiocoap(uri, scheme) == handed


def test_a_coap_uri_goes_without_dtls(capsys: pytest.CaptureFixture[str]) -> None:
    """coap:// needs no credentials and reaches a plain CoAP server (no peer to greet)."""
    with served_in_thread(plain_coap) as served:
        assert coap(capsys, "get", served.uri("hello", "coap")) == (0, "Hello!", "2.05 Content\n")


def test_a_closed_port_is_named_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """coap:// to a port nobody listens on: the ICMP port unreachable, said once."""
    port = free_udp_port()
    assert coap(capsys, "get", f"coap://{LOCALHOST}:{port}/hello", "--timeout", "10") == (
        1, "", f"iotdtls: coap: nothing listens on {LOCALHOST}:{port} (ICMP port unreachable)\n")


def test_unreachable_names_the_socket_error_under_a_bare_network_error() -> None:
    def network_error(cause: BaseException | None) -> aiocoap.error.NetworkError:
        exc = aiocoap.error.NetworkError()
        exc.__cause__ = cause
        return exc

    no_route = OSError(errno.EHOSTUNREACH, "No route to host")
    assert coap_cli._unreachable(network_error(no_route), "coap://[2001:db8::1]/x") == (
        "coap: cannot reach [2001:db8::1]:5683: No route to host")
    # The kernel's bare "Invalid argument" for a link-local address without its interface:
    # what to write instead, as a coaps:// request (and `iotdtls client`) says it.
    no_zone = OSError(errno.EINVAL, "Invalid argument")
    assert coap_cli._unreachable(network_error(no_zone), "coap://[fe80::1]:61616/x") == (
        "coap: cannot reach [fe80::1]:61616: a link-local address needs %interface, as in "
        "[fe80::1%eth0]:61616")
    assert coap_cli._unreachable(network_error(None), "coap://h/x") is None
    cause = AlertReceived(AlertDescription.decrypt_error)
    assert coap_cli._unreachable(AssociationFailed("h:1", cause), "coaps://h/x") is None


@pytest.mark.parametrize("zone", ["name", "index"])
def test_a_coap_uri_s_socket_error_names_the_zone_decoded_and_the_real_cause(
    capsys: pytest.CaptureFixture[str], zone: str
) -> None:
    """Probe BL, F1: coap://[fe80::1%25lo]:P/x said "cannot reach [fe80::1%25lo]:P: the
    network interface 25lo is unknown" (lo exists; the request had no route): the line took
    urlsplit's host, its zone still encoded. Now it writes the address as aiocoap was given it
    and every other message writes it, `[fe80::1%lo]:P`, an index (`%251`) by its name too,
    and says what failed."""
    written = "lo" if zone == "name" else str(socket.if_nametoindex("lo"))
    port = free_udp_port()
    assert coap(capsys, "get", f"coap://[fe80::1%25{written}]:{port}/x", "--timeout", "5") == (
        1, "", f"iotdtls: coap: cannot reach [fe80::1%lo]:{port}: Network is unreachable\n")


def test_unreachable_names_an_interface_s_index_by_its_name() -> None:
    """`%254` (an index, RFC 6874's encoded "%" before it) read as interface 254: "nothing
    listens on [fe80::1%254]:P" (probe BL, F1)."""
    index, name = socket.if_nameindex()[-1]
    refused = aiocoap.error.NetworkError()
    refused.__cause__ = OSError(errno.ECONNREFUSED, "Connection refused")
    assert coap_cli._unreachable(refused, f"coap://[fe80::1%25{index}]:61616/x") == (
        f"coap: nothing listens on [fe80::1%{name}]:61616 (ICMP port unreachable)")


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("[fe80::fc:ff:fe00:1]",
         "cannot reach [fe80::fc:ff:fe00:1]:{port}: a link-local address needs %interface, as in "
         "[fe80::fc:ff:fe00:1%eth0]:{port}"),
        # It said "cannot resolve fe80::1%nosuch: Name or service not known" (probe AS).
        ("[fe80::1%25nosuch]", "cannot reach [fe80::1%nosuch]:{port}: the network interface "
         "nosuch is unknown\n"),
        # A 49-line UnicodeError traceback (idna: label too long); "Network is unreachable"
        # for an index of no interface (probe AU).
        (f"[fe80::1%25{'z' * 64}]", f"cannot reach [fe80::1%{'z' * 64}]:{{port}}: the network "
         f"interface {'z' * 64} is unknown\n"),
        ("[fe80::1%2599999]", "cannot reach [fe80::1%99999]:{port}: the network interface "
         "99999 is unknown\n"),
    ],
)
def test_a_coaps_server_that_cannot_be_reached_is_named_as_the_client_names_it(
    capsys: pytest.CaptureFixture[str], host: str, message: str
) -> None:
    """No handshake began: the request said "DTLS handshake with ... failed: [Errno 22] cannot
    reach ..." (and "[Errno -2] cannot resolve ..."), and advice about the DTLS configuration.
    It says what `iotdtls client` says, in one line, and exits 2 as it does for this mistake
    of configuration (it exited 1, "coaps: cannot reach ...": probe BG, F1)."""
    port = free_udp_port()
    status, out, err = coap(capsys, "get", f"coaps://{host}:{port}/hello", *CREDENTIALS,
                            "--timeout", "5")
    assert (status, out) == (2, ""), err
    assert err.startswith(f"iotdtls: error: {message.format(port=port)}"), err
    assert err.count("\n") == 1 and "Errno" not in err, err


def test_a_handshake_with_a_link_local_address_names_it_once_and_one_way(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A link-local address of this machine (if it has one), nothing listening: the line
    writes the zone after "%" in both places (it said "DTLS handshake with
    [fe80::...%25eth0]:P failed: nothing listens on [fe80::...%eth0]:P"; probe AS)."""
    if not (found := link_local_addresses()):
        pytest.skip("this machine has no link-local IPv6 address")
    address, interface = found[0]
    port = free_udp_port()
    status, out, err = coap(capsys, "get", f"coaps://[{address}%25{interface}]:{port}/x",
                            *CREDENTIALS, "--timeout", "5")
    assert (status, out) == (1, ""), err
    where = f"[{address}%{interface}]:{port}"
    assert err.startswith(f"iotdtls: coaps: DTLS handshake with {where} failed: nothing listens "
                          f"on {where}"), err
    assert "%25" not in err


@pytest.mark.parametrize(("identity", "psk_hex"), [
    (CLIENT_IDENTITY, WRONG_PSK_HEX),  # a wrong key
    ("nobody", PSK_HEX),  # the right key, an identity the server does not know
])
def test_a_failed_handshake_exits_1_with_the_reason_and_advice(
    server: Served, capsys: pytest.CaptureFixture[str], identity: str, psk_hex: str
) -> None:
    """The server answers both with decrypt_error (RFC 4279 §2): the advice names the PSK and
    the identity alike, as the reason does (it named the PSK alone, probe CB)."""
    status, out, err = coap(capsys, "get", server.uri("hello"), "--psk-identity",
                            identity, "--psk", psk_hex, "--timeout", "5")
    lines = err.splitlines()
    assert (status, out, len(lines)) == (1, "", 1), err  # one line, as every subcommand's
    assert lines[0].startswith(
        f"iotdtls: coaps: DTLS handshake with {server.address[0]}:{server.address[1]} failed: ")
    assert lines[0].endswith(
        "unknown to it). Check the credentials: the PSK or the PSK identity does not match the "
        "server's.")


@pytest.mark.parametrize(
    "alert", [AlertDescription.bad_record_mac, AlertDescription.bad_certificate,
              AlertDescription.internal_error])
def test_a_fatal_alert_after_the_handshake_is_not_handshake_advice(
    capsys: pytest.CaptureFixture[str], alert: AlertDescription
) -> None:
    """The server answers the request with a fatal alert: the advice says so, not "Check the
    credentials" (which had just completed a handshake), certificate advice in PSK mode, or
    "Check the server address" (probe AS)."""
    with AlertingServer(alert) as server:
        status, out, err = coap(capsys, "get", f"coaps://{LOCALHOST}:{server.port}/x",
                                *CREDENTIALS, "--timeout", "5")
    assert (status, out) == (1, ""), err
    assert err.splitlines() == [
        f"iotdtls: coaps: the DTLS association with {LOCALHOST}:{server.port} ended: received "
        f"fatal alert {alert.name}. The server ended the association with fatal alert "
        f"{alert.name} after the handshake, which had succeeded (the credentials are not in "
        "question); its log may say why.",
    ]


def test_no_response_in_time_exits_1(server: Served, capsys: pytest.CaptureFixture[str]) -> None:
    """The handshake has --timeout; the response as long again from the end of the handshake
    (quick on loopback, under a second on a loaded machine), not more: two whole timeouts
    would be 2 s."""
    started = time.monotonic()
    status, out, err = coap(capsys, "get", server.uri("slow"), "--timeout", "1", *CREDENTIALS)
    waited = time.monotonic() - started
    server.loop.call_soon_threadsafe(server.site.slow.release.set)
    assert (status, out, err) == (1, "", "iotdtls: no response within 1 s after the "
                                  "handshake\n")
    assert 1.0 <= waited < 1.95, waited


class Huge(resource.Resource):
    """GET: 8 MiB, block-wise: more blocks than half a second brings over loopback."""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=bytes(8 << 20))


def test_a_response_not_complete_in_time_says_so(
    server: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """Blocks of the response came but not all of them: not "no response" (it said so after
    ~1900 blocks of a block-wise response had come)."""
    server.site.site.add_resource(["huge"], Huge())
    status, out, err = coap(capsys, "get", server.uri("huge"), "--timeout", "0.5", *CREDENTIALS)
    assert (status, out) == (1, ""), err
    assert re.fullmatch(r"iotdtls: response not complete within 0\.5 s after the handshake "
                        r"\(\d+ CoAP responses received\)\n", err), err


def answered(respond: Callable[[aiocoap.Message], aiocoap.Message]) -> AnsweringServer:
    """A coaps server (the test PSK) that answers each request with `respond(request)`,
    piggybacked on the ACK (RFC 7252 §5.2.1): a server whose responses are made by hand."""

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        return [reply(request, respond(request))]

    return AnsweringServer(answer)


def jumping_blocks(request: aiocoap.Message) -> aiocoap.Message:
    """Block 0 of 16 bytes and more to come, then a block 5 further than asked for."""
    asked = request.opt.block2
    number = 0 if asked is None else asked.block_number + 5
    return aiocoap.Message(code=aiocoap.CONTENT, block2=(number, True, 0), payload=b"x" * 16)


@pytest.mark.parametrize(
    ("respond", "problem"),
    [
        # RFC 7959 §2.3 puts Block1 in responses to block-wise requests only.
        (lambda request: aiocoap.Message(code=aiocoap.CONTENT, block1=(0, False, 6)),
         "AttributeError: 'NoneType' object has no attribute 'block_number'"),
        # A first block shorter than its size, more to come (§2.2).
        (lambda request: aiocoap.Message(code=aiocoap.CONTENT, block2=(0, True, 2),
                                         payload=b"ok"),
         "AssertionError: Unexpected state of preassembled message"),
        # Errors whose text is empty: named by their type.
        (lambda request: aiocoap.Message(code=aiocoap.CONTENT, block2=(3, True, 0),
                                         payload=b"x" * 16),
         "UnexpectedBlock2"),
        (jumping_blocks, "NotImplemented"),
    ],
    ids=["block1-in-a-response", "short-first-block", "first-block-not-0", "blocks-jump"],
)
def test_a_response_aiocoap_cannot_handle_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    respond: Callable[[aiocoap.Message], aiocoap.Message], problem: str,
) -> None:
    """aiocoap's request machinery raises for these responses: a bare AttributeError or
    AssertionError of its block-wise code printed a 39-line traceback, and its errors with an
    empty text printed "iotdtls: " alone (probe AS). Now one line names what aiocoap raised;
    -v logs its traceback."""
    caplog.set_level(logging.DEBUG, "iotdtls.cli")
    with answered(respond) as server:
        status, out, err = coap(capsys, "get", f"coaps://{LOCALHOST}:{server.port}/x",
                                *CREDENTIALS, "--timeout", "5")
    assert (status, out, err) == (
        1, "", f"iotdtls: the server's response could not be handled (aiocoap: {problem})\n")
    [logged] = [r for r in caplog.records if r.name == "iotdtls.cli"]
    assert logged.levelno == logging.DEBUG and logged.exc_info is not None


@contextlib.contextmanager
def hostile(scheme: str, answer: Callable[[bytes], list[bytes]]) -> Iterator[list[str]]:
    """A server answering with `answer` (`AnsweringServer`, or `PlainAnsweringServer` for
    coap://); yields the command line's URI and flags for it, and checks that nothing aiocoap
    raised where no one catches it reached Python's or asyncio's reports (a traceback after
    the command's one line, probe AU): what was not logged at debug level by the command."""
    unraisable: list[BaseException | None] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda what: unraisable.append(what.exc_value)
    try:
        with (PlainAnsweringServer if scheme == "coap" else AnsweringServer)(answer) as server:
            flags = [] if scheme == "coap" else list(CREDENTIALS)
            yield [f"{scheme}://{LOCALHOST}:{server.port}/x", *flags]
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert unraisable == []


@contextlib.contextmanager
def debug_lines() -> Iterator[list[tuple[int, str, str]]]:
    """`iotdtls.cli`'s log lines at any level as (level, message, the name of the exception
    logged with it), kept without the exception: a record kept with it (as caplog keeps it)
    would keep aiocoap's objects alive past the command's run, so they would be collected
    only after it."""
    lines: list[tuple[int, str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            exc = record.exc_info[1] if record.exc_info else None
            lines.append((record.levelno, record.getMessage(), type(exc).__name__))

    log = logging.getLogger("iotdtls.cli")
    handler, level, propagate = Keep(), log.level, log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield lines
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
        log.setLevel(level)


def asyncio_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "asyncio"]


@pytest.mark.parametrize("scheme", ["coap", "coaps"])
def test_a_notification_aiocoap_cannot_handle_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, scheme: str
) -> None:
    """The same for a notification of `--observe` (RFC 7641 §4.2): its first block is not
    block 0 (it printed the code, the first notification, then "iotdtls: " alone). aiocoap's
    iterator raised the error again when it was collected (its __del__ lets only some errors
    pass): "Exception ignored in: ClientObservation._Iterator.__del__" and its traceback came
    after the line (probe AU), then -v logged it at debug level; the command no longer uses
    the iterator (probe CH), so nothing is raised there."""

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        first = aiocoap.Message(code=aiocoap.CONTENT, observe=1, payload=b"first")
        second = aiocoap.Message(code=aiocoap.CONTENT, observe=2, block2=(3, True, 0),
                                 payload=b"x" * 16)
        second.mtype, second.mid, second.token = aiocoap.NON, request.mid + 1, request.token
        return [reply(request, first), second.encode()] if request.opt.block2 is None else []

    with hostile(scheme, answer) as target, debug_lines() as lines:
        status, out, err = coap(capsys, "get", *target, "--observe", "--duration", "5", "-v")
    assert (status, out, err) == (1, "first\n", "2.05 Content\niotdtls: the server's response "
                                  "could not be handled (aiocoap: UnexpectedBlock2)\n")
    assert asyncio_reports(caplog) == []
    assert [text for _level, text, _name in lines if text.startswith("aiocoap raised")] == []


@pytest.mark.parametrize("scheme", ["coap", "coaps"])
def test_a_response_not_observable_whose_blocks_fail_is_one_line(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, scheme: str,
) -> None:
    """`--observe` of a resource that answers without Observe (not observable, RFC 7641
    §3.1), block 0 of more (RFC 7959 §2.2), then block 7 for block 1: aiocoap reports the
    failure to the observation it already ended, and the task that did so failed with
    "RuntimeError: Error raised in an already cancelled ClientObservation", which asyncio
    printed with two tracebacks after the line ("Task exception was never retrieved", probe
    AU); now -v logs it at debug level."""

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        number = 0 if request.opt.block2 is None else 7
        return [reply(request, aiocoap.Message(code=aiocoap.CONTENT, block2=(number, True, 0),
                                               payload=b"x" * 16))]

    # pytest would keep aiocoap's own error line, whose argument is the error, and with it
    # the task past the command's run (the command then routes it later, as its loop lives).
    monkeypatch.setattr(logging.getLogger("coap"), "handlers", [logging.NullHandler()])
    monkeypatch.setattr(logging.getLogger("coap"), "propagate", False)
    with hostile(scheme, answer) as target, debug_lines() as lines:
        status, out, err = coap(capsys, "get", *target, "--observe", "--timeout", "5", "-v")
    assert (status, out, err) == (1, "", "iotdtls: the server's response could not be handled "
                                  "(aiocoap: NotImplemented)\n")
    assert asyncio_reports(caplog) == []
    assert [(level, text, name) for level, text, name in lines
            if text.startswith("aiocoap raised")] == [
        (logging.DEBUG, "aiocoap raised: Task exception was never retrieved", "RuntimeError")]


#: A NON 2.05 of another token whose Location-Path is the byte 0xff: not UTF-8 (RFC 7252 §3.2).
NOT_UTF8 = bytes([0x54, 0x45, 0x12, 0x34]) + b"zzzz" + bytes([0x81, 0xFF]) + b"\xffzz"


def test_a_coap_datagram_with_a_text_option_not_utf8_is_one_warning(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """coap:// (aiocoap's UDP transport): a datagram whose text option is not UTF-8 made
    asyncio print a 24-line traceback each ("Exception in callback ... recvmsg.py ...
    UnicodeDecodeError", probe AU). Now it is ignored with one warning, as over coaps, the
    others at debug level; the response that follows is taken."""

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        ok = aiocoap.Message(code=aiocoap.CONTENT, payload=b"ok")
        return [NOT_UTF8, NOT_UTF8, NOT_UTF8, reply(request, ok)]

    with hostile("coap", answer) as target:
        status, out, err = coap(capsys, "get", *target, "--timeout", "5", "-v")
    assert (status, out, err) == (0, "ok", "2.05 Content\n")
    assert asyncio_reports(caplog) == []
    ignoring = "coap: ignoring a datagram that is not a CoAP message"
    assert [(r.levelno, r.getMessage().partition(" (")[0]) for r in caplog.records
            if r.getMessage().startswith(ignoring)] == [
        (logging.WARNING, ignoring), (logging.DEBUG, ignoring), (logging.DEBUG, ignoring)]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{ignoring} (any more are logged at debug level)"]


def test_a_coap_response_with_a_text_option_not_utf8_is_no_response(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """If the response itself is such a datagram, none came: the command says so as for
    silence, after the warning."""

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        return [reply(request, aiocoap.Message(code=aiocoap.CONTENT, location_path=["x"]))
                .replace(b"x", b"\xff")]

    with hostile("coap", answer) as target:
        status, out, err = coap(capsys, "get", *target, "--timeout", "0.5")
    assert (status, out, err) == (1, "", "iotdtls: no response within 0.5 s\n")
    assert asyncio_reports(caplog) == []
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "coap: ignoring a datagram that is not a CoAP message (any more are logged at debug "
        "level)"]


def test_an_exception_raised_in_our_own_code_is_not_taken_for_aiocoaps(
    server: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only what aiocoap raised is a response it could not handle: a bug of ours under the
    request still ends the command with its traceback."""

    def broken(message: aiocoap.Message, *, code: bool, lines: bool) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(coap_cli, "_print", broken)
    with pytest.raises(KeyError, match="a bug of ours"):
        coap(capsys, "get", server.uri("hello"), *CREDENTIALS)


@pytest.mark.parametrize(
    "answer",
    [lambda request: bytes([0x68, 0x45]) + request[2:4] + b"\x99" * 8 + b"\xffhi",
     # TKL 15, reserved (RFC 7252 §3): the request's token and 7 bytes more
     lambda request: bytes([0x6F, 0x45]) + request[2:4 + (request[0] & 0x0F)] + bytes(7)
     + b"\xffhi"],
    ids=["another-token", "token-length-15"],
)
def test_a_response_to_no_request_of_ours_is_not_counted_as_one(
    capsys: pytest.CaptureFixture[str], answer: Callable[[bytes], bytes]
) -> None:
    """A server acknowledges the request with a 2.05 whose token is not the request's: no
    response came to it (it said "response not complete ... (1 CoAP response received)", as
    for a block-wise transfer cut short; probe AS)."""
    with AnsweringServer(lambda request: [answer(request)]) as server:
        status, out, err = coap(capsys, "get", f"coaps://{LOCALHOST}:{server.port}/x",
                                *CREDENTIALS, "--timeout", "0.5")
    assert (status, out, err) == (1, "", "iotdtls: no response within 0.5 s after the "
                                  "handshake\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_ends_a_request_with_close_notify_and_128_plus_its_number(
    server: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    sig: signal.Signals,
) -> None:
    """As Ctrl-C does: the pending request is given up and the association closed (close_notify
    sent); the status is the shell's for the signal (143 for SIGTERM)."""
    closed: list[bool] = []
    close = iotdtls.coap.client.ClientRemote.close

    async def spy(remote: iotdtls.coap.client.ClientRemote) -> None:
        closed.append(remote.peer is not None)  # established: close sends close_notify
        await close(remote)

    monkeypatch.setattr(iotdtls.coap.client.ClientRemote, "close", spy)
    with signal_fallback(sig) as fallback:
        threading.Timer(0.5, os.kill, (os.getpid(), sig)).start()
        status, out, err = coap(capsys, "get", server.uri("slow"), *CREDENTIALS)
    server.loop.call_soon_threadsafe(server.site.slow.release.set)
    assert (status, out, err, fallback, closed) == (128 + sig, "", "", [], [True])


def test_failed_prints_the_problem_and_any_advice(capsys: pytest.CaptureFixture[str]) -> None:
    assert coap_cli._failed("no luck") == 1
    assert capsys.readouterr().err == "iotdtls: no luck\n"
    cause = AlertReceived(AlertDescription.decrypt_error)
    assert coap_cli._failed(AssociationFailed("h:1", cause)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [  # one line, the advice its second sentence (probe CA)
        f"iotdtls: coaps: DTLS handshake with h:1 failed: {cause}. "
        "Check the credentials: they do not match the server's."
    ]
    # A problem whose advice is empty prints only itself.
    assert coap_cli._failed(AssociationFailed("h:1", None)) == 1
    assert capsys.readouterr().err == "iotdtls: coaps: DTLS handshake with h:1 failed\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "coaps:///x", *CREDENTIALS],
         "expected a coaps://HOST[:PORT]/PATH URI, got 'coaps:///x'"),
        (["get", "https://127.0.0.1/x", *CREDENTIALS],
         "expected a coaps://HOST[:PORT]/PATH URI, got 'https://127.0.0.1/x'"),
        (["get", "coaps://[::1/x", *CREDENTIALS],
         "expected a coaps://HOST[:PORT]/PATH URI, got 'coaps://[::1/x': Invalid IPv6 URL"),
        *[(["get", f"coaps://127.0.0.1:{port}/x", *CREDENTIALS],
           f"expected a coaps://HOST[:PORT]/PATH URI, got 'coaps://127.0.0.1:{port}/x': the port "
           "must be a number from 1 to 65535") for port in ("99999", "0", "x1")],
        # An empty IPv6 zone (RFC 6874 §2): "%25" was taken as zone "25" and failed at the
        # request (status 1), a bare "%" was refused without saying why.
        *[(["get", f"coaps://[fe80::1{zone}]:5684/x", *CREDENTIALS],
           f"expected a coaps://HOST[:PORT]/PATH URI, got 'coaps://[fe80::1{zone}]:5684/x': the "
           f"IPv6 zone of [fe80::1{zone}] is empty (RFC 6874): give the interface, as in "
           "[fe80::1%25eth0]") for zone in ("%25", "%")],
        (["get", "coap://127.0.0.1/x#part"],
         "expected a coap://HOST[:PORT]/PATH URI, got 'coap://127.0.0.1/x#part': Fragment "
         "identifiers can not be set on a request URI"),
        (["get", "coaps://me@127.0.0.1/x", *CREDENTIALS],
         "expected a coaps://HOST[:PORT]/PATH URI, got 'coaps://me@127.0.0.1/x': User name and "
         "password not supported"),
        (["get", "coaps://127.0.0.1/x", "--duration", "3", *CREDENTIALS],
         "--duration needs --observe"),
        (["put", "coap://127.0.0.1/x", "v", "--cafile", "ca.crt"],
         "--cafile is for coaps:// URIs (coap:// has no DTLS)"),
        (["get", "coaps://127.0.0.1/x"],
         "choose one mode: --psk-identity ID --psk HEX, or --psk-file FILE, or --peer-rpk FILE "
         "/ --peer-rpk-sha256 HEX [--rpk-key FILE], or --cafile FILE [--cert FILE --key FILE]"),
        (["serve", "--listen", "127.0.0.1:5684"],
         "give credentials: --psk-identity ID --psk HEX or --psk-file FILE, --rpk-key FILE, or "
         "--cert FILE --key FILE"),
        (["serve", "--listen", "127.0.0.1", *CREDENTIALS], "expected HOST:PORT, got '127.0.0.1'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert coap(capsys, *args) == (2, "", f"iotdtls: error: {message}\n")


@pytest.mark.parametrize("scheme", ["coap", "coaps"])
@pytest.mark.parametrize(
    ("host", "fixed"),
    [("[127.0.0.1%25lo]", "127.0.0.1"), ("127.0.0.1%25lo", "127.0.0.1"),
     ("127.0.0.1%lo", "127.0.0.1"), ("gw.example%25eth0", "gw.example")],
)
def test_a_uri_with_a_zone_after_anything_but_an_ipv6_address_is_one_line(
    capsys: pytest.CaptureFixture[str], scheme: str, host: str, fixed: str
) -> None:
    """Probe BL, F3: coap://127.0.0.1%25lo:P/x said "Name resolution error: Invalid zone
    identifier 25lo" (status 1), coap://127.0.0.1%lo:P/x "nothing listens on
    127.0.0.1%lo:P" (the zone ignored), the bracketed form urlsplit's "'127.0.0.1%25lo' does
    not appear to be an IPv4 or IPv6 address", and coaps:// "server name ... is neither a DNS
    name nor an IP address". Now each says that the zone is an IPv6 address's, and what to
    write, status 2."""
    uri = f"{scheme}://{host}:49031/x"
    flags = [] if scheme == "coap" else list(CREDENTIALS)
    why = ("an IPv4 address takes no zone" if fixed == "127.0.0.1" else
           "a zone follows an IPv6 address only")
    assert coap(capsys, "get", uri, *flags) == (
        2, "", f"iotdtls: error: expected a {scheme}://HOST[:PORT]/PATH URI, got {uri!r}: {why}, "
        f"write {scheme}://{fixed}:49031/x\n")


def test_a_misplaced_zone_is_found_in_the_authority_alone(
    capsys: pytest.CaptureFixture[str]
) -> None:
    """The host is read after the scheme's "//", not after a "//" of the path (M15)."""
    uri = "coap://127.0.0.1%25lo:49031/a//b"
    assert coap(capsys, "get", uri) == (
        2, "", f"iotdtls: error: expected a coap://HOST[:PORT]/PATH URI, got {uri!r}: an IPv4 "
        "address takes no zone, write coap://127.0.0.1:49031/a//b\n")


@pytest.mark.parametrize("host", ["%25lo", "[%25lo]"])
def test_a_uri_whose_host_is_a_zone_alone_is_shown_an_ipv6_address(
    capsys: pytest.CaptureFixture[str], host: str
) -> None:
    """With no host before the zone there is nothing to write instead: the message shows
    the form a zone takes (M15: "write coap:///x")."""
    uri = f"coap://{host}/x"
    assert coap(capsys, "get", uri) == (
        2, "", f"iotdtls: error: expected a coap://HOST[:PORT]/PATH URI, got {uri!r}: a zone "
        "follows an IPv6 address only, as in [fe80::1%25eth0]\n")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        # RFC 6874 allows a percent-encoded character in a zone; urlsplit refuses it.
        ("coap://[fe80::1%25eth%30]:49031/x",
         "'fe80::1%25eth%30' does not appear to be an IPv4 or IPv6 address"),
        ("coap://[::1/x", "Invalid IPv6 URL"),
        ("COAP://[::1/x", "Invalid IPv6 URL"),
        ("coap://127.0.0.1:0/x", "the port must be a number from 1 to 65535"),
    ],
)
def test_a_coap_uri_that_cannot_be_used_is_named_with_its_scheme(
    capsys: pytest.CaptureFixture[str], uri: str, reason: str
) -> None:
    """Probe BL: a coap:// URI refused was told "expected a coaps://HOST[:PORT]/PATH URI",
    the scheme the user did not write."""
    assert coap(capsys, "get", uri) == (
        2, "", f"iotdtls: error: expected a coap://HOST[:PORT]/PATH URI, got {uri!r}: {reason}\n")


@pytest.mark.parametrize(
    "flag",
    [
        ["--psk-identity", "dev1"], ["--psk", "xyz"], ["--peer-rpk", "server.pem"],
        ["--peer-rpk-sha256", "00" * 32], ["--rpk-key", "key.pem"], ["--cafile", "ca.crt"],
        ["--cert", "client.crt"], ["--key", "client.key"], ["--server-name", "gw.example"],
        ["--cache-dir", "chains"], ["--allow-no-ems"], ["--mtu", "500"], ["--retransmit", "9"],
        ["--keylog", "KEYLOG"],
    ],
)
def test_every_dtls_flag_is_refused_with_a_coap_uri(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: list[str]
) -> None:
    """Before the value is read (--psk xyz is no hex); --mtu too, which only a coaps://
    request uses; a --keylog file made for the refused command is not left behind."""
    keylog = tmp_path / "keys.log"
    given = [str(keylog) if word == "KEYLOG" else word for word in flag]
    assert coap(capsys, "get", "coap://127.0.0.1/x", *given) == (
        2, "", f"iotdtls: error: {flag[0]} is for coaps:// URIs (coap:// has no DTLS)\n")
    assert not keylog.exists()


def test_coap_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["coap"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "iotdtls: error: the following arguments are required: {get,post,put,delete,serve} "
        "(see --help)\n")


@pytest.mark.parametrize("command", [["get", "coaps://127.0.0.1/x", *CREDENTIALS],
                                     ["serve", *CREDENTIALS]])
def test_without_aiocoap_the_commands_say_how_to_get_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "aiocoap" else real(name)
    )
    assert coap(capsys, *command) == (
        2, "", "iotdtls: error: iotdtls coap needs aiocoap: pip install 'aiocoap==0.4.17' (or the"
        " iotdtls checkout with its extra: pip install '/path/to/iotdtls[coap]')\n")


def in_thread(coro: Callable[[], Coroutine[Any, Any, None]]) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(asyncio.wait_for(coro(), 30.0)),
                              daemon=True)
    thread.start()
    return thread


async def first_answer(context: Any, uri: str) -> Any:
    """The answer to a GET of `uri` from a server that is starting: a NetworkError until it
    listens, for 5 s at most."""
    for _ in range(100):
        try:
            return await get(context, uri)
        except aiocoap.error.NetworkError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no answer from {uri} within 5 s")


def serve_until_clients_end(
    clients: Callable[[], Coroutine[Any, Any, None]], port: int, *flags: str
) -> tuple[int, list[int]]:
    """`coap serve` on `port` with the test credentials and `flags`, in this thread, until
    `clients`, run in another thread, end (a SIGTERM then): its exit status, and the signals
    the fallback handler caught (none, if the server handled SIGTERM)."""

    async def then_stop() -> None:
        try:
            await clients()
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    with signal_fallback(signal.SIGTERM) as fallback:
        thread = in_thread(then_stop)
        status = main(["coap", "serve", "--listen", f"{LOCALHOST}:{port}", *CREDENTIALS, *flags])
        thread.join(10.0)
    return status, fallback


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_until_sigterm(caplog: pytest.LogCaptureFixture, sig: signal.Signals) -> None:
    """`coap serve` serves the demo site on the --listen address until SIGTERM (or Ctrl-C),
    then ends with 0, as `iotdtls server` does; a client in another thread checks /hello and
    /.well-known/core first."""
    port = free_udp_port()
    answers: list[bytes] = []

    async def client() -> None:
        try:
            async with coaps_client() as context:
                hello = await first_answer(context, f"coaps://{LOCALHOST}:{port}/hello")
                core = await get(context, f"coaps://{LOCALHOST}:{port}/.well-known/core")
                answers.extend([hello.payload, core.payload])
        finally:
            os.kill(os.getpid(), sig)

    with signal_fallback(sig) as fallback, caplog.at_level(logging.INFO):
        thread = in_thread(client)
        status = main(["coap", "serve", "--listen", f"{LOCALHOST}:{port}", *CREDENTIALS])
        thread.join(10.0)
    assert (status, fallback) == (0, [])
    assert answers[0] == HELLO.encode()
    assert b"</hello>" in answers[1] and b"</counter>" in answers[1] and b"obs" in answers[1]
    assert b"impl-info" not in answers[1]  # the site names no implementation
    assert ("iotdtls.cli", logging.INFO, f"listening on coaps://{LOCALHOST}:{port}") in (
        caplog.record_tuples)


def test_serve_keeps_to_its_max_connections_and_idle_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`coap serve --max-connections 1 --idle-timeout 0.5`: a second client's association
    makes room by letting the first go (`evicted_when_full`), and the second, once idle for
    half a second, is let go too (`idle expired 1` in the counters logged at the stop)."""
    port = free_udp_port()
    uri = f"coaps://{LOCALHOST}:{port}/hello"

    async def clients() -> None:
        async with coaps_client() as first:
            await first_answer(first, uri)
            async with coaps_client() as second:
                await get(second, uri)
                await asyncio.sleep(1.5)

    with caplog.at_level(logging.INFO):
        served = serve_until_clients_end(
            clients, port, "--max-connections", "1", "--idle-timeout", "0.5")
    assert served == (0, [])
    stopped = [message for name, _, message in caplog.record_tuples
               if name == "iotdtls.cli" and message.startswith("stopped: ")]
    assert len(stopped) == 1
    assert "handshakes 2 completed" in stopped[0]
    assert "idle expired 1;" in stopped[0]
    assert "evicted_when_full 1" in stopped[0]


def test_serve_logs_what_aiocoap_raised_in_one_line_and_bounds_its_repeats(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gap in a Block1 upload the transport no longer notes (here it notes one at a time:
    a second upload makes it let go of the first) goes on to aiocoap, whose spool raises
    ValueError for it: its handler answers 5.00 and logs "An exception occurred while rendering
    a resource" with a 20-line traceback. `coap serve` logs that line alone, its traceback a
    debug line (-v), and, as any of aiocoap's lines, once: five such blocks give one line (a
    count of the others at the stop)."""
    monkeypatch.setattr(uploads, "UPLOADS_TRACKED", 1)
    port = free_udp_port()
    codes: list[str] = []

    async def client() -> None:
        try:
            for _ in range(100):
                with contextlib.suppress(DtlsError):
                    async with device((LOCALHOST, port)) as dev:
                        blocks = ((1, 0, 0), (2, 0, 1), *((mid, 2, 0) for mid in range(3, 8)))
                        for mid, num, upload in blocks:
                            answer = await dev.ask(put_block(mid, num, True, b"7" * 16,
                                                             path="temp", szx=0,
                                                             query=(f"n={upload}",)))
                            codes.append(str(answer.code) if answer else "none")
                        return
                await asyncio.sleep(0.05)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    with signal_fallback(signal.SIGTERM) as fallback, caplog.at_level(logging.DEBUG):
        thread = in_thread(client)
        status = main(["coap", "serve", "--listen", f"{LOCALHOST}:{port}", "-v", *CREDENTIALS])
        thread.join(10.0)
    assert (status, fallback) == (0, [])
    assert [code.split()[0] for code in codes] == ["2.31", "2.31"] + ["5.00"] * 5
    rendering = "An exception occurred while rendering a resource: ValueError()"
    aiocoaps = [r for r in caplog.records if r.name == "coap-server"
                and r.levelno >= logging.WARNING]
    [line] = [r for r in aiocoaps if r.getMessage().startswith(rendering)]
    assert line.exc_info is None and line.exc_text is None
    assert "(from <ServerRemote coaps://127.0.0.1:" in line.getMessage()
    debug = [r for r in caplog.records if r.name == "iotdtls.cli"
             and r.getMessage().startswith(f"aiocoap raised: {rendering}")]
    assert len(debug) == 1 and debug[0].exc_info is not None
    assert [r.getMessage() for r in aiocoaps if "held back" in r.getMessage()] == [
        "4 more like 'An exception occurred while rendering a resource: %r' held back"]
    assert not any(r.exc_info for r in aiocoaps)


def test_serve_logs_its_counters_on_sigusr1_and_at_stop(caplog: pytest.LogCaptureFixture) -> None:
    """As `iotdtls server`: SIGUSR1 logs the DTLS server's counters and it goes on serving
    (SIGUSR1's default action killed it: status 138, no close_notify), and a stop logs them
    too ("stopped: handshakes 1 completed ...")."""
    port = free_udp_port()
    answers: list[bytes] = []

    def lines(start: str) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "iotdtls.cli" and r.getMessage().startswith(start)]

    async def client() -> None:
        try:
            async with coaps_client() as context:
                hello = await first_answer(context, f"coaps://{LOCALHOST}:{port}/hello")
                os.kill(os.getpid(), signal.SIGUSR1)
                for _ in range(100):
                    if lines("counters: "):
                        break
                    await asyncio.sleep(0.05)
                again = await get(context, f"coaps://{LOCALHOST}:{port}/hello")  # still serving
                answers.extend([hello.payload, again.payload])
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    with (signal_fallback(signal.SIGUSR1) as counters_fallback,
          signal_fallback(signal.SIGTERM) as fallback, caplog.at_level(logging.INFO)):
        thread = in_thread(client)
        status = main(["coap", "serve", "--listen", f"{LOCALHOST}:{port}", *CREDENTIALS])
        thread.join(10.0)
    assert (status, fallback, counters_fallback) == (0, [], [])
    assert answers == [HELLO.encode()] * 2
    (counters,) = lines("counters: ")
    assert counters.startswith("counters: handshakes 1 completed (0 resumed), 0 failed")
    (stopped,) = lines("stopped: ")
    assert stopped.startswith("stopped: handshakes 1 completed (0 resumed), 0 failed")


def test_serve_quiet_logs_no_line_per_handshake(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`coap serve -q`, as `iotdtls server -q`: no log line per handshake (a client without
    the right key could make thousands a second, probe BQ), where it listens and the counters
    only."""
    monkeypatch.setattr(logging.getLogger("iotdtls.aio"), "level", logging.NOTSET)  # put back
    port = free_udp_port()
    uri = f"coaps://{LOCALHOST}:{port}/hello"
    answers: list[bytes] = []

    async def clients() -> None:
        async with coaps_client() as context:
            answers.append((await first_answer(context, uri)).payload)
        with pytest.raises(AlertReceived):
            await aio.connect(LOCALHOST, port, client_config(psk=WRONG_PSK))

    with caplog.at_level(logging.INFO):
        served = serve_until_clients_end(clients, port, "-q")
    assert (served, answers) == ((0, []), [HELLO.encode()])
    assert [r.getMessage() for r in caplog.records if r.name == "iotdtls.aio"] == []
    (stopped,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped")]
    assert stopped.startswith("stopped: handshakes 1 completed (0 resumed), 1 failed")


def test_serve_heartbeat_ends_the_association_of_a_client_that_vanished(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`coap serve --heartbeat 1 --timeout 1`, as `iotdtls server`: heartbeats negotiated
    with a client that asks for them, and one going unanswered ends the association of a
    client gone without close_notify (an observer moved by a NAT rebinding, probe BQ finding
    2), which without it stayed for the idle timeout (an hour), or for ever while the server
    kept sending it notifications."""
    port = free_udp_port()
    answers: list[bytes] = []

    def failed() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "iotdtls.aio" and r.getMessage().startswith("association failed")]

    async def vanishing_client() -> None:
        for _ in range(100):  # until it listens
            client = await SameAddressClient.open((LOCALHOST, port))
            try:
                await client.handshake(client_config(heartbeat=True), timeout=1.0)
                break
            except TimeoutError:
                client.close()
        hello = aiocoap.Message(code=aiocoap.GET, uri_path=("hello",))
        hello.mtype, hello.mid, hello.token = aiocoap.CON, 1, b"t"
        client.send(hello.encode())
        answer = await client.recv(5.0)
        assert answer is not None
        answers.append(aiocoap.Message.decode(answer).payload)
        assert client.connection is not None and client.connection.heartbeats_negotiated
        client.close()  # gone: no close_notify
        for _ in range(160):
            if failed():
                break
            await asyncio.sleep(0.05)

    with caplog.at_level(logging.INFO):
        served = serve_until_clients_end(
            vanishing_client, port, "--heartbeat", "1", "--timeout", "1")
    assert (served, answers) == ((0, []), [HELLO.encode()])
    (line,) = failed()
    assert line.endswith(": the peer did not answer heartbeats for 1 s"), line
    (stopped,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped")]
    assert "associations failed 1," in stopped


def test_serve_hands_its_timeout_and_heartbeat_as_the_echo_server_does(handed: Handed) -> None:
    """--timeout S (the handshake's deadline, and the heartbeat's; 60 unless told) and
    --heartbeat SECONDS reach the configuration as `iotdtls server`'s do."""
    assert main(["coap", "serve", *CREDENTIALS]) == 130
    assert main(["coap", "serve", *CREDENTIALS, "--timeout", "3", "--heartbeat", "5"]) == 130
    defaults, told = (kwargs["config"] for _, kwargs in handed.calls)
    assert (defaults.handshake_timeout, defaults.heartbeat, defaults.keepalive_interval) == (
        ServerConfig.handshake_timeout, False, None)
    assert (told.handshake_timeout, told.heartbeat, told.keepalive_interval) == (3.0, True, 5.0)


@pytest.mark.parametrize("command", [["server"], ["coap", "serve"]])
def test_a_heartbeat_whose_retries_outlast_the_idle_timeout_is_refused(
    capsys: pytest.CaptureFixture[str], command: list[str], handed: Handed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the peer's records reset --idle-timeout: with --heartbeat and its retries
    (--timeout) longer, a client that only listens (an observer) would be let go for one lost
    heartbeat: one line, status 2 (serving, were it reached, ends at once as by Ctrl-C: 130)."""
    monkeypatch.setattr(echo_cli, "_serve_alone", handed.record)
    status = main([*command, *CREDENTIALS, "--heartbeat", "3", "--timeout", "2",
                   "--idle-timeout", "4.5"])
    assert status == 2
    assert capsys.readouterr() == ("", (
        "iotdtls: error: --heartbeat 3 plus --timeout 2 must not exceed --idle-timeout 4.5: a "
        "client that only listens would be let go before its heartbeat is answered\n"))
    assert main([*command, *CREDENTIALS, "--heartbeat", "3", "--timeout", "2",
                 "--idle-timeout", "5"]) == 130  # within: serving (here ended at once)


@pytest.mark.parametrize(
    "flags",
    [["--heartbeat", "0.5"], ["--heartbeat", "soon"], ["--timeout", "-1"], ["--timeout"],
     ["-q", "yes"]],
)
def test_serve_refuses_a_bad_heartbeat_or_timeout_in_the_echo_server_s_line(
    capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    """One line, status 2, worded as `iotdtls server`'s for the same flags."""
    said = []
    for command in (["server"], ["coap", "serve"]):
        with pytest.raises(SystemExit) as refused:
            main([*command, *CREDENTIALS, *flags])
        assert refused.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("iotdtls: error: "), err
        said.append(err)
    assert said[0] == said[1]


def test_serve_names_a_link_local_address_with_its_zone(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "listening on" URI of a link-local address carries its zone, written as a URI
    does (`%25lo`, RFC 6874 §2), so that it reaches the server as printed. A socket that takes
    any address stands in for the kernel's; the server stops as soon as it listens."""
    port = free_udp_port()

    def stopped() -> asyncio.Event:
        stop = asyncio.Event()
        stop.set()
        return stop

    monkeypatch.setattr(socket, "socket", TakesAnyAddress)
    monkeypatch.setattr(coap_cli, "stop_on_signals", stopped)
    with caplog.at_level(logging.INFO):
        status = main(["coap", "serve", "--listen", f"[fe80::1%lo]:{port}", *CREDENTIALS])
    assert status == 0
    assert ("iotdtls.cli", logging.INFO, f"listening on coaps://[fe80::1%25lo]:{port}") in (
        caplog.record_tuples)


def test_serve_names_an_unknown_interface_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A zone of 64 characters or more gave a 49-line UnicodeError traceback (the idna codec
    of Python's resolver: label too long; probe AU)."""
    port, zone = free_udp_port(), "z" * 64
    status = main(["coap", "serve", "--listen", f"[fe80::1%{zone}]:{port}", *CREDENTIALS])
    assert (status, capsys.readouterr().err) == (
        2, f"iotdtls: error: cannot listen on [fe80::1%{zone}]:{port}: the network interface "
           f"{zone} is unknown\n")



class Handed:
    """What `coap get`/`serve` hand to `iotdtls.coap` (recorded; the run then ends as if by
    Ctrl-C, exit status 130)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for name in ("client_context", "add_server_transport"):
            monkeypatch.setattr(iotdtls.coap, name, self.record)

    async def record(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        raise KeyboardInterrupt


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> Handed:
    return Handed(monkeypatch)


def test_an_observer_offers_and_answers_heartbeats(handed: Handed) -> None:
    """`get --observe` over coaps offers heartbeats (RFC 6520) and answers them: an observer
    sends nothing while notifications come, and a server's idle timeout counts only what its
    peer sends, so a server's keep-alive (`coap serve --heartbeat`) is what tells it the
    observer is still there. A single request offers none (its hello stays as it was)."""
    assert main(["coap", "get", "coaps://localhost/x", "--observe", *CREDENTIALS]) == 130
    assert main(["coap", "get", "coaps://localhost/x", *CREDENTIALS]) == 130
    (_, observing), (_, once) = handed.calls
    config = observing["config"]
    assert (config.heartbeat, config.answer_heartbeats, config.keepalive_interval) == (
        True, True, None
    )
    assert once["config"].heartbeat is False


def test_a_request_hands_its_flags_to_the_client_context(
    handed: Handed, tmp_path: Path
) -> None:
    """The URI's host is the name to check (and send); --timeout (30 s unless told), --mtu and
    --keylog reach the configuration; coaps only."""
    keylog = tmp_path / "keys.log"
    assert main(["coap", "get", "coaps://localhost/x", *CREDENTIALS]) == 130
    assert main(["coap", "get", "coaps://localhost/x", *CREDENTIALS, "--timeout", "4",
                 "--mtu", "600", "--keylog", str(keylog), "--retransmit", "9"]) == 130
    (_, defaults), (_, told) = handed.calls
    for kwargs in (defaults, told):
        assert (kwargs["plain_coap"], kwargs["chain_cache"]) == (False, None)
        assert kwargs["config"].server_name == "localhost"
    assert (defaults["config"].handshake_timeout, defaults["config"].keylog_file) == (30.0, None)
    config = told["config"]
    assert (config.handshake_timeout, config.mtu, config.keylog_file) == (4.0, 600, str(keylog))
    assert (defaults["config"].retransmit, config.retransmit) == (
        RFC6347_RETRANSMIT, CONSTRAINED_RETRANSMIT
    )


def test_a_coap_uri_hands_no_configuration(handed: Handed) -> None:
    assert main(["coap", "get", "coap://localhost/x"]) == 130
    ((_, kwargs),) = handed.calls
    assert kwargs == {"config": None, "plain_coap": True, "chain_cache": None}


def test_a_request_hands_the_chain_cache(handed: Handed, pki: Pki, tmp_path: Path) -> None:
    assert main(["coap", "get", "coaps://localhost/x", "--cafile", str(pki.ca_crt),
                 "--cache-dir", str(tmp_path)]) == 130
    ((_, kwargs),) = handed.calls
    assert isinstance(kwargs["chain_cache"], ChainCache)


def test_serve_hands_its_flags_to_the_server_transport(handed: Handed, tmp_path: Path) -> None:
    """The demo site on --listen (127.0.0.1:5684 unless told), --mtu and --keylog in the
    configuration, aiocoap's log under "coap-server"."""
    keylog = tmp_path / "keys.log"
    assert main(["coap", "serve", *CREDENTIALS]) == 130
    assert main(["coap", "serve", "--listen", "[::1]:9999", *CREDENTIALS, "--mtu", "600",
                 "--keylog", str(keylog), "--retransmit", "90"]) == 130
    (defaults, told) = handed.calls
    (context, bind), kwargs = defaults
    assert bind == ("127.0.0.1", 5684) and kwargs["config"].keylog_file is None
    assert context.log.name == "coap-server"
    (_, bind), kwargs = told
    assert bind == ("::1", 9999)
    assert (kwargs["config"].mtu, kwargs["config"].keylog_file) == (600, str(keylog))
    assert kwargs["config"].retransmit == RetransmitPolicy(90.0, 90.0)  # the cap never below it


def test_serve_hands_the_bound_on_request_bodies(
    handed: Handed, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-body-size (64 KiB unless told) reaches the server transport; it is a whole
    number of bytes, at least 1."""
    assert main(["coap", "serve", *CREDENTIALS]) == 130
    assert main(["coap", "serve", *CREDENTIALS, "--max-body-size", "1000"]) == 130
    assert [kwargs["max_body_size"] for _, kwargs in handed.calls] == [65536, 1000]
    with pytest.raises(SystemExit) as refused:
        main(["coap", "serve", *CREDENTIALS, "--max-body-size", "0"])
    assert refused.value.code == 2
    assert "argument --max-body-size: must be a whole number >= 1, got '0'" in (
        capsys.readouterr().err)


@pytest.mark.parametrize(
    ("wrong", "why"), [("-1", "must be a whole number >= 0, got '-1'"),
                       ("many", "must be a whole number >= 0, got 'many'")]
)
def test_serve_hands_the_bound_on_observations(
    handed: Handed, capsys: pytest.CaptureFixture[str], wrong: str, why: str
) -> None:
    """--max-observations (16 unless told, as the library's) reaches the server transport;
    0 keeps none (RFC 7641 §4.1: every registration served as a plain GET); a negative or
    non-number is a one-line usage error."""
    assert main(["coap", "serve", *CREDENTIALS]) == 130
    assert main(["coap", "serve", *CREDENTIALS, "--max-observations", "0"]) == 130
    assert main(["coap", "serve", *CREDENTIALS, "--max-observations", "3"]) == 130
    assert [kwargs["max_observations"] for _, kwargs in handed.calls] == [16, 0, 3]
    assert coap_cli.DEFAULT_MAX_OBSERVATIONS == observations.DEFAULT_MAX_OBSERVATIONS
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["coap", "serve", *CREDENTIALS, "--max-observations", wrong])
    assert refused.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"argument --max-observations: {why}" in line


def test_observe_of_a_resource_that_cannot_be_observed_prints_it_once(
    server: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coap(capsys, "get", server.uri("hello"), "--observe", "--duration", "0.3",
                *CREDENTIALS) == (0, HELLO + "\n", "2.05 Content\n")


def test_an_observation_the_server_ends_exits_1_with_why(
    server: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server goes away while the command follows /counter: the association's end is the
    error line (RFC 7252 §9.1: the observation cannot outlive its association)."""
    threading.Timer(0.3, server.stop).start()
    status, out, err = coap(capsys, "get", server.uri("counter"), "--observe", "--duration",
                            "10", *CREDENTIALS)
    assert status == 1 and out.strip(), (status, out, err)
    *codes, last = err.splitlines()
    peer = f"{server.address[0]}:{server.address[1]}"
    assert codes == ["2.05 Content"] * len(out.splitlines()), err
    assert last == f"iotdtls: coaps: the DTLS association with {peer} was closed", err


class Vanishing(resource.ObservableResource):
    """An observable resource that answers GET with 2.05 "here", then goes away: 0.2 s later
    its observers get `final` (RFC 7641 §4.2: a 4.04 when the resource is deleted, without
    Observe), which ends their observation (§3.2)."""

    def __init__(self, final: aiocoap.Message) -> None:
        super().__init__()
        self.final = final

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        asyncio.get_running_loop().call_later(0.2, self.updated_state, self.final)
        return aiocoap.Message(payload=b"here")


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize(("payload", "printed"), [(b"", ""), (b"deleted", "deleted\n")])
def test_an_observation_ended_by_an_error_notification_prints_it_and_exits_1(
    server: Served, capsys: pytest.CaptureFixture[str], payload: bytes, printed: str
) -> None:
    """The last notification is not 2.xx (RFC 7641 §3.2; libcoap's server sends 4.04 on the
    observation's token when it stops, or when the resource is deleted): its code and payload
    are printed as every notification's, and the status is an error response's, 1 (it
    printed nothing and exited 0, probe CH)."""
    final = aiocoap.Message(code=aiocoap.NOT_FOUND, payload=payload)
    server.site.site.add_resource(["vanishing"], Vanishing(final))
    assert coap(capsys, "get", server.uri("vanishing"), "--observe", "--duration", "10",
                *CREDENTIALS) == (1, "here\n" + printed, "2.05 Content\n4.04 Not Found\n")


@pytest.mark.parametrize("scheme", ["coap", "coaps"])
@pytest.mark.parametrize(
    ("final", "status"),
    [(aiocoap.Message(code=aiocoap.NOT_FOUND, payload=b"last"), 1),
     # without Observe: the last too (RFC 7641 §3.2), a success
     (aiocoap.Message(code=aiocoap.CONTENT, payload=b"last"), 0)],
)
def test_notifications_that_come_with_the_response_are_all_printed(
    capsys: pytest.CaptureFixture[str], scheme: str, final: aiocoap.Message, status: int
) -> None:
    """A server that sends the response and two notifications at once, the second the last
    (not 2.xx, or without Observe): every one printed, the last setting the status. aiocoap's
    `async for` over an observation keeps one notification at a time, and the observation's
    end took the place of the last before it was read (probe CH)."""

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        first = aiocoap.Message(code=aiocoap.CONTENT, observe=1, payload=b"first")
        second = aiocoap.Message(code=aiocoap.CONTENT, observe=2, payload=b"second")
        notifications = []
        for number, notification in enumerate((second, final.copy()), start=1):
            notification.mtype, notification.token = aiocoap.NON, request.token
            notification.mid = request.mid + number
            notifications.append(notification.encode())
        return [reply(request, first), *notifications]

    with hostile(scheme, answer) as target:
        result = coap(capsys, "get", *target, "--observe", "--duration", "10")
    codes = f"2.05 Content\n2.05 Content\n{final.code}\n"
    assert result == (status, "first\nsecond\nlast\n", codes)


def test_what_comes_in_the_turn_of_the_response_is_kept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What aiocoap hands the observation in the same turn as the response, before the command
    has read the response (two notifications, then the observation's end), is printed too:
    the command takes notifications from the request's making on, not from when it has the
    response, when the observation, already ended, would give none."""

    class Delivering:
        """A client context whose request gets its response and every notification at once."""

        def request(self, message: aiocoap.Message) -> Any:
            loop = asyncio.get_running_loop()
            observation = aiocoap.protocol.ClientObservation()
            response: asyncio.Future[aiocoap.Message] = loop.create_future()

            def deliver() -> None:
                response.set_result(aiocoap.Message(code=aiocoap.CONTENT, observe=1,
                                                    payload=b"first"))
                observation.callback(aiocoap.Message(code=aiocoap.CONTENT, observe=2,
                                                     payload=b"second"))
                observation.callback(aiocoap.Message(code=aiocoap.NOT_FOUND, payload=b"last"))
                observation.error(aiocoap.error.ObservationCancelled())

            loop.call_soon(deliver)
            return types.SimpleNamespace(response=response, observation=observation)

        async def shutdown(self) -> None:
            pass

    async def context(**settings: Any) -> Delivering:
        return Delivering()

    monkeypatch.setattr(iotdtls.coap, "client_context", context)
    assert coap(capsys, "get", "coap://127.0.0.1/x", "--observe", "--duration", "5") == (
        1, "first\nsecond\nlast\n", "2.05 Content\n2.05 Content\n4.04 Not Found\n")


def test_the_response_code_is_flushed_before_the_payload(
    server: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """stderr and stdout may be one pipe: the code line leaves first."""
    stderr = FlushedText()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["coap", "get", server.uri("hello"), *CREDENTIALS]) == 0
    assert stderr.flushed == "2.05 Content\n"


def test_only_what_aiocoap_raised_is_routed_and_the_hook_is_restored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A callback, a task or a finalizer of our own code that fails keeps Python's and
    asyncio's report with its traceback (a bug of ours shows); the unraisable hook in place
    before the run is back after it."""
    unraisable: list[BaseException | None] = []

    class Ours:
        def __del__(self) -> None:
            raise KeyError("a finalizer of ours")

    def callback() -> None:
        raise KeyError("a callback of ours")

    async def task() -> None:
        raise KeyError("a task of ours")

    async def work() -> int:
        loop = asyncio.get_running_loop()
        loop.call_soon(callback)
        failing = loop.create_task(task())
        Ours()
        await asyncio.sleep(0.05)
        del failing  # never awaited: reported when collected
        return 7

    previous = sys.unraisablehook
    sys.unraisablehook = recorder = lambda what: unraisable.append(what.exc_value)
    try:
        with debug_lines() as lines:
            assert aiocoap_failures.run_routing_aiocoap_failures(work()) == 7
        assert sys.unraisablehook is recorder
    finally:
        sys.unraisablehook = previous
    assert [repr(exc) for exc in unraisable] == ["KeyError('a finalizer of ours')"]
    reports = [(r.getMessage().partition("\n")[0], r.exc_info is not None and r.exc_info[1])
               for r in caplog.records if r.name == "asyncio"]
    assert [(text.partition(" ")[0], repr(exc)) for text, exc in reports] == [
        ("Exception", "KeyError('a callback of ours')"), ("Task", "KeyError('a task of ours')")]
    assert lines == []


def _raised_in(module: object, function: str, exc: BaseException) -> BaseException:
    """`exc` as raised by a function named `function` of a module named `module` (the
    innermost frame of its traceback: what `aiocoap_failures` looks at)."""
    namespace: dict[str, Any] = {"__name__": module}
    exec(f"def {function}(exc):\n    raise exc\n", namespace)
    try:
        namespace[function](exc)
    except BaseException as raised:
        return raised
    raise AssertionError("not raised")


def test_what_counts_as_raised_in_aiocoap() -> None:
    """Raised in aiocoap's code: its innermost frame is in the package `aiocoap` or any module
    under it; not a package merely starting so, one whose `__name__` is not a string, nor an
    exception never raised (no traceback)."""
    raised_in_aiocoap = aiocoap_failures.raised_in_aiocoap
    assert raised_in_aiocoap(_raised_in("aiocoap", "f", KeyError("k")))
    assert raised_in_aiocoap(_raised_in("aiocoap.transports.udp6", "f", KeyError("k")))
    assert not raised_in_aiocoap(_raised_in("aiocoapx.message", "f", KeyError("k")))
    assert not raised_in_aiocoap(_raised_in(42, "f", KeyError("k")))
    assert not raised_in_aiocoap(KeyError("never raised"))


def test_a_send_failure_is_an_attribute_error_of_udp6_eq_over_a_socket_error() -> None:
    """What aiocoap raises for a coap:// multicast request it cannot send (`send_failure`):
    an AttributeError raised in `aiocoap.transports.udp6`'s `__eq__` while a socket error was
    handled, which it gives; not one without that context, nor one raised elsewhere."""
    send_failure = aiocoap_failures.send_failure
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")

    def raised(module: str, function: str, context: BaseException | None) -> BaseException:
        try:
            raise context or KeyError("none")
        except BaseException:
            return _raised_in(module, function, AttributeError("'NoneType' object has no "
                                                               "attribute 'sockaddr'"))

    assert send_failure(raised("aiocoap.transports.udp6", "__eq__", unreachable)) is (
        unreachable)
    assert send_failure(raised("aiocoap.transports.udp6", "__eq__", None)) is None
    assert send_failure(raised("aiocoap.transports.udp6", "send", unreachable)) is None
    assert send_failure(raised("aiocoap.tokenmanager", "__eq__", unreachable)) is None
    assert send_failure(AttributeError("never raised")) is None
    typed = _raised_in("aiocoap.transports.udp6", "__eq__", TypeError("t"))
    typed.__context__ = unreachable
    assert send_failure(typed) is None


def test_send_failure_lines_are_debug_lines_and_the_multicast_remark_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiocoap's client logger while a request runs: its lines carrying a send failure (as
    the record's exception or an argument) are debug lines of `iotdtls.cli`, without the
    traceback; its multicast remark is held back without -v, shown with it; any other line
    is left as it is. The filters go with the run."""
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    try:
        raise unreachable
    except OSError:
        failure = _raised_in("aiocoap.transports.udp6", "__eq__", AttributeError("sockaddr"))
    aiocoap_log = logging.getLogger(aiocoap_failures.CLIENT_LOGGER)
    caplog.set_level(logging.DEBUG, "iotdtls.cli")
    for verbose in (False, True):
        with aiocoap_failures.reported_lines_held_back(verbose):
            aiocoap_log.warning(aiocoap_failures.MULTICAST_REMARK)
            aiocoap_log.error("Exception raised through dispatch_error: %s", failure,
                              exc_info=failure)
            aiocoap_log.warning("please report this as a bug in aiocoap: %r", failure)
            aiocoap_log.error("Exception raised", exc_info=failure)  # M15: as exc_info alone
            aiocoap_log.warning("another %s", "line")  # M15: an argument of no exception
            aiocoap_log.warning("other %s", ValueError("v"))  # M15: no send failure
    aiocoap_log.warning(aiocoap_failures.MULTICAST_REMARK)
    dispatched = "iotdtls.cli: aiocoap logged: Exception raised through dispatch_error: sockaddr"
    reported = "iotdtls.cli: aiocoap logged: please report this as a bug in aiocoap: " \
        "AttributeError('sockaddr')"
    alone = "iotdtls.cli: aiocoap logged: Exception raised"
    remark = f"coap: {aiocoap_failures.MULTICAST_REMARK}"
    assert [f"{r.name}: {r.getMessage()}" for r in caplog.records] == [
        dispatched, reported, alone, "coap: another line", "coap: other v",
        remark, dispatched, reported, alone, "coap: another line", "coap: other v",
        remark,
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_only_a_value_error_of_aiocoaps_message_decode_is_a_datagram_not_coap() -> None:
    """A datagram that is not CoAP shows as a ValueError raised in `aiocoap.message`'s
    `decode` (a text option not UTF-8): not another error there, nor a ValueError raised in
    another function of that module, or in a `decode` of another module."""
    not_coap = aiocoap_failures._not_coap
    undecodable = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    assert not_coap(_raised_in("aiocoap.message", "decode", undecodable))
    assert not not_coap(_raised_in("aiocoap.message", "decode", TypeError("t")))
    assert not not_coap(_raised_in("aiocoap.message", "encode", ValueError("v")))
    assert not not_coap(_raised_in("aiocoap.options", "decode", ValueError("v")))
    assert not not_coap(_raised_in("aiocoap.transports.udp6", "_received", ValueError("v")))


def test_datagrams_not_coap_after_the_first_are_counted_debug_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The event loop's handler of an `iotdtls coap` run: the first datagram that is not CoAP
    is a warning, the next a debug line with the count so far."""
    router = aiocoap_failures._Router(sys.unraisablehook)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG, logger="iotdtls"):
            for _ in range(2):
                exc = _raised_in("aiocoap.message", "decode", ValueError("not UTF-8"))
                router.loop_exception(loop, {"exception": exc, "message": "in a callback"})
    finally:
        loop.close()
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "iotdtls.coap"] == [
        (logging.WARNING, "coap: ignoring a datagram that is not a CoAP message (any more are "
         "logged at debug level)"),
        (logging.DEBUG, "coap: ignoring a datagram that is not a CoAP message (2 so far)"),
    ]


def link_local_address() -> tuple[str, str, int] | None:
    """A link-local IPv6 address of an interface of this host other than lo, its interface's
    name and index; None when there is none."""
    with contextlib.suppress(OSError), open("/proc/net/if_inet6", encoding="ascii") as table:
        for line in table:
            hexed, index, _, scope, _, name = line.split()
            if scope == "20" and name != "lo":
                packed = bytes.fromhex(hexed)
                return socket.inet_ntop(socket.AF_INET6, packed), name, int(index, 16)
    return None


@pytest.mark.parametrize("zone", ["name", "index"])
def test_a_coap_uri_with_an_rfc_6874_zone_reaches_the_link_local_server(
    capsys: pytest.CaptureFixture[str], zone: str
) -> None:
    """Found by a probe: coap://[fe80::…%25eth0]/… (RFC 6874's form, which coaps:// URIs take)
    failed in aiocoap's words, "Invalid zone identifier 25eth0" (it does not decode %25 in a
    coap:// URI), nothing sent; `%254` (an index) likewise. Now the zone is handed to
    aiocoap decoded, as `%eth0`: the request reaches the server and gets its answer."""
    found = link_local_address()
    if found is None:
        pytest.skip("no link-local IPv6 address on this host")
    address, name, index = found
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as server:
        try:
            server.bind((address, 0, 0, index))
        except OSError as exc:
            pytest.skip(f"cannot bind {address}%{name}: {exc}")
        server.settimeout(10.0)
        port = server.getsockname()[1]

        def answer() -> None:  # a piggybacked 2.05 Content "Hello" (RFC 7252 §3, §5.2.1)
            with contextlib.suppress(OSError):
                request, peer = server.recvfrom(2048)
                length = request[0] & 0x0F
                server.sendto(bytes([0x60 | length, 0x45]) + request[2:4 + length]
                              + b"\xffHello", peer)

        answering = threading.Thread(target=answer)
        answering.start()
        try:
            uri = f"coap://[{address}%25{name if zone == 'name' else index}]:{port}/hello"
            result = coap(capsys, "get", uri, "--timeout", "5")
        finally:
            server.close()
            answering.join(15.0)
    assert result == (0, "Hello", "2.05 Content\n")
