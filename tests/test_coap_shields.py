"""What the coaps transports refuse of a peer's CoAP before aiocoap (0.4.17) takes it (probe
BZ): message-format errors (RFC 7252 §3, §4.1, §12.1; `iotdtls.coap.wire`), unrecognized
critical options in a request (§5.4.1, `iotdtls.coap.options`), and Observe registrations
past a bound per association (RFC 7641 §4.1)."""

from __future__ import annotations

import asyncio
import logging

import aiocoap
import pytest
from aiocoap.message import Message

from iotdtls.coap.wire import format_error
from tests.coap_support import coaps_client, coaps_server, device, raw_request, run, uri
from tests.interop_support import AnsweringServer
from tests.peers import LOCALHOST
from tests.test_coap_details import Interface, Layer, SentAddress

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
