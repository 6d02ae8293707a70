"""coaps credentials as aiocoap users write them (`iotdtls.coap.credentials`): the forms a map
may come in, the configs made from it, and a one-line `ConfigError` for every mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap.credentials import CredentialsMissingError

from iotdtls.coap import load_credentials, server_context
from iotdtls.coap.credentials import CredentialsMap, ServerCredentials, client_config_for
from iotdtls.config import ClientConfig, Mode, ServerConfig
from iotdtls.errors import ConfigError
from iotdtls.identity import PskIdentity
from tests.coap_support import (
    CLIENT_CREDENTIALS,
    PSK_ENTRY,
    SERVER_CREDENTIALS,
    coaps_client,
    coaps_server,
    get,
    make_rpk_files,
    rpk_server_credentials,
    run,
    uri,
)
from tests.peers import CLIENT_IDENTITY, PSK


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


@pytest.mark.parametrize(("data", "message"), [
    ({"coaps://*": {"dtls": {"psk": "not bytes", "client-identity": b"x"}}}, "Type mismatch"),
    ({"coaps://*": {"dtls": PSK_ENTRY, "oscore": {}}}, "exactly one key"),
    ({"coaps://*": {"nonsense": {}}}, "Unknown credential type: nonsense"),
    ({"coaps://*": {"dtls-rpk": {"private-kye": "x"}}}, "takes private-key and/or"),
    ({"coaps://*": {"dtls-rpk": {"peer-public-key": 5}}}, "as strings"),
    ({"coaps://*": {"dtls-rpk": {"peer-public-key": "/nonexistent.pub"}}},
     "cannot read public key file /nonexistent.pub"),
    ([1, 2], "expected an object"),
])
def test_bad_credentials_are_one_line_config_errors(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_credentials(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read credentials file"):
        load_credentials(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_credentials(tmp_path / "bad.json")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "give the server credentials= (aiocoap's map) or config=, one of them"),
    ({"credentials": SERVER_CREDENTIALS,
      "config": ServerConfig(psk_store={b"a": b"b"})}, "one of them"),
    ({"credentials": {"coaps://*": {"tlscert": {"certfile": "x"}}}}, 'no "dtls" or "dtls-rpk"'),
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
                async with coaps_client(config=fixed, mtu=300):
                    pass

    run(main())
