"""coaps credentials written the way aiocoap users write them, turned into iotdtls configs.

aiocoap keeps credentials in a `CredentialsMap` (loaded from a dict or a JSON file), keyed by
URI patterns for a client and by labels for a server::

    client: {"coaps://192.0.2.1/*": {"dtls": {"psk": {"hex": "0102..."},
                                              "client-identity": {"ascii": "dev1"}}}}
    server: {":dev1": {"dtls": {"psk": {"hex": "0102..."}, "client-identity": {"ascii": "dev1"}}}}

A client uses the most specific entry matching the request's URI; a server knows every client
of its map, and names the matching entry's label in `authenticated_claims`.

Raw public keys (RFC 7250) have a form of iotdtls's own, "dtls-rpk", which the `CredentialsMap`
of this module (and so `load_credentials`) knows besides aiocoap's::

    client: {"coaps://192.0.2.1/*": {"dtls-rpk": {"private-key": "client.pem",
                                                  "peer-public-key": "server.pub"}}}
    server: {":server": {"dtls-rpk": {"private-key": "server.pem"}},
             ":dev2": {"dtls-rpk": {"peer-public-key": "dev2.pub"}}}

`private-key` is a PEM file of our own P-256 key; `peer-public-key` the other side's key: a PEM
or DER SubjectPublicKeyInfo file, or its SHA-256 in 64 hex digits. A client without a
`private-key` asks for server-only authentication; a server whose map lists no client key
accepts raw-public-key clients without asking for their key.

Each credential mode is one *form*: a function from a map entry to a `ClientConfig` (client)
and, on the server, the entries that authenticate a `PeerIdentity` (its labels). Certificates
are the form still to come, next to these, without touching the transports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from os import PathLike, fspath
from typing import Any, ClassVar

from aiocoap import credentials as aiocoap_credentials
from aiocoap.credentials import CredentialsLoadError, CredentialsMissingError
from aiocoap.message import Message

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.credentials import PrivateKey, public_key_pin
from iotdtls.errors import ConfigError
from iotdtls.identity import PeerIdentity, PskIdentity, RawPublicKeyIdentity

__all__ = [
    "CredentialsMap",
    "CredentialsSource",
    "DtlsRawPublicKey",
    "ServerCredentials",
    "client_config_for",
    "load_credentials",
    "map_client_configs",
]


class DtlsRawPublicKey:
    """A "dtls-rpk" entry (see the module docstring): our key and/or the peer's key's pin."""

    FIELDS = ("private-key", "peer-public-key")

    def __init__(self, private_key: PrivateKey | None, peer_pin: bytes | None) -> None:
        self.private_key = private_key
        #: SHA-256 of the peer's SubjectPublicKeyInfo (RPK-3).
        self.peer_pin = peer_pin

    def __repr__(self) -> str:
        peer = self.peer_pin.hex()[:16] + ".." if self.peer_pin else None
        return f"<DtlsRawPublicKey own={self.private_key!r} peer={peer}>"

    @classmethod
    def from_item(cls, data: object) -> DtlsRawPublicKey:
        """Parse the entry's object (called by `CredentialsMap.load_from_dict`)."""
        if not isinstance(data, Mapping):
            raise CredentialsLoadError('"dtls-rpk" goes with an object')
        unknown = sorted(set(data) - set(cls.FIELDS))
        if unknown or not data:
            raise CredentialsLoadError(
                f'"dtls-rpk" takes private-key and/or peer-public-key, got {", ".join(unknown)}'
            )
        values = [data.get(name) for name in cls.FIELDS]
        if not all(v is None or isinstance(v, str) for v in values):
            raise CredentialsLoadError('"dtls-rpk": give file names (or a key hash) as strings')
        private, peer = values
        return cls(
            PrivateKey.load(private) if private is not None else None,
            _public_key_pin(peer) if peer is not None else None,
        )


def _public_key_pin(text: str) -> bytes:
    """A pin from 64 hex digits, or from a key file (PEM or DER SubjectPublicKeyInfo)."""
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return public_key_pin(text)
    try:
        with open(text, "rb") as fh:
            return public_key_pin(fh.read())
    except OSError as exc:
        raise ConfigError(f"cannot read public key file {text}: {exc.strerror}") from None


class CredentialsMap(aiocoap_credentials.CredentialsMap):
    """aiocoap's credentials map, knowing iotdtls's "dtls-rpk" form too."""

    _class_map: ClassVar[dict[str, Callable[[], Any]]] = {
        **aiocoap_credentials.CredentialsMap._class_map,
        "dtls-rpk": lambda: DtlsRawPublicKey,
    }


#: What `credentials=` accepts: a map, a dict in aiocoap's layout, or a JSON file's path.
CredentialsSource = aiocoap_credentials.CredentialsMap | Mapping[str, Any] | str | PathLike[str]
#: A client form: a `ClientConfig` for a map entry, or None if the entry is not of its form.
ClientForm = Callable[[object, Mapping[str, Any]], ClientConfig | None]


def load_credentials(source: CredentialsSource) -> aiocoap_credentials.CredentialsMap:
    """A `CredentialsMap` from a map (returned as is), a dict, or a JSON file; a `ConfigError`
    in one line if it cannot be read."""
    if isinstance(source, aiocoap_credentials.CredentialsMap):
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


def _rpk_client(entry: object, settings: Mapping[str, Any]) -> ClientConfig | None:
    """iotdtls's "dtls-rpk" entry: the server's key, and ours for mutual authentication."""
    if not isinstance(entry, DtlsRawPublicKey):
        return None
    if entry.peer_pin is None:
        raise ConfigError("a client's dtls-rpk entry needs peer-public-key (the server's key)")
    return ClientConfig(
        server_public_keys=[entry.peer_pin], raw_public_key=entry.private_key, **settings
    )


#: The client forms, tried in order.
CLIENT_FORMS: tuple[ClientForm, ...] = (_psk_client, _rpk_client)


def client_config_for(entry: object, settings: Mapping[str, Any]) -> ClientConfig:
    """The `ClientConfig` of one credentials entry, with the transport's `settings` (mtu,
    timers, ...); `CredentialsMissingError` (aiocoap's) if no form knows the entry."""
    for form in CLIENT_FORMS:
        config = form(entry, settings)
        if config is not None:
            return config
    raise CredentialsMissingError(
        "the credentials for this URI are not a DTLS form iotdtls knows "
        '(a "dtls" entry with "psk" and "client-identity", or "dtls-rpk")'
    )


def map_client_configs(
    credentials: Callable[[], aiocoap_credentials.CredentialsMap], settings: Mapping[str, Any]
) -> Callable[[Message], tuple[object, ClientConfig]]:
    """Per request: the map entry matching its URI (the key of its association) and the
    `ClientConfig` made from it. `credentials` is read at each request, so the map may change."""

    def config_for(message: Message) -> tuple[object, ClientConfig]:
        entry = credentials().credentials_from_request(message)
        return entry, client_config_for(entry, settings)

    return config_for


class ServerCredentials:
    """A server's view of a `CredentialsMap`: the key of a PSK identity, the raw public keys it
    accepts, and the labels of the entries that authenticated a peer. Client entries are read
    at each handshake (the map may change); the server's own key when the config is made."""

    def __init__(self, credentials: Callable[[], aiocoap_credentials.CredentialsMap]) -> None:
        self._credentials = credentials

    def __repr__(self) -> str:
        return "<ServerCredentials>"

    def lookup_psk(self, identity: bytes) -> bytes | None:
        """The key of `identity` (RFC 4279 §2), or None for an unknown identity."""
        found = self._find_psk(identity)
        return found[0] if found is not None else None

    def accepts_raw_key(self, peer: RawPublicKeyIdentity) -> bool:
        """Whether a client's raw public key is one of the map's (RPK-3)."""
        return bool(self._raw_key_labels(peer))

    def labels(self, peer: PeerIdentity) -> tuple[str, ...]:
        """The labels of the entries that matched `peer` (for `authenticated_claims`)."""
        if isinstance(peer, PskIdentity):
            found = self._find_psk(peer.identity)
            return (found[1],) if found is not None else ()
        if isinstance(peer, RawPublicKeyIdentity):
            return self._raw_key_labels(peer)
        return ()

    def _find_psk(self, identity: bytes) -> tuple[bytes, str] | None:
        try:
            psk, label = self._credentials().find_dtls_psk(identity)
        except KeyError:
            return None
        return bytes(psk), str(label)

    def _raw_key_labels(self, peer: RawPublicKeyIdentity) -> tuple[str, ...]:
        pin = peer.sha256  # public keys are public: a plain comparison will do
        return tuple(
            label
            for label, entry in self._credentials().items()
            if isinstance(entry, DtlsRawPublicKey) and entry.peer_pin == pin
        )

    def server_config(self, settings: Mapping[str, Any]) -> ServerConfig:
        """A `ServerConfig` for the map's credentials, with `settings`; a `ConfigError` if the
        map has nothing a client could authenticate with."""
        entries = list(self._credentials().values())
        own_keys = {
            e.private_key.spki: e.private_key
            for e in entries
            if isinstance(e, DtlsRawPublicKey) and e.private_key is not None
        }
        if len(own_keys) > 1:
            raise ConfigError("the server credentials hold more than one own dtls-rpk private-key")
        credentials: dict[str, Any] = {}
        if any(hasattr(entry, "as_dtls_psk") for entry in entries):
            credentials["psk_lookup"] = self.lookup_psk
        if own_keys:
            credentials["raw_public_key"] = next(iter(own_keys.values()))
            if any(isinstance(e, DtlsRawPublicKey) and e.peer_pin for e in entries):
                credentials["client_key_lookup"] = self.accepts_raw_key
        if not credentials:
            raise ConfigError(
                'the server credentials have no "dtls" or "dtls-rpk" entry: add one per client, '
                'e.g. {":dev1": {"dtls": {"psk": {"hex": "..."}, "client-identity": '
                '{"ascii": "dev1"}}}}'
            )
        return ServerConfig(**credentials, **settings)
