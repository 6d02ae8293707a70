"""How a value given where a file's path was expected appears in a one-line error
(`iotdtls._paths`): a secret is never quoted, a path is."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from iotdtls._paths import cannot_read, not_a_path
from iotdtls.credentials import PrivateKey
from iotdtls.errors import ConfigError

#: A PEM body without its armour, on one line (a P-256 key's PKCS#8 in base64).
_KEY = base64.b64encode(bytes(range(7, 145))).decode()


@pytest.mark.req("SEC-1")
@pytest.mark.parametrize("text", [_KEY, _KEY.rstrip("=") + "==", f" {_KEY} ", _KEY[:40]])
def test_a_key_in_base64_is_no_path(text: str) -> None:
    """A one-line base64 key (probe BN, b64key_leak.py: it was quoted whole as a file name,
    'cannot read key file MIGHAgEA...: No such file or directory')."""
    assert not_a_path(text) == "a key in base64"
    assert not_a_path(text, hex_is_secret=False) == "a key in base64"
    message = cannot_read("key file", text, FileNotFoundError(2, "No such file or directory"))
    assert message == "key file was given a key in base64, not a path: give the file's path"
    with pytest.raises(ConfigError) as info:
        PrivateKey.load(text)
    assert text.strip() not in str(info.value) and "base64, not a path" in str(info.value)


@pytest.mark.parametrize("text", [
    "/etc/iotdtls/keys/server_key_for_the_production_gateway.pem",  # "." and "_"
    "/var/lib/iotdtls/deviceidentitykeysformanydevicesnumbered",  # no upper case, no digit
    "keysAndCertificatesForTheGatewayDeviceNumberOne",  # no digit
    _KEY[:39],  # too short
    "0123456789abcdefABCDEF0123456789abcdefABCDEF",  # hex: the hex rule's (a pin is public)
])
def test_paths_that_are_not_base64_keys_are_quoted(text: str) -> None:
    assert not_a_path(text, hex_is_secret=False) is None
    message = cannot_read("key file", text, FileNotFoundError(2, "No such file or directory"),
                          hex_is_secret=False)
    assert message == f"cannot read key file {text}: No such file or directory"


def test_an_existing_file_named_like_base64_is_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = _KEY.replace("/", "x").rstrip("=")
    assert not_a_path(name) == "a key in base64"
    (tmp_path / name).write_text("")
    assert not_a_path(name) is None
