"""The pieces of the coaps transports on their own (RFC 7252 §9.1): the remotes that stand for
one association each, the errors a request fails with when its association fails or ends, the
advice they give, and the raw-public-key pins of a credentials map."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from aiocoap import CON, EMPTY, GET, RST, error
from aiocoap.credentials import CredentialsMissingError
from aiocoap.message import Message, UndecidedRemote

from iotdtls._addresses import host_from_uri
from iotdtls.coap.addresses import (
    COAP_HEADROOM,
    RECORD_OVERHEAD_BOUND,
    TOKENS_KEPT,
    CoapsAddress,
    CoapsInterface,
    block_size_exp,
    hostinfo,
    reset_for,
)
from iotdtls.coap.client import ClientRemote, _destination
from iotdtls.coap.credentials import (
    DtlsRawPublicKey,
    DtlsX509,
    ServerCredentials,
    client_config_for,
    load_credentials,
)
from iotdtls.coap.errors import (
    AssociationClosed,
    AssociationFailed,
    AssociationTimeout,
    association_error,
)
from iotdtls.config import Mode
from iotdtls.credentials import pem_blocks, public_key_pin
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    ConfigError,
    DtlsError,
    HandshakeTimeout,
    IntegrityLimitReached,
    ProtocolError,
)
from iotdtls.identity import PskIdentity, UnauthenticatedPeer
from tests.coap_support import SERVER_CREDENTIALS, RpkFiles, make_rpk_files
from tests.interop_support import client_config
from tests.peers import CLIENT_IDENTITY

PEER = PskIdentity(b"dev1")


def pem_to_der(pem: bytes) -> bytes:
    (der,) = pem_blocks(pem, "PUBLIC KEY")
    return der


# -- remotes ----------------------------------------------------------------------------------


def test_a_remote_names_its_peer_uri_and_state() -> None:
    remote = CoapsAddress(("192.0.2.1", 5684), 1232, PEER, ("dev1",))
    assert remote.ended is False
    assert repr(remote) == "<CoapsAddress coaps://192.0.2.1 psk identity b'dev1'>"
    remote.ended = True
    assert repr(remote) == "<CoapsAddress coaps://192.0.2.1 psk identity b'dev1' ended>"
    assert repr(CoapsAddress(("2001:db8::1", 6000), 1232)) == (
        "<CoapsAddress coaps://[2001:db8::1]:6000>"
    )


def test_hostinfo_leaves_out_the_coaps_port_only() -> None:
    assert hostinfo(("192.0.2.1", 5684)) == "192.0.2.1"
    assert hostinfo(("192.0.2.1", 5683)) == "192.0.2.1:5683"
    assert hostinfo(("2001:db8::1", 5684, 0, 0)) == "[2001:db8::1]"


def test_hostinfo_writes_a_zone_as_a_uri_does() -> None:
    """RFC 6874 §2: `[fe80::1%25eth0]`, from a scope id (by the interface's name) or a zone
    in the host; a URI read back gives the socket's `fe80::1%lo` again."""
    lo = socket.if_nametoindex("lo")
    assert hostinfo(("fe80::1", 5684, 0, lo)) == "[fe80::1%25lo]"
    assert hostinfo(("fe80::1%eth0", 9)) == "[fe80::1%25eth0]:9"
    # a zone's own "%" and "/" are percent-encoded too, and read back from the first "%25"
    assert hostinfo(("fe80::1%a/b%c", 9)) == "[fe80::1%25a%2Fb%25c]:9"
    assert host_from_uri("fe80::1%25a%2Fb%25c") == "fe80::1%a/b%c"
    assert _destination(Message(code=GET, uri=f"coaps://{hostinfo(('fe80::1', 9, 0, lo))}/")) == (
        "fe80::1%lo", 9)


def test_errors_write_a_zone_as_messages_do_and_uris_as_uris_do() -> None:
    """RFC 4007 §11: an error or log line writes the zone after "%" and always the port,
    as `format_address` does; only a URI has "%25" (RFC 6874 §2). An error line said "DTLS
    handshake with [fe80::1%25eth0]:9 failed: nothing listens on [fe80::1%eth0]:9" (probe
    AS)."""
    lo = socket.if_nametoindex("lo")
    layer = Layer()
    for address, name in [(("fe80::1", 9, 0, lo), "[fe80::1%lo]:9"),
                          (("fe80::1%eth0", 5684), "[fe80::1%eth0]:5684"),
                          (("192.0.2.1", 5684), "192.0.2.1:5684")]:
        remote = CoapsAddress(address, 1232, PEER)
        assert remote.peer_name == name
        Interface(layer).association_ended(remote, None)
        assert str(layer.errors[-1][0]) == f"coaps: the DTLS association with {name} was closed"
    assert repr(CoapsAddress(("fe80::1", 9, 0, lo), 1232)) == "<CoapsAddress coaps://[fe80::1%25lo]:9>"


def test_claims_are_the_peer_then_the_matching_labels() -> None:
    assert CoapsAddress(("192.0.2.1", 5684), 1232, PEER, ("a", "b")).authenticated_claims == (
        PEER, "a", "b")
    assert CoapsAddress(("192.0.2.1", 5684), 1232).authenticated_claims == ()
    unasked = CoapsAddress(("192.0.2.1", 5684), 1232, UnauthenticatedPeer(), ("x",))
    assert unasked.authenticated_claims == ()


@pytest.mark.parametrize("szx", range(7))
def test_the_block_size_is_the_largest_that_fits_a_datagram(szx: int) -> None:
    """RFC 7959 §2.2: block, CoAP headroom and record overhead in one datagram of the MTU."""
    fits = 2 ** (szx + 4) + COAP_HEADROOM + RECORD_OVERHEAD_BOUND
    assert block_size_exp(fits) == szx
    assert block_size_exp(fits - 1) == max(szx - 1, 0)
    remote = CoapsAddress(("192.0.2.1", 5684), fits)
    assert remote.maximum_block_size_exp == szx
    assert remote.maximum_payload_size == 2 ** (szx + 4)


class Layer:
    """aiocoap's message layer as the interface sees it: what it is handed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.errors: list[tuple[BaseException, Any]] = []

    def dispatch_message(self, message: Message) -> None:
        self.messages.append(message)

    def dispatch_error(self, exc: BaseException, remote: Any) -> None:
        self.errors.append((exc, remote))


class Interface(CoapsInterface):
    """The shared part alone (each transport adds how remotes are found and shut down)."""

    async def determine_remote(self, request: Message) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class SentAddress(CoapsAddress):
    """A remote that keeps what is sent over its association."""

    def __init__(self) -> None:
        super().__init__(("192.0.2.1", 5684), 1232, PEER)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


#: A CON GET, MID 7, token "t" (RFC 7252 §3).
GET_REQUEST = bytes([0x41, 0x01, 0x00, 0x07]) + b"t"


@pytest.mark.parametrize(
    "not_coap",
    [b"\xff",  # no CoAP header
     GET_REQUEST + bytes([0xB1, 0xFF])],  # Uri-Path 0xff: a text option not UTF-8 (§3.2)
    ids=["no-header", "text-option-not-utf-8"],
)
def test_the_interface_hands_over_messages_and_logs_what_is_not_coap(
    caplog: pytest.LogCaptureFixture, not_coap: bytes
) -> None:
    """A message aiocoap cannot decode is ignored, counted and logged, whatever aiocoap raises
    for it (a text option that is not UTF-8 raised UnicodeDecodeError, which ended the
    association; probe AS)."""
    layer = Layer()
    interface = Interface(layer)
    remote = SentAddress()
    interface.deliver(remote, GET_REQUEST)
    assert [(m.mid, m.token, m.remote) for m in layer.messages] == [(7, b"t", remote)]
    with caplog.at_level(logging.DEBUG, logger="iotdtls.coap"):
        for _ in range(3):
            interface.deliver(remote, not_coap)
        interface.association_ended(remote, None)
    # One warning, however many come (a server could flood the log with them); the others
    # at debug level, counted.
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"{remote!r}: ignoring a datagram that is not a CoAP message (any "
                          "more are logged at debug level)"),
        (logging.DEBUG, f"{remote!r}: ignoring a datagram that is not a CoAP message (2 so far)"),
        (logging.DEBUG, f"{remote!r}: ignoring a datagram that is not a CoAP message (3 so far)"),
        (logging.INFO, f"{remote!r}: 3 datagrams that were not CoAP messages were ignored"),
    ]
    assert len(layer.messages) == 1 and remote.not_coap == 3


@pytest.mark.parametrize(
    ("not_coap", "reset"),
    [(GET_REQUEST + bytes([0xB1, 0xFF]), bytes([0x70, 0x00, 0x00, 0x07])),  # CON, MID 7
     (bytes([0x40, 0x01, 0xAB, 0xCD, 0xBD]), bytes([0x70, 0x00, 0xAB, 0xCD])),  # option cut
     (bytes([0x51, 0x01, 0x00, 0x07]) + b"t" + bytes([0xB1, 0xFF]), None),  # NON
     (bytes([0x61, 0x45, 0x00, 0x07]) + b"t" + bytes([0x81, 0xFF]), None),  # ACK
     (bytes([0x81, 0x01, 0x00, 0x07]) + b"t" + bytes([0xB1, 0xFF]), None),  # version 2
     (bytes([0x40, 0x01, 0x00]), None),  # no message ID
     (b"\xff", None)],
    ids=["con-text-option", "con-option-cut-short", "non", "ack",
         "version-2", "short-header", "no-header"],
)
def test_a_confirmable_message_that_cannot_be_decoded_is_rejected_with_a_reset(
    caplog: pytest.LogCaptureFixture, not_coap: bytes, reset: bytes | None
) -> None:
    """RFC 7252 §4.2: a CON message with a format error is rejected with a matching Reset (an
    Empty message of its message ID), sent over the same association; a NON one is ignored
    (§4.3), as is what has no CoAP header of version 1. Counted and logged as before (it was
    dropped silently: the client retransmitted it until it gave up, ~93 s; probe AU)."""
    layer = Layer()
    interface = Interface(layer)
    remote = SentAddress()
    with caplog.at_level(logging.WARNING, logger="iotdtls.coap"):
        interface.deliver(remote, not_coap)
        interface.deliver(remote, not_coap)
    assert remote.sent == ([] if reset is None else [reset, reset])  # one for each
    assert remote.not_coap == 2 and layer.messages == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{remote!r}: ignoring a datagram that is not a CoAP message (any more are logged at "
        "debug level)"]
    if reset is not None:
        rst = Message.decode(reset)
        assert (rst.mtype, rst.code, rst.token) == (RST, EMPTY, b"")
        assert rst.mid == int.from_bytes(not_coap[2:4], "big")


def test_only_responses_to_requests_sent_are_counted() -> None:
    """`responses_received` counts a response by the token of a request sent over the
    association, among the latest `TOKENS_KEPT` (it counted any message with a response code:
    one with another token made the command line say a response was not complete)."""
    interface = Interface(Layer())
    remote = CoapsAddress(("192.0.2.1", 5684), 1232, PEER)

    def response(token: bytes) -> bytes:
        return bytes([0x60 | len(token), 0x45, 0x00, 0x07]) + token  # ACK 2.05 (§3)

    for n in range(TOKENS_KEPT + 1):
        remote.request_sent(b"%d" % n)
    remote.request_sent(b"1")  # sent again: now the latest
    remote.request_sent(b"x")  # so "2" is forgotten, not "1"
    counted = []
    for token in (b"0", b"1", b"2", b"3", b"x", b"%d" % TOKENS_KEPT, b"other"):
        before = remote.responses_received
        interface.deliver(remote, response(token))
        if remote.responses_received > before:
            counted.append(token)
    assert counted == [b"1", b"3", b"x", b"%d" % TOKENS_KEPT]  # "3": the oldest kept
    interface.deliver(remote, bytes([0x41, 0x01, 0x00, 0x08]) + b"x")  # a request: not counted
    assert remote.responses_received == 4


def test_a_request_sent_through_the_interface_has_its_response_counted() -> None:
    """`CoapsInterface.send` notes the token of a request it sends (`request_sent`): the
    response carrying it counts in `responses_received`."""
    interface = Interface(Layer())
    remote = SentAddress()
    request = Message(code=GET)
    request.mtype, request.mid, request.token, request.remote = CON, 9, b"u", remote
    interface.send(request)
    assert len(remote.sent) == 1
    interface.deliver(remote, bytes([0x61, 0x45, 0x00, 0x09]) + b"u")  # its ACK 2.05 (§3)
    assert remote.responses_received == 1


def test_the_reset_for_a_bare_confirmable_header() -> None:
    """`reset_for` of the four bytes of a CON header alone (version 1, a message ID, RFC 7252
    §3) is the Reset of that message ID; of fewer, None."""
    assert reset_for(bytes([0x40, 0x01, 0x12, 0x34])) == bytes([0x70, 0x00, 0x12, 0x34])
    assert reset_for(bytes([0x40, 0x01, 0x12])) is None


class StoringLayer(Layer):
    """A message layer with a duplicate store of its own (`_recent_messages`)."""

    def __init__(self, store: Any) -> None:
        super().__init__()
        self._recent_messages = store


def test_a_message_layer_whose_store_is_not_aiocoaps_dict_is_left_alone() -> None:
    """A message layer whose `_recent_messages` is not the dict of the pinned aiocoap (another
    version's store) is not used: nothing is noted of the requests received, and an ended
    association drops nothing from it, nor fails."""
    store: list[object] = []
    interface = Interface(StoringLayer(store))
    remote = SentAddress()
    interface.deliver(remote, GET_REQUEST)
    assert remote.request_mids == {}
    interface.association_ended(remote, None)
    assert store == []


def test_only_requests_are_noted_and_what_an_ended_remote_sends_adds_nothing_to_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A remote notes the message IDs of the requests received, not of responses. Once its
    association has ended, a message aiocoap sends over it is dropped with a debug line, and
    only a response aiocoap stored for it is cleared: nothing is added to aiocoap's store
    (an entry it did not make would outlive its EXCHANGE_LIFETIME timer)."""
    store: dict[tuple[Any, int], Message | None] = {}
    interface = Interface(StoringLayer(store))
    remote = SentAddress()
    store[remote, 7] = None  # as aiocoap notes a request received
    interface.deliver(remote, GET_REQUEST)  # MID 7
    interface.deliver(remote, bytes([0x61, 0x45, 0x00, 0x08]) + b"t")  # a response, MID 8
    assert list(remote.request_mids) == [7]
    interface.association_ended(remote, None)
    request = Message(code=GET)
    request.mtype, request.mid, request.token, request.remote = CON, 9, b"u", remote
    with caplog.at_level(logging.DEBUG, logger="iotdtls.coap"):
        interface.send(request)
    assert store == {(remote, 7): None}
    assert remote.sent == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{remote!r}: not sending over an ended association"]


class _NoCache:
    """What a `ClientRemote` asks of its interface as it starts: no chain cache."""

    chain_cache = None

    def forget(self, remote: object) -> None:
        pass


def test_a_client_remote_before_its_handshake_has_no_local_address_yet() -> None:
    """Before its handshake completes, a `ClientRemote`'s `local_address` is ("::", 0), as
    its docstring says (the silent server never answers)."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            interface: Any = _NoCache()
            remote = ClientRemote(interface, "127.0.0.1", silent.getsockname()[1], client_config())
            await asyncio.sleep(0.05)
            assert remote.local_address == ("::", 0)
            await remote.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("raised", "level"),
    [(asyncio.InvalidStateError("invalid state"), logging.DEBUG),
     (KeyError("a bug"), logging.WARNING)],
)
def test_what_aiocoap_raises_on_a_message_is_logged_and_the_association_goes_on(
    raised: Exception, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    """aiocoap's InvalidStateError (a block for a request that timed out) is expected: debug
    level. Anything else was logged at debug level too, hiding a bug in dispatch: now a
    warning with its traceback. Neither ends the association."""
    class Failing(Layer):
        def dispatch_message(self, message: Message) -> None:
            raise raised

    interface = Interface(Failing())
    remote = CoapsAddress(("192.0.2.1", 5684), 1232, PEER)
    with caplog.at_level(logging.DEBUG, logger="iotdtls.coap"):
        interface.deliver(remote, GET_REQUEST)
    [record] = caplog.records
    assert (record.levelno, record.getMessage()) == (
        level, f"{remote!r}: aiocoap failed on a received message ({type(raised).__name__}: "
               f"{raised}); going on")
    assert (record.exc_info is not None) is (level == logging.WARNING)
    assert not remote.ended


def test_an_ended_association_fails_what_is_pending_on_it() -> None:
    layer = Layer()
    interface = Interface(layer)
    remote = CoapsAddress(("192.0.2.1", 6000), 1232, PEER)
    cause = AlertReceived(AlertDescription.bad_record_mac)
    interface.association_ended(remote, cause)
    assert remote.ended is True
    ((exc, where),) = layer.errors
    assert where is remote and isinstance(exc, AssociationClosed)
    assert exc.peer == "192.0.2.1:6000" and exc.__cause__ is cause


# -- errors -----------------------------------------------------------------------------------


def test_association_errors_by_what_happened() -> None:
    timeout = HandshakeTimeout(5.0)
    closed = association_error("gw", None, True)
    assert type(closed) is AssociationClosed and closed.__cause__ is None
    assert str(closed) == "coaps: the DTLS association with gw was closed"
    ended = association_error("gw", AlertReceived(AlertDescription.close_notify), True)
    assert str(ended) == (
        "coaps: the DTLS association with gw ended: the peer closed the association (close_notify)"
    )
    timed_out = association_error("gw", timeout, False)
    assert type(timed_out) is AssociationTimeout and timed_out.__cause__ is timeout
    assert isinstance(timed_out, error.TimeoutError)
    assert str(timed_out) == "coaps: DTLS handshake with gw failed: handshake timed out after 5 s"
    failed = association_error("gw", None, False)
    assert type(failed) is AssociationFailed
    assert str(failed) == "coaps: DTLS handshake with gw failed"
    for exc in (closed, timed_out, failed):
        assert isinstance(exc, error.NetworkError)
        assert exc.args == ("gw", exc.__cause__)  # what copying and pickling rebuild it from


SERVER_CERTIFICATE = (
    "Check the trust anchors and the server name (by default the URI's host): the server's "
    "certificate did not validate against them."
)
OUR_CERTIFICATE = (
    "Check our certificate and key: the server refused them, or does not trust their CA."
)
ADDRESS = "Check the server address and its DTLS configuration."


@pytest.mark.parametrize(("cause", "advice"), [
    (HandshakeTimeout(5.0), "No handshake completed in time: check that a coaps server listens "
     "there and that the credentials match (many servers answer a wrong key with silence)."),
    (AlertSent(AlertDescription.bad_certificate), SERVER_CERTIFICATE),
    (AlertReceived(AlertDescription.bad_certificate), OUR_CERTIFICATE),
    (AlertReceived(AlertDescription.unknown_ca), OUR_CERTIFICATE),
    (AlertReceived(AlertDescription.unknown_psk_identity),
     "Check the credentials: the server does not know this PSK identity."),
    (AlertSent(AlertDescription.decrypt_error),
     "Check the credentials: the PSK or the PSK identity does not match the server's."),
    (AlertReceived(AlertDescription.handshake_failure),
     "Check the credentials: the server refused the credentials or cipher suites."),
    # We refused the server (its raw public key is not one we were given, say).
    (AlertSent(AlertDescription.handshake_failure),
     "Check the server's raw public key or certificate authority we were given, and what we "
     "require of the server: we refused it, for the reason above."),
    (AlertSent(AlertDescription.unknown_psk_identity), ADDRESS),  # a client never sends it
    (AlertSent(AlertDescription.internal_error), ADDRESS),
    (DtlsError("anything else"), ADDRESS),
    (ConnectionRefusedError(111, "Connection refused"), ADDRESS),
    # Not an association's failure: no advice (a ProtocolError's alert is not a peer's word).
    (ProtocolError("decoding", AlertDescription.decrypt_error), None),
    (ValueError("bug"), None),
    (None, None),
])
def test_advice_follows_the_cause(cause: BaseException | None, advice: str | None) -> None:
    assert AssociationFailed("gw", cause, Mode.PSK).extra_help() == advice


@pytest.mark.parametrize(("mode", "cause", "advice"), [
    (Mode.RAW_PUBLIC_KEY, AlertReceived(AlertDescription.unsupported_certificate),
     "Check our raw public key: the server requires one and we have none (give the entry a "
     '"private-key", iotdtls coap --rpk-key), or it cannot take ours; or it has no raw public '
     "key of its own to send."),
    (Mode.RAW_PUBLIC_KEY, AlertSent(AlertDescription.unsupported_certificate),
     "Check the server's credentials: it sent no raw public key we could take (a certificate, "
     "or a key that is not P-256), and we were given its raw public key."),
    (Mode.X509, AlertReceived(AlertDescription.unsupported_certificate), OUR_CERTIFICATE),
    (None, AlertReceived(AlertDescription.unsupported_certificate), OUR_CERTIFICATE),
    (Mode.X509, AlertSent(AlertDescription.unsupported_certificate), SERVER_CERTIFICATE),
])
def test_certificate_type_advice_follows_the_mode(
    mode: Mode | None, cause: BaseException, advice: str
) -> None:
    """unsupported_certificate is also "no certificate type in common" (RFC 7250 §4.2): to a
    raw-public-key client the advice is about raw keys, not certificates and their CA
    (probe BM)."""
    assert AssociationFailed("gw", cause, mode).extra_help() == advice


@pytest.mark.parametrize("mode", [None, Mode.PSK, Mode.X509])
@pytest.mark.parametrize(("cause", "advice"), [
    *[(AlertReceived(alert), f"The server ended the association with fatal alert {alert.name} "
       "after the handshake, which had succeeded (the credentials are not in question); its "
       "log may say why.")
      for alert in (AlertDescription.bad_record_mac, AlertDescription.decrypt_error,
                    AlertDescription.bad_certificate, AlertDescription.internal_error)],
    (AlertReceived(200), "The server ended the association with fatal alert 200 after the "
     "handshake, which had succeeded (the credentials are not in question); its log may say "
     "why."),  # a code without a name
    (AlertSent(AlertDescription.unexpected_message, "a ClientHello"),
     "We ended the association with fatal alert unexpected_message after the handshake, for "
     "what came from the server's address."),  # not proven the server's (probe AU)
    # Records that fail authentication need not be the server's: anyone who can send to our
    # address can forge them (it said "for what the server sent", probe AU).
    (IntegrityLimitReached(1, 128),
     "We ended the association with fatal alert bad_record_mac after the handshake, for "
     "records that failed authentication: forged or damaged on the way, they need not come "
     "from the server (anyone who can send to our address can send them)."),
    # Ends that say all themselves: no advice.
    (AlertReceived(AlertDescription.close_notify), None),
    (DtlsError("anything else"), None),
    (ConnectionRefusedError(111, "Connection refused"), None),
    (None, None),
])
def test_an_established_association_that_ended_gets_no_handshake_advice(
    cause: BaseException | None, advice: str | None, mode: Mode | None
) -> None:
    """The credentials completed a handshake: an alert afterwards is not theirs to check. It
    said "Check the credentials: they do not match the server's." for bad_record_mac and
    decrypt_error, certificate advice for bad_certificate in PSK mode, and "Check the server
    address ..." for internal_error (probe AS)."""
    assert AssociationClosed("gw", cause, mode).extra_help() == advice
    assert association_error("gw", cause, True, mode).extra_help() == advice


SERVER_SIGNATURE = (
    "Check the server's key pair: its signature did not verify with the raw public key or "
    "certificate it sent."
)
OUR_SIGNATURE = (
    "Check our key pair: the server could not verify our signature (does our private key "
    "match the raw public key or certificate we send?) or our Finished."
)
PSK_MISMATCH = (
    "Check the credentials: the PSK or the PSK identity does not match the server's."
)


@pytest.mark.parametrize(("cause", "mode", "advice"), [
    (AlertSent(AlertDescription.decrypt_error), Mode.PSK, PSK_MISMATCH),
    (AlertReceived(AlertDescription.decrypt_error), Mode.PSK, PSK_MISMATCH),
    (AlertReceived(AlertDescription.bad_record_mac), Mode.PSK, PSK_MISMATCH),
    # With signatures, decrypt_error is a signature (or Finished) that did not verify.
    (AlertSent(AlertDescription.decrypt_error), Mode.RAW_PUBLIC_KEY, SERVER_SIGNATURE),
    (AlertSent(AlertDescription.decrypt_error), Mode.X509, SERVER_SIGNATURE),
    (AlertReceived(AlertDescription.decrypt_error), Mode.RAW_PUBLIC_KEY, OUR_SIGNATURE),
    (AlertReceived(AlertDescription.decrypt_error), Mode.X509, OUR_SIGNATURE),
    (AlertReceived(AlertDescription.bad_record_mac), Mode.X509, ADDRESS),
    # The mode unknown: no PSK named.
    (AlertSent(AlertDescription.decrypt_error), None,
     "Check the credentials: they do not match the server's."),
])  # fmt: skip
def test_a_key_that_did_not_verify_is_named_by_the_mode(
    cause: BaseException, mode: Mode | None, advice: str
) -> None:
    """The PSK hint was given in raw-public-key and certificate modes too, where decrypt_error
    means a signature did not verify (RFC 5246 §7.4.3, §7.4.8)."""
    assert AssociationFailed("gw", cause, mode).extra_help() == advice
    assert association_error("gw", cause, False, mode).extra_help() == advice


# -- raw public keys in a credentials map ------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> RpkFiles:
    return make_rpk_files(tmp_path)


def test_a_peer_key_is_a_pin_in_hex_or_a_key_file(tmp_path: Path, files: RpkFiles) -> None:
    pin = public_key_pin(files.client_pub.read_bytes())
    der = tmp_path / "client.der"
    der.write_bytes(pem_to_der(files.client_pub.read_bytes()))
    for given in (pin.hex(), pin.hex().upper(), str(files.client_pub), str(der)):
        assert DtlsRawPublicKey.from_item({"peer-public-key": given}).peer_pin == pin
    for not_a_pin in ("g" * 64, pin.hex()[:63]):  # a file name then: it does not exist
        with pytest.raises(ConfigError, match=f"cannot read public key file {not_a_pin}: No such"):
            DtlsRawPublicKey.from_item({"peer-public-key": not_a_pin})


def test_entries_show_what_they_hold_and_not_their_keys() -> None:
    pin = bytes(range(32))
    entry = DtlsRawPublicKey.from_item({"peer-public-key": pin.hex()})
    assert repr(entry) == "<DtlsRawPublicKey own=None peer=0001020304050607..>"
    assert repr(DtlsRawPublicKey(None, None)) == "<DtlsRawPublicKey own=None peer=None>"
    assert repr(DtlsX509()) == "<DtlsX509 >"
    assert repr(DtlsX509(trust_anchors=(b"a", b"b"), server_name="gw.example")) == (
        "<DtlsX509 anchors=2 server_name='gw.example'>"
    )


def test_a_server_map_holds_one_own_raw_key_and_labels_only_known_identities(
    files: RpkFiles,
) -> None:
    own = {":server": {"dtls-rpk": {"private-key": str(files.server_key)}}}
    other = {":backup": {"dtls-rpk": {"private-key": str(files.stranger_key)}}}
    credentials = ServerCredentials(lambda: load_credentials({**own, **SERVER_CREDENTIALS}))
    assert repr(credentials) == "<ServerCredentials>"  # nothing of the map, keys least of all
    assert credentials.server_config({}).raw_public_key is not None
    assert credentials.labels(PskIdentity(CLIENT_IDENTITY.encode())) == (":client",)
    assert credentials.labels(PskIdentity(b"stranger")) == ()
    assert credentials.lookup_psk(b"stranger") is None
    two = ServerCredentials(lambda: load_credentials({**own, **other}))
    with pytest.raises(ConfigError, match=r"^the server credentials hold more than one own"):
        two.server_config({})


def test_a_credentials_file_must_hold_an_object(tmp_path: Path) -> None:
    listed = tmp_path / "credentials.json"
    listed.write_text(json.dumps([":client"]), "utf-8")
    with pytest.raises(ConfigError) as info:
        load_credentials(str(listed))
    assert str(info.value) == (
        f"credentials file {listed}: expected an object of URI patterns or labels"
    )


def test_an_entry_of_no_dtls_form_raises_credentials_missing() -> None:
    with pytest.raises(CredentialsMissingError) as info:
        client_config_for({"tlscert": {}}, {})
    assert str(info.value) == (
        "the credentials for this URI are not a DTLS form iotdtls knows "
        '(a "dtls" entry with "psk" and "client-identity", "dtls-rpk" or "dtls-x509")'
    )


def test_a_raw_key_client_config_carries_the_settings(files: RpkFiles) -> None:
    entry = DtlsRawPublicKey.from_item({"peer-public-key": str(files.server_pub)})
    config = client_config_for(entry, {"mtu": 512})
    assert config.mtu == 512
    assert config.server_key_pins == (entry.peer_pin,)


@pytest.mark.parametrize(
    ("uri", "destination"),
    [
        ("coaps://h.example:1234/x", ("h.example", 1234)),
        ("coaps://h.example/x", ("h.example", 5684)),  # RFC 7252 §6.2
        ("coaps://[2001:db8::1]:9/x", ("2001:db8::1", 9)),
        # RFC 6874 §2: the zone after "%25", the encoded "%"; the bare "%" is taken too
        ("coaps://[fe80::1%25eth0]:9/x", ("fe80::1%eth0", 9)),
        ("coaps://[fe80::1%eth0]/x", ("fe80::1%eth0", 5684)),
        ("coaps://[fe80::1%2525]/x", ("fe80::1%25", 5684)),  # interface 25
    ],
)
def test_a_request_goes_to_the_host_and_port_of_its_uri(
    uri: str, destination: tuple[str, int]
) -> None:
    assert _destination(Message(code=GET, uri=uri)) == destination


def test_port_0_is_refused_as_a_malformed_uri() -> None:
    """Port 0 names no port to send to (it was taken for 5684): aiocoap's error for a port
    above 65535, as the request ends with, and the command line's reason."""
    with pytest.raises(error.MalformedUrlError) as info:
        _destination(Message(code=GET, uri="coaps://127.0.0.1:0/x"))
    assert str(info.value) == "Malformed URL: the port must be a number from 1 to 65535"


def test_an_empty_zone_is_refused_as_a_malformed_uri() -> None:
    """RFC 6874 §2: a ZoneID has at least one character. `[fe80::1%25]` was taken for
    interface 25 (the bare "%" form) and the error named `[fe80::1%2525]`. (aiocoap refuses a
    bare "%" with nothing after it itself.)"""
    with pytest.raises(error.MalformedUrlError) as info:
        _destination(Message(code=GET, uri="coaps://[fe80::1%25]:9/x"))
    assert str(info.value) == (
        "Malformed URL: the IPv6 zone of [fe80::1%25] is empty (RFC 6874): give the "
        "interface, as in [fe80::1%25eth0]")


def test_a_request_without_a_host_is_refused() -> None:
    message = Message(code=GET, uri_path=("x",), uri_host="h.example")
    message.remote = UndecidedRemote("coaps", "")
    with pytest.raises(ValueError, match=r"^no host to send the coaps request to$"):
        _destination(message)
