"""What the coaps transports refuse of a peer's CoAP before aiocoap (0.4.17) takes it (probe
BZ): message-format errors (RFC 7252 §3, §4.1, §12.1; `iotdtls.coap.wire`), unrecognized
critical options in a request (§5.4.1, `iotdtls.coap.options`), and Observe registrations
past a bound per association (RFC 7641 §4.1)."""

from __future__ import annotations

import asyncio
import logging
import sys
import types

import aiocoap
import pytest
from aiocoap.message import Direction, Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import OpaqueOption
from aiocoap.proxy.server import Proxy
from aiocoap.resource import Resource, Site

from iotdtls.coap import observations, server_context
from iotdtls.coap.options import RECOGNIZED, proxying_refused, unrecognized_critical
from iotdtls.coap.preconditions import EvaluatesPreconditions
from iotdtls.coap.server import CoapsServerInterface
from iotdtls.coap.wire import format_error
from iotdtls.errors import ConfigError
from tests.coap_support import (
    SERVER_CREDENTIALS,
    CoapSite,
    Device,
    coaps_client,
    coaps_server,
    device,
    raw_request,
    run,
    uri,
)
from tests.interop_support import AnsweringServer, server_config
from tests.peers import LOCALHOST
from tests.test_coap_details import Interface, Layer, SentAddress

PRECONDITION_FAILED = Code.PRECONDITION_FAILED  # 4.12, RFC 7252 §5.9.2.9

NOT_COAP = "ignoring a datagram that is not a CoAP message (any more are logged at debug level)"


def _rst(mid: int) -> bytes:
    """The Reset that rejects a CON message of message ID `mid` (RFC 7252 §4.2)."""
    return bytes([0x70, 0x00]) + mid.to_bytes(2, "big")


@pytest.mark.req("COAP-1")
@pytest.mark.parametrize(
    ("malformed", "reset"),
    [
        (bytes([0x49, 0x01, 0x00, 0x04]) + bytes(range(9)) + b"\xb5hello", _rst(4)),
        (bytes([0x4F, 0x01, 0x00, 0x05]) + bytes(range(15)) + b"\xb5hello", _rst(5)),
        (bytes([0x48, 0x01, 0x00, 0x06, 0x01, 0x02]), _rst(6)),
        (bytes([0x42, 0x01, 0x00, 0x0B, 0xAA, 0xBB, 0xB5]) + b"hello\xff", _rst(0x0B)),
        (bytes([0x42, 0x21, 0x00, 0x11, 0xAA, 0xBB]), _rst(0x11)),
        (bytes([0x42, 0xC1, 0x00, 0x12, 0xAA, 0xBB]), _rst(0x12)),
        (bytes([0x42, 0xE1, 0x00, 0x13, 0xAA, 0xBB]), _rst(0x13)),
        (bytes([0x42, 0x00, 0x00, 0x0F, 0xAA, 0xBB]), _rst(0x0F)),
        (bytes([0x40, 0x00, 0x00, 0x10, 0xFF, 0x41]), _rst(0x10)),
        (bytes([0x5F, 0x01, 0x00, 0x05]) + bytes(range(15)) + b"\xb5hello", None),
        (bytes([0x6F, 0x45, 0x00, 0x05]) + bytes(range(15)) + b"\xffhi", None),
        (bytes([0x52, 0xE1, 0x00, 0x13, 0xAA, 0xBB]), None),
    ],
    ids=["tkl-9", "tkl-15", "token-cut-short", "marker-no-payload", "class-1", "class-6",
         "class-7", "empty-with-token", "empty-with-payload", "non-tkl-15", "ack-tkl-15",
         "non-class-7"],
)
def test_a_message_format_error_aiocoap_would_take_is_not_coap(
    caplog: pytest.LogCaptureFixture, malformed: bytes, reset: bytes | None
) -> None:
    """RFC 7252 §3 (Token Length 9-15 reserved, a payload marker with no payload), §4.1 (an
    Empty message is its header alone), §12.1 (code classes 1, 6, 7 reserved): aiocoap 0.4.17
    decoded each (a server answered TKL 15 with its 15-byte token echoed, a truncated token
    was processed, a marker with no payload answered, a CON of class 7 silently ignored).
    Now, as any datagram aiocoap cannot decode, a CON is rejected with a matching Reset (§4.2),
    anything else ignored (§4.3), counted and logged; aiocoap is handed nothing."""
    layer = Layer()
    interface = Interface(layer)
    remote = SentAddress()
    with caplog.at_level(logging.WARNING, logger="iotdtls.coap"):
        interface.deliver(remote, malformed)
    assert remote.sent == ([] if reset is None else [reset])
    assert remote.not_coap == 1 and layer.messages == []
    assert [r.getMessage() for r in caplog.records] == [f"{remote!r}: {NOT_COAP}"]


def test_a_header_alone_is_read_for_its_format_errors() -> None:
    """Four bytes are a whole header (RFC 7252 §3): its token length is checked as any
    message's, and an Empty message of four bytes is well-formed."""
    assert format_error(bytes([0x5F, 0x01, 0x00, 0x05])) == (
        "token length 15 is reserved (RFC 7252 §3)")
    assert format_error(bytes([0x43, 0x01, 0x00, 0x05])) == "a 3-byte token cut short at 0 bytes"
    assert format_error(bytes([0x40, 0x00, 0x00, 0x05])) is None
    assert format_error(bytes([0x5F, 0x01, 0x00])) is None  # no header: aiocoap's error


_GET = bytes([0x40, 0x01, 0x00, 0x05])  # a CON GET without a token
_BARE_MARKER = "a payload marker with no payload (RFC 7252 §3)"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (_GET + b"\xd1\xff\x41\xff", _BARE_MARKER),  # delta 13: one more byte (268)
        (_GET + b"\xd1\xff\x41\xff\x41", None),
        (_GET + b"\xe1\x00\xff\x41\xff", _BARE_MARKER),  # delta 14: two more bytes
        (_GET + b"\xe1\xff\x00\x41\xff", _BARE_MARKER),
        (_GET + b"\xe1\x00\x00\x41\xff\x42", None),
        (_GET + b"\x1d\xff" + b"\x42" * 268 + b"\xff", _BARE_MARKER),  # length 13 + 255
        (_GET + b"\x1d\x00" + b"\x41" * 12 + b"\xff", None),  # the value's last byte is 0xff
        (_GET + b"\x1e\x00\x00" + b"\x41" * 269 + b"\xff", _BARE_MARKER),  # length 269
        (_GET + b"\x1e\x00\x00" + b"\x41" * 268 + b"\xff", None),
        (_GET + b"\xf1\x00\x41\xff", None),  # delta 15 is reserved: aiocoap's error
        (_GET + b"\xf0\x00\x00\xff", None),
        (_GET + b"\x1f\x41\xff", None),  # length 15 is reserved: aiocoap's error
        (_GET + b"\xd1", None),  # an extended delta cut short: aiocoap's error
        (_GET + b"\xe1\x00", None),
    ],
    ids=["delta-13", "delta-13-payload", "delta-14", "delta-14-high", "delta-14-payload",
         "length-13", "length-13-value-ff", "length-14", "length-14-value-ff", "delta-15",
         "delta-15-empty", "length-15", "delta-13-cut", "delta-14-cut"],
)
def test_a_bare_payload_marker_is_found_past_extended_options(
    message: bytes, error: str | None
) -> None:
    """RFC 7252 §3.1: a delta or length nibble of 13 takes one more byte (+13), 14 two
    (+269), 15 is reserved. The marker is found only where the options end; options aiocoap
    cannot decode are its to refuse (None here)."""
    assert format_error(message) == error


def _encoded(message: Message) -> bytes:
    message.mtype, message.mid = aiocoap.CON, 1
    return message.encode()


@pytest.mark.parametrize(
    "message",
    [
        raw_request(7, b"12345678", "hello"),  # the longest token
        _encoded(Message(code=aiocoap.PUT, uri_path=("a" * 300,), payload=b"\xff")),
        # a 2-byte option length; a payload of 0xff
        _encoded(Message(code=aiocoap.GET, uri_path=("x",), size1=1, no_response=26)),
        # a 1-byte delta to option 60, then 2 bytes to 258
        bytes([0x40, 0x00, 0x00, 0x0E]),  # an Empty CON: a CoAP ping (§4.3)
        bytes([0x62, 0x45, 0x12, 0x36, 0x01, 0x02]),  # a piggybacked 2.05, no payload
        bytes([0x42, 0x01, 0x00, 0x1C, 0xAA, 0xBB, 0xB5]) + b"hello"
        + bytes([0xE1, 0x07, 0xE7, 0x78]),  # option 2303: a 2-byte delta
    ],
    ids=["token-8", "long-option", "extended-deltas", "ping", "ack-no-payload", "option-2303"],
)
def test_a_well_formed_message_has_no_format_error(message: bytes) -> None:
    assert format_error(message) is None
    Message.decode(message)


@pytest.mark.req("COAP-1")
def test_a_server_rejects_a_request_with_token_length_15_with_a_reset() -> None:
    """Over a real association: a CON GET of /hello with TKL 15 was answered 2.05 with its
    15-byte token and TKL 15 (probe BZ); now a matching Reset, and the next request is served."""

    async def main() -> None:
        async with coaps_server() as server, device(server.address) as dev:
            tkl15 = bytes([0x4F, 0x01, 0x00, 0x05]) + bytes(range(15)) + b"\xb5hello"
            answer = await dev.ask(tkl15)
            assert answer is not None
            assert (answer.mtype, answer.code, answer.mid, answer.token) == (
                aiocoap.RST, aiocoap.EMPTY, 5, b"")
            served = await dev.ask(raw_request(6, b"ok", "hello"))
            assert served is not None and served.code == aiocoap.CONTENT

    run(main())


@pytest.mark.req("COAP-1")
def test_a_client_drops_a_response_with_token_length_15(caplog: pytest.LogCaptureFixture) -> None:
    """A hostile server answers each request with a piggybacked 2.05 whose TKL is 15 (the
    request's token padded with zeros, probe BZ's evil_server.py): aiocoap took it as a message
    (it acknowledged the request) and left the request waiting. Now it is dropped as not CoAP,
    and the request stays bounded by the application's wait."""
    caplog.set_level(logging.WARNING, logger="iotdtls.coap")

    def answer(data: bytes) -> list[bytes]:
        token = data[4:4 + (data[0] & 0x0F)]
        return [bytes([0x6F, 0x45]) + data[2:4] + token + bytes(15 - len(token)) + b"\xffhi"]

    async def main() -> None:
        async with coaps_client() as client:
            request = client.request(aiocoap.Message(
                code=aiocoap.GET, uri=uri((LOCALHOST, server.port), "hello")))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(request.response, 1.0)

    with AnsweringServer(answer) as server:
        run(main())
    assert [r.getMessage().partition(": ")[2] for r in caplog.records] == [NOT_COAP]


def _request(
    mid: int, options: list[tuple[int, bytes]], *, mtype: Type = aiocoap.CON,
    code: Code = aiocoap.GET, path: str = "hello", payload: bytes = b"",
) -> bytes:
    """A request of `path` with `options` added (number, value), encoded."""
    message = Message(code=code, uri_path=(path,), payload=payload)
    for number, value in options:
        message.opt.add_option(OpaqueOption(OptionNumber(number), value))
    message.mtype, message.mid, message.token = mtype, mid, b"t%d" % mid
    return message.encode()


@pytest.mark.req("COAP-1")
def test_an_unrecognized_critical_option_is_4_02_for_a_con_and_a_non_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 7252 §5.4.1: a CON GET with critical option 2303, 65271 or 9 (OSCORE, which this
    server does not do), a PUT of /temp with 2551, and Q-Block1/Q-Block2 (RFC 9177, which
    aiocoap does not do) got aiocoap's 2.05 / 2.04, the PUT changing /temp (probe BZ). Now
    4.02 Bad Option piggybacked, naming the option (§5.5.2); a NON request with one is
    rejected, ignored (§4.3); nothing reaches the resource."""

    async def main() -> None:
        async with coaps_server() as server, device(server.address) as dev:
            for mid, number in enumerate((2303, 65271, 9, 21, 19, 31), start=1):
                answer = await dev.ask(_request(mid, [(number, b"x")]))
                assert answer is not None
                assert (answer.mtype, answer.mid, answer.code) == (
                    aiocoap.ACK, mid, aiocoap.BAD_OPTION), number
                assert answer.payload == b"critical option %d not recognized" % number
            put = _request(10, [(2551, b"x")], code=aiocoap.PUT, path="temp", payload=b"99")
            refused = await dev.ask(put)
            assert refused is not None and refused.code == aiocoap.BAD_OPTION
            non = _request(11, [(2551, b"x")], mtype=aiocoap.NON, code=aiocoap.PUT,
                           path="temp", payload=b"98")
            assert await dev.ask(non, 0.5) is None
            temp = await dev.ask(_request(12, [], path="temp"))
            assert temp is not None and b"99" not in temp.payload and b"98" not in temp.payload

    caplog.set_level(logging.DEBUG, logger="iotdtls.coap")
    run(main())
    ignored = [r.getMessage() for r in caplog.records if "a NON request" in r.getMessage()]
    assert len(ignored) == 1 and ignored[0].startswith("<ServerRemote coaps://"), ignored
    assert ignored[0].endswith(": a NON request with critical option 2551, not recognized, ignored")


@pytest.mark.req("COAP-1")
def test_the_critical_options_a_plain_site_recognizes_and_elective_ones_pass() -> None:
    """If-Match, Uri-Host, If-None-Match, Uri-Port, Accept, Block2 (critical, recognized:
    `iotdtls.coap.options.RECOGNIZED`), an unknown elective option (2048, even: §5.4.1 lets
    it be ignored) and Uri-Path-Abbrev (13, the demo's `Site` resolves it: its own 4.02,
    without our diagnostic, for a value it does not know) reach aiocoap. The preconditions
    reach the resource, which evaluates them (RFC 7252 §5.10.8): `/hello` exists without an
    ETag, so an empty If-Match is fulfilled, another value or If-None-Match is not (4.12)."""

    async def main() -> None:
        async with coaps_server() as server, device(server.address) as dev:
            passing = [((1, b""), aiocoap.CONTENT), ((1, b"\x01"), PRECONDITION_FAILED),
                       ((3, LOCALHOST.encode()), aiocoap.CONTENT), ((5, b""), PRECONDITION_FAILED),
                       ((7, b"\x16\x34"), aiocoap.CONTENT), ((17, b"\x00"), aiocoap.CONTENT),
                       ((23, b"\x02"), aiocoap.CONTENT), ((2048, b"x"), aiocoap.CONTENT)]
            for mid, (option, code) in enumerate(passing, start=1):
                answer = await dev.ask(_request(mid, [option]))
                assert answer is not None and answer.code == code, option
            abbrev = await dev.ask(_request(20, [(13, b"\x7f")]))
            assert abbrev is not None and abbrev.code == aiocoap.BAD_OPTION
            assert abbrev.payload == b""  # aiocoap's answer, not ours

    run(main())


@pytest.mark.req("COAP-1")
def test_a_get_whose_accept_the_demo_cannot_serve_is_4_06() -> None:
    """RFC 7252 §5.10.4: a GET of /hello, /counter or /temp with Accept 50 (JSON) got 2.05
    text/plain (probe CC): Accept is recognized, as a resource's to evaluate, and aiocoap's
    resources do not. Now 4.06 Not Acceptable; Accept 0 (text/plain) is served, and
    /.well-known/core keeps aiocoap's own answer (link-format served, JSON 4.06)."""

    async def main() -> None:
        async with coaps_server() as server, device(server.address) as dev:
            mids = iter(range(1, 100))

            async def code_of(path: str, accept: bytes) -> Code:
                answer = await dev.ask(_request(next(mids), [(17, accept)], path=path))
                assert answer is not None
                return answer.code

            for path in ("hello", "counter", "temp"):
                assert await code_of(path, b"\x32") == Code.NOT_ACCEPTABLE, path
                assert await code_of(path, b"") == aiocoap.CONTENT, path
            core = ".well-known/core"
            answer = await dev.ask(_request(next(mids), [(17, b"\x28")], path="x"))
            assert answer is not None  # a path of no resource: 4.04 before any Accept
            assert answer.code == Code.NOT_FOUND
            message = Message(code=aiocoap.GET, uri_path=tuple(core.split("/")), accept=40)
            message.mtype, message.mid, message.token = aiocoap.CON, next(mids), b"wk"
            answer = await dev.ask(message.encode())
            assert answer is not None and answer.code == aiocoap.CONTENT
            message.opt.accept = 50
            message.mid = next(mids)
            answer = await dev.ask(message.encode())
            assert answer is not None and answer.code == Code.NOT_ACCEPTABLE

    run(main())


@pytest.mark.req("COAP-1")
def test_the_demo_temp_evaluates_if_match_and_if_none_match() -> None:
    """RFC 7252 §5.10.8: a PUT of /temp with an If-Match no ETag matched, or with
    If-None-Match once /temp has a reading, got 2.04 and changed it (probe CB): aiocoap
    evaluates neither. Now 4.12 Precondition Failed, /temp unchanged; the ETag of its GET,
    or an empty If-Match, is fulfilled."""

    def put(mid: int, options: list[tuple[int, bytes]], value: bytes) -> bytes:
        return _request(mid, options, code=aiocoap.PUT, path="temp", payload=value)

    async def main() -> None:
        async with coaps_server() as server, device(server.address) as dev:
            async def code_of(request: bytes) -> Code:
                answer = await dev.ask(request)
                assert answer is not None
                return answer.code

            async def reading() -> Message:
                answer = await dev.ask(_request(next(mids), [], path="temp"))
                assert answer is not None and answer.code == aiocoap.CONTENT
                return answer

            mids = iter(range(1, 100))
            # No reading yet: If-Match (any) fails, If-None-Match holds.
            assert await code_of(put(next(mids), [(1, b"")], b"19")) == PRECONDITION_FAILED
            assert await code_of(put(next(mids), [(5, b"")], b"20")) == aiocoap.CHANGED
            first = await reading()
            assert first.payload == b"20" and first.opt.etag is not None
            assert await code_of(put(next(mids), [(1, b"\xee")], b"99")) == PRECONDITION_FAILED
            assert await code_of(put(next(mids), [(5, b"")], b"77")) == PRECONDITION_FAILED
            assert (await reading()).payload == b"20"
            matching = [(1, b"\xee"), (1, first.opt.etag)]  # one value of several matches
            assert await code_of(put(next(mids), matching, b"21")) == aiocoap.CHANGED
            second = await reading()
            assert second.payload == b"21" and second.opt.etag not in (None, first.opt.etag)
            # The old ETag no longer matches; an empty If-Match matches any reading.
            assert await code_of(put(next(mids), [(1, first.opt.etag)], b"22")) == (
                PRECONDITION_FAILED)
            assert await code_of(put(next(mids), [(1, b"")], b"23")) == aiocoap.CHANGED
            assert (await reading()).payload == b"23"

    run(main())


class _Plain(EvaluatesPreconditions):
    """A resource that evaluates preconditions and names no Content-Format (no `ct`)."""

    async def render_get(self, request: Message) -> Message:
        return Message(payload=b"plain")

    async def render_put(self, request: Message) -> Message:
        return Message(code=aiocoap.CHANGED)


def _incoming(message: Message) -> Message:
    message.direction = Direction.INCOMING
    return message


def test_a_resource_without_a_content_format_serves_any_accept_and_keeps_no_response() -> None:
    """`EvaluatesPreconditions` checks Accept only against a resource's one `ct`: a resource
    without one serves a GET whatever its Accept (RFC 7252 §5.10.4 leaves the format to it).
    A 4.12 it answers keeps the request's No-Response (RFC 7967), as aiocoap's render does
    for a resource's own response, so a client that asked for no 4.xx gets none."""
    answer = asyncio.run(_Plain().render(_incoming(Message(code=aiocoap.GET, accept=50))))
    assert (answer.code, answer.payload) == (aiocoap.CONTENT, b"plain")
    put = Message(code=aiocoap.PUT, if_match=[b"\x01"], no_response=16, payload=b"1")
    failed = asyncio.run(_Plain().render(_incoming(put)))
    assert failed.code == PRECONDITION_FAILED and failed.opt.no_response == 16


@pytest.mark.req("COAP-1")
def test_proxy_uri_and_proxy_scheme_to_a_site_that_is_no_proxy_are_5_05() -> None:
    """RFC 7252 §5.10.2: a server unable to act as a forward proxy answers 5.05 Proxying Not
    Supported; aiocoap's plain `Site` served /hello's 2.05, Proxy-Uri ignored. A NON request
    gets a NON 5.05."""

    async def main() -> None:
        async with coaps_server() as server, device(server.address) as dev:
            for mid, option in enumerate(
                [(35, b"coap://example.com/hello"), (39, b"coap")], start=1
            ):
                answer = await dev.ask(_request(mid, [option]))
                assert answer is not None and answer.code == aiocoap.PROXYING_NOT_SUPPORTED
                assert answer.payload == b"this server is not a forward proxy"
            non = await dev.ask(_request(3, [(35, b"coap://example.com/")], mtype=aiocoap.NON))
            assert non is not None
            assert (non.mtype, non.code) == (aiocoap.NON, aiocoap.PROXYING_NOT_SUPPORTED)

    run(main())


class _ForwardProxy(Proxy):
    """An aiocoap proxy, never started (only its type counts)."""

    def __init__(self) -> None:
        pass


def test_the_transport_hands_proxying_to_a_site_that_proxies() -> None:
    """The server asks `proxying_refused` of the site it serves: a Proxy-Uri request to an
    aiocoap proxy goes on to it, to a plain `Site` it is answered 5.05 here."""
    for site, handed_on in ((_ForwardProxy(), True), (Site(), False)):
        remote = SentAddress()
        request = Message.decode(_request(1, [(35, b"coap://example.com/")]), remote)
        interface = CoapsServerInterface(
            Layer(), server_config(), lambda peer: (), site=lambda site=site: site
        )
        assert interface._admit(remote, request) is handed_on
        assert len(remote.sent) == (0 if handed_on else 1)  # 5.05, piggybacked


def test_a_registration_is_live_while_aiocoap_keeps_its_request() -> None:
    """`_live_request` reads aiocoap's `TokenManager.incoming_requests` by token and remote;
    a message manager without one (not aiocoap's) makes every registration noted live."""
    remote = SentAddress()
    plain = CoapsServerInterface(Layer(), server_config(), lambda peer: ())
    assert plain._live_request(remote)(b"any")
    manager = types.SimpleNamespace(
        token_manager=types.SimpleNamespace(incoming_requests={(b"kept", remote): None})
    )
    aiocoaps = CoapsServerInterface(manager, server_config(), lambda peer: ())
    live = aiocoaps._live_request(remote)
    assert live(b"kept") and not live(b"gone")
    assert not aiocoaps._live_request(SentAddress())(b"kept")


def test_what_is_recognized_follows_the_site(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy-Uri goes to a site that proxies; Uri-Path-Abbrev only to an aiocoap `Site`, which
    resolves it; OSCORE and EDHOC only to aiocoap's `OscoreSiteWrapper` (its module needs
    cbor2, not installed here: a stand-in module of that name)."""
    proxied = Message.decode(_request(1, [(35, b"coap://example.com/")]))
    assert proxying_refused(proxied, Site()) and not proxying_refused(proxied, _ForwardProxy())
    assert unrecognized_critical(proxied, Site()) is None
    abbrev = Message.decode(_request(2, [(13, b"\x01")]))
    assert unrecognized_critical(abbrev, Site()) is None
    assert unrecognized_critical(abbrev, Resource()) == 13
    # an option recognized for its site ends no search: a later unrecognized one is named
    abbrev_then = Message.decode(_request(4, [(13, b"\x01"), (2303, b"x")]))
    assert unrecognized_critical(abbrev_then, Site()) == 2303
    oscore = Message.decode(_request(3, [(9, b""), (21, b"")]))
    assert unrecognized_critical(oscore, Site()) == 9

    wrapper_module = types.ModuleType("aiocoap.oscore_sitewrapper")

    class OscoreSiteWrapper:
        pass

    vars(wrapper_module)["OscoreSiteWrapper"] = OscoreSiteWrapper
    monkeypatch.setitem(sys.modules, "aiocoap.oscore_sitewrapper", wrapper_module)
    assert unrecognized_critical(oscore, OscoreSiteWrapper()) is None
    oscore_then = Message.decode(_request(5, [(9, b""), (2303, b"x")]))
    assert unrecognized_critical(oscore_then, OscoreSiteWrapper()) == 2303
    assert unrecognized_critical(oscore, Site()) == 9
    assert sorted(int(n) for n in RECOGNIZED) == [1, 3, 5, 7, 11, 15, 17, 23, 27, 35, 39]


def _observe(mid: int, token: bytes, observe: int | None = 0) -> bytes:
    """A CON GET of /counter registering (Observe 0) or cancelling (1) with `token`."""
    message = Message(code=aiocoap.GET, uri_path=("counter",), observe=observe)
    message.mtype, message.mid, message.token = aiocoap.CON, mid, token
    return message.encode()


@pytest.mark.req("COAP-1")
def test_observe_registrations_past_the_bound_are_served_as_plain_gets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One association registered 1000-5000 observations of /counter and acknowledged
    nothing; the server sent thousands of notifications a second (probe BZ). Now the 17th live
    registration (`DEFAULT_MAX_OBSERVATIONS`) is served as a plain GET: its response has no
    Observe option, so the client knows it was not added (RFC 7641 §4.1, §3.1). A registration
    renewed with its token counts once; one cancelled (Observe 1, §3.6) frees its place. The
    end of the association sums up those refused."""
    caplog.set_level(logging.DEBUG, logger="iotdtls.coap")
    site = CoapSite(counter_interval=600.0)

    async def main() -> None:
        async with coaps_server(site) as server:
            async with device(server.address) as dev:
                await registrations(dev)
            await asyncio.sleep(0.3)  # the server hears close_notify

    async def registrations(dev: Device) -> None:
        async def observed(mid: int, token: bytes, observe: int | None = 0) -> bool:
            answer = await dev.ask(_observe(mid, token, observe))
            assert answer is not None and answer.code == aiocoap.CONTENT
            assert answer.token == token
            return answer.opt.observe is not None

        bound = observations.DEFAULT_MAX_OBSERVATIONS
        assert bound == 16
        assert [await observed(n, b"o%d" % n) for n in range(bound)] == [True] * bound
        assert not await observed(100, b"extra")
        assert await observed(101, b"o3")  # a renewal of a live one
        assert not await observed(103, b"extra2")
        assert not await observed(104, b"o5", observe=1)  # cancelled: a plain GET
        assert await observed(105, b"new")
        assert not await observed(106, b"newer")

    run(main())
    said = [r.getMessage() for r in caplog.records]
    assert sum("an Observe registration past 16 live ones served as a plain GET" in line
               for line in said) == 3
    assert any(line.startswith("<ServerRemote coaps://") and line.endswith(
        ": 3 Observe registrations past 16 live ones were served as plain GETs")
        for line in said), said


class _Seen(Resource):
    """A resource that keeps the Observe option of each GET it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.observe: list[object] = []

    async def render_get(self, request: Message) -> Message:
        self.observe.append(request.opt.observe)
        return Message(payload=b"seen")


@pytest.mark.req("COAP-1")
def test_only_a_registration_counts_and_one_refused_reaches_the_resource_without_observe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the bound (1 here, taken by a live registration of /counter), a GET without
    Observe or with Observe 1 is no registration (RFC 7641 §3.1): neither counted nor
    refused, handed on as it came; a registration (Observe 0) is refused and reaches the
    resource with no Observe option at all, as a GET that never had one."""
    caplog.set_level(logging.DEBUG, logger="iotdtls.coap")
    site = CoapSite(counter_interval=600.0)
    seen = _Seen()
    site.site.add_resource(["seen"], seen)

    async def main() -> None:
        async with coaps_server(site, max_observations=1) as server, device(
            server.address
        ) as dev:
            first = await dev.ask(_observe(1, b"live"))
            assert first is not None and first.opt.observe is not None
            for mid, observe in ((2, None), (3, 1), (4, 0)):
                message = Message(code=aiocoap.GET, uri_path=("seen",), observe=observe)
                message.mtype, message.mid, message.token = aiocoap.CON, mid, b"s%d" % mid
                answer = await dev.ask(message.encode())
                assert answer is not None and answer.code == aiocoap.CONTENT

    run(main())
    assert seen.observe == [None, 1, None]
    refused = [r.getMessage() for r in caplog.records if "served as a plain GET" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith("<ServerRemote coaps://"), refused


@pytest.mark.req("COAP-1")
def test_the_bound_on_observations_is_the_server_s_to_set() -> None:
    """`max_observations` (like `max_body_size`): 0 serves every registration as a plain GET,
    and the notifications of a NON flood stop at the bound; anything but a whole number from 0
    is a one-line `ConfigError`."""
    site = CoapSite(counter_interval=0.05)

    async def main() -> None:
        async with coaps_server(site, max_observations=0) as server, device(
            server.address
        ) as dev:
            answer = await dev.ask(_observe(1, b"zero"))
            assert answer is not None and answer.opt.observe is None
        async with coaps_server(site, max_observations=2) as server, device(
            server.address
        ) as dev:
            for n in range(50):  # NON registrations, as the probe's
                message = Message(code=aiocoap.GET, uri_path=("counter",), observe=0)
                message.mtype, message.mid, message.token = aiocoap.NON, n, b"n%d" % n
                dev.connection.send(message.encode())
            tokens, loop = set(), asyncio.get_running_loop()
            end = loop.time() + 1.0
            while loop.time() < end and (note := await dev.answer(0.2)) is not None:
                if note.opt.observe is not None:
                    tokens.add(note.token)
            assert tokens == {b"n0", b"n1"}

    run(main())
    for wrong, shown in ((-1, "-1"), (1.5, "float"), (True, "True")):
        with pytest.raises(ConfigError, match=(
            f"^max_observations must be a whole number of registrations, 0 or more, got {shown}$"
        )):
            run(server_context(None, (LOCALHOST, 0), credentials=SERVER_CREDENTIALS,
                               max_observations=wrong))
