"""Which alerts a mode may send (profile "Error Handling", ERR-1).

The profile lists alerts that cannot apply to it: no certificate alerts in PSK or raw public key
mode, no unknown_psk_identity (PSK-4: decrypt_error instead), nothing about compression or
versions other than DTLS 1.2's protocol_version. Every alert we send passes through
`permitted_alert` with the set of the association's mode (the base set until the hellos fix
it, or `CERTIFICATE_TYPE_ALERTS` when they fail on a certificate type, the server's or the
client's, on either side), so a handler that names an alert of another mode still sends a valid
one. An agreed PSK or raw public key mode never sends a certificate alert.
"""

from __future__ import annotations

from iotdtls.config import Mode
from iotdtls.errors import AlertDescription as A

__all__ = [
    "BASE_ALERTS",
    "CERTIFICATE_TYPE_ALERTS",
    "MODE_ALERTS",
    "PSK_MODE_ALERTS",
    "RPK_MODE_ALERTS",
    "X509_MODE_ALERTS",
    "permitted_alert",
]

#: Alerts every mode may send (RFC 5246 §7.2 as narrowed by the profile): all a PSK or raw
#: public key association may send, and all any association may send before its mode is known.
BASE_ALERTS = frozenset(
    {
        A.close_notify,
        A.unexpected_message,
        A.bad_record_mac,
        A.record_overflow,
        A.handshake_failure,
        A.illegal_parameter,
        A.decode_error,
        A.decrypt_error,
        A.protocol_version,
        A.insufficient_security,
        A.internal_error,
        A.user_canceled,
        A.no_renegotiation,
        A.unsupported_extension,
        # RFC 6066 §3 (EXT-2): a server_name the server does not serve; about the name, not
        # a certificate, so every mode may send it.
        A.unrecognized_name,
    }
)
PSK_MODE_ALERTS = BASE_ALERTS
RPK_MODE_ALERTS = BASE_ALERTS
#: Certificate mode adds the certificate alerts the profile excludes from the other modes.
X509_MODE_ALERTS = BASE_ALERTS | {
    A.bad_certificate,
    A.unsupported_certificate,
    A.certificate_revoked,
    A.certificate_expired,
    A.certificate_unknown,
    A.unknown_ca,
    A.access_denied,
    A.certificate_unobtainable,
    A.bad_certificate_hash_value,
}
#: Hellos that fail for want of a certificate type in common (RFC 7250 §4.2 names
#: unsupported_certificate): a ClientHello the server cannot serve for want of a server
#: certificate type, or of a client certificate type when it requires client authentication; a
#: ServerHello whose server certificate type the client is not provisioned for. No mode is
#: agreed yet, but the hellos are about the ECDHE_ECDSA suite, which authenticates with
#: certificates or raw keys, never a PSK one.
CERTIFICATE_TYPE_ALERTS = BASE_ALERTS | {A.unsupported_certificate}
MODE_ALERTS = {
    Mode.PSK: PSK_MODE_ALERTS,
    Mode.RAW_PUBLIC_KEY: RPK_MODE_ALERTS,
    Mode.X509: X509_MODE_ALERTS,
}


def permitted_alert(description: A, allowed: frozenset[A] = BASE_ALERTS) -> A:
    """`description` if the mode may send it; otherwise the nearest allowed alert.

    unknown_psk_identity becomes decrypt_error (profile, PSK-4); any other alert foreign to the
    mode (a certificate alert in PSK mode, say) becomes handshake_failure.
    """
    if description in allowed:
        return description
    if description is A.unknown_psk_identity:
        return A.decrypt_error
    return A.handshake_failure
