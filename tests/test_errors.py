"""The typed errors an association ends with, and the events that carry identities: each error
names what happened in its message and keeps its details as attributes (the brief: "a typed
error naming it"); `psk_identity` of an event is empty outside PSK mode."""

from __future__ import annotations

import copy as copying
import inspect
import pickle
import socket
from collections.abc import Callable
from typing import Any

import pytest

import iotdtls.errors as errors_module
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    AssociationEnded,
    AssociationEvicted,
    AssociationReplaced,
    ConfigError,
    DatagramTooLarge,
    DecodeError,
    DtlsError,
    ForeignEventLoop,
    HandshakeTimeout,
    IdleTimeout,
    IntegrityLimitReached,
    LocalProtocolError,
    PathMtuExceeded,
    PeerUnresponsive,
    PortUnreachable,
    ProtocolError,
    SequenceNumbersExhausted,
    after_attempts,
    carry_resuming,
)
from iotdtls.events import ConnectionClosed, HandshakeComplete
from iotdtls.identity import CertificateIdentity, PskIdentity, RawPublicKeyIdentity


def test_alert_sent_names_the_alert_and_the_reason_when_there_is_one() -> None:
    bare = AlertSent(AlertDescription.handshake_failure)
    assert str(bare) == "sent fatal alert handshake_failure"
    assert (bare.alert, bare.reason) == (AlertDescription.handshake_failure, "")
    told = AlertSent(AlertDescription.decrypt_error, "Finished does not verify")
    assert str(told) == "sent fatal alert decrypt_error: Finished does not verify"
    assert told.reason == "Finished does not verify"


def test_integrity_limit_is_a_bad_record_mac_alert_with_its_count() -> None:
    error = IntegrityLimitReached(epoch=1, count=64)
    assert isinstance(error, AlertSent) and error.alert is AlertDescription.bad_record_mac
    assert (error.epoch, error.count) == (1, 64)
    assert str(error) == (
        "sent fatal alert bad_record_mac: 64 records failed authentication in epoch 1, "
        "the integrity limit (RFC 9147 §4.5.3)"
    )


@pytest.mark.parametrize(
    ("alert", "kept", "message"),
    [
        (AlertDescription.unknown_psk_identity, AlertDescription.unknown_psk_identity,
         "received fatal alert unknown_psk_identity"),
        (40, AlertDescription.handshake_failure, "received fatal alert handshake_failure"),
        (200, 200, "received fatal alert 200"),
        (0, AlertDescription.close_notify, "the peer closed the association (close_notify)"),
    ],
)
def test_alert_received_names_known_alerts_and_numbers_unknown_ones(
    alert: AlertDescription | int, kept: AlertDescription | int, message: str
) -> None:
    error = AlertReceived(alert)
    assert error.alert == kept and type(error.alert) is type(kept)
    assert str(error) == message


def test_alert_received_adds_what_our_side_knows_in_parentheses() -> None:
    error = AlertReceived(40, "no certificate was sent")
    assert error.alert is AlertDescription.handshake_failure
    assert str(error) == "received fatal alert handshake_failure (no certificate was sent)"
    assert error.context == "no certificate was sent"
    assert AlertReceived(40).context == ""  # a str either way


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (AssociationReplaced, "the peer started a new handshake from the same address"),
        (lambda: AssociationEvicted("server full"), "association evicted: server full"),
        (lambda: PeerUnresponsive(7.5), "the peer did not answer heartbeats for 7.5 s"),
        (lambda: HandshakeTimeout(30.0), "handshake timed out after 30 s"),
        (
            lambda: HandshakeTimeout(60.0, hello_size=1350, mtu=1232),
            "handshake timed out after 60 s (the ClientHello needs a 1350-byte datagram and went"
            " in fragments to fit mtu 1232; servers with stateless cookies (iotdtls, OpenSSL's"
            " listener, Mbed TLS) drop those: raise mtu or send less)",
        ),
        (
            lambda: HandshakeTimeout(5.0, attempts=2),
            "handshake timed out after 5 s (the last of 2 attempts, each given 5 s)",
        ),
        (
            lambda: HandshakeTimeout(1.0, unreachable_reports=1),
            "handshake timed out after 1 s; the network reported the port unreachable 1 time "
            "(ICMP): nothing may listen there",
        ),
        (
            lambda: HandshakeTimeout(0.5, unreachable_reports=3),
            "handshake timed out after 0.5 s; the network reported the port unreachable 3 "
            "times (ICMP): nothing may listen there",
        ),
        (
            lambda: HandshakeTimeout(6.0, unreachable_after_answer=1),
            "handshake timed out after 6 s; the network reported the port unreachable 1 time "
            "(ICMP) after the server had answered: it may have gone away",
        ),
        (lambda: IdleTimeout(120.0), "association idle for 120 s, closed"),
        (
            lambda: SequenceNumbersExhausted(1),
            "association abandoned: sequence numbers of epoch 1 are exhausted (RFC 6347 §4.1)",
        ),
    ],
)
def test_how_an_association_ended_is_told_in_one_line(
    make: Callable[[], DtlsError], message: str
) -> None:
    assert str(make()) == message  # made here, in the test (a mutant reaches it there)


def test_the_timeouts_keep_their_seconds() -> None:
    assert PeerUnresponsive(7.5).seconds == 7.5
    assert HandshakeTimeout(30.0).seconds == 30.0
    assert IdleTimeout(120.0).seconds == 120.0


def test_an_error_blames_the_session_only_when_the_core_says_it_was_resumed() -> None:
    """`DtlsError.resuming` (the CLI removes a --session-file only then): False unless the
    core set it on that error, a timeout after a ClientHello in fragments included."""
    assert HandshakeTimeout(60.0, hello_size=1350, mtu=1232).resuming is False
    assert DtlsError("x").resuming is False


def test_carry_resuming_keeps_what_any_attempt_said() -> None:
    """A retry is a full handshake: the last attempt's error says `resuming` when an earlier
    attempt (the only one that offers the session) resumed it."""
    first, second, third = DtlsError("1"), DtlsError("2"), DtlsError("3")
    first.resuming = True
    assert carry_resuming(first, False) is True
    assert carry_resuming(second, True) is True and second.resuming is True
    assert carry_resuming(third, False) is False and third.resuming is False


def test_port_unreachable_names_the_address_with_its_interface() -> None:
    """The client's "nothing listens on ..." names a link-local server's interface too."""
    lo = socket.if_nametoindex("lo")
    assert str(PortUnreachable(("fe80::1", 5684, 0, lo), 2)) == (
        "nothing listens on [fe80::1%lo]:5684: the network reported the port unreachable "
        "2 times (ICMP)"
    )
    assert str(PortUnreachable(("192.0.2.1", 5684), 2)).startswith(
        "nothing listens on 192.0.2.1:5684: "
    )


@pytest.mark.req("RPK-4")
def test_port_unreachable_after_attempts_names_them() -> None:
    """As a timeout's: the ICMP reports are the last attempt's, the attempts all of them; a
    single attempt's error stays as it was, `resuming` goes along."""
    last = PortUnreachable(("192.0.2.1", 5684), 2)
    last.resuming = True
    assert after_attempts(last, 1) is last
    assert str(after_attempts(last, 2)).endswith("(ICMP) in the last of 2 attempts")
    named = after_attempts(last, 3)
    assert str(named) == (
        "nothing listens on 192.0.2.1:5684: the network reported the port unreachable 2 times "
        "(ICMP) in the last of 3 attempts"
    )
    assert isinstance(named, PortUnreachable)
    assert (named.address, named.refusals, named.attempts, named.resuming) == (
        ("192.0.2.1", 5684), 2, 3, True
    )


@pytest.mark.req("RPK-4")
def test_a_timeout_after_attempts_keeps_the_reports_after_the_answer() -> None:
    """The reports that came after the server had answered are the last attempt's, and stay
    named when the attempts are (probe CE F8)."""
    named = after_attempts(HandshakeTimeout(1.0, unreachable_after_answer=2), 3)
    assert isinstance(named, HandshakeTimeout)
    assert named.unreachable_after_answer == 2
    assert str(named) == (
        "handshake timed out after 1 s (the last of 3 attempts, each given 1 s); the network "
        "reported the port unreachable 2 times (ICMP) after the server had answered: it may "
        "have gone away"
    )


@pytest.mark.req("RPK-4")
def test_a_handshake_timeout_after_attempts_keeps_all_it_said() -> None:
    """The last attempt's timeout made again keeps its ClientHello size, its mtu, its ICMP
    reports and `resuming`, and adds the attempts; another error stays as it was."""
    last = HandshakeTimeout(60.0, hello_size=1350, mtu=1232, unreachable_reports=1)
    last.resuming = True
    named = after_attempts(last, 3)
    assert isinstance(named, HandshakeTimeout)
    assert (named.seconds, named.hello_size, named.mtu, named.unreachable_reports) == (
        60.0, 1350, 1232, 1
    )
    assert (named.attempts, named.resuming) == (3, True)
    assert str(named) == str(
        HandshakeTimeout(60.0, hello_size=1350, mtu=1232, unreachable_reports=1, attempts=3)
    )
    other = DtlsError("refused")
    assert after_attempts(other, 3) is other


def test_datagram_too_large_says_which_limit() -> None:
    by_mtu = DatagramTooLarge(1300, 1203, 1232)
    assert (by_mtu.size, by_mtu.limit) == (1300, 1203)
    assert str(by_mtu) == (
        "1300 bytes of application data do not fit one datagram: at most 1203 bytes fit the "
        "MTU of 1232 bytes"
    )
    by_extension = DatagramTooLarge(600, 512, 1232, max_fragment_length=512)
    assert str(by_extension) == (
        "600 bytes of application data do not fit one datagram: the max_fragment_length "
        "negotiated with the peer is 512 bytes (RFC 6066 §4)"
    )
    by_record = DatagramTooLarge(16385, 16384, 65507, record_limit=True)
    assert str(by_record) == (
        "16385 bytes of application data do not fit one datagram: a DTLS record carries at "
        "most 16384 bytes (2^14, RFC 5246 §6.2.1), whatever the MTU"
    )


def test_path_mtu_exceeded_counts_application_data_as_its_parent() -> None:
    """`size` and `limit` count application data, as in `DatagramTooLarge`: they counted the
    whole datagram, `limit` = datagram - 1 >= the data, and an application resending in chunks
    of `limit` bytes failed for ever. The datagram's size is its own attribute."""
    refused = PathMtuExceeded(1400, 29, 1500)
    assert isinstance(refused, DatagramTooLarge)
    assert (refused.size, refused.limit, refused.datagram_size, refused.mtu) == (
        1400, 1399, 1429, 1500
    )
    assert str(refused) == (
        "the network path refused a datagram of 1429 bytes (1400 bytes of application data) "
        "as too large (EMSGSIZE): lower mtu (now 1500) to the path's MTU"
    )
    flight = PathMtuExceeded(1300, 0, 1500, handshake=True)
    assert flight.datagram_size == 1300
    assert str(flight) == (
        "the network path refused a handshake datagram of 1300 bytes as too large "
        "(EMSGSIZE): lower mtu (now 1500) to the path's MTU"
    )


def test_association_ended_without_an_error_is_our_own_close_unless_told() -> None:
    ours = AssociationEnded(None)
    assert not ours.by_peer and ours.error is None
    assert str(ours).endswith("the association was closed (close())")
    assert AssociationEnded(None, by_peer=True).by_peer


@pytest.mark.parametrize(("what", "reason", "message"), [
    ("connection", "closed",
     "this connection's event loop is closed: open and use it inside one asyncio.run"),
    ("session", "another loop",
     "this session belongs to another event loop than the one running here: use it only in the"
     " loop that opened it"),
    ("server", "another thread",
     "this server belongs to an event loop running in another thread, not in this one: hand the"
     " call to that loop (loop.call_soon_threadsafe, asyncio.run_coroutine_threadsafe)"),
])
def test_foreign_event_loop_says_why_and_a_copy_says_the_same(
    what: str, reason: Any, message: str
) -> None:
    """The message gives the reason (the loop closed, another loop, another thread), and a
    pickled copy (an error crossing to another process) is made again from the same arguments:
    it said "this this session belongs ... belongs to" before."""
    error = ForeignEventLoop(what, reason)
    assert (str(error), error.what, error.reason) == (message, what, reason)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.args) == (ForeignEventLoop, message, (what, reason))


ERRORS_AS_MADE: list[Exception] = [
    ProtocolError("a bad hello", AlertDescription.illegal_parameter),
    DecodeError("a short vector"),
    LocalProtocolError("not yet"),
    ConfigError("mtu must be at least 256"),
    ForeignEventLoop("session", "another loop"),
    DatagramTooLarge(2000, 1203, 1232, max_fragment_length=512),
    PathMtuExceeded(1300, 29, 1400, handshake=True),
    AlertSent(AlertDescription.handshake_failure, "no shared suite"),
    IntegrityLimitReached(1, 5),
    AlertReceived(AlertDescription.unknown_ca, "after our no_renegotiation"),
    AssociationEnded(IdleTimeout(30.0), by_peer=True),
    AssociationReplaced(),
    AssociationEvicted("too many handshakes from its host"),
    PeerUnresponsive(60.0),
    SequenceNumbersExhausted(1),
    PortUnreachable(("127.0.0.1", 5684), 3),
    PortUnreachable(("127.0.0.1", 5684), 2, attempts=3),
    HandshakeTimeout(60.0, hello_size=1500, mtu=1232),
    HandshakeTimeout(1.0, unreachable_reports=1),
    HandshakeTimeout(6.0, unreachable_after_answer=4),
    IdleTimeout(30.0),
]


@pytest.mark.parametrize("error", ERRORS_AS_MADE, ids=lambda error: type(error).__name__)
def test_every_error_copied_or_pickled_says_the_same(error: Exception) -> None:
    """An error crossing to another process (multiprocessing, concurrent.futures pickle it) or
    copied is made again by the call that made it: Python's default remakes it from `args`,
    its message for most of these, so AlertSent, PeerUnresponsive, IdleTimeout and the others
    failed to unpickle (TypeError) or said something else. What was set on it later
    (`resuming`) goes along."""
    if isinstance(error, DtlsError):
        error.resuming = True
    for again in (pickle.loads(pickle.dumps(error)), copying.copy(error)):
        assert (type(again), str(again), again.args) == (type(error), str(error), error.args)
        assert {name: str(value) for name, value in vars(again).items()} == {
            name: str(value) for name, value in vars(error).items()
        }


def test_every_error_type_is_among_those_copied() -> None:
    """A new error type gets the copy test too."""
    kinds = {
        kind for kind in vars(errors_module).values()
        if inspect.isclass(kind) and issubclass(kind, Exception)
        and kind.__module__ == errors_module.__name__ and not kind.__name__.startswith("_")
    }
    assert kinds - {type(error) for error in ERRORS_AS_MADE} == {DtlsError}


def test_psk_identity_of_events_is_empty_outside_psk_mode() -> None:
    psk = PskIdentity(b"dev1")
    others = (RawPublicKeyIdentity(b"\x30\x59"), CertificateIdentity("01-23-45-67-89-AB-CD-EF"))
    assert HandshakeComplete(0xC0A8, psk, True).psk_identity == b"dev1"
    assert ConnectionClosed(None, psk).psk_identity == b"dev1"
    for peer in others:
        assert HandshakeComplete(0xC0AE, peer, True).psk_identity == b""
        assert ConnectionClosed(None, peer).psk_identity == b""
    assert ConnectionClosed(None).psk_identity == b""
