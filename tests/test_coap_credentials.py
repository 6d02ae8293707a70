"""coaps credentials as aiocoap users write them (`iotdtls.coap.credentials`): the forms a map
may come in, the configs made from it, and a one-line `ConfigError` for every mistake."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiocoap
import pytest
from aiocoap.credentials import CredentialsMissingError

from iotdtls import aio
from iotdtls.coap import add_server_transport, client_context, load_credentials, server_context
from iotdtls.coap.credentials import (
    CredentialsMap,
    DtlsRawPublicKey,
    ServerCredentials,
    UnusableCredentials,
    _object_shown,
    _without_values,
    client_config_for,
)
from iotdtls.config import ClientConfig, Mode, ServerConfig
from iotdtls.credentials import PrivateKey, public_key_pin
from iotdtls.errors import ConfigError, DtlsError
from iotdtls.identity import CertificateIdentity, PskIdentity
from iotdtls.sessions import SessionState
from tests.blocking_support import outcome_without_blocking
from tests.coap_support import (
    CLIENT_CREDENTIALS,
    FAST,
    PSK_ENTRY,
    SERVER_CREDENTIALS,
    CoapSite,
    coaps_client,
    coaps_server,
    get,
    make_rpk_files,
    rpk_server_credentials,
    run,
    uri,
    x509_client_credentials,
    x509_server_credentials,
)
from tests.peers import CLIENT_EUI64, CLIENT_IDENTITY, LOCALHOST, PSK, Pki


@pytest.mark.parametrize("form", ["dict", "json-file", "map"])
def test_credentials_as_dict_json_file_or_map(form: str, tmp_path: Path) -> None:
    def source(data: dict[str, Any]) -> Any:
        if form == "dict":
            return data
        if form == "map":
            loaded = CredentialsMap()
            loaded.load_from_dict(data)
            return loaded
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(data))
        return str(path)

    async def main() -> None:
        async with coaps_server(credentials=source(SERVER_CREDENTIALS)) as server, \
                coaps_client(credentials=source(CLIENT_CREDENTIALS)) as client:
            response = await get(client, uri(server.address, "hello"))
            assert response.code == aiocoap.CONTENT

    run(main())


def test_configs_made_from_entries_carry_the_settings() -> None:
    entry = load_credentials(CLIENT_CREDENTIALS)["coaps://*"]
    config = client_config_for(entry, {"mtu": 300})
    assert (config.identity, config.psk, config.mtu) == (CLIENT_IDENTITY.encode(), PSK, 300)
    server = ServerCredentials(lambda: load_credentials(SERVER_CREDENTIALS))
    assert server.lookup_psk(CLIENT_IDENTITY.encode()) == PSK
    assert server.lookup_psk(b"nobody") is None
    assert server.labels(PskIdentity(CLIENT_IDENTITY.encode())) == (":client",)
    assert server.server_config({"mtu": 300}).mtu == 300


def test_raw_key_entries_make_raw_key_configs(tmp_path: Path) -> None:
    files = make_rpk_files(tmp_path)
    entry = load_credentials({"coaps://*": {"dtls-rpk": {
        "private-key": str(files.client_key), "peer-public-key": str(files.server_pub)}}})
    assert client_config_for(entry["coaps://*"], {}).mode is Mode.RAW_PUBLIC_KEY
    config = ServerCredentials(
        lambda: load_credentials(rpk_server_credentials(files))).server_config({})
    assert config.raw_public_key is not None and config.client_key_lookup is not None
    assert config.has_psk  # the PSK entry is served beside the raw keys


def test_a_peer_public_key_may_be_its_sha256_as_the_logs_print_it() -> None:
    """"peer-public-key": 64 hex digits, or "sha256:<hex>" as the demo and the handshake lines
    print a raw key (probe CK), prefix in any case."""
    pin = bytes(range(32))
    for given in (pin.hex(), f"sha256:{pin.hex()}", f"SHA256:{pin.hex().upper()}"):
        entry = load_credentials({"coaps://*": {"dtls-rpk": {"peer-public-key": given}}})
        config = client_config_for(entry["coaps://*"], {})
        assert tuple(config.server_public_keys) == (pin,), given


def test_certificate_entries_make_certificate_configs(pki: Pki) -> None:
    entry = load_credentials(x509_client_credentials(pki))["coaps://*"]
    config = client_config_for(entry, {"mtu": 300})
    assert (config.mode, config.mtu, config.server_name) == (Mode.X509, 300, None)
    assert config.certificate is not None and config.trust_anchors == (pki.ca_der.read_bytes(),)
    # No server-name in the entry: the transport checks the request URI's host instead.
    assert config.for_host("localhost").server_name == "localhost"
    named = load_credentials(x509_client_credentials(pki, **{"server-name": "gw.example"}))
    assert client_config_for(named["coaps://*"], {}).for_host("localhost").server_name == (
        "gw.example")
    server = ServerCredentials(lambda: load_credentials(x509_server_credentials(pki)))
    served = server.server_config({})
    assert [c.chain for c in served.certificates] == [(pki.server_der.read_bytes(),)]
    assert served.client_trust_anchors == (pki.ca_der.read_bytes(),) and served.has_psk
    # Any spelling of the EUI-64 in the map names the canonical identity (CRT-4).
    spelled = {**x509_server_credentials(pki),
               ":dev3": {"dtls-x509": {"client-eui64": "0123456789abcdef"}}}
    labels = ServerCredentials(lambda: load_credentials(spelled)).labels
    assert labels(CertificateIdentity(CLIENT_EUI64)) == (":dev3",)
    assert labels(CertificateIdentity("01-23-45-67-89-AB-CD-00")) == ()


def test_client_entries_may_refer_to_labels(pki: Pki) -> None:
    """aiocoap's references: a URI pattern names the label of an entry ("coaps://h/*": ":k")."""
    x509 = x509_client_credentials(pki)["coaps://*"]
    loaded = load_credentials({"coaps://*": ":gateway", ":gateway": ":site", ":site": x509,
                               "coaps://psk.example/*": ":dev1", ":dev1": {"dtls": PSK_ENTRY}})
    assert client_config_for(loaded["coaps://*"], {}).mode is Mode.X509
    assert client_config_for(loaded["coaps://psk.example/*"], {}).mode is Mode.PSK
    for data, message in [({"coaps://*": ":nowhere"}, "refer to :nowhere, which is not in"),
                          ({"coaps://*": ":a", ":a": ":b", ":b": ":a"}, "more than 16 times")]:
        with pytest.raises(ConfigError, match=message):
            client_config_for(load_credentials(data)["coaps://*"], {})


@pytest.mark.parametrize(("data", "message"), [
    ({"coaps://*": {"dtls": {"psk": "not bytes", "client-identity": b"x"}}},
     '"dtls" psk: expected {"hex": "..."} or {"ascii": "..."}, got str (its value is not shown)'),
    ({"coaps://*": {"dtls": PSK_ENTRY, "oscore": {}}}, "exactly one key"),
    ({"coaps://*": {"nonsense": {}}}, "Unknown credential type: nonsense"),
    ({"coaps://*": {"dtls-rpk": {"private-kye": "x"}}}, "takes private-key and/or"),
    ({"coaps://*": {"dtls-rpk": {"peer-public-key": 5}}}, "as strings"),
    ({"coaps://*": {"dtls-rpk": {"peer-public-key": "/nonexistent.pub"}}},
     "cannot read public key file /nonexistent.pub"),
    ([1, 2], "expected an object"),
    ({"coaps://*": {"dtls-x509": "ca.crt"}}, '"dtls-x509" goes with an object'),
    ({"coaps://*": {"dtls-x509": {"ca": "x"}}}, '"dtls-x509" takes certificate, private-key,'),
    ({"coaps://*": {"dtls-x509": {"trust-anchors": ["a", "b"]}}}, "as strings"),
    ({"coaps://*": {"dtls-x509": {"certificate": "c.crt"}}}, "certificate and private-key"),
    ({"coaps://*": {"dtls-x509": {"trust-anchors": "/nonexistent.crt"}}},
     '"dtls-x509" trust-anchors: cannot read certificate file /nonexistent.crt'),
    ({"coaps://*": {"dtls-x509": {"server-name": "bad name!"}}},
     '"dtls-x509" server-name: server name \'bad name!\' is neither'),
    ({":dev": {"dtls-x509": {"client-eui64": "01-23"}}}, "client-eui64 must be an EUI-64"),
    ({":dev": {"dtls-x509": {"client-eui64": "0123456789abcdef", "trust-anchors": "ca.crt"}}},
     "client-eui64 names one client, in an entry of its own"),
    # aiocoap's refusals of an entry's shape, before any field is read (M15)
    ({"coaps://*": {}}, "credentials coaps://*: Items in a credentials map must have exactly one"
                        " key (found empty)"),
    ({"coaps://*": {"dtls": "psk.txt"}}, "credentials coaps://*: DTLS goes with an object"),
    # a field of a form not of bytes (aiocoap's TLSCert.certfile: str) named by its type
    ({"coaps://*": {"tlscert": {"certfile": 5}}},
     'credentials coaps://*: "tlscert" certfile: expected str, got int (its value is not shown)'),
])
def test_bad_credentials_are_one_line_config_errors(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_credentials(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_entry_given_as_none_deletes_its_label() -> None:
    """As in aiocoap's `load_from_dict` (a file may say so, and a dict made by code): None is
    no entry to check (M15: `_bytes_form_problem` measured it, TypeError)."""
    assert load_credentials({"coaps://*": None}) == {}
    loaded = load_credentials({"coaps://*": {"dtls": PSK_ENTRY}, ":unused": None})
    assert list(loaded) == ["coaps://*"]


def test_bad_certificate_files_name_the_field_and_file(pki: Pki, tmp_path: Path) -> None:
    def x509(**fields: str) -> dict[str, Any]:
        return {":server": {"dtls-x509": fields}}

    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")
    for data, message in [
        (x509(certificate=str(pki.server_crt), **{"private-key": str(pki.client_key)}),
         f'"dtls-x509" certificate {pki.server_crt}: the private key does not belong'),
        (x509(certificate=str(pki.server_crt), **{"private-key": str(not_a_key)}),
         f'"dtls-x509" private-key: key file {not_a_key}: no private key in it'),
        (x509(certificate=str(not_a_key), **{"private-key": str(pki.server_key)}),
         f'"dtls-x509" certificate: certificate file {not_a_key}: '),
        ({":server": {"dtls-rpk": {"peer-public-key": str(pki.server_key)}}},
         f"public key file {pki.server_key}: that is a private key (PEM PRIVATE KEY), "),
    ]:
        with pytest.raises(ConfigError) as info:
            load_credentials(data)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(("role", "fields", "message"), [
    ("client", {"certificate": "C", "private-key": "K"}, "needs trust-anchors (the CA"),
    ("client", {"client-eui64": CLIENT_EUI64}, "has no client-eui64"),
    ("server", {"trust-anchors": "A", "server-name": "x.example"}, "server-name is for a client"),
    ("server", {"trust-anchors": "A"}, "trust-anchors need the server's own certificate"),
    ("server", {"client-eui64": CLIENT_EUI64}, "client-eui64 entries need trust-anchors"),
])
def test_certificate_entries_in_the_wrong_role(role: str, fields: dict[str, str], message: str,
                                               pki: Pki) -> None:
    files = {"C": str(pki.client_crt), "K": str(pki.client_key), "A": str(pki.ca_crt)}
    form = {"dtls-x509": {name: files.get(value, value) for name, value in fields.items()}}
    with pytest.raises(ConfigError) as info:
        if role == "client":
            client_config_for(load_credentials({"coaps://*": form})["coaps://*"], {})
        else:
            ServerCredentials(lambda: load_credentials({":x": form})).server_config({})
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.req("SEC-1")
def test_a_key_given_instead_of_its_file_is_never_quoted(pki: Pki) -> None:
    pem = pki.client_key.read_text()
    body = pem.splitlines()[1]
    entries = {
        "dtls-rpk": {"private-key": pem},
        "dtls-x509": {"certificate": str(pki.client_crt), "private-key": pem,
                      "trust-anchors": str(pki.ca_crt)},
    }
    for form, entry in entries.items():
        with pytest.raises(ConfigError) as info:
            load_credentials({"coaps://*": {form: entry}})
        message = str(info.value)
        assert message.startswith(f'"{form}" private-key: key file was given PEM text, not a path')
        assert body not in message and "\n" not in message
    psk = {"coaps://*": {"dtls": {"psk": {"hex": PSK.hex()}, "client-identity": "a"}}}
    with pytest.raises(ConfigError) as info:
        load_credentials(json.dumps(psk))  # the file's text, not its path
    assert str(info.value) == (
        "credentials file was given JSON text, not a path: give the file's path (or pass its "
        "object: json.loads of the text)"
    )


@pytest.mark.req("SEC-1")
def test_a_key_in_one_line_base64_is_never_quoted(pki: Pki) -> None:
    """A PEM body without its armour (probe BN, b64key_leak.py: quoted whole as a file name)."""
    body = "".join(line for line in pki.client_key.read_text().splitlines()
                   if not line.startswith("-----"))
    for form in ("dtls-rpk", "dtls-x509"):
        entry: dict[str, str] = {"private-key": body}
        if form == "dtls-x509":
            entry.update(certificate=str(pki.client_crt), **{"trust-anchors": str(pki.ca_crt)})
        with pytest.raises(ConfigError) as info:
            load_credentials({"coaps://*": {form: entry}})
        message = str(info.value)
        assert message.startswith(
            f'"{form}" private-key: key file was given a key in base64, not a path')
        assert body[:40] not in message


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read credentials file"):
        load_credentials(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_credentials(tmp_path / "bad.json")


def test_an_entry_aiocoap_cannot_read_is_named() -> None:
    """A PSK in hex digits of odd number: aiocoap's message, after the entry's key (it named
    no entry: "credentials: Hex object can not be read...")."""
    entry = {"dtls": {"psk": {"hex": "abc"}, "client-identity": {"ascii": "a"}}}
    with pytest.raises(ConfigError) as info:
        load_credentials({"coaps://ok.example/*": {"dtls": PSK_ENTRY}, "coaps://bad/*": entry})
    assert str(info.value).startswith("credentials coaps://bad/*: Hex object can not be read")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "give the server credentials= (aiocoap's map) or config=, one of them"),
    ({"credentials": SERVER_CREDENTIALS,
      "config": ServerConfig(psk_store={b"a": b"b"})}, "one of them"),
    ({"credentials": {"coaps://*": {"tlscert": {"certfile": "x"}}}},
     'no "dtls", "dtls-rpk" or "dtls-x509" entry'),
    ({"credentials": {":c": {"dtls-rpk": {"peer-public-key": "ab" * 32}}}},
     "the server's dtls-rpk entries need the server's own private-key in one more entry, e.g. "
     '{":server": {"dtls-rpk": {"private-key": "server.pem"}}}'),
    ({"credentials": SERVER_CREDENTIALS, "psk_store": {}}, "psk_store: credentials go into"),
    ({"credentials": SERVER_CREDENTIALS, "mtuu": 300}, "unknown DTLS setting mtuu"),
    ({"config": ServerConfig(psk_store={b"a": b"b"}), "mtu": 300}, "inside config="),
])
def test_server_context_refuses_mistakes_in_one_line(kwargs: dict[str, Any], message: str,
                                                     ) -> None:
    async def main() -> None:
        with pytest.raises(ConfigError) as info:
            await server_context(None, ("127.0.0.1", 0), **kwargs)
        assert message in str(info.value) and "\n" not in str(info.value)

    run(main())


def test_requests_without_usable_credentials_fail_with_aiocoaps_error() -> None:
    async def main() -> None:
        async with coaps_server() as server:
            for credentials in ({"coaps://other.example/*": {"dtls": PSK_ENTRY}},
                                {"coaps://*": {"tlscert": {"certfile": "ca.pem"}}}):
                async with coaps_client(credentials=credentials) as client:
                    with pytest.raises(CredentialsMissingError):
                        await get(client, uri(server.address, "hello"))
            fixed = ClientConfig(psk_identity=CLIENT_IDENTITY, psk=PSK)
            with pytest.raises(ConfigError, match="inside config="):
                await client_context(config=fixed, plain_coap=False, mtu=300)

    run(main())


def test_a_client_map_that_cannot_make_a_config_is_refused_by_client_context(pki: Pki) -> None:
    """Our certificate without trust-anchors: a one-line `ConfigError` when the context is
    made, not at the first request."""
    bad = {"coaps://*": {"dtls-x509": {"certificate": str(pki.client_crt),
                                       "private-key": str(pki.client_key)}}}

    async def main() -> None:
        with pytest.raises(ConfigError) as info:
            await client_context(credentials=bad)
        assert str(info.value).startswith("credentials coaps://*: a client's dtls-x509 entry "
                                          "needs trust-anchors")
        assert "\n" not in str(info.value)

    run(main())


def test_a_map_made_unusable_later_fails_the_request_with_an_aiocoap_error(pki: Pki) -> None:
    """The map is read at each request: an entry that cannot make a config fails the request
    with an `aiocoap.error.Error`, its cause the `ConfigError` saying what to fix."""
    bad = {"coaps://*": {"dtls-x509": {"certificate": str(pki.client_crt),
                                       "private-key": str(pki.client_key)}}}

    async def main() -> None:
        async with coaps_client() as client:
            client.client_credentials = load_credentials(bad)
            with pytest.raises(aiocoap.error.Error) as info:
                await get(client, "coaps://127.0.0.1:9/hello")
            assert isinstance(info.value, UnusableCredentials)
            assert "needs trust-anchors" in str(info.value)
            assert isinstance(info.value.__cause__, ConfigError)

    run(main())


def test_credential_and_public_key_files_are_read_only_when_regular(tmp_path: Path) -> None:
    """A FIFO named as the credentials file or a peer's public key file blocked the context
    forever (and /dev/zero filled memory): refused in one line naming the file, as the CLI
    and the key loaders refuse them."""
    fifo = tmp_path / "creds.fifo"
    os.mkfifo(fifo)
    assert outcome_without_blocking(lambda: load_credentials(str(fifo)), fifo) == (
        f"credentials file {fifo} is a FIFO, not a regular file")
    files = make_rpk_files(tmp_path)
    entry = {"coaps://*": {"dtls-rpk": {"private-key": str(files.client_key),
                                        "peer-public-key": str(fifo)}}}
    assert outcome_without_blocking(
        lambda: client_config_for(load_credentials(entry)["coaps://*"], {}), fifo
    ) == f"public key file {fifo} is a FIFO, not a regular file"
    big = tmp_path / "big.json"
    big.write_text("{}" + " " * (1 << 20))
    with pytest.raises(ConfigError, match=f"^credentials file {big} is larger than 1 MiB"):
        load_credentials(str(big))


def test_a_server_map_entry_with_an_empty_client_identity_is_refused_in_one_line() -> None:
    """The client side refused `"client-identity": {"hex": ""}` (an empty identity names no
    one, RFC 4279 §5) while a server's map loaded and served it."""
    entry = {"dtls": {"psk": {"hex": PSK.hex()}, "client-identity": {"hex": ""}}}
    server = ServerCredentials(lambda: load_credentials({":client1": entry}))
    with pytest.raises(ConfigError) as info:
        server.server_config({})
    assert str(info.value) == (
        "credentials :client1: client-identity is empty: give the identity the client names"
        " its key by (RFC 4279 §5)")


#: A key written where aiocoap's "dtls" form refuses it (as a string, or in an encoding it does
#: not know, or under a field name it does not know).
LEAKED_KEY = "5ec2e75ec2e75ec2e75ec2e75ec2e7ff"


@pytest.mark.req("SEC-1")
@pytest.mark.parametrize(("fields", "message"), [
    ({"psk": LEAKED_KEY}, '"dtls" psk: expected {"hex": "..."} or {"ascii": "..."}, got str'),
    ({"psk": {"base64": LEAKED_KEY}}, '"dtls" psk: expected {"hex": "..."} or {"ascii": "..."},'
                                      ' got an object with no "hex" or "ascii" key (its value is'
                                      " not shown)"),
    ({"psk": {LEAKED_KEY: ""}}, '"dtls" psk: expected {"hex": "..."} or {"ascii": "..."},'
                                ' got an object with no "hex" or "ascii" key (its value is not'
                                " shown)"),
    ({"psk": {}}, '"dtls" psk: expected {"hex": "..."} or {"ascii": "..."}, got an empty object'),
    ({"psk": {"hex": PSK.hex()}, "psk-hex": LEAKED_KEY}, '"dtls" has no field psk-hex'),
])
def test_a_key_aiocoap_refuses_is_never_quoted(fields: dict[str, Any], message: str,
                                               tmp_path: Path) -> None:
    """aiocoap's message for a field of the wrong type or unknown name ends with the value's
    repr, which `load_credentials` passed on: client_context, server_context and credentials
    files showed the key. Now the message names the entry, the field and the type expected."""
    dtls = {"client-identity": {"ascii": CLIENT_IDENTITY}, **fields}
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"coaps://*": {"dtls": dtls}}))
    attempts = _contexts_given(dtls, path)

    async def main() -> None:
        for where, attempt in attempts:
            with pytest.raises(ConfigError) as info:
                await attempt()
            assert str(info.value).startswith(where + message)
            for text in (str(info.value), repr(info.value)):
                assert "\n" not in text
                assert LEAKED_KEY not in text and LEAKED_KEY.encode().hex() not in text
            assert info.value.__context__ is None  # aiocoap's error, with the key, not kept

    run(main())


def _contexts_given(
    dtls: dict[str, Any], path: Path
) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """Each way a "dtls" entry reaches a context, with the start of its error message: a
    client's map, a server's map, a client's credentials file (`path`, holding the entry)."""
    return [
        ("credentials coaps://*: ", lambda: client_context(
            credentials={"coaps://*": {"dtls": dtls}}, plain_coap=False)),
        ("credentials :dev1: ", lambda: server_context(
            None, ("127.0.0.1", 0), credentials={":dev1": {"dtls": dtls}})),
        (f"credentials file {path} coaps://*: ", lambda: client_context(
            credentials=str(path), plain_coap=False)),
    ]


@pytest.mark.parametrize(("fields", "message"), [
    ({"psk": {"ascii": 5}}, '"dtls" psk: {"ascii": ...} takes a string, got int'),
    # the first field not of a bytes form does not end the search (M15)
    ({"psk": LEAKED_KEY, "client-identity": {"ascii": 5}},
     '"dtls" client-identity: {"ascii": ...} takes a string, got int'),
    ({"psk": {"hex": [LEAKED_KEY]}}, '"dtls" psk: {"hex": ...} takes a string, got list of str'),
    ({"client-identity": {"ascii": {}}},
     '"dtls" client-identity: {"ascii": ...} takes a string, got dict'),
])
def test_a_bytes_form_of_a_value_not_a_string_is_a_one_line_config_error(
        fields: dict[str, Any], message: str, tmp_path: Path) -> None:
    """{"ascii": 5}, {"hex": [...]} raised a bare AttributeError from aiocoap's loader (probe
    BN #6, nested_attr.py), in load_credentials, client_context, server_context and files."""
    dtls = {"psk": {"hex": PSK.hex()}, "client-identity": {"ascii": CLIENT_IDENTITY}, **fields}
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"coaps://*": {"dtls": dtls}}))
    with pytest.raises(ConfigError) as info:
        load_credentials({"coaps://*": {"dtls": dtls}})
    assert str(info.value) == f"credentials coaps://*: {message} (its value is not shown)"
    attempts = _contexts_given(dtls, path)

    async def main() -> None:
        for where, attempt in attempts:
            with pytest.raises(ConfigError) as info:
                await attempt()
            assert str(info.value) == f"{where}{message} (its value is not shown)"
            assert LEAKED_KEY not in str(info.value)

    run(main())
    with pytest.raises(ConfigError) as info:
        load_credentials({"coaps://*": {"dtls": {b"psk": {"hex": LEAKED_KEY}}}})
    assert str(info.value) == 'credentials coaps://*: "dtls": a field name is a string, got bytes'


def test_any_other_aiocoap_message_quoting_a_value_is_replaced_whole() -> None:
    """A message of aiocoap's (a form of a later version, say) that quotes a value of the entry
    is not passed on; one that quotes none is, and so are those of iotdtls's own forms."""
    entry = {"dtls": {"psk": {"hex": PSK.hex()}, "client-identity": LEAKED_KEY}}
    assert _without_values(f"cannot use {LEAKED_KEY!r}", entry) == (
        "\"dtls\" entry cannot be read (aiocoap's message quoted a value of it, not shown)")
    assert _without_values(f"cannot use {LEAKED_KEY[:-1]}", entry) == (
        f"cannot use {LEAKED_KEY[:-1]}")
    own = {"dtls-x509": {"client-eui64": "01-23"}}
    assert _without_values("client-eui64 ... got '01-23'", own) == "client-eui64 ... got '01-23'"
    # Values of 4 characters and more count; bytes by their hex and their repr, in any list.
    four = {"dtls": {"client-identity": "k3y!"}}
    assert _without_values("cannot use 'k3y!'", four) == (
        "\"dtls\" entry cannot be read (aiocoap's message quoted a value of it, not shown)")
    three = {"dtls": {"client-identity": "k3y"}}
    assert _without_values("cannot use 'k3y'", three) == "cannot use 'k3y'"
    secret = b"k3y!"
    for quoted in (repr(secret), secret.hex(), repr(b"k3y!s3cr3t")):
        entry = {"dtls": {"psk": b"k3y!s3cr3t" if "s3" in quoted else secret}}
        assert _without_values(f"cannot use {quoted}", entry) == (
            "\"dtls\" entry cannot be read (aiocoap's message quoted a value of it, not shown)")
    listed = {"dtls": {"psk": [LEAKED_KEY]}}
    assert "not shown" in _without_values(f"cannot use {[LEAKED_KEY]}", listed)
    # an entry of no one form (a message of a later aiocoap, say) is "the entry"
    two = {"dtls": {}, "other": LEAKED_KEY}
    assert _without_values(f"found {LEAKED_KEY}", two) == (
        "the entry cannot be read (aiocoap's message quoted a value of it, not shown)")


def test_a_fields_object_is_named_by_its_bytes_keys_only() -> None:
    """How a field's object is named (`_object_shown`): aiocoap 0.4.17 refuses an object of
    "hex" or "ascii" and another key itself, so only these calls show the rest."""
    assert _object_shown({"hex": "00", LEAKED_KEY: 1}) == "an object of hex and 1 other keys"
    assert _object_shown({"hex": "00", "ascii": "a"}) == "an object of hex, ascii"
    assert _object_shown({"ascii": "a", "x": 1, "y": 2}) == "an object of ascii and 2 other keys"


@pytest.mark.parametrize(("credentials", "settings", "message"), [
    (CLIENT_CREDENTIALS, {"max_connections": 3},
     "unknown DTLS setting max_connections (a server's, not a client's)"),
    (None, {"max_connections": 3, "mtuu": 1},
     "unknown DTLS setting max_connections, mtuu (max_connections: a server's, not a client's)"),
    (None, {"mtuu": 1}, "unknown DTLS setting mtuu"),  # no note (M15: " (: a server's...")
    (None, {"mtu": -5}, "mtu must be an integer from 128 to 65507, got -5"),
    (None, {"retry": "often"}, "retry must be "),
])
def test_client_context_checks_its_settings_when_made(credentials: Any, settings: dict[str, Any],
                                                      message: str) -> None:
    """A server's setting given to a client raised a bare TypeError from ClientConfig, and with
    an empty map (filled later) no setting was checked at all: every request failed later."""
    async def main() -> None:
        with pytest.raises(ConfigError) as info:
            await client_context(credentials=credentials, plain_coap=False, **settings)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)
        if "mtuu" in settings and len(settings) == 1:
            assert str(info.value) == message

    run(main())


def test_server_context_refuses_a_clients_setting_in_one_line() -> None:
    async def main() -> None:
        for name, value in (("server_name", "gw.example"), ("retry", None)):
            with pytest.raises(ConfigError) as info:
                await server_context(None, ("127.0.0.1", 0), credentials=SERVER_CREDENTIALS,
                                     **{name: value})
            assert str(info.value) == f"unknown DTLS setting {name} (a client's, not a server's)"

    run(main())


def test_a_server_name_setting_goes_with_certificate_entries(pki: Pki) -> None:
    """`server_name` is a client setting; with a "dtls-x509" entry it raised a TypeError (the
    entry's server name given twice). The entry's `server-name` wins, else the setting's."""
    plain = load_credentials(x509_client_credentials(pki))["coaps://*"]
    assert client_config_for(plain, {"server_name": "gw.example"}).server_name == "gw.example"
    named = load_credentials(x509_client_credentials(pki, **{"server-name": "a.example"}))
    assert client_config_for(named["coaps://*"], {"server_name": "gw.example"}).server_name == (
        "a.example")


def test_client_context_refuses_credentials_beside_a_config() -> None:
    """The map was installed and never read (the config served every request), as quietly as
    a server refuses the pair loudly."""
    async def main() -> None:
        with pytest.raises(ConfigError) as info:
            await client_context(credentials=CLIENT_CREDENTIALS, plain_coap=False,
                                 config=ClientConfig(psk_identity=CLIENT_IDENTITY, psk=PSK))
        assert str(info.value) == (
            "give the client credentials= (aiocoap's map) or config=, not both")

    run(main())


@pytest.mark.parametrize(("entry", "shown"), [
    (["x"], "list of str"), ([], "list"), (42, "int"), (4.5, "float"), (True, "bool"),
])
def test_an_entry_of_no_shape_a_map_takes_is_a_one_line_config_error(entry: Any,
                                                                      shown: str) -> None:
    """A list or a number as an entry raised a bare AttributeError from aiocoap's loader."""
    with pytest.raises(ConfigError) as info:
        load_credentials({"coaps://ok/*": {"dtls": PSK_ENTRY}, "coaps://*": entry})
    assert str(info.value) == (
        'credentials coaps://*: an entry is an object of one form, such as {"dtls": {...}}, or '
        f'a reference to a label, such as ":dev1"; got {shown}')


def test_map_keys_must_be_strings_and_entries_may_be_any_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        load_credentials({5: {"dtls": PSK_ENTRY}})
    assert str(info.value) == "credentials: a URI pattern or label is a string, got int"
    loaded = load_credentials({"coaps://*": MappingProxyType({"dtls": PSK_ENTRY})})
    assert client_config_for(loaded["coaps://*"], {}).psk == PSK


EMPTY_PSK = {"dtls": {"psk": {"hex": ""}, "client-identity": {"ascii": CLIENT_IDENTITY}}}


def test_a_server_map_entry_with_an_empty_psk_is_refused_when_the_context_is_made() -> None:
    """The client side refused an empty psk while a server's map loaded and served it: each
    handshake of that identity then ended in internal_error."""
    server = ServerCredentials(lambda: load_credentials({":client1": EMPTY_PSK}))
    with pytest.raises(ConfigError) as info:
        server.server_config({})
    assert str(info.value) == "credentials :client1: psk is empty: give the pre-shared key bytes"

    async def main() -> None:
        with pytest.raises(ConfigError, match=r"^credentials :client1: psk is empty"):
            await server_context(None, ("127.0.0.1", 0), credentials={":client1": EMPTY_PSK})

    run(main())


BIG_PSK = {"dtls": {"psk": {"ascii": "k" * 70000}, "client-identity": {"ascii": CLIENT_IDENTITY}}}


def test_a_server_map_entry_with_a_psk_over_65535_bytes_is_refused_when_made() -> None:
    """As the client side refuses it (probe BN #5, bigpsk_server.py: server_context took it,
    each handshake of that identity then ended in internal_error with a warning); one the
    map gets later is an unknown identity, as an empty one."""
    message = "credentials :client1: psk is 70000 bytes; at most 65535 fit the protocol"
    server = ServerCredentials(lambda: load_credentials({":client1": BIG_PSK}))
    with pytest.raises(ConfigError) as info:
        server.server_config({})
    assert str(info.value) == message

    async def main() -> None:
        with pytest.raises(ConfigError, match=f"^{message}$"):
            await server_context(None, ("127.0.0.1", 0), credentials={":client1": BIG_PSK})

    run(main())
    served = load_credentials(SERVER_CREDENTIALS)
    credentials = ServerCredentials(lambda: served)
    served.load_from_dict({":client": BIG_PSK})
    assert credentials.lookup_psk(CLIENT_IDENTITY.encode()) is None
    assert credentials.labels(PskIdentity(CLIENT_IDENTITY.encode())) == ()


def test_an_empty_psk_the_map_gets_later_is_an_unknown_identity(
        caplog: pytest.LogCaptureFixture) -> None:
    """The map may change after the server was made: an identity whose key became empty is
    looked up as unknown (decrypt_error, as for any unknown identity), not internal_error."""
    served = load_credentials(SERVER_CREDENTIALS)
    credentials = ServerCredentials(lambda: served)
    served.load_from_dict({":client": EMPTY_PSK})
    assert credentials.lookup_psk(CLIENT_IDENTITY.encode()) is None
    assert credentials.labels(PskIdentity(CLIENT_IDENTITY.encode())) == ()

    async def main() -> None:
        changing = load_credentials(SERVER_CREDENTIALS)
        async with coaps_server(credentials=changing) as server, coaps_client() as client:
            changing.load_from_dict({":client": EMPTY_PSK})
            refused = r"decrypt_error \(the server could not verify our Finished"
            with pytest.raises(aiocoap.error.NetworkError, match=refused):
                await get(client, uri(server.address, "hello"))

    run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_references_in_a_server_map_are_followed_to_their_psk() -> None:
    """A reference to an entry of another form (or to none) is no PSK entry: it raised
    AttributeError in the server's checks and lookups."""
    files = {":a": ":b", ":b": {"dtls-x509": {"client-eui64": CLIENT_EUI64}}, ":c": ":d",
             ":dev": ":client", **SERVER_CREDENTIALS}
    credentials = ServerCredentials(lambda: load_credentials(files))
    assert credentials.lists_psk()
    assert credentials.lookup_psk(CLIENT_IDENTITY.encode()) == PSK
    assert credentials.labels(PskIdentity(CLIENT_IDENTITY.encode())) == (":dev",)
    with pytest.raises(ConfigError, match="client-eui64 entries need trust-anchors"):
        credentials.server_config({})


def test_an_unknown_field_of_any_name_is_named_without_its_value() -> None:
    """aiocoap's message was matched for field names of word characters only: another name
    ("psk.hex") left its value to the quoted-value check, which skips values shorter than 4."""
    entry = {"dtls": {**PSK_ENTRY, "psk.hex": "k3y"}}
    with pytest.raises(ConfigError) as info:
        load_credentials({"coaps://*": entry})
    assert str(info.value) == (
        'credentials coaps://*: "dtls" has no field psk.hex (its value is not shown)')


@pytest.mark.req("RPK-3")
def test_removing_the_last_client_key_of_a_raw_key_server_fails_closed(tmp_path: Path) -> None:
    """A raw-public-key server whose map listed a client key keeps requiring one when the
    last is removed: the removed client's old session is not resumed and its full handshake
    fails, as does a keyless client's (probe BN, resume.py: the removed device resumed, and
    any client got in unauthenticated, so revoking the only device admitted everyone). A
    server whose map never listed one still takes keyless raw-key clients."""
    files = make_rpk_files(tmp_path)
    client_key = PrivateKey.load(files.client_key)
    server_pin = public_key_pin(files.server_pub.read_bytes())
    mutual = ClientConfig(raw_public_key=client_key, server_public_keys=[server_pin],
                          retransmit=FAST, handshake_timeout=5.0)
    keyless = ClientConfig(server_public_keys=[server_pin], retransmit=FAST,
                           handshake_timeout=5.0)
    own = {":server": {"dtls-rpk": {"private-key": str(files.server_key)}}}

    async def connects(port: int, config: ClientConfig,
                       session: SessionState | None = None) -> SessionState | None:
        async with asyncio.timeout(10), aio.connect(LOCALHOST, port, config,
                                                    session=session) as connection:
            return connection.session

    async def main() -> None:
        served = CredentialsMap()
        served.load_from_dict({**own, ":A": {"dtls-rpk": {"peer-public-key":
                                                          str(files.client_pub)}}})
        async with coaps_server(credentials=served) as server:
            port = server.address[1]
            session = await connects(port, mutual)
            assert session is not None
            del served[":A"]
            for config, offered in ((mutual, session), (mutual, None), (keyless, None)):
                with pytest.raises(DtlsError, match=r"handshake_failure|unsupported_certificate"):
                    await connects(port, config, offered)
        async with coaps_server(credentials=own) as server:  # never listed one
            await connects(server.address[1], keyless)

    run(main())


@pytest.mark.req("RPK-3")
def test_the_client_key_rule_is_one_for_every_port_and_every_listing(tmp_path: Path) -> None:
    """The rule above held per transport, each with its own view of the map: a key listed, its
    device connecting on one port, then revoked (here by a map reloaded without it, as from
    its file), left another port of the same context admitting every raw-key client, the
    revoked one included (probe BO #2, sticky.py); and a key listed then removed with no
    raw-key handshake in between was never noted. Now the transports of a context share one
    view, and a map of `load_credentials` notes the listing when it is stored.
    A placeholder pin (64 zeros, README) lists a key no client holds: a server started with
    it requires client keys from the start."""
    files = make_rpk_files(tmp_path)
    server_pin = public_key_pin(files.server_pub.read_bytes())
    timers: dict[str, Any] = {"retransmit": FAST, "handshake_timeout": 5.0}

    def config(key: Path | None) -> ClientConfig:
        return ClientConfig(raw_public_key=None if key is None else PrivateKey.load(key),
                            server_public_keys=[server_pin], **timers)

    own = {":server": {"dtls-rpk": {"private-key": str(files.server_key)}}}
    listed = {":A": {"dtls-rpk": {"peer-public-key": str(files.client_pub)}}}

    async def connects(port: int, key: Path | None) -> None:
        async with asyncio.timeout(10), aio.connect(LOCALHOST, port, config(key)):
            pass

    async def refused(port: int, key: Path | None) -> None:
        with pytest.raises(DtlsError, match=r"handshake_failure|unsupported_certificate"):
            await connects(port, key)

    async def main() -> None:
        context = aiocoap.Context(serversite=CoapSite().site)
        context.server_credentials = load_credentials(own)
        try:
            one = await add_server_transport(context, (LOCALHOST, 0), **timers)
            two = await add_server_transport(context, (LOCALHOST, 0), **timers)
            await connects(two.address[1], None)  # nothing listed yet: keyless clients in
            context.server_credentials.load_from_dict(listed)
            await connects(one.address[1], files.client_key)
            context.server_credentials = load_credentials(own)
            for port in (one.address[1], two.address[1]):
                for key in (files.client_key, files.stranger_key, None):
                    await refused(port, key)
        finally:
            await context.shutdown()
        served = load_credentials(own)
        async with coaps_server(credentials=served) as server:  # listed, removed, no handshake
            served.load_from_dict(listed)
            served.load_from_dict({":A": None})
            await refused(server.address[1], None)
            await refused(server.address[1], files.stranger_key)
        placeholder = {":nobody": {"dtls-rpk": {"peer-public-key": "0" * 64}}}
        async with coaps_server(credentials={**own, **placeholder}) as server:
            await refused(server.address[1], None)
            await refused(server.address[1], files.client_key)

    run(main())


def test_a_server_given_a_plain_dict_for_its_map_admits_no_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`context.server_credentials` set to a plain dict (the form `server_context` takes, but
    never loaded: its entries are dicts) was read as a map listing no client key, so every
    raw-key client was admitted, the one it meant to list, a keyless one and a stranger. Now
    anything but a credentials map is read as an empty map that has listed a key (fail
    closed), with one warning saying to load it."""
    files = make_rpk_files(tmp_path)
    server_pin = public_key_pin(files.server_pub.read_bytes())
    timers: dict[str, Any] = {"retransmit": FAST, "handshake_timeout": 5.0}
    own = {":server": {"dtls-rpk": {"private-key": str(files.server_key)}}}

    async def refused(port: int, key: Path | None) -> None:
        config = ClientConfig(raw_public_key=None if key is None else PrivateKey.load(key),
                              server_public_keys=[server_pin], **timers)
        with pytest.raises(DtlsError, match=r"handshake_failure|unsupported_certificate"):
            async with asyncio.timeout(10), aio.connect(LOCALHOST, port, config):
                pass

    async def main() -> None:
        context = aiocoap.Context(serversite=CoapSite().site)
        context.server_credentials = load_credentials(own)
        try:
            served = await add_server_transport(context, (LOCALHOST, 0), **timers)
            context.server_credentials = {
                **own, ":A": {"dtls-rpk": {"peer-public-key": str(files.client_pub)}}}
            for key in (files.client_key, files.stranger_key, None):
                await refused(served.address[1], key)
        finally:
            await context.shutdown()

    with caplog.at_level(logging.WARNING, logger="iotdtls.coap"):
        run(main())
    warnings = [r.getMessage() for r in caplog.records if "not a credentials map" in r.getMessage()]
    assert warnings == [
        "context.server_credentials is a dict, not a credentials map: no client is admitted by "
        "it; give it load_credentials(...) of it"
    ]


def test_a_map_notes_a_client_key_however_it_is_stored() -> None:
    """`CredentialsMap.listed_client_keys`, read by a server's rule of client keys: set by
    each way dict has of storing an entry (update and setdefault bypass __setitem__), and
    never cleared; not by a server's own key."""
    client = DtlsRawPublicKey(None, bytes(32))
    own = DtlsRawPublicKey(PrivateKey.generate(), None)
    assert not CredentialsMap({":server": own}).listed_client_keys
    assert CredentialsMap({":A": client}).listed_client_keys
    by_keywords = CredentialsMap(A=client)
    assert by_keywords.listed_client_keys and by_keywords == {"A": client}
    for label, store in (
            (":A", lambda m: m.update({":A": client})), ("A", lambda m: m.update(A=client)),
            (":A", lambda m: m.setdefault(":A", client)),
            (":A", lambda m: m.__setitem__(":A", client))):
        served = CredentialsMap({":server": own})
        store(served)
        assert served.listed_client_keys
        assert served == {":server": own, label: client}  # stored as dict would store it
        served.clear()
        assert served.listed_client_keys


def test_a_psk_handshake_scans_the_server_map_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup and the labels of one handshake walked the map once each, calling the
    entries' as_dtls_psk for every entry twice (probe BN #8, mapcost.py: 26 ms against a
    10,000-entry map, 7.9 ms before); the labels now take the entry the lookup found while
    the map still holds it under its label."""
    calls: list[object] = []
    as_dtls_psk = aiocoap.credentials.DTLS.as_dtls_psk

    def counted(entry: aiocoap.credentials.DTLS) -> tuple[bytes, bytes]:
        calls.append(entry)
        return as_dtls_psk(entry)

    many = {f":d{i}": {"dtls": {"psk": {"hex": f"{i + 1:032x}"},
                                "client-identity": {"ascii": f"d{i}"}}} for i in range(50)}
    site_map = load_credentials({**many, **SERVER_CREDENTIALS})  # the client's entry is last

    async def main() -> None:
        async with coaps_server(credentials=site_map) as server, coaps_client() as client:
            calls.clear()
            monkeypatch.setattr(aiocoap.credentials.DTLS, "as_dtls_psk", counted)
            response = await get(client, uri(server.address, "whoami"))
            monkeypatch.undo()
            assert response.code.is_successful()
        assert len(calls) <= 51 + 2  # one scan (and lists_psk's first entry)

    run(main())


def test_the_labels_of_a_psk_handshake_follow_the_map_as_it_is_then() -> None:
    """What `lookup_psk` found serves its handshake's `labels` only while the map still holds
    that entry under its label (no caching across map changes), once, and few are kept."""
    identity = CLIENT_IDENTITY.encode()
    peer = PskIdentity(identity)
    served = load_credentials(SERVER_CREDENTIALS)
    credentials = ServerCredentials(lambda: served)
    assert credentials.lookup_psk(identity) == PSK
    del served[":client"]
    assert credentials.labels(peer) == ()  # removed between the lookup and the labels
    served.load_from_dict({":client": {"dtls": PSK_ENTRY}})
    assert credentials.lookup_psk(identity) == PSK
    served.load_from_dict({":client": ":other", ":other": {"dtls": PSK_ENTRY}})
    assert credentials.labels(peer) == (":client",)  # the map as it is now: its first entry
    assert credentials.labels(peer) == (":client",)  # resumed: a scan
    for number in range(100):
        credentials.lookup_psk(identity if number % 2 else b"nobody")
        entry = {"psk": {"hex": "01"}, "client-identity": {"ascii": str(number)}}
        served.load_from_dict({f":d{number}": {"dtls": entry}})
        credentials.lookup_psk(str(number).encode())
    assert len(credentials._found_psk) <= 64


def test_a_server_notes_the_latest_psk_lookups_and_takes_keys_of_any_usable_size() -> None:
    """`lookup_psk` keeps the entries of the 64 latest identities found, the latest used last
    (an identity looked up again is kept over older ones), for their handshakes' `labels`;
    a key of 1 to 65535 bytes is found, an empty one or a longer one is an unknown identity
    (RFC 4279 §2; the map may change after `_check_psk_identities`)."""
    def dtls(identity: str, key: bytes) -> dict[str, Any]:
        return {"dtls": {"psk": {"hex": key.hex()}, "client-identity": {"ascii": identity}}}

    served = load_credentials({f":d{i}": dtls(f"d{i}", b"\x01") for i in range(65)})
    credentials = ServerCredentials(lambda: served)
    for number in range(64):
        assert credentials.lookup_psk(f"d{number}".encode()) == b"\x01"
    assert list(credentials._found_psk) == [f"d{i}".encode() for i in range(64)]
    credentials.lookup_psk(b"d0")
    credentials.lookup_psk(b"d64")
    assert list(credentials._found_psk)[-2:] == [b"d0", b"d64"]
    assert b"d1" not in credentials._found_psk and len(credentials._found_psk) == 64
    longest = bytes(range(256)) * 255 + bytes(255)  # 65535 bytes
    served.load_from_dict({":long": dtls("long", longest), ":over": dtls("over", longest + b"!"),
                           ":empty": dtls("empty", b"")})
    assert credentials.lookup_psk(b"long") == longest
    assert credentials.lookup_psk(b"over") is None
    assert credentials.lookup_psk(b"empty") is None

