"""ERR-1: only alerts that apply to the negotiated mode are sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import iotdtls.connection
from iotdtls.errors import AlertDescription, AlertLevel, AlertReceived, AlertSent, ProtocolError
from iotdtls.events import ConnectionClosed
from iotdtls.handshake.alerts import (
    BASE_ALERTS,
    CERTIFICATE_TYPE_ALERTS,
    PSK_MODE_ALERTS,
    RPK_MODE_ALERTS,
    permitted_alert,
)
from iotdtls.messages import HandshakeType, RawPublicKeyCertificate
from tests.memory_link import MemoryLink, events_of
from tests.pubkey_support import rewrite, rpk_link, stranger_key

CERTIFICATE_ALERTS = [
    AlertDescription.bad_certificate,
    AlertDescription.unsupported_certificate,
    AlertDescription.certificate_revoked,
    AlertDescription.certificate_expired,
    AlertDescription.certificate_unknown,
    AlertDescription.unknown_ca,
]


@pytest.mark.req("ERR-1")
@pytest.mark.parametrize("alert", CERTIFICATE_ALERTS)
def test_no_certificate_alerts_in_psk_mode(alert: AlertDescription) -> None:
    assert alert not in PSK_MODE_ALERTS
    assert permitted_alert(alert) is AlertDescription.handshake_failure


@pytest.mark.req("ERR-1")
def test_a_certificate_type_failure_adds_only_unsupported_certificate() -> None:
    """RFC 7250 §4.2: the one certificate alert a server sends before any mode is agreed."""
    assert {AlertDescription.unsupported_certificate} == CERTIFICATE_TYPE_ALERTS - BASE_ALERTS
    assert AlertDescription.unsupported_certificate not in PSK_MODE_ALERTS


@pytest.mark.req("ERR-1", "PSK-4")
def test_unknown_psk_identity_is_never_sent() -> None:
    assert permitted_alert(AlertDescription.unknown_psk_identity) is AlertDescription.decrypt_error


@pytest.mark.req("ERR-1")
def test_psk_alerts_pass_unchanged() -> None:
    # The set is not empty, and holds the alerts the PSK handshake does send.
    assert {AlertDescription.decrypt_error, AlertDescription.handshake_failure,
            AlertDescription.close_notify} <= set(PSK_MODE_ALERTS)
    for alert in PSK_MODE_ALERTS:
        assert permitted_alert(alert) is alert
    # decompression_failure (30) is not even a member: no code path can name it.
    assert 30 not in {a.value for a in AlertDescription}


# -- the filter on real paths that try to send a forbidden alert --------------------------------


def _p384_spki() -> bytes:
    key = ec.generate_private_key(ec.SECP384R1())
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _server_certificate(spki: Callable[[], bytes]) -> Callable[[], MemoryLink]:
    """The raw key in the server's Certificate replaced by `spki()` on the way."""
    return lambda: rpk_link(
        rewrite("server", HandshakeType.certificate,
                lambda body: RawPublicKeyCertificate(spki()).encode(), times=9)
    )


#: Raw-key paths whose checks name a certificate alert, which RPK mode may not send (ERR-1):
#: (how to build the link, the alert the check names, words of its reason).
FORBIDDEN_ON_REAL_PATHS: dict[str, tuple[Callable[[], MemoryLink], AlertDescription, str]] = {
    "key-not-provisioned": (
        lambda: rpk_link(client={"server_public_keys": [stranger_key().spki]}),
        AlertDescription.bad_certificate,
        "not provisioned",
    ),
    "undecodable-key": (
        _server_certificate(lambda: b"\x30\x03\x02\x01\x00"),
        AlertDescription.bad_certificate,
        "undecodable",
    ),
    "not-a-p256-key": (
        _server_certificate(_p384_spki),
        AlertDescription.unsupported_certificate,
        "not an ECDSA P-256 key",
    ),
}


@pytest.mark.req("ERR-1", "RPK-3")
@pytest.mark.parametrize("path", list(FORBIDDEN_ON_REAL_PATHS))
def test_a_real_path_naming_a_certificate_alert_sends_handshake_failure(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The client's own check names a certificate alert (seen as it is raised); the wire,
    the client's AlertSent and the server's AlertReceived carry handshake_failure instead.
    With the filter taken out, the same path puts the certificate alert on the wire, and the
    link's ERR-1 check refuses it: the filter is what stands between them."""
    build, named, reason = FORBIDDEN_ON_REAL_PATHS[path]
    raised: list[AlertDescription] = []
    real_init = ProtocolError.__init__

    def spy(exc: ProtocolError, message: str, alert: AlertDescription | None = None) -> None:
        real_init(exc, message, alert)
        raised.append(exc.alert)

    monkeypatch.setattr(ProtocolError, "__init__", spy)
    link = build()
    link.handshake()
    assert named in raised  # the path really tried to send it
    assert named not in RPK_MODE_ALERTS
    client_closed = events_of(link, "client", ConnectionClosed)
    assert [type(e.error) for e in client_closed] == [AlertSent]
    assert client_closed[0].error.alert is AlertDescription.handshake_failure
    assert reason in client_closed[0].error.reason
    (server_closed,) = events_of(link, "server", ConnectionClosed)
    assert isinstance(server_closed.error, AlertReceived)
    assert server_closed.error.alert is AlertDescription.handshake_failure
    assert ("client", AlertLevel.FATAL, AlertDescription.handshake_failure) in link.checked_alerts
    # The same path without the filter.
    monkeypatch.setattr(iotdtls.connection, "permitted_alert", lambda alert, allowed: alert)
    with pytest.raises(AssertionError, match=named.name):
        build().handshake()
