"""CoAP over DTLS ("coaps", RFC 7252 §9) for aiocoap, on iotdtls (needs aiocoap:
`pip install 'aiocoap==0.4.17'`).

    import aiocoap
    from iotdtls import coap

    client = await coap.client_context(credentials={"coaps://192.0.2.1/*": {"dtls": {
        "psk": {"hex": "0102030405060708090a0b0c0d0e0f10"},
        "client-identity": {"ascii": "dev1"}}}})
    response = await client.request(aiocoap.Message(code=aiocoap.GET,
                                                    uri="coaps://192.0.2.1/hello")).response

    server = await coap.server_context(site, ("::", 5684), credentials={":dev1": {"dtls": ...}})

aiocoap does the CoAP (messages, tokens, CON retransmission, block-wise, observe); iotdtls
carries each CoAP message in one DTLS record (RFC 7252 §9.1.1). Credentials are aiocoap's
credentials map (`iotdtls.coap.credentials`) or iotdtls's own `ClientConfig` / `ServerConfig`.
A failed or timed-out association fails its requests with `AssociationFailed` (an aiocoap
`NetworkError`); a resource handler finds the client's authenticated identity in
`request.remote.peer` and first in `request.remote.authenticated_claims`.
"""

from __future__ import annotations

import importlib.util

from iotdtls._extras import AIOCOAP_HINT

if importlib.util.find_spec("aiocoap") is None:  # the optional extra is not installed
    raise ImportError(f"iotdtls.coap needs aiocoap: {AIOCOAP_HINT}", name="aiocoap")

from iotdtls.coap.addresses import CoapsAddress, block_size_exp
from iotdtls.coap.client import ClientRemote, CoapsClientInterface
from iotdtls.coap.context import (
    add_client_transport,
    add_server_transport,
    client_context,
    server_context,
)
from iotdtls.coap.credentials import ServerCredentials, load_credentials
from iotdtls.coap.demo import demo_site
from iotdtls.coap.errors import (
    AssociationClosed,
    AssociationFailed,
    AssociationTimeout,
    MessageTooLarge,
)
from iotdtls.coap.server import CoapsServerInterface, ServerRemote

__all__ = [
    "AssociationClosed",
    "AssociationFailed",
    "AssociationTimeout",
    "ClientRemote",
    "CoapsAddress",
    "CoapsClientInterface",
    "CoapsServerInterface",
    "MessageTooLarge",
    "ServerCredentials",
    "ServerRemote",
    "add_client_transport",
    "add_server_transport",
    "block_size_exp",
    "client_context",
    "demo_site",
    "load_credentials",
    "server_context",
]
