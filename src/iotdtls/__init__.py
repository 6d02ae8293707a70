"""iotdtls: a pure-Python DTLS 1.2 stack for the IoT profile (RFC 7925).

    async with iotdtls.connect(host, port, iotdtls.ClientConfig(...)) as conn: ...
    server = await iotdtls.serve(handler, host, port, iotdtls.ServerConfig(...))

`iotdtls.sync` has a blocking client; `DtlsConnection` and `ServerEndpoint` are the sans-I/O
core for other event loops. Here: what the asyncio adapters take and give (configurations,
credentials, `ChainCache`, identities, session stores) and every error an application may
catch. The core's events are in `iotdtls.events` (whose `AlertReceived` event is not the
`AlertReceived` error here); the other submodules are imported by name.
"""

from iotdtls.aio import (
    ClientConnection,
    DatagramHandler,
    DtlsServer,
    ServerSession,
    connect,
    serve,
)
from iotdtls.chaincache import ChainCache
from iotdtls.config import (
    CONSTRAINED_RETRANSMIT,
    RFC6347_RETRANSMIT,
    ClientConfig,
    Mode,
    RetransmitPolicy,
    RetryPolicy,
    ServerConfig,
)
from iotdtls.connection import DtlsConnection
from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    AlertSent,
    AssociationEnded,
    AssociationEvicted,
    AssociationReplaced,
    ConfigError,
    DatagramTooLarge,
    DtlsError,
    ForeignEventLoop,
    HandshakeTimeout,
    IdleTimeout,
    IntegrityLimitReached,
    LocalProtocolError,
    PathMtuExceeded,
    PeerUnresponsive,
    PortUnreachable,
    SequenceNumbersExhausted,
)
from iotdtls.identity import (
    CertificateIdentity,
    PeerIdentity,
    PskIdentity,
    RawPublicKeyIdentity,
    UnauthenticatedPeer,
)
from iotdtls.sessions import (
    DirectorySessionStore,
    MemorySessionStore,
    SessionState,
    SessionStore,
)

__version__ = "0.1.0"

__all__ = [
    "CONSTRAINED_RETRANSMIT",
    "RFC6347_RETRANSMIT",
    "AlertDescription",
    "AlertReceived",
    "AlertSent",
    "AssociationEnded",
    "AssociationEvicted",
    "AssociationReplaced",
    "CertificateIdentity",
    "CertifiedKey",
    "ChainCache",
    "ClientConfig",
    "ClientConnection",
    "ConfigError",
    "DatagramHandler",
    "DatagramTooLarge",
    "DirectorySessionStore",
    "DtlsConnection",
    "DtlsError",
    "DtlsServer",
    "ForeignEventLoop",
    "HandshakeTimeout",
    "IdleTimeout",
    "IntegrityLimitReached",
    "LocalProtocolError",
    "MemorySessionStore",
    "Mode",
    "PathMtuExceeded",
    "PeerIdentity",
    "PeerUnresponsive",
    "PortUnreachable",
    "PrivateKey",
    "PskIdentity",
    "RawPublicKeyIdentity",
    "RetransmitPolicy",
    "RetryPolicy",
    "SequenceNumbersExhausted",
    "ServerConfig",
    "ServerEndpoint",
    "ServerSession",
    "SessionState",
    "SessionStore",
    "UnauthenticatedPeer",
    "__version__",
    "connect",
    "serve",
]
