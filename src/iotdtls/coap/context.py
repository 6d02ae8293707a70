"""aiocoap contexts with iotdtls as their coaps transport.

aiocoap has no public hook for a transport of another package; the narrowest one it has is the
method its own context constructors use to add a message-layer transport
(`Context._append_tokenmanaged_messagemanaged_transport`, present in the pinned aiocoap
version, see `pyproject.toml`). Everything above it (tokens, message IDs, CON retransmission,
block-wise, observe) is aiocoap's; iotdtls only carries the datagrams.
"""

from __future__ import annotations

from typing import Any

from aiocoap import Context, interfaces
from aiocoap.numbers.constants import COAPS_PORT
from aiocoap.resource import Site

from iotdtls.chaincache import ChainCache
from iotdtls.coap.client import CoapsClientInterface, ConfigForRequest
from iotdtls.coap.credentials import (
    CredentialsSource,
    ServerCredentials,
    check_client_credentials,
    load_credentials,
    map_client_configs,
)
from iotdtls.coap.observations import DEFAULT_MAX_OBSERVATIONS, check_max_observations
from iotdtls.coap.server import CoapsServerInterface
from iotdtls.coap.uploads import DEFAULT_MAX_BODY_SIZE, check_max_body_size
from iotdtls.config import ClientConfig, ServerConfig, type_name
from iotdtls.errors import ConfigError
from iotdtls.identity import PeerIdentity

__all__ = ["add_client_transport", "add_server_transport", "client_context", "server_context"]

#: `bind=None`: every address, the coaps port (RFC 7252 §12.7), as aiocoap's servers do.
DEFAULT_BIND = ("::", COAPS_PORT)
#: Fields of the configuration classes that hold credentials, not settings.
_CREDENTIAL_KEYS = frozenset(
    {
        "psk",
        "psk_identity",
        "psk_store",
        "psk_lookup",
        "server_public_keys",
        "raw_public_key",
        "client_public_keys",
        "client_key_lookup",
        "trust_anchors",
        "certificate",
        "certificates",
        "client_trust_anchors",
    }
)
#: Client settings of certificate mode only (`ClientConfig._check_x509_extras`).
_CERTIFICATE_SETTINGS = frozenset(
    {"cached_server_chain", "indicate_trusted_cas", "certificate_urls"}
)


async def add_client_transport(
    context: Context,
    *,
    config: ClientConfig | None = None,
    chain_cache: ChainCache | None = None,
    **settings: Any,
) -> CoapsClientInterface:
    """Send the `coaps://` requests of `context` through iotdtls.

    Credentials come from `context.client_credentials` (aiocoap's map, see
    `iotdtls.coap.credentials`), checked now and read per request, or else from `config`,
    one `ClientConfig` for every coaps request. `settings` are the other `ClientConfig`
    fields (`mtu`, `retransmit`, `handshake_timeout`, `keylog_file`, ...) for configs made
    from the map, checked now whatever the map holds (an empty one too): a `ServerConfig`
    field or a value out of range is a `ConfigError`.
    `chain_cache` keeps servers' certificate chains between runs (RFC 7924)."""
    chooser = _client_chooser(context, config, settings)
    transports: list[CoapsClientInterface] = []

    async def make(mman: interfaces.MessageManager) -> CoapsClientInterface:
        transports.append(CoapsClientInterface(mman, chooser, chain_cache))
        return transports[0]

    await context._append_tokenmanaged_messagemanaged_transport(make)
    return transports[0]


def _client_chooser(
    context: Context, config: ClientConfig | None, settings: dict[str, Any]
) -> ConfigForRequest:
    """How a request gets its `ClientConfig`: `config` always, or the map's entry for its URI."""
    _check_settings(config, settings, ClientConfig)
    if config is None:
        check_client_credentials(context.client_credentials, settings)
        return map_client_configs(lambda: context.client_credentials, settings)
    fixed = config
    return lambda message: fixed


async def add_server_transport(
    context: Context,
    bind: tuple[str, int | None] | None = None,
    *,
    config: ServerConfig | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    max_observations: int = DEFAULT_MAX_OBSERVATIONS,
    **settings: Any,
) -> CoapsServerInterface:
    """Serve `context.serversite` over coaps on `bind` (host, port; None: `DEFAULT_BIND`).

    Clients are authenticated against `context.server_credentials` (aiocoap's map, read at each
    handshake), or else against `config`. The transports of one context serving its map share
    its rules: once the map has listed a client key, every one of them requires one
    (`ServerCredentials.lists_client_keys`). `settings` are the other `ServerConfig` fields.
    `max_body_size`: the largest request body taken, in bytes, whether in one message or
    assembled from Block1 blocks (RFC 7959); a request past it is answered 4.13 Request Entity
    Too Large with Size1 = the bound and never reaches a resource (`iotdtls.coap.uploads`).
    `max_observations`: the live Observe registrations (RFC 7641) kept per association (16 by
    default; 0 for none); one past them is served as a plain GET, its response without Observe
    (`iotdtls.coap.observations`). While it serves, the lines of `context.log` (aiocoap's) at
    warning level or above go through `iotdtls.coap.logs.RepeatedLines`: each kind once a
    minute, with a count of those held back, so that a peer cannot flood the log."""
    host, port = _bind_address(bind)
    check_max_body_size(max_body_size)
    check_max_observations(max_observations)
    _check_settings(config, settings, ServerConfig)
    if config is not None:
        server_config = config

        def labels(peer: PeerIdentity) -> tuple[str, ...]:
            return ()

        claim_labels = labels
    else:
        credentials = _server_credentials(context)
        server_config = credentials.server_config(settings)
        claim_labels = credentials.labels
    transports: list[CoapsServerInterface] = []

    async def make(mman: interfaces.MessageManager) -> CoapsServerInterface:
        transport = await CoapsServerInterface.create(
            mman,
            (host, COAPS_PORT if port is None else port),
            server_config,
            claim_labels,
            max_body_size,
            max_observations=max_observations,
            site=lambda: context.serversite,
        )
        transport.bound_log(context.log)
        transports.append(transport)
        return transport

    await context._append_tokenmanaged_messagemanaged_transport(make)
    return transports[0]


def _server_credentials(context: Context) -> ServerCredentials:
    """The one `ServerCredentials` of `context` (made by its first transport serving the map,
    kept on the context, `_SERVER_CREDENTIALS`), which reads `context.server_credentials` as
    it is at each handshake: a second transport with one of its own had its own rule of
    client keys, and took keyless raw-key clients after the last key was removed if no
    raw-key client had come to it meanwhile."""
    shared = getattr(context, _SERVER_CREDENTIALS, None)
    if isinstance(shared, ServerCredentials):
        return shared
    made = ServerCredentials(lambda: context.server_credentials)
    setattr(context, _SERVER_CREDENTIALS, made)
    return made


#: The attribute of a server context holding its `ServerCredentials` (aiocoap's `Context` has
#: no place of its own for it; a dictionary of contexts would keep them alive, a weak one too,
#: as the value reads the context's map).
_SERVER_CREDENTIALS = "_iotdtls_server_credentials"


async def client_context(
    *,
    credentials: CredentialsSource | None = None,
    config: ClientConfig | None = None,
    plain_coap: bool = True,
    chain_cache: ChainCache | None = None,
    **settings: Any,
) -> Context:
    """An aiocoap client context whose `coaps://` requests go through iotdtls.

    `credentials`: aiocoap's credentials map (a map, a dict, or a JSON file) for
    `context.client_credentials`, a `ConfigError` if an entry cannot make a DTLS config; or
    `config`, one `ClientConfig` for every coaps request (not both: a `ConfigError`, as a map
    beside it would never be read).
    In certificate mode a server's certificate must name the host of the request URI (or the
    `server_name` of the config or entry). `plain_coap`: also send `coap://` requests
    (aiocoap's UDP transport). `chain_cache`: see `add_client_transport`. Shut it down with
    `await context.shutdown()`."""
    if credentials is not None and config is not None:
        raise ConfigError("give the client credentials= (aiocoap's map) or config=, not both")
    loaded = load_credentials(credentials) if credentials is not None else None
    _check_settings(config, settings, ClientConfig)  # before any socket is made
    if plain_coap:
        context = await Context.create_client_context(transports=["udp6"])
    else:
        context = Context()
    try:
        if loaded is not None:
            context.client_credentials = loaded
        await add_client_transport(context, config=config, chain_cache=chain_cache, **settings)
    except BaseException:
        await context.shutdown()
        raise
    return context


async def server_context(
    site: Site | None,
    bind: tuple[str, int | None] | None = None,
    *,
    credentials: CredentialsSource | None = None,
    config: ServerConfig | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    max_observations: int = DEFAULT_MAX_OBSERVATIONS,
    **settings: Any,
) -> Context:
    """An aiocoap context serving `site` over coaps (iotdtls) on `bind`, a (host, port) tuple
    (port None: 5684; default: every address, port 5684; another form is a `TypeError`), and
    nothing else.

    Clients authenticate with `credentials` (aiocoap's map: a map, a dict, or a JSON file, one
    entry per client) or against `config`. Resource handlers find the client's identity in
    `request.remote.peer` and `request.remote.authenticated_claims`. `max_body_size` and
    `max_observations`: see `add_server_transport` (default 64 KiB, 16 registrations). Stop
    it with `await context.shutdown()`."""
    if (credentials is None) == (config is None):
        raise ConfigError("give the server credentials= (aiocoap's map) or config=, one of them")
    _bind_address(bind)  # before the context is made
    check_max_body_size(max_body_size)
    check_max_observations(max_observations)
    context = Context(serversite=site, loggername="coap-server")
    if credentials is not None:
        context.server_credentials = load_credentials(credentials)
    await add_server_transport(
        context, bind, config=config, max_body_size=max_body_size,
        max_observations=max_observations, **settings
    )
    return context


def _bind_address(bind: object) -> tuple[str, int | None]:
    """`bind` as (host, port), `DEFAULT_BIND` for None; a one-line `TypeError` saying the form
    for anything else ("127.0.0.1:5684" gave "too many values to unpack")."""
    if bind is None:
        return DEFAULT_BIND
    if (
        isinstance(bind, tuple | list)
        and len(bind) == 2
        and isinstance(bind[0], str)
        and (bind[1] is None or (isinstance(bind[1], int) and not isinstance(bind[1], bool)))
    ):
        return bind[0], bind[1]
    shown = repr(bind) if isinstance(bind, str | tuple | list) else type_name(bind)
    raise TypeError(
        f'bind must be a (host, port) tuple such as ("127.0.0.1", 5684) (port None: '
        f"{COAPS_PORT}), got {shown}"
    )


def _check_settings(
    config: object | None, settings: dict[str, Any], side: type[ClientConfig | ServerConfig]
) -> None:
    """Settings are fields of the `side`'s configuration other than credentials, and go inside
    `config` when one is given; a `ConfigError` otherwise. A client's are checked here for
    their values too, whatever its map holds (it may be empty, and filled later): a server's
    are, as its config is made from the map at once (`ServerCredentials.server_config`)."""
    if config is not None and settings:
        raise ConfigError("give the DTLS settings inside config=, not beside it")
    misplaced = sorted(_CREDENTIAL_KEYS & settings.keys())
    if misplaced:
        raise ConfigError(
            f"{', '.join(misplaced)}: credentials go into the credentials map or config=, "
            "not into the settings"
        )
    unknown = sorted(settings.keys() - side.__dataclass_fields__.keys())
    if unknown:
        other, role, others = (
            (ServerConfig, "client", "server") if side is ClientConfig
            else (ClientConfig, "server", "client")
        )
        theirs = [name for name in unknown if name in other.__dataclass_fields__]
        whose = f"a {others}'s, not a {role}'s"
        note = "" if not theirs else f" ({whose})" if theirs == unknown else (
            f" ({', '.join(theirs)}: {whose})")
        raise ConfigError(f"unknown DTLS setting {', '.join(unknown)}{note}")
    if side is ClientConfig and config is None:
        # In a PSK config of no real key; the certificate-mode settings by themselves, their
        # rule (certificate mode only, certificate_urls one per certificate sent) left to
        # the entries they go with (`check_client_credentials`, and each request).
        checked = {k: v for k, v in settings.items() if k not in _CERTIFICATE_SETTINGS}
        ClientConfig(psk_identity=b"settings", psk=bytes(16), **checked)
        ClientConfig.check_certificate_settings(settings)
