"""How a value given where a file's path was expected appears in a one-line error
(`iotdtls._paths`): a secret is never quoted, a path is."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotdtls._paths import _is_der_sequence, cannot_read, not_a_path
from iotdtls.cli import main
from iotdtls.credentials import PrivateKey
from iotdtls.errors import ConfigError


def _der_keys() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


_PKCS8, _SPKI = _der_keys()
#: A PEM body without its armour, on one line (a P-256 key's PKCS#8 in base64).
_KEY = base64.b64encode(_PKCS8).decode()
#: Keys in base64 as they are given: none is a path (SEC-1: never quoted).
_KEY_FORMS = {
    "PKCS#8": _KEY,
    "PKCS#8, padding dropped": _KEY.rstrip("="),
    "SubjectPublicKeyInfo": base64.b64encode(_SPKI).decode(),
    "PKCS#8 URL-safe": base64.urlsafe_b64encode(_PKCS8).decode(),
    "PKCS#8 URL-safe, unpadded": base64.urlsafe_b64encode(_PKCS8).decode().rstrip("="),
    "16-byte PSK": "m6JfJ19RxgcI/80Vruu1BA==",
    "32-byte PSK, URL-safe": base64.urlsafe_b64encode(bytes(range(200, 232))).decode(),
    "in double quotes": f'"{_KEY}"',
    "in single quotes, spaces around": f" '{_KEY}' ",
    "split by a space": f"{_KEY[:64]} {_KEY[64:]}",
    "a token of 40 without / or padding": "aX8kb4C6TCFcgkc2xMPMK72yHwq+z9SVRkZ0prm7C1w9",
    "a DER SEQUENCE of 6 bytes": "MAQCAgEF",  # 30 04 02 02 01 05
    "a DER SEQUENCE, length in long form": "MIEDAgEF",  # 30 81 03 02 01 05
    # As stores hold them: lines joined by a written-out newline, a data URI, an environment
    # file's line, a JSON list's item.
    "PEM lines joined by \\n": "\\n".join((_KEY[:64], _KEY[64:128], _KEY[128:])),
    "PEM lines joined by \\r\\n": "\\r\\n".join((_KEY[:64], _KEY[64:])),
    "a data URI": f"data:application/pkcs8;base64,{_KEY}",
    "an environment file's line": f"DEVICE_KEY={_KEY}",
    "a JSON list's item": f'"{_KEY}",',
    "a PSK in an environment file's line": "PSK=m6JfJ19RxgcI/80Vruu1BA==",
    # M15: quotes, a separator and a padded key after NAME= taken off as they should be
    "a token of 40 in double quotes": '"aX8kb4C6TCFcgkc2xMPMK72yHwq+z9SVRkZ0prm7C1w9"',
    "a token of 40 with a comma": "aX8kb4C6TCFcgkc2xMPMK72yHwq+z9SVRkZ0prm7C1w9,",
    "an environment file's line in quotes": f'DEVICE_KEY="{_KEY}"',
    "a padded DER SEQUENCE after NAME=": "KEY=MAIFAA==",  # 30 02 05 00: "MAIFAA=" is no prefix
    "a DER SEQUENCE of 5 bytes, unpadded": "MAMCAQU",  # 30 03 02 01 05: one "=" to add
}
#: Missing files that are paths, whatever their names look like (probe BO #3: the first four
#: were "a key in base64", which hid the missing file).
_PATHS = [
    "/etc/iotdtls/keys/Gateway01/ClientPrivateKey",
    "keys/DeviceKeys2024/ClientKeyForGateway01Backup",
    "certs/9f86d081884c7d659a2feaa0c55ad015a3bf4f1bAb",
    "/var/run/secrets/Device1/TLSClientPrivateKeyPem",
    "/etc/iotdtls/keys/server_key_for_the_production_gateway.pem",  # "." and "_"
    "/var/lib/iotdtls/deviceidentitykeysformanydevicesnumbered",  # no upper case, no digit
    "keysAndCertificatesForTheGatewayDeviceNumberOne",  # no digit
    "Gateway01ClientKeys2024ForTheDevicesOfUnitTwo"[:39],  # too short
    "0123456789abcdefABCDEF0123456789abcdefABCDEF",  # hex: the hex rule's (a pin is public)
    '"/etc/iotdtls/keys/Gateway01/ClientPrivateKey"',  # a path in quotes is still a path
    "MAX/////////",  # 30 05 and 7 bytes: a SEQUENCE tag, its length not the rest
    "MIGQ////////////",  # 30 81 90 and 9 bytes
    "MIX/////////",  # 30 85: a length of 5 bytes, more than a key needs
    "MA",  # 30: a tag alone
    "MIA",  # 30 80: an indefinite length, not DER
    "MQNhYmM",  # 31 03 and 3 bytes: a SET, not a SEQUENCE
    "/srv/build=release/keys/client",  # a "NAME=" that is no key's prefix
    "data:/keys/client",
]
_MISSING = FileNotFoundError(2, "No such file or directory")


@pytest.mark.req("SEC-1")
@pytest.mark.parametrize("text", _KEY_FORMS.values(), ids=_KEY_FORMS.keys())
def test_a_key_in_base64_is_no_path(text: str) -> None:
    """A one-line base64 key (probe BN, b64key_leak.py: it was quoted whole as a file name,
    'cannot read key file MIGHAgEA...: No such file or directory'); URL-safe, short (a PSK),
    in quotes or split by a space too (probe BO #4: each was quoted whole)."""
    assert not_a_path(text) == "a key in base64"
    assert not_a_path(text, hex_is_secret=False) == "a key in base64"
    message = cannot_read("key file", text, _MISSING)
    assert message == "key file was given a key in base64, not a path: give the file's path"
    with pytest.raises(ConfigError) as info:
        PrivateKey.load(text)
    assert text.strip(" \"'")[:16] not in str(info.value)
    assert "base64, not a path" in str(info.value)


@pytest.mark.parametrize("text", _PATHS)
def test_paths_that_are_not_base64_keys_are_quoted(text: str) -> None:
    assert not_a_path(text, hex_is_secret=False) is None
    message = cannot_read("key file", text, _MISSING, hex_is_secret=False)
    assert message == f"cannot read key file {text}: No such file or directory"


@pytest.mark.req("SEC-1")
@pytest.mark.parametrize("text", [*_KEY_FORMS.values(), *_PATHS[:4]],
                         ids=[*_KEY_FORMS.keys(), *_PATHS[:4]])
@pytest.mark.parametrize("command", ["client", "coap"])
@pytest.mark.parametrize("flag", ["--rpk-key", "--psk-file"])
def test_the_command_line_quotes_paths_and_never_keys(
    capsys: pytest.CaptureFixture[str], text: str, command: str, flag: str
) -> None:
    """--rpk-key and --psk-file of `iotdtls client` and `iotdtls coap get` (probe BO,
    cli_paths.sh), refused before any socket."""
    pin = ["--peer-rpk-sha256", "ab" * 32] if flag == "--rpk-key" else []
    target = "127.0.0.1:53501" if command == "client" else "coaps://127.0.0.1:53501/x"
    argv = ([command] if command == "client" else ["coap", "get"]) + [flag, text, *pin, target]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    if text in _PATHS:
        assert err == f"iotdtls: error: cannot read {flag} {text}: No such file or directory\n"
    else:
        assert err == (f"iotdtls: error: {flag} was given a key in base64, not a path: give "
                       "the file's path\n")


def test_an_existing_file_named_like_base64_is_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = _KEY.replace("/", "x").rstrip("=")
    assert not_a_path(name) == "a key in base64"
    (tmp_path / name).write_text("")
    assert not_a_path(name) is None


@pytest.mark.parametrize(("data", "sequence"), [
    (b"\x30\x00", True),  # an empty SEQUENCE: 2 bytes
    (b"\x30", False),
    (b"\x30\x80" + bytes(128), False),  # 0x80: an indefinite length, not DER
    (b"\x30\x81\x00", True),  # a long-form length, all its bytes there
    (b"\x30\x82\x00", False),  # a length's bytes cut short
    (b"\x30\x84\x00\x00\x00\x01\x05", True),  # 4 bytes of length: the most taken
    (b"\x30\x85\x00\x00\x00\x00\x01\x05", False),  # 5: more than a key needs
])
def test_a_der_sequence_is_told_by_its_length_field(data: bytes, sequence: bool) -> None:
    """`_is_der_sequence` at the bounds of its length field (M15)."""
    assert _is_der_sequence(data) is sequence

