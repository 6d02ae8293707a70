"""ERR-1: only alerts that apply to the negotiated mode are sent."""

from __future__ import annotations

import pytest

from iotdtls.errors import AlertDescription
from iotdtls.handshake.alerts import PSK_MODE_ALERTS, permitted_alert

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
