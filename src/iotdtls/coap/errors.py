"""What a coaps request raises when its DTLS association fails: aiocoap errors that name the
association and carry the `DtlsError` (or socket error) as their cause.

RFC 7252 §9.1 ties requests and responses to one DTLS association; when that association cannot
be established, or ends, every request pending on it fails with one of these, at once, instead
of waiting out CoAP's own retransmission timers. They are `aiocoap.error.NetworkError`s, the
type aiocoap promises for transport failures, so `except aiocoap.error.NetworkError` (or
`aiocoap.error.Error`) in an application catches them as it catches any other.
"""

from __future__ import annotations

from aiocoap import error

from iotdtls.config import Mode
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    DtlsError,
    HandshakeTimeout,
    IntegrityLimitReached,
)
from iotdtls.handshake.alerts import BASE_ALERTS, X509_MODE_ALERTS

__all__ = [
    "AssociationClosed",
    "AssociationFailed",
    "AssociationTimeout",
    "MessageTooLarge",
    "association_error",
]


class AssociationFailed(error.NetworkError):
    """The DTLS handshake for a coaps request failed (the cause is in `__cause__`)."""

    what = "DTLS handshake with"

    def __init__(self, peer: str, cause: BaseException | None, mode: Mode | None = None) -> None:
        super().__init__(peer, cause)
        #: The peer's `host:port` as messages write it (`[fe80::1%eth0]:5684`, RFC 4007
        #: §11; `CoapsAddress.peer_name`).
        self.peer = peer
        #: The client's credential kind, when known: the advice depends on it.
        self.mode = mode
        self.__cause__ = cause

    def __str__(self) -> str:
        reason = f": {self.__cause__}" if self.__cause__ is not None else ""
        return f"coaps: {self.what} {self.peer} failed{reason}"

    def extra_help(self, hints: dict[str, object] | None = None) -> str | None:
        """What to check, for the command line (aiocoap's `HelpfulError` hook)."""
        return _advice(self.__cause__, self.mode)


class AssociationTimeout(AssociationFailed, error.TimeoutError):
    """The handshake did not complete within the configured `handshake_timeout`."""


class AssociationClosed(AssociationFailed, error.RemoteServerShutdown):
    """An established association ended (close_notify, a fatal alert, a newer association of
    the same peer) while the request was pending on it."""

    what = "DTLS association with"

    def __str__(self) -> str:
        if self.__cause__ is None:
            return f"coaps: the DTLS association with {self.peer} was closed"
        return f"coaps: the DTLS association with {self.peer} ended: {self.__cause__}"

    def extra_help(self, hints: dict[str, object] | None = None) -> str | None:
        """Who ended the association with a fatal alert, for the command line: never advice
        about the handshake, which completed with these credentials (RFC 5246 §7.2.2: an
        alert after it is about a record or message since). None for any other end, which
        its message says in full."""
        cause = self.__cause__
        if isinstance(cause, AlertReceived) and cause.alert != AlertDescription.close_notify:
            return (
                f"The server ended the association with fatal alert {_name(cause.alert)} after "
                "the handshake, which had succeeded (the credentials are not in question); its "
                "log may say why."
            )
        if isinstance(cause, IntegrityLimitReached):
            # RFC 9147 §4.5.3: records that fail authentication are not known to be the
            # server's; anyone who can send to our address can forge them.
            return (
                f"We ended the association with fatal alert {cause.alert.name} after the "
                "handshake, for records that failed authentication: forged or damaged on the "
                "way, they need not come from the server (anyone who can send to our address "
                "can send them)."
            )
        if isinstance(cause, AlertSent):
            return (
                f"We ended the association with fatal alert {cause.alert.name} after the "
                "handshake, for what came from the server's address."
            )
        return None


def _name(alert: AlertDescription | int) -> str:
    """An alert's name, or its number when `AlertDescription` does not name it."""
    return alert.name if isinstance(alert, AlertDescription) else str(alert)


class MessageTooLarge(error.NetworkError):
    """A coaps request that cannot travel in one DTLS record in one datagram of the
    association's `mtu` (RFC 6347 §4.1.1: the application is told, nothing is sent), its header
    and options being too large for block-wise transfer (RFC 7959) to help. Only that request
    fails; the association stays up for the next."""

    def __init__(self, peer: str, size: int, limit: int, mtu: int) -> None:
        super().__init__(peer, size, limit, mtu)
        #: The server's `host:port` as messages write it (`CoapsAddress.peer_name`).
        self.peer = peer
        #: The request's size as sent (a payload counted up to one block, the token at its
        #: longest, 8 bytes), the most one datagram carries, the `mtu` setting.
        self.size, self.limit, self.mtu = size, limit, mtu

    def __str__(self) -> str:
        return (
            f"coaps: a request of {self.size} bytes to {self.peer} was not sent: at most "
            f"{self.limit} bytes of CoAP message fit one DTLS record in a datagram of the "
            f"mtu, {self.mtu} bytes"
        )

    def extra_help(self, hints: dict[str, object] | None = None) -> str | None:
        """What to change, for the command line (aiocoap's `HelpfulError` hook)."""
        return "Shorten the request's options (its URI path and query), or raise the mtu."


def association_error(
    peer: str, cause: BaseException | None, established: bool, mode: Mode | None = None
) -> AssociationFailed:
    """The aiocoap error for an association that failed to form or ended (`mode`: the
    client's credential kind, for the advice)."""
    if established:
        return AssociationClosed(peer, cause, mode)
    if isinstance(cause, HandshakeTimeout):
        return AssociationTimeout(peer, cause, mode)
    return AssociationFailed(peer, cause, mode)


#: Alerts a handshake ends with when something did not verify, whichever side sends them
#: (RFC 5246 §7.2.2). In PSK mode the two sides do not share a key: a wrong key shows as a
#: Finished that does not verify. With raw public keys or certificates decrypt_error is a
#: signature that did not verify (RFC 5246 §7.4.3, §7.4.8): the key pair of the side that
#: signed, not a PSK.
_KEY_MISMATCH = frozenset({AlertDescription.decrypt_error, AlertDescription.bad_record_mac})
#: In PSK mode a Finished that does not verify is a PSK that differs, or an identity the server
#: does not know: RFC 4279 §2 lets a server hide that by going on as if the key were wrong
#: (decrypt_error, not unknown_psk_identity). The advice names both, as the alert's reason
#: does; it named the PSK alone (probe CB).
_PSK_MISMATCH = (
    "Check the credentials: the PSK or the PSK identity does not match the server's."
)
_CREDENTIALS_MISMATCH = "Check the credentials: they do not match the server's."
_SERVER_SIGNATURE = (
    "Check the server's key pair: its signature did not verify with the raw public key or "
    "certificate it sent."
)
_OUR_SIGNATURE = (
    "Check our key pair: the server could not verify our signature (does our private key "
    "match the raw public key or certificate we send?) or our Finished."
)
#: Alerts with which the server refuses us (RFC 4279 §2, RFC 5246 §7.2.2).
_REFUSED_BY_SERVER = {
    AlertDescription.unknown_psk_identity: "the server does not know this PSK identity",
    AlertDescription.handshake_failure: "the server refused the credentials or cipher suites",
}
#: handshake_failure sent: we refused the server (a raw public key that is not provisioned,
#: RFC 7250 §3, is refused with it: the profile's raw-key mode has no certificate alerts).
_WE_REFUSED_THE_SERVER = (
    "Check the server's raw public key or certificate authority we were given, and what we "
    "require of the server: we refused it, for the reason above."
)
#: Alerts about a certificate (RFC 5246 §7.2.2, RFC 6066 §9), the ones only certificate mode
#: sends: when we send one, the server's chain did not validate; when we receive one, the
#: server refused ours. Before a mode is agreed, unsupported_certificate also says that the two
#: sides have no certificate type in common (RFC 7250 §4.2): in raw-public-key mode, the advice
#: is about raw keys.
_CERTIFICATE_ALERTS = X509_MODE_ALERTS - BASE_ALERTS
_SERVER_CERTIFICATE_REFUSED = (
    "Check the trust anchors and the server name (by default the URI's host): the server's "
    "certificate did not validate against them."
)
_OUR_CERTIFICATE_REFUSED = (
    "Check our certificate and key: the server refused them, or does not trust their CA."
)
_SERVER_RAW_KEY_REFUSED = (
    "Check the server's credentials: it sent no raw public key we could take (a certificate, "
    "or a key that is not P-256), and we were given its raw public key."
)
_OUR_RAW_KEY_REFUSED = (
    "Check our raw public key: the server requires one and we have none (give the entry a "
    '"private-key", iotdtls coap --rpk-key), or it cannot take ours; or it has no raw public '
    "key of its own to send."
)


def _key_mismatch(cause: AlertSent | AlertReceived, mode: Mode | None) -> str | None:
    """The advice for a decrypt_error or bad_record_mac alert (see `_KEY_MISMATCH`) in the
    client's `mode`: None for bad_record_mac with signatures (a record, not a key)."""
    if mode is Mode.PSK:
        return _PSK_MISMATCH
    if mode is None:
        return _CREDENTIALS_MISMATCH
    if cause.alert != AlertDescription.decrypt_error:
        return None
    return _SERVER_SIGNATURE if isinstance(cause, AlertSent) else _OUR_SIGNATURE


def _advice(cause: BaseException | None, mode: Mode | None = None) -> str | None:
    if isinstance(cause, HandshakeTimeout):
        return (
            "No handshake completed in time: check that a coaps server listens there and that "
            "the credentials match (many servers answer a wrong key with silence)."
        )
    alert = getattr(cause, "alert", None)
    raw_keys = mode is Mode.RAW_PUBLIC_KEY
    if isinstance(cause, AlertSent) and alert in _CERTIFICATE_ALERTS:
        return _SERVER_RAW_KEY_REFUSED if raw_keys else _SERVER_CERTIFICATE_REFUSED
    if isinstance(cause, AlertReceived) and alert in _CERTIFICATE_ALERTS:
        return _OUR_RAW_KEY_REFUSED if raw_keys else _OUR_CERTIFICATE_REFUSED
    if isinstance(cause, AlertSent | AlertReceived) and alert in _KEY_MISMATCH:
        advice = _key_mismatch(cause, mode)
        if advice is not None:
            return advice
    if isinstance(cause, AlertReceived) and alert in _REFUSED_BY_SERVER:
        return f"Check the credentials: {_REFUSED_BY_SERVER[AlertDescription(alert)]}."
    if isinstance(cause, AlertSent) and alert == AlertDescription.handshake_failure:
        return _WE_REFUSED_THE_SERVER
    if isinstance(cause, DtlsError | OSError):
        return "Check the server address and its DTLS configuration."
    return None
