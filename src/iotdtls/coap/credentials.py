"""coaps credentials written the way aiocoap users write them, turned into iotdtls configs.

aiocoap keeps credentials in a `CredentialsMap` (loaded from a dict or a JSON file), keyed by
URI patterns for a client and by labels for a server::

    client: {"coaps://192.0.2.1/*": {"dtls": {"psk": {"hex": "0102..."},
                                              "client-identity": {"ascii": "dev1"}}}}
    server: {":dev1": {"dtls": {"psk": {"hex": "0102..."}, "client-identity": {"ascii": "dev1"}}}}

A client uses the most specific entry matching the request's URI (an entry may also be a
reference, `"coaps://192.0.2.1/*": ":dev1"`, to the entry labelled `:dev1`); a server knows
every client of its map, and names the matching entry's label in `authenticated_claims`.

Raw public keys (RFC 7250) have a form of iotdtls's own, "dtls-rpk", which the `CredentialsMap`
of this module (and so `load_credentials`) knows besides aiocoap's::

    client: {"coaps://192.0.2.1/*": {"dtls-rpk": {"private-key": "client.pem",
                                                  "peer-public-key": "server.pub"}}}
    server: {":server": {"dtls-rpk": {"private-key": "server.pem"}},
             ":dev2": {"dtls-rpk": {"peer-public-key": "dev2.pub"}}}

`private-key` is a PEM file of our own P-256 key; `peer-public-key` the other side's key: a PEM
or DER SubjectPublicKeyInfo file, or its SHA-256 in 64 hex digits (optionally after "sha256:",
as the logs print it). A client without a
`private-key` asks for server-only authentication. A server requires a key its map lists of
every raw-public-key client once its map has listed a client key (the map is read at each
handshake: `MapServerConfig`), then for good, on every port of its context: with the last one
removed it admits no raw-key client (fail closed). Only a server whose map never listed one
accepts raw-key clients without asking for a key. The rule lives in memory: a server started
again with a map listing no client key asks for none; a map listing a key no client holds
(the pin "000...0", 64 zeros) requires client keys from the start.

Certificates (RFC 7252 §9.1.3.3) have another form of iotdtls's own, "dtls-x509", in the
manner of aiocoap's "dtls" entries (aiocoap has no X.509 form for DTLS)::

    client: {"coaps://sensor.example/*": {"dtls-x509": {"trust-anchors": "ca.crt",
                                                        "certificate": "client.crt",
                                                        "private-key": "client.key"}}}
    server: {":server": {"dtls-x509": {"certificate": "server.crt", "private-key": "server.key",
                                       "trust-anchors": "ca.crt"}},
             ":dev3": {"dtls-x509": {"client-eui64": "01-23-45-67-89-AB-CD-EF"}}}

`certificate` is a PEM file of our chain (leaf first) or one DER certificate, `private-key` its
key; `trust-anchors` a PEM file of CA certificates: for a client, those the server's chain must
lead to; for a server, those of client certificates, which it then requires. A client without
`certificate` asks for server-only authentication. A client checks the server's certificate for
the request URI's host (RFC 6125), or for `server-name` when the entry gives one. A server
admits every client whose chain leads to its `trust-anchors` and hands the client's EUI-64
(CRT-4) to resource handlers; an entry with `client-eui64` names one such client, and its label
follows the identity in `authenticated_claims` (a resource may then answer 4.01 or 4.03 to
clients it does not list, the way aiocoap leaves authorization to resources).

A client's map is checked when its context is made: every entry that cannot make a config is a
`ConfigError` then. The map is read again at each request (it may change); an entry that cannot
make a config by then fails the request with `UnusableCredentials`, an aiocoap error.

Each credential mode is one *form*: a function from a map entry to a `ClientConfig` (client)
and, on the server, the credentials it contributes to the `ServerConfig` and the entries that
authenticate a `PeerIdentity` (its labels).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Any, ClassVar, TypeVar

from aiocoap import credentials as aiocoap_credentials
from aiocoap import error
from aiocoap.credentials import CredentialsLoadError, CredentialsMissingError
from aiocoap.message import Message

from iotdtls._files import RefusedFile, read_regular_file
from iotdtls._paths import cannot_read, not_a_path, shown_path
from iotdtls.config import (
    MAX_PSK_LENGTH,
    ClientConfig,
    ServerConfig,
    check_psk_pair,
    type_name,
)
from iotdtls.credentials import (
    CertifiedKey,
    PrivateKey,
    load_certificate_file,
    pin_from_hex,
    public_key_pin,
)
from iotdtls.crypto.x509names import canonical_eui64, reference_identity
from iotdtls.errors import ConfigError
from iotdtls.identity import CertificateIdentity, PeerIdentity, PskIdentity, RawPublicKeyIdentity

logger = logging.getLogger("iotdtls.coap")

__all__ = [
    "CredentialsMap",
    "CredentialsSource",
    "DtlsRawPublicKey",
    "DtlsX509",
    "MapServerConfig",
    "ServerCredentials",
    "UnusableCredentials",
    "check_client_credentials",
    "client_config_for",
    "load_credentials",
    "map_client_configs",
]


class UnusableCredentials(error.Error):
    """A request's entry of the client credentials map cannot make a DTLS configuration (the
    map changed since the context was made); `__cause__` is the `ConfigError` saying why."""


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
        fields = _string_fields(
            "dtls-rpk", data, cls.FIELDS, "private-key and/or peer-public-key", "a key hash"
        )
        private, peer = fields.get("private-key"), fields.get("peer-public-key")
        key = None
        if private is not None:
            key = _loading("private-key", private, lambda: PrivateKey.load(private), "dtls-rpk")
        return cls(
            key,
            _public_key_pin(peer) if peer is not None else None,
        )


def _string_fields(
    form: str, data: object, allowed: tuple[str, ...], takes: str, other: str
) -> dict[str, str]:
    """The fields of a form's object: known names, string values, at least one."""
    if not isinstance(data, Mapping):
        raise CredentialsLoadError(f'"{form}" goes with an object')
    unknown = sorted(set(data) - set(allowed))
    if unknown or not data:
        raise CredentialsLoadError(f'"{form}" takes {takes}, got {", ".join(unknown)}')
    if not all(isinstance(value, str) for value in data.values()):
        raise CredentialsLoadError(f'"{form}": give file names (or {other}) as strings')
    return dict(data)


def _public_key_pin(text: str) -> bytes:
    """A pin from 64 hex digits, optionally after "sha256:" (`pin_from_hex`), or from a key
    file (PEM or DER SubjectPublicKeyInfo)."""
    pin = pin_from_hex(text)
    if pin is not None:
        return pin
    try:
        data = read_regular_file(text)
    except RefusedFile as exc:
        raise ConfigError(f"public key file {shown_path(text)} {exc}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(cannot_read("public key file", text, exc, hex_is_secret=False)) from None
    try:
        return public_key_pin(data)
    except ConfigError as exc:
        raise ConfigError(f"public key file {shown_path(text)}: {exc}") from None


class DtlsX509:
    """A "dtls-x509" entry (see the module docstring): our chain and key, trust anchors, the
    server name to check, or the EUI-64 of one client."""

    FIELDS = ("certificate", "private-key", "trust-anchors", "server-name", "client-eui64")

    def __init__(
        self,
        certificate: CertifiedKey | None = None,
        trust_anchors: tuple[bytes, ...] = (),
        server_name: str | None = None,
        client_eui64: str | None = None,
    ) -> None:
        self.certificate = certificate
        self.trust_anchors = trust_anchors
        self.server_name = server_name
        #: Canonical form, as in a client's `CertificateIdentity.name` (CRT-4).
        self.client_eui64 = client_eui64

    def __repr__(self) -> str:
        parts = [
            f"{name}={value!r}"
            for name, value in (
                ("certificate", self.certificate),
                ("anchors", len(self.trust_anchors) or None),
                ("server_name", self.server_name),
                ("client_eui64", self.client_eui64),
            )
            if value is not None
        ]
        return f"<DtlsX509 {' '.join(parts)}>"

    @classmethod
    def from_item(cls, data: object) -> DtlsX509:
        """Parse the entry's object (called by `CredentialsMap.load_from_dict`)."""
        fields = _string_fields(
            "dtls-x509",
            data,
            cls.FIELDS,
            "certificate, private-key, trust-anchors, server-name or client-eui64",
            "an EUI-64 or a name",
        )
        eui64 = fields.get("client-eui64")
        if eui64 is not None:
            return cls(client_eui64=_eui64(eui64, others=len(fields) > 1))
        cert, key = fields.get("certificate"), fields.get("private-key")
        if (cert is None) != (key is None):
            raise CredentialsLoadError('"dtls-x509": give certificate and private-key together')
        anchors = fields.get("trust-anchors")
        name = fields.get("server-name")
        if name is not None:
            _loading("server-name", name, lambda: reference_identity(name))
        return cls(
            certificate=None if cert is None or key is None else _certified_key(cert, key),
            trust_anchors=() if anchors is None else _loading(
                "trust-anchors", anchors, lambda: load_certificate_file(anchors)
            ),
            server_name=name,
        )


def _eui64(text: str, others: bool) -> str:
    if others:
        raise CredentialsLoadError(
            '"dtls-x509": client-eui64 names one client, in an entry of its own'
        )
    canonical = canonical_eui64(text)
    if canonical is None:
        raise CredentialsLoadError(
            f'"dtls-x509": client-eui64 must be an EUI-64 such as 01-23-45-67-89-AB-CD-EF, '
            f"got {text!r}"
        )
    return canonical


def _certified_key(cert: str, key: str) -> CertifiedKey:
    chain = _loading("certificate", cert, lambda: load_certificate_file(cert))
    private = _loading("private-key", key, lambda: PrivateKey.load(key))
    return _loading("certificate", cert, lambda: CertifiedKey(chain, private))


T = TypeVar("T")


def _loading(field_name: str, value: str, load: Callable[[], T], form: str = "dtls-x509") -> T:
    """`load()`, its `ConfigError` saying which field of the `form` entry it is about; the
    value is quoted as a path (`shown_path`), never when it is no path (`not_a_path`: a key's
    PEM text, say, whose loader's message says what it is)."""
    try:
        return load()
    except ConfigError as exc:
        shown = shown_path(value)
        quoted = not_a_path(value) is None and shown not in str(exc)
        where = f"{field_name} {shown}" if quoted else field_name
        raise ConfigError(f'"{form}" {where}: {exc}') from None


class CredentialsMap(aiocoap_credentials.CredentialsMap):
    """aiocoap's credentials map, knowing iotdtls's "dtls-rpk" and "dtls-x509" forms too.

    It notes when it has held a "dtls-rpk" entry naming a peer's key (`listed_client_keys`),
    stored by `load_from_dict`, `map[label] = entry`, `update` or `setdefault`, for a server's
    rule of client keys (`ServerCredentials.lists_client_keys`): a key added and removed again
    with no handshake in between has been listed all the same."""

    _class_map: ClassVar[dict[str, Callable[[], Any]]] = {
        **aiocoap_credentials.CredentialsMap._class_map,
        "dtls-rpk": lambda: DtlsRawPublicKey,
        "dtls-x509": lambda: DtlsX509,
    }
    #: Whether the map has held a client's raw public key since it was made (never cleared).
    listed_client_keys: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._note_client_keys(self.values())

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._note_client_keys((value,))

    # dict's update and setdefault do not go through __setitem__ (nor does |=, left out).
    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._note_client_keys(self.values())

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self._note_client_keys((value,))
        return value

    def _note_client_keys(self, entries: Iterable[object]) -> None:
        if not self.listed_client_keys:
            self.listed_client_keys = any(_is_client_key(entry) for entry in entries)


def _is_client_key(entry: object) -> bool:
    """Whether `entry` lists a client's raw public key (a "dtls-rpk" entry with a peer key)."""
    return isinstance(entry, DtlsRawPublicKey) and entry.peer_pin is not None


#: What `credentials=` accepts: a map, a dict in aiocoap's layout, or a JSON file's path.
CredentialsSource = aiocoap_credentials.CredentialsMap | Mapping[str, Any] | str | PathLike[str]
#: A client form: a `ClientConfig` for a map entry, or None if the entry is not of its form.
ClientForm = Callable[[object, Mapping[str, Any]], ClientConfig | None]


#: The other way to give a credentials file's content, for `cannot_read`.
_OR_OBJECT = " (or pass its object: json.loads of the text)"


def load_credentials(source: CredentialsSource) -> aiocoap_credentials.CredentialsMap:
    """A `CredentialsMap` from a map (returned as is), a dict, or a JSON file; a `ConfigError`
    in one line if it cannot be read, naming the entry and quoting none of its values (a key
    written as a string is one, SEC-1: `_without_values`)."""
    if isinstance(source, aiocoap_credentials.CredentialsMap):
        return source
    if isinstance(source, str | PathLike):
        path = fspath(source)
        try:
            data = json.loads(read_regular_file(path).decode("utf-8"))
        except RefusedFile as exc:
            raise ConfigError(f"credentials file {shown_path(path)} {exc}") from None
        except OSError as exc:
            raise ConfigError(cannot_read("credentials file", path, exc, _OR_OBJECT)) from None
        except ValueError as exc:  # a NUL in the path too, which `cannot_read` names
            if not_a_path(path) is not None:
                raise ConfigError(cannot_read("credentials file", path, exc, _OR_OBJECT)) from None
            raise ConfigError(f"credentials file {shown_path(path)} is not JSON: {exc}") from None
        where = f"credentials file {shown_path(path)}"
    else:
        data, where = source, "credentials"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected an object of URI patterns or labels")
    loaded = CredentialsMap()
    for key, entry in data.items():  # one at a time, so that a mistake names its entry
        if not isinstance(key, str):
            raise ConfigError(f"{where}: a URI pattern or label is a string, got {type_name(key)}")
        problem = _load_entry(loaded, key, entry)
        if problem is not None:  # raised here, so that aiocoap's error is not its context
            raise ConfigError(f"{where} {key}: {problem}")
    return loaded


def _load_entry(loaded: CredentialsMap, key: str, entry: object) -> str | None:
    """Load one entry into `loaded`; what is wrong with it, if anything, in words that quote
    none of its values (`_without_values`)."""
    if isinstance(entry, Mapping) and not isinstance(entry, dict):
        entry = dict(entry)  # aiocoap takes a dict only
    if entry is not None and not isinstance(entry, str | dict):
        # aiocoap's `load_from_dict` raised AttributeError for these (None deletes an entry).
        return (
            'an entry is an object of one form, such as {"dtls": {...}}, or a reference to a '
            f'label, such as ":dev1"; got {type_name(entry)}'
        )
    problem = _bytes_form_problem(entry)
    if problem is not None:
        return problem
    try:
        loaded.load_from_dict({key: entry})
    except CredentialsLoadError as exc:
        return _without_values(str(exc), entry)
    return None


def _bytes_form_problem(entry: object) -> str | None:
    """What is wrong with a field of an aiocoap form written as {"ascii": VALUE} or
    {"hex": VALUE} whose VALUE is not a string (aiocoap's loader called str methods on it: a
    bare AttributeError), naming the form, the field and what it takes, never the value."""
    if not (isinstance(entry, dict) and len(entry) == 1):
        return None
    form, fields = next(iter(entry.items()))
    if form in _OWN_FORMS or not isinstance(fields, dict):
        return None
    for name, value in fields.items():
        if not isinstance(name, str):  # aiocoap's loader called str methods on it too
            return f'"{form}": a field name is a string, got {type_name(name)}'
        if not (isinstance(value, dict) and len(value) == 1):
            continue  # aiocoap refuses an object of two keys, and reads no other
        for kind in ("ascii", "hex"):  # in aiocoap's order
            if kind in value:
                inner = value[kind]
                if not isinstance(inner, str):
                    return (
                        f'"{form}" {name}: {{"{kind}": ...}} takes a string, got '
                        f"{type_name(inner)} (its value is not shown)"
                    )
                break
    return None


#: aiocoap's message for a field of the wrong type, or of no name its form has: it ends with
#: the value's repr (a PSK written as a string, say).
_TYPE_MISMATCH = re.compile(
    r"Type mismatch in attribute (.*?) of (\w+): expected (.*?), got ", re.S
)
#: How aiocoap's forms take bytes in JSON.
_BYTES_FORMS = '{"hex": "..."} or {"ascii": "..."}'
#: iotdtls's forms (`CredentialsMap`), whose messages quote no value of a key.
_OWN_FORMS = ("dtls-rpk", "dtls-x509")
_CLASS = re.compile(r"<class '([\w.]+)'>")
#: Shorter values of an entry ("a", "dev") cannot be told from chance matches in a message.
_MIN_QUOTED = 4


def _without_values(message: str, entry: object) -> str:
    """aiocoap's `CredentialsLoadError` text without the values it may quote (its forms'
    messages end with the value of a field of the wrong type or unknown name, a PSK written
    as a string, say; no secret goes into an error text, SEC-1): such a value is said by its
    type only, and any other message quoting a value of the entry is replaced whole. The
    entry's key goes before it (`load_credentials`)."""
    kind = next(iter(entry)) if isinstance(entry, dict) and len(entry) == 1 else None
    if kind in _OWN_FORMS:
        return message  # ours quote no value but a name or an EUI-64 (`_eui64`)
    mismatch = _TYPE_MISMATCH.match(message)
    if mismatch is not None:
        name, form, expected = mismatch.groups()
        form = form if kind is None else f'"{kind}"'
        field = name.replace("_", "-")
        if expected == "attribute does not exist":
            return f"{form} has no field {field} (its value is not shown)"
        value = _field_value(entry, name)
        wanted = _BYTES_FORMS if expected in (str(bytes), "bytes") else _CLASS.sub(r"\1", expected)
        got = _object_shown(value) if isinstance(value, dict) else type_name(value)
        return f"{form} {field}: expected {wanted}, got {got} (its value is not shown)"
    if any(len(text) >= _MIN_QUOTED and text in message for text in _value_texts(entry)):
        form = "the entry" if kind is None else f'"{kind}" entry'
        return f"{form} cannot be read (aiocoap's message quoted a value of it, not shown)"
    return message


#: The keys of aiocoap's bytes forms, the only keys of a field's object a message names.
_BYTES_KEYS = ("hex", "ascii")


def _object_shown(value: dict[Any, Any]) -> str:
    """A field's object as an error message names it: by the keys of aiocoap's bytes forms
    only (another key may be the secret itself, {"<hex key>": ""}: never shown)."""
    if not value:
        return "an empty object"
    known = [key for key in _BYTES_KEYS if key in value]
    others = len(value) - len(known)
    if not known:
        return 'an object with no "hex" or "ascii" key'
    return f"an object of {', '.join(known)}" + (f" and {others} other keys" if others else "")


def _field_value(entry: object, name: str) -> object:
    """The value of field `name` (aiocoap's spelling, "_" for "-") of a one-form entry."""
    if isinstance(entry, dict) and len(entry) == 1:
        fields = next(iter(entry.values()))
        if isinstance(fields, dict):
            for given, value in fields.items():
                if isinstance(given, str) and given.replace("-", "_") == name:
                    return value
    return None


def _value_texts(value: object) -> Iterator[str]:
    """Every str of `value`, its bytes as hex and repr, through dicts and lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | bytearray):
        yield bytes(value).hex()
        yield repr(bytes(value))[2:-1]
    elif isinstance(value, dict):
        for item in value.values():
            yield from _value_texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _value_texts(item)


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


def _x509_client(entry: object, settings: Mapping[str, Any]) -> ClientConfig | None:
    """iotdtls's "dtls-x509" entry: trust anchors for the server, and our chain for mutual
    authentication. Without `server-name`, the `server_name` setting if given, else the
    transport checks the URI's host."""
    if not isinstance(entry, DtlsX509):
        return None
    if entry.client_eui64 is not None:
        raise ConfigError("a client's dtls-x509 entry has no client-eui64 (that names a client "
                          "in a server's map)")
    if not entry.trust_anchors:
        raise ConfigError(
            "a client's dtls-x509 entry needs trust-anchors (the CA certificates of the server)"
        )
    named = entry.server_name if entry.server_name is not None else settings.get("server_name")
    return ClientConfig(
        trust_anchors=entry.trust_anchors,
        certificate=entry.certificate,
        server_name=named,
        **{name: value for name, value in settings.items() if name != "server_name"},
    )


#: The client forms, tried in order.
CLIENT_FORMS: tuple[ClientForm, ...] = (_psk_client, _rpk_client, _x509_client)


def client_config_for(entry: object, settings: Mapping[str, Any]) -> ClientConfig:
    """The `ClientConfig` of one credentials entry, with the transport's `settings` (mtu,
    timers, ...); `CredentialsMissingError` (aiocoap's) if no form knows the entry."""
    entry = _dereferenced(entry)
    for form in CLIENT_FORMS:
        config = form(entry, settings)
        if config is not None:
            return config
    raise CredentialsMissingError(
        "the credentials for this URI are not a DTLS form iotdtls knows "
        '(a "dtls" entry with "psk" and "client-identity", "dtls-rpk" or "dtls-x509")'
    )


#: References followed from one entry to the next (`"coaps://h/*": ":key"`, aiocoap's way of
#: sharing an entry between URI patterns), as aiocoap itself bounds its URI lookups.
MAX_REFERENCES = 16


def _dereferenced(entry: object) -> object:
    """The entry a reference (a string value ":label" in the map) stands for."""
    for _ in range(MAX_REFERENCES):
        if not isinstance(entry, aiocoap_credentials.CredentialReference):
            return entry
        if entry.target not in entry.map:
            raise ConfigError(f"the credentials refer to {entry.target}, which is not in the map")
        entry = entry.map[entry.target]
    raise ConfigError(f"the credentials refer from label to label more than {MAX_REFERENCES} times")


def check_client_credentials(
    credentials: aiocoap_credentials.CredentialsMap, settings: Mapping[str, Any]
) -> None:
    """Make the config of every URI pattern's entry of a client's map once, so that a mistake
    is a `ConfigError` (naming the pattern) before the first request. Entries of no DTLS form
    are left to the requests they match (aiocoap's `CredentialsMissingError`)."""
    for pattern, entry in credentials.items():
        if pattern.startswith(":"):
            continue  # a label: checked through the patterns that refer to it
        try:
            client_config_for(entry, settings)
        except CredentialsMissingError:
            continue
        except ConfigError as exc:
            raise ConfigError(f"credentials {pattern}: {exc}") from None


def map_client_configs(
    credentials: Callable[[], aiocoap_credentials.CredentialsMap], settings: Mapping[str, Any]
) -> Callable[[Message], ClientConfig]:
    """Per request: the `ClientConfig` made from the map entry matching its URI. `credentials`
    is read at each request, so the map may change."""

    def config_for(message: Message) -> ClientConfig:
        entry = credentials().credentials_from_request(message)
        try:
            return client_config_for(entry, settings)
        except ConfigError as exc:
            uri = message.get_request_uri()
            raise UnusableCredentials(f"credentials for {uri}: {exc}") from exc

    return config_for


class ServerCredentials:
    """A server's view of a `CredentialsMap`: the key of a PSK identity, the raw public keys it
    accepts, its certificates and client trust anchors, and the labels of the entries that
    authenticated a peer. Client entries are read at each handshake (the map may change): PSK
    clients are served while the map has a "dtls" entry, and raw-public-key clients must
    present a key the map lists once it has listed one (`MapServerConfig`); the server's own keys
    and certificates are read when the config is made. A server context has one, which every
    transport serving its map shares (`coap.context.add_server_transport`), so that the rule
    of client keys is one for all its ports."""

    def __init__(self, credentials: Callable[[], aiocoap_credentials.CredentialsMap]) -> None:
        self._credentials = credentials
        #: Whether the map has listed a client's raw public key (`lists_client_keys`), noted
        #: at each reading of the map (`_map`), whatever map the callable gives by then.
        self._listed_client_keys = False
        #: identity -> (label, entry) of the latest `lookup_psk`s that found one, for the
        #: `labels` of the same handshake (one scan of the map per handshake, not two); each
        #: is used once, and only while the map still holds that entry under that label.
        self._found_psk: dict[bytes, tuple[str, object]] = {}
        #: Whether `_map` has warned of a map that is not one.
        self._warned_not_a_map = False

    def __repr__(self) -> str:
        return "<ServerCredentials>"

    def lookup_psk(self, identity: bytes) -> bytes | None:
        """The key of `identity` (RFC 4279 §2), or None for an unknown identity."""
        found = self._find_psk(identity)
        if found is None:
            return None
        key, label, entry = found
        self._found_psk.pop(identity, None)
        self._found_psk[identity] = (label, entry)
        while len(self._found_psk) > _FOUND_PSKS:  # handshakes that never got to `labels`
            del self._found_psk[next(iter(self._found_psk))]
        return key

    def accepts_raw_key(self, peer: RawPublicKeyIdentity) -> bool:
        """Whether a client's raw public key is one of the map's (RPK-3)."""
        return bool(self._raw_key_labels(peer))

    def lists_psk(self) -> bool:
        """Whether the map has a "dtls" entry now (PSK clients are served)."""
        return any(_dtls_psk(entry) is not None for entry in self._map().values())

    def lists_client_keys(self) -> bool:
        """Whether raw-public-key clients must present a key the map lists (RPK-3): once the
        map has listed a client's key (when the config was made, at any reading of the map
        since, or when stored in a map of this module: `_map`), for good, whatever map the
        callable gives later (in memory: a new `ServerCredentials` starts from its map). A
        map whose last client key was removed then admits no raw-key client (fail closed:
        revoking the only device must not admit everyone); only a map that never listed one
        accepts raw-key clients without asking for a key."""
        if not self._listed_client_keys:
            listed = any(map(_is_client_key, self._map().values()))  # `_map` may note it too
            self._listed_client_keys = self._listed_client_keys or listed
        return self._listed_client_keys

    def _map(self) -> aiocoap_credentials.CredentialsMap:
        """The map as it is now, noting whether it has listed a client key: every reading of
        the map (each handshake of any mode, each lookup) goes through here. A map of this
        module knows whether it has held one since it was made (`CredentialsMap`), at no cost;
        another map is scanned for one by `lists_client_keys` only (at the handshakes of
        raw-key clients, and when the config is made), as a scan at each reading would cost
        a PSK server with a large map as much as its PSK lookup. Anything but aiocoap's map
        (a plain dict put in `context.server_credentials`, whose entries were never loaded)
        is read as an empty map that has listed a client key, with a warning once: no client
        is admitted by it (fail closed), where its unloaded entries would have listed none."""
        credentials = self._credentials()
        if not isinstance(credentials, aiocoap_credentials.CredentialsMap):
            if not self._warned_not_a_map:
                self._warned_not_a_map = True
                logger.warning(
                    "context.server_credentials is a %s, not a credentials map: no client is "
                    "admitted by it; give it load_credentials(...) of it",
                    type_name(credentials),
                )
            self._listed_client_keys = True
            return CredentialsMap()
        if isinstance(credentials, CredentialsMap) and credentials.listed_client_keys:
            self._listed_client_keys = True
        return credentials

    def labels(self, peer: PeerIdentity) -> tuple[str, ...]:
        """The labels of the entries that matched `peer` (for `authenticated_claims`)."""
        if isinstance(peer, PskIdentity):
            noted = self._found_psk.pop(peer.identity, None)
            if noted is not None and self._map().get(noted[0]) is noted[1]:
                return (noted[0],)  # the entry `lookup_psk` found, still in the map
            found = self._find_psk(peer.identity)  # resumed, or the map changed since
            return (found[1],) if found is not None else ()
        if isinstance(peer, RawPublicKeyIdentity):
            return self._raw_key_labels(peer)
        if isinstance(peer, CertificateIdentity):
            return self._eui64_labels(peer)
        return ()

    def _find_psk(self, identity: bytes) -> tuple[bytes, str, object] | None:
        """The key, label and entry of the first "dtls" entry of `identity` (as aiocoap's
        `find_dtls_psk`, at its cost per entry: references are followed only for entries that
        are references); None if there is none, or its key is empty or longer than 65535 bytes
        (refused when the config is made, `_check_psk_identities`, but the map may change): an
        unknown identity."""
        reference = aiocoap_credentials.CredentialReference
        for label, entry in self._map().items():
            if isinstance(entry, reference):  # its as_dtls_psk fails for other forms
                found = _dtls_psk(entry)
                if found is None:
                    continue
                given, key = found
            else:
                as_dtls_psk = getattr(entry, "as_dtls_psk", None)
                if as_dtls_psk is None:
                    continue
                given, key = as_dtls_psk()
            if given == identity:
                key = bytes(key)
                usable = 0 < len(key) <= MAX_PSK_LENGTH
                return (key, str(label), entry) if usable else None
        return None

    def _raw_key_labels(self, peer: RawPublicKeyIdentity) -> tuple[str, ...]:
        pin = peer.sha256  # public keys are public: a plain comparison will do
        return tuple(
            label
            for label, entry in self._map().items()
            if isinstance(entry, DtlsRawPublicKey) and entry.peer_pin == pin
        )

    def _eui64_labels(self, peer: CertificateIdentity) -> tuple[str, ...]:
        # `peer.name` of a client is its canonical EUI-64 (CRT-4), as the entries keep theirs.
        return tuple(
            label
            for label, entry in self._map().items()
            if isinstance(entry, DtlsX509) and entry.client_eui64 == peer.name
        )

    def server_config(self, settings: Mapping[str, Any]) -> MapServerConfig:
        """A `ServerConfig` for the map's credentials, with `settings`; a `ConfigError` if the
        map has nothing a client could authenticate with. Its PSK lookup is always installed,
        and a raw-public-key server's client key lookup too: whether either is used is
        decided at each handshake by the map as it is then (`MapServerConfig`)."""
        entries = list(self._map().values())
        _check_psk_identities(self._map())
        self.lists_client_keys()  # notes whether client keys are required from now on
        credentials: dict[str, Any] = {}
        for form in (self._rpk_server, _x509_server):
            credentials.update(form(entries))
        if not credentials and not self.lists_psk():
            raise ConfigError(
                'the server credentials have no "dtls", "dtls-rpk" or "dtls-x509" entry: add '
                'one per client, e.g. {":dev1": {"dtls": {"psk": {"hex": "..."}, '
                '"client-identity": {"ascii": "dev1"}}}}'
            )
        return MapServerConfig(
            psk_lookup=self.lookup_psk, **credentials, server_credentials=self, **settings
        )

    def _rpk_server(self, entries: list[object]) -> dict[str, Any]:
        """"dtls-rpk" entries: our one key, and the lookup of client keys (required while the
        map lists one, `MapServerConfig.client_authenticates_rpk`)."""
        rpk = [e for e in entries if isinstance(e, DtlsRawPublicKey)]
        own_keys = {e.private_key.spki: e.private_key for e in rpk if e.private_key is not None}
        if len(own_keys) > 1:
            raise ConfigError("the server credentials hold more than one own dtls-rpk private-key")
        if not own_keys:
            if rpk:
                raise ConfigError(
                    "the server's dtls-rpk entries need the server's own private-key in one "
                    'more entry, e.g. {":server": {"dtls-rpk": {"private-key": "server.pem"}}}'
                )
            return {}
        return {
            "raw_public_key": next(iter(own_keys.values())),
            "client_key_lookup": self.accepts_raw_key,
        }


#: Identities found by `lookup_psk` kept for their handshake's `labels` (handshakes at once).
_FOUND_PSKS = 64


@dataclass(frozen=True, kw_only=True)
class MapServerConfig(ServerConfig):
    """The `ServerConfig` of a server's credentials map (`ServerCredentials.server_config`),
    whose client rules follow the map as it is at each handshake, since the map may change:
    PSK cipher suites are chosen only while it has a "dtls" entry (the identity then looked up
    in it), and a raw-public-key client must present a key it lists once it has listed one,
    then for good (with the last one removed, no raw-key client gets in: fail closed; only a
    server whose map never listed one accepts raw-public-key clients without asking for a
    key, `ServerCredentials.lists_client_keys`)."""

    #: The map's view, read at each handshake (None: the rules of a plain `ServerConfig`).
    server_credentials: ServerCredentials | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def has_psk(self) -> bool:
        credentials = self.server_credentials
        return super().has_psk and (credentials is None or credentials.lists_psk())

    @property
    def client_authenticates_rpk(self) -> bool:
        credentials = self.server_credentials
        return super().client_authenticates_rpk and (
            credentials is None or credentials.lists_client_keys()
        )


def _dtls_psk(entry: object) -> tuple[bytes, bytes] | None:
    """The client-identity and psk of a "dtls" entry (a reference to one followed); None for
    an entry of another form, or a reference to none."""
    try:
        entry = _dereferenced(entry)
    except ConfigError:
        return None
    as_dtls_psk = getattr(entry, "as_dtls_psk", None)
    if as_dtls_psk is None:
        return None
    identity, psk = as_dtls_psk()
    return bytes(identity), bytes(psk)


def _check_psk_identities(credentials: aiocoap_credentials.CredentialsMap) -> None:
    """Each "dtls" entry's client-identity and psk as a client's configuration takes them
    (`check_psk_pair`): an identity names whose key it is (RFC 4279 §5: the server picks the
    key by it), so an empty one names no one (and a client that sends one is never looked up,
    `PskServerExchange`); a key is 1 to 65535 bytes (RFC 4279 §2: each handshake of an
    identity with another ended in internal_error)."""
    for label, entry in credentials.items():
        found = _dtls_psk(entry)
        if found is not None:
            identity, psk = found
            where = f"credentials {label}: "
            check_psk_pair(f"{where}client-identity", identity, f"{where}psk", psk,
                           "the client names its key by")


def _x509_server(entries: list[object]) -> dict[str, Any]:
    """"dtls-x509" entries: our chains (the first is the default), and the trust anchors that
    client certificates, then required, must lead to (CRT-1)."""
    x509 = [e for e in entries if isinstance(e, DtlsX509)]
    if any(e.server_name is not None for e in x509):
        raise ConfigError("server-name is for a client's dtls-x509 entry, not a server's")
    chains = {e.certificate.chain: e.certificate for e in x509 if e.certificate is not None}
    anchors = tuple(dict.fromkeys(a for e in x509 for a in e.trust_anchors))
    if anchors and not chains:
        raise ConfigError(
            "the server's dtls-x509 trust-anchors need the server's own certificate and "
            "private-key in a dtls-x509 entry"
        )
    if any(e.client_eui64 is not None for e in x509) and not anchors:
        raise ConfigError(
            "dtls-x509 client-eui64 entries need trust-anchors to check client certificates"
        )
    if not chains:
        return {}
    return {"certificates": tuple(chains.values()), "client_trust_anchors": anchors}
