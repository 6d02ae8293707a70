"""iotdtls: a pure-Python DTLS 1.2 stack for the IoT profile (RFC 7925)."""

from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    ConfigError,
    DtlsError,
    HandshakeTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "AlertDescription",
    "AlertReceived",
    "AlertSent",
    "ConfigError",
    "DtlsError",
    "HandshakeTimeout",
    "__version__",
]
