"""Alerts and the exception types of iotdtls.

Two families are kept apart (as h11 does):

* `ProtocolError` and its subclasses: the *peer* did something wrong. Each carries the alert
  (RFC 5246 §7.2, RFC 6347 §4.1.2.7) that ends the association; `DecodeError` maps to
  decode_error. The core raises them deep and turns them into a fatal alert at one point.
* `ConfigError` and `LocalProtocolError`: the *local* application misused the API or gave a bad
  configuration. Their message is one line saying what to fix.

What reaches the application after an association ends is a `DtlsError` subclass naming the alert
sent or received, or the timeout.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal, Self

from iotdtls._addresses import format_address

__all__ = [
    "AlertDescription",
    "AlertLevel",
    "AlertReceived",
    "AlertSent",
    "AssociationEnded",
    "AssociationEvicted",
    "AssociationReplaced",
    "ConfigError",
    "DatagramTooLarge",
    "DecodeError",
    "DtlsError",
    "ForeignEventLoop",
    "HandshakeTimeout",
    "IdleTimeout",
    "IntegrityLimitReached",
    "LocalProtocolError",
    "PathMtuExceeded",
    "PeerUnresponsive",
    "PortUnreachable",
    "ProtocolError",
    "SequenceNumbersExhausted",
    "after_attempts",
    "carry_resuming",
]


class AlertLevel(IntEnum):
    """RFC 5246 §7.2."""

    WARNING = 1
    FATAL = 2


class AlertDescription(IntEnum):
    """RFC 5246 §7.2, RFC 6066 §9, RFC 4279 §2, RFC 7250."""

    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    user_canceled = 90
    no_renegotiation = 100
    unsupported_extension = 110
    certificate_unobtainable = 111
    unrecognized_name = 112
    bad_certificate_hash_value = 114
    unknown_psk_identity = 115


def _made_again(
    kind: type[_MadeAgain], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _MadeAgain:
    return kind(*args, **kwargs)


class _MadeAgain(Exception):
    """An error that keeps the arguments it was made with, so that a copy (pickle, as
    `multiprocessing` and `concurrent.futures` hand errors between processes; `copy`) is made
    by the same call and says the same: Python's default makes a copy from `args` alone, which
    for most of these errors is their message, not their arguments."""

    _made_with: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        error = super().__new__(cls, *args)
        error._made_with = (args, kwargs)
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._made_with
        return (_made_again, (type(self), args, kwargs), self.__dict__)


class ProtocolError(_MadeAgain):
    """The peer violated the protocol; `alert` is what we send before closing."""

    alert: AlertDescription = AlertDescription.internal_error

    def __init__(self, message: str, alert: AlertDescription | None = None) -> None:
        super().__init__(message)
        if alert is not None:
            self.alert = alert


class DecodeError(ProtocolError):
    """A structure could not be parsed (maps to decode_error, RFC 5246 §7.2.2)."""

    alert = AlertDescription.decode_error


class LocalProtocolError(_MadeAgain):
    """The local application used the API in a way the protocol state does not allow."""


#: Why an association was used outside its event loop (`ForeignEventLoop.reason`): the
#: message, which names the object (`what`), says so and what to do.
ForeignLoopReason = Literal["closed", "another loop", "another thread"]
_FOREIGN_LOOP_MESSAGES: dict[ForeignLoopReason, str] = {
    "closed": "this {what}'s event loop is closed: open and use it inside one asyncio.run",
    "another loop": (
        "this {what} belongs to another event loop than the one running here: use it only in"
        " the loop that opened it"
    ),
    "another thread": (
        "this {what} belongs to an event loop running in another thread, not in this one:"
        " hand the call to that loop (loop.call_soon_threadsafe,"
        " asyncio.run_coroutine_threadsafe)"
    ),
}


class ForeignEventLoop(LocalProtocolError):
    """An asyncio connection (or a server, or a server's session) used outside the event loop
    that opened it. `reason` says how: "closed" (that loop is closed:
    `asyncio.run(connect(...))` closes it as it returns the connection), "another loop"
    (called from another running loop) or "another thread" (called from a thread where no
    loop runs while that loop runs in its own: asyncio's loops are not thread-safe). Its
    socket is read, and its timers run, by that loop only, in its thread. `what` names the
    object ("connection", "server", "session"). The arguments are kept (`args`), so a copy
    (pickle) says the same."""

    def __init__(self, what: str = "connection", reason: ForeignLoopReason = "closed") -> None:
        super().__init__(what, reason)
        self.what = what
        self.reason = reason

    def __str__(self) -> str:
        return _FOREIGN_LOOP_MESSAGES[self.reason].format(what=self.what)


class DatagramTooLarge(LocalProtocolError):
    """`send()` of application data that cannot fit one datagram of the configured MTU.

    RFC 6347 §4.1.1: a record never spans datagrams, and "if the application attempts to send a
    record larger than the MTU, the DTLS implementation SHOULD generate an error, thus avoiding
    sending a packet which will be fragmented". A datagram the kernel refuses as larger than
    the path allows (EMSGSIZE) is `PathMtuExceeded`, raised by the adapters. Nothing is sent;
    the association stays open."""

    def __init__(
        self,
        size: int,
        limit: int,
        mtu: int,
        *,
        max_fragment_length: int | None = None,
        record_limit: bool = False,
    ) -> None:
        """The bound named is the one that applies: a negotiated `max_fragment_length`, the
        record's 2^14 bytes of data (`record_limit`, RFC 6347 §4.1, RFC 5246 §6.2.1: no MTU
        lifts it), else the MTU (a path that takes less than the MTU: `PathMtuExceeded`)."""
        self.size = size
        self.limit = limit
        if max_fragment_length is not None:
            reason = (
                f"the max_fragment_length negotiated with the peer is {max_fragment_length} "
                "bytes (RFC 6066 §4)"
            )
        elif record_limit:
            reason = (
                f"a DTLS record carries at most {limit} bytes (2^14, RFC 5246 §6.2.1), "
                "whatever the MTU"
            )
        else:
            reason = f"at most {limit} bytes fit the MTU of {mtu} bytes"
        super().__init__(
            f"{size} bytes of application data do not fit one datagram: {reason}"
        )


class PathMtuExceeded(DatagramTooLarge):
    """The network refused a datagram of ours as larger than its path takes: the kernel
    answered EMSGSIZE, the path MTU being below `config.mtu`. RFC 6347 §4.1.1 asks for "an
    error to the application" rather than a datagram lost unseen. As in `DatagramTooLarge`,
    `size` and `limit` count application data (`size` bytes did not get through, so at most
    `limit` = `size` - 1 may), `mtu` is the configured one; `datagram_size` is the refused
    datagram's, `size` plus the record's `overhead`. For a handshake flight (`handshake`),
    `size` is the datagram's too (no application data). Nothing was sent; the association
    stays open (a smaller datagram gets through)."""

    def __init__(self, size: int, overhead: int, mtu: int, *, handshake: bool = False) -> None:
        self.size = size
        self.limit = size - 1
        self.mtu = mtu
        self.datagram_size = size + overhead
        what = "a handshake datagram" if handshake else "a datagram"
        data = "" if handshake else f" ({size} bytes of application data)"
        LocalProtocolError.__init__(
            self,
            f"the network path refused {what} of {self.datagram_size} bytes{data} as too "
            f"large (EMSGSIZE): lower mtu (now {mtu}) to the path's MTU",
        )


class ConfigError(ValueError):
    """A configuration value is wrong; the message says, in one line, what to fix."""


class DtlsError(_MadeAgain):
    """An association ended abnormally; raised to the application.

    `resuming`: the handshake that failed had resumed a session (RFC 5246 §7.3: the server
    echoed the session_id offered), so the session may be to blame (a damaged secret, a server
    that breaks resumption); False when it failed before that (no answer, an alert before the
    ServerHello, a full handshake), when the saved session is still worth offering. Set by the
    core when the association ends (for a client with `RetryPolicy`: by any attempt)."""

    resuming: bool = False


def carry_resuming(error: DtlsError, earlier: bool) -> bool:
    """For a client retrying its handshake (`RetryPolicy`): `error` ends one attempt, `earlier`
    says whether an attempt before it resumed the session (only the first offers it; every
    retry is a full handshake). Marks `error` so (`DtlsError.resuming`) and returns the same
    for the next attempt."""
    error.resuming = error.resuming or earlier
    return error.resuming


def after_attempts(error: DtlsError, attempts: int) -> DtlsError:
    """The error to raise for a client's handshake that failed `attempts` times (RPK-4): a
    `HandshakeTimeout` made again naming them (each attempt's timeout alone read as if the
    client had waited that long in all), a `PortUnreachable` likewise (its ICMP reports are
    the last attempt's alone), any other error as it is."""
    if attempts <= 1:
        return error
    remade: DtlsError
    if isinstance(error, HandshakeTimeout):
        remade = HandshakeTimeout(
            error.seconds,
            hello_size=error.hello_size,
            mtu=error.mtu,
            unreachable_reports=error.unreachable_reports,
            attempts=attempts,
            unreachable_after_answer=error.unreachable_after_answer,
        )
    elif isinstance(error, PortUnreachable):
        remade = PortUnreachable(error.address, error.refusals, attempts=attempts)
    else:
        return error
    remade.resuming = error.resuming
    return remade


class AlertSent(DtlsError):
    """We ended the association with a fatal alert because of what the peer did."""

    def __init__(self, alert: AlertDescription, reason: str = "") -> None:
        self.alert = alert
        self.reason = reason
        suffix = f": {reason}" if reason else ""
        super().__init__(f"sent fatal alert {alert.name}{suffix}")


class IntegrityLimitReached(AlertSent):
    """Too many records of one epoch failed authentication (`integrity_limit` in the
    configuration, REC-6; RFC 9147 §4.5.3): we closed the association with a fatal
    bad_record_mac alert rather than give forgers more attempts."""

    def __init__(self, epoch: int, count: int) -> None:
        self.epoch = epoch
        self.count = count
        super().__init__(
            AlertDescription.bad_record_mac,
            f"{count} records failed authentication in epoch {epoch}, the integrity limit "
            "(RFC 9147 §4.5.3)",
        )


class AlertReceived(DtlsError):
    """The peer ended the association with a fatal alert (a fatal-level close_notify too), or
    with close_notify before the handshake completed (RFC 5246 §7.2.1; once established, a
    warning-level close_notify is a clean end, no error). `context`: what our side knows of
    why, added to the message in parentheses (e.g. that we sent no certificate)."""

    def __init__(self, alert: AlertDescription | int, context: str = "") -> None:
        try:
            self.alert: AlertDescription | int = AlertDescription(alert)
            name = self.alert.name
        except ValueError:  # a code AlertDescription does not name: its number
            self.alert = alert
            name = str(alert)
        self.context = context
        if self.alert == AlertDescription.close_notify:
            message = "the peer closed the association (close_notify)"
        else:
            message = f"received fatal alert {name}"
        super().__init__(f"{message} ({context})" if context else message)


class AssociationEnded(LocalProtocolError, DtlsError):
    """`send()` of application data after the association ended. A `LocalProtocolError` (the
    send came too late) and a `DtlsError` too: an application that catches `DtlsError` to
    connect again sees it however the association ended. `error` is the `DtlsError` that
    ended it (also the `__cause__`), None after a clean close: `by_peer` says whether the
    peer's close_notify ended it (RFC 5246 §7.2.1) or our own `close()`."""

    def __init__(self, error: DtlsError | None, *, by_peer: bool = False) -> None:
        self.error = error
        self.by_peer = by_peer
        if error is not None:
            why = f"the association ended with {type(error).__name__}: {error}"
        elif by_peer:
            why = "the peer closed the association (close_notify)"
        else:
            why = "the association was closed (close())"
        super().__init__(f"cannot send application data: {why}")
        self.__cause__ = error


class AssociationReplaced(DtlsError):
    """The peer started a new handshake from the same address (RFC 6347 §4.2.8)."""

    def __init__(self) -> None:
        super().__init__("the peer started a new handshake from the same address")


class AssociationEvicted(DtlsError):
    """The server needed this association's slot (its limits are in `ServerConfig`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"association evicted: {reason}")


class PeerUnresponsive(DtlsError):
    """The peer did not answer a heartbeat request for `seconds` (RFC 6520 §3: the threshold of
    handshake flights), so the association was ended: the peer is gone or unreachable."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the peer did not answer heartbeats for {seconds:g} s")


class SequenceNumbersExhausted(DtlsError):
    """Our records of `epoch` used up the 48-bit sequence number (RFC 6347 §4.1: it must not
    wrap), so the association was abandoned; a new handshake starts a new one. Raised by
    `RecordLayer.seal`; a connection then ends with it."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        super().__init__(
            f"association abandoned: sequence numbers of epoch {epoch} are exhausted "
            "(RFC 6347 §4.1)"
        )


class PortUnreachable(DtlsError):
    """Nothing listens where the client sends its handshake: the network answered its flights
    with ICMP port unreachable (`refusals` times) and no datagram came back. The adapters give
    up then instead of retransmitting until the handshake deadline (`iotdtls._unreachable`).
    `attempts`: the handshakes a client with `RetryPolicy` made, this one the last (RPK-4);
    the text names them when there were more than one, as `HandshakeTimeout`'s does."""

    def __init__(self, address: tuple[Any, ...], refusals: int, *, attempts: int = 1) -> None:
        self.address = address
        self.refusals = refusals
        self.attempts = attempts
        text = (
            f"nothing listens on {format_address(address)}: the network reported the port "
            f"unreachable {refusals} times (ICMP)"
        )
        if attempts > 1:
            text += f" in the last of {attempts} attempts"
        super().__init__(text)


class HandshakeTimeout(DtlsError):
    """The handshake did not complete within the configured deadline.

    `hello_size`: set for a client that heard no ServerHello after a ClientHello that needed a
    datagram of that many bytes and went in fragments (RFC 6347 §4.2.3) to fit `mtu`; servers
    with stateless cookies drop a fragmented ClientHello (RFC 6347 §4.2.1), so the text says
    so. `unreachable_reports`: the ICMP port-unreachable reports a client's handshake had
    from the network, no datagram from the server (fewer than `PortUnreachable` takes: a
    deadline at or below the first retransmission), which the text names: nothing may listen
    there. `unreachable_after_answer`: the reports that came after the server had answered,
    which do not end a handshake (ICMP is soft, and one after an answer may be forged or
    stale: `iotdtls._unreachable`) but which the text names: the server may have gone.
    `attempts`: the handshakes a client with `RetryPolicy` made, each given `seconds`, this one
    the last (RPK-4); the text names them when there were more than one."""

    def __init__(
        self,
        seconds: float,
        *,
        hello_size: int | None = None,
        mtu: int | None = None,
        unreachable_reports: int = 0,
        attempts: int = 1,
        unreachable_after_answer: int = 0,
    ) -> None:
        self.seconds = seconds
        self.hello_size = hello_size
        self.mtu = mtu
        self.unreachable_reports = unreachable_reports
        self.unreachable_after_answer = unreachable_after_answer
        self.attempts = attempts
        text = f"handshake timed out after {seconds:g} s"
        if attempts > 1:
            text += f" (the last of {attempts} attempts, each given {seconds:g} s)"
        if unreachable_reports:
            text += f"; {_reported_unreachable(unreachable_reports)}: nothing may listen there"
        elif unreachable_after_answer:
            text += (
                f"; {_reported_unreachable(unreachable_after_answer)} after the server had"
                " answered: it may have gone away"
            )
        if hello_size is not None:
            text += (
                f" (the ClientHello needs a {hello_size}-byte datagram and went in fragments to"
                f" fit mtu {mtu}; servers with stateless cookies (iotdtls, OpenSSL's listener,"
                " Mbed TLS) drop those: raise mtu or send less)"
            )
        super().__init__(text)


def _reported_unreachable(reports: int) -> str:
    times = "time" if reports == 1 else "times"
    return f"the network reported the port unreachable {reports} {times} (ICMP)"


class IdleTimeout(DtlsError):
    """A server let an established association go after `seconds` without traffic
    (`ServerConfig.idle_timeout`); it sent close_notify first."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"association idle for {seconds:g} s, closed")
