"""coaps credentials written the way aiocoap users write them, turned into iotdtls configs.

aiocoap keeps credentials in a `CredentialsMap` (loaded from a dict or a JSON file), keyed by
URI patterns for a client and by labels for a server::

    client: {"coaps://192.0.2.1/*": {"dtls": {"psk": {"hex": "0102..."},
                                              "client-identity": {"ascii": "dev1"}}}}
    server: {":dev1": {"dtls": {"psk": {"hex": "0102..."}, "client-identity": {"ascii": "dev1"}}}}

A client uses the most specific entry matching the request's URI; a server knows every client
of its map, and names the matching entry's label in `authenticated_claims`.

Each credential mode is one *form*: a function from a map entry to a `ClientConfig` (client) and
one from a `PeerIdentity` to its labels (server). PSK, aiocoap's "dtls" entry, is the form there
is; the raw-public-key and certificate forms are added here, next to it, once `ClientConfig` and
`ServerConfig` take those credentials, without touching the transports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from os import PathLike, fspath
from typing import Any

from aiocoap.credentials import CredentialsLoadError, CredentialsMap, CredentialsMissingError
from aiocoap.message import Message

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.errors import ConfigError
from iotdtls.identity import PeerIdentity, PskIdentity

__all__ = [
    "CredentialsSource",
    "ServerCredentials",
    "client_config_for",
    "load_credentials",
    "map_client_configs",
]

#: What `credentials=` accepts: a map, a dict in aiocoap's layout, or a JSON file's path.
CredentialsSource = CredentialsMap | Mapping[str, Any] | str | PathLike[str]
#: A client form: a `ClientConfig` for a map entry, or None if the entry is not of its form.
ClientForm = Callable[[object, Mapping[str, Any]], ClientConfig | None]


def load_credentials(source: CredentialsSource) -> CredentialsMap:
    """A `CredentialsMap` from a map (returned as is), a dict, or a JSON file; a `ConfigError`
    in one line if it cannot be read."""
    if isinstance(source, CredentialsMap):
        return source
    if isinstance(source, str | PathLike):
        path = fspath(source)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"credentials file {path} is not JSON: {exc}") from None
        where = f"credentials file {path}"
    else:
        data, where = source, "credentials"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected an object of URI patterns or labels")
    loaded = CredentialsMap()
    try:
        loaded.load_from_dict(dict(data))
    except CredentialsLoadError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return loaded


def _psk_client(entry: object, settings: Mapping[str, Any]) -> ClientConfig | None:
    """aiocoap's "dtls" entry: `psk` and `client-identity` (RFC 4279)."""
    as_dtls_psk = getattr(entry, "as_dtls_psk", None)
    if as_dtls_psk is None:
        return None
    identity, psk = as_dtls_psk()
    return ClientConfig(psk_identity=identity, psk=psk, **settings)


#: The client forms, tried in order.
CLIENT_FORMS: tuple[ClientForm, ...] = (_psk_client,)


def client_config_for(entry: object, settings: Mapping[str, Any]) -> ClientConfig:
    """The `ClientConfig` of one credentials entry, with the transport's `settings` (mtu,
    timers, ...); `CredentialsMissingError` (aiocoap's) if no form knows the entry."""
    for form in CLIENT_FORMS:
        config = form(entry, settings)
        if config is not None:
            return config
    raise CredentialsMissingError(
        "the credentials for this URI are not a DTLS form iotdtls knows "
        '(a "dtls" entry with "psk" and "client-identity")'
    )


def map_client_configs(
    credentials: Callable[[], CredentialsMap], settings: Mapping[str, Any]
) -> Callable[[Message], tuple[object, ClientConfig]]:
    """Per request: the map entry matching its URI (the key of its association) and the
    `ClientConfig` made from it. `credentials` is read at each request, so the map may change."""

    def config_for(message: Message) -> tuple[object, ClientConfig]:
        entry = credentials().credentials_from_request(message)
        return entry, client_config_for(entry, settings)

    return config_for


class ServerCredentials:
    """A server's view of a `CredentialsMap`: the key of a PSK identity, and the labels of the
    entry that authenticated a peer. The map is read at each handshake (it may change)."""

    def __init__(self, credentials: Callable[[], CredentialsMap]) -> None:
        self._credentials = credentials

    def __repr__(self) -> str:
        return "<ServerCredentials>"

    def lookup_psk(self, identity: bytes) -> bytes | None:
        """The key of `identity` (RFC 4279 §2), or None for an unknown identity."""
        found = self._find_psk(identity)
        return found[0] if found is not None else None

    def labels(self, peer: PeerIdentity) -> tuple[str, ...]:
        """The labels of the entry that matched `peer` (for `authenticated_claims`)."""
        if isinstance(peer, PskIdentity):
            found = self._find_psk(peer.identity)
            return (found[1],) if found is not None else ()
        return ()

    def _find_psk(self, identity: bytes) -> tuple[bytes, str] | None:
        try:
            psk, label = self._credentials().find_dtls_psk(identity)
        except KeyError:
            return None
        return bytes(psk), str(label)

    def server_config(self, settings: Mapping[str, Any]) -> ServerConfig:
        """A `ServerConfig` whose PSK lookup reads the map, with `settings`; a `ConfigError`
        if the map has no entry a client could authenticate with."""
        if not any(hasattr(entry, "as_dtls_psk") for entry in self._credentials().values()):
            raise ConfigError(
                'the server credentials have no "dtls" entry: add one per client, e.g. '
                '{":dev1": {"dtls": {"psk": {"hex": "..."}, "client-identity": {"ascii": "dev1"}}}}'
            )
        return ServerConfig(psk_lookup=self.lookup_psk, **settings)
