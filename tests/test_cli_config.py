"""The command line's flags turned into configurations, in this process (CFG-1): every
credential mode of `client`, `server` and `perf`, the settings the flags carry, and each
refused mix with its one-line message. (test_cli.py and test_cli_pubkey.py run the same
commands as subprocesses, end to end; these reach the translation itself, where a mutation
test can see it.)"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from iotdtls import cli
from iotdtls.chaincache import ChainCache
from iotdtls.cli import _parser, coap, echo, main, perf
from iotdtls.cli.common import (
    UsageError,
    file_flags,
    file_path,
    hex_bytes,
    parse_hostport,
    seconds,
    setup_logging,
    stop_on_signals,
)
from iotdtls.cli.credentials import chain_cache, client_config, read_psk_file, server_config
from iotdtls.cli.echo import server_config_of
from iotdtls.cli.perf import client_config_of
from iotdtls.config import (
    CONSTRAINED_RETRANSMIT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MTU,
    RFC6347_RETRANSMIT,
    RetransmitPolicy,
    ServerConfig,
)
from iotdtls.credentials import PrivateKey, load_certificate_file, public_key_pin
from tests import pki as tests_pki
from tests.aio_support import signal_fallback
from tests.peers import PSK as KEY
from tests.peers import PSK_HEX, Pki

PSK = ["--psk-identity", "dev1", "--psk", PSK_HEX]


@pytest.fixture(autouse=True)
def _secret_files_umask() -> Iterator[None]:
    """The files these tests write are made as a user makes secret files (umask 077): a
    --psk-file others can read is refused, a key file warned of (CFG-2)."""
    umask = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(umask)


@pytest.mark.req("CFG-2")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_psk_file_others_can_read_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    """`iotdtls server --psk-file F` used F at mode 0644 in silence, while --keylog and
    --session-file are refused so (probe CA): it holds every client's key. The client's file,
    its one key, too."""
    keys = tmp_path / "keys.psk"
    keys.write_text(f"dev1:{PSK_HEX}\n")
    keys.chmod(mode)
    problem = (f"--psk-file {keys} is open to group or others (mode {mode:04o}): chmod 600 it "
               "or name a new file")
    assert refused(capsys, "server", "--psk-file", str(keys)) == problem
    assert refused(capsys, "client", "127.0.0.1:9", "--psk-file", str(keys)) == problem
    keys.chmod(0o600)
    assert server_config(server_args("--psk-file", str(keys))).psk_store == {b"dev1": KEY}


@pytest.mark.req("CFG-2")
def test_a_psk_file_of_another_user_is_refused_as_one_they_could_have_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], give_away: Callable[[Path], str]
) -> None:
    """A --psk-file another user owns (even at 0600) is theirs to have written: refused,
    saying so, as a key log of theirs is refused for what they could read."""
    keys = tmp_path / "keys.psk"
    keys.write_text(f"dev1:{PSK_HEX}\n")
    keys.chmod(0o600)
    owner = give_away(keys)
    assert refused(capsys, "server", "--psk-file", str(keys)) == (
        f"--psk-file {keys} is owned by {owner}, not by this user: name a file of your own "
        "(another user could have written it)")


@pytest.mark.req("CFG-2")
def test_a_key_file_others_can_read_is_used_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A private key at 0644 is common (openssl genpkey under umask 022), so --rpk-key and
    --key are not refused for it as --psk-file is: one warning line naming the fix."""
    key = tmp_path / "server.pem"
    key.write_bytes(PrivateKey.generate().to_pem())
    key.chmod(0o644)
    with caplog.at_level(logging.WARNING, "iotdtls.cli"):
        config = server_config(server_args("--rpk-key", str(key)))
        server_config(server_args("--rpk-key", str(key)), validity_warned=True)  # a worker
    assert config.raw_public_key is not None
    assert [r.getMessage() for r in caplog.records] == [
        f"--rpk-key {key} is open to group or others (mode 0644): chmod 600 it or name a new "
        "file; used all the same"
    ]
NO_ANCHORS = "--cert/--key need trust anchors for the server: --cafile FILE"
TOGETHER = "give --psk-identity ID and --psk HEX (or --psk-text TEXT) together"


def parsed(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def client_args(*flags: str) -> argparse.Namespace:
    return parsed("client", "sensor.example:5684", *flags)


def server_args(*flags: str) -> argparse.Namespace:
    return parsed("server", *flags)


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the command line on `argv`, which must be refused with exit status 2 before any
    socket (by argparse, or by the command); return its one line on stderr (without the
    `iotdtls: error: ` prefix)."""
    try:
        status = main(list(argv))
    except SystemExit as exited:
        status = exited.code
    out, err = capsys.readouterr()
    assert status == 2 and out == "", (status, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("iotdtls: error: "), err
    return lines[0].removeprefix("iotdtls: error: ")


# -- client ---------------------------------------------------------------------------------------


@pytest.mark.req("CFG-1")
def test_client_psk_mode_and_the_settings_beside_it() -> None:
    config = client_config(client_args(*PSK), "sensor.example", mtu=600)
    assert (config.psk_identity, config.psk) == (b"dev1", KEY)
    assert config.mtu == 600
    assert config.server_name == "sensor.example"  # the host, sent as SNI (RFC 6066 §3)
    assert config.require_extended_master_secret
    assert config.server_public_keys == () and config.trust_anchors == ()


def test_client_server_name_flag_overrides_the_host_and_allow_no_ems_relaxes_ems() -> None:
    args = client_args(*PSK, "--server-name", "gw.example", "--allow-no-ems")
    config = client_config(args, "192.0.2.1")
    assert config.server_name == "gw.example"
    assert not config.require_extended_master_secret


def test_a_server_name_idna_2008_would_convert_otherwise_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """RFC 6125 §6.4.2: IDNA 2003 would check and send fass.example for faß.example."""
    message = refused(capsys, "client", "127.0.0.1:9", *PSK, "--server-name", "faß.example")
    assert message == (
        "server name 'faß.example': IDNA 2003 maps its label 'faß' to 'fass' and IDNA 2008 "
        "(RFC 5890) does not: write 'fass' if that is the label meant, else give the name's "
        "A-label (xn--...), if it has one"
    )
    # Full-width letters have no A-label in IDNA 2008: the plain form is what to write.
    message = refused(capsys, "client", "127.0.0.1:9", *PSK, "--server-name", "\uff42ücher.example")
    assert "write 'bücher' if that is the label meant" in message


def test_client_raw_public_key_mode_pins_files_and_hashes(pki: Pki) -> None:
    digest = "ab" * 32
    args = client_args("--peer-rpk", str(pki.server_pub), "--peer-rpk-sha256", digest)
    config = client_config(args, "localhost")
    assert tuple(config.server_public_keys) == (
        public_key_pin(pki.server_pub.read_bytes()), bytes.fromhex(digest),
    )
    assert config.raw_public_key is None and config.psk is None
    mutual = client_config(
        client_args("--peer-rpk-sha256", digest, "--rpk-key", str(pki.client_key)), "localhost"
    )
    assert mutual.raw_public_key is not None
    assert mutual.raw_public_key.spki_sha256 == PrivateKey.load(pki.client_key).spki_sha256
    # The form the demo and the logs print, "sha256:<hex>", prefix in any case (probe CK).
    for printed in (f"sha256:{digest}", f"SHA256:{digest.upper()}", f" Sha256:{digest}\n"):
        pinned = client_config(client_args("--peer-rpk-sha256", printed), "localhost")
        assert tuple(pinned.server_public_keys) == (bytes.fromhex(digest),), printed


def test_client_certificate_mode_with_and_without_our_own_certificate(pki: Pki) -> None:
    anchors = load_certificate_file(pki.ca_crt)
    alone = client_config(client_args("--cafile", str(pki.ca_crt)), "localhost")
    assert tuple(alone.trust_anchors) == tuple(anchors) and alone.certificate is None
    mutual = client_config(
        client_args("--cafile", str(pki.ca_crt), "--cert", str(pki.client_crt),
                    "--key", str(pki.client_key)),
        "localhost",
    )
    assert mutual.certificate is not None
    assert mutual.certificate.chain == tuple(load_certificate_file(pki.client_crt))


def test_chain_cache_only_with_the_flag(tmp_path: Path, pki: Pki) -> None:
    assert chain_cache(client_args(*PSK)) is None
    cache = chain_cache(client_args("--cafile", str(pki.ca_crt), "--cache-dir", str(tmp_path)))
    assert isinstance(cache, ChainCache)


def test_perf_builds_the_same_client_configuration_with_its_own_settings() -> None:
    args = parsed("perf", "192.0.2.1:5684", *PSK, "--timeout", "7", "--mtu", "900",
                  "--keylog", "/tmp/keys.log", "--retransmit", "9")
    config = client_config_of(args, "192.0.2.1")
    assert (config.psk_identity, config.psk) == (b"dev1", KEY)
    assert (config.handshake_timeout, config.mtu) == (7.0, 900)
    assert config.keylog_file == "/tmp/keys.log"
    assert config.retransmit == CONSTRAINED_RETRANSMIT


@pytest.mark.req("CFG-1")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "choose one mode: --psk-identity ID --psk HEX, or --psk-file FILE, or --peer-rpk "
             "FILE / --peer-rpk-sha256 HEX [--rpk-key FILE], or --cafile FILE [--cert FILE "
             "--key FILE]"),
        ([*PSK, "--cafile", "ca.pem"], "choose one mode"),
        ([*PSK, "--peer-rpk", "server.pem"], "choose one mode"),
        (["--peer-rpk-sha256", "00" * 32, "--cafile", "ca.pem"], "choose one mode"),
        ([*PSK, "--rpk-key", "key.pem"],
         "--rpk-key needs the server's key: --peer-rpk or --peer-rpk-sha256"),
        ([*PSK, "--cert", "c.pem"], NO_ANCHORS),
        ([*PSK, "--key", "k.pem"], NO_ANCHORS),
        ([*PSK, "--cache-dir", "cache"],
         "--cache-dir keeps certificate chains: it needs --cafile FILE"),
        (["--psk-identity", "dev1"], TOGETHER),
        (["--psk", PSK_HEX], TOGETHER),
        (["--psk-text", "secretPSK"], TOGETHER),
        (["--psk-identity", "dev1", "--psk-text", ""], "--psk-text is empty"),
        ([*PSK, "--psk-text", "secretPSK"],
         "argument --psk-text: not allowed with argument --psk (see --help)"),
        (["--peer-rpk-sha256", "abcd"],
         "--peer-rpk-sha256 must be 64 hex digits (a SHA-256), optionally after sha256:, got "
         "'abcd'"),
        (["--peer-rpk-sha256", "xy"],
         "--peer-rpk-sha256 must be 64 hex digits (a SHA-256), optionally after sha256:, got "
         "'xy'"),
        (["--peer-rpk-sha256", "sha256:" + "00" * 31],
         "--peer-rpk-sha256 must be 64 hex digits (a SHA-256), optionally after sha256:, got "
         f"'sha256:{'00' * 31}'"),
        (["--peer-rpk", "/nonexistent/server.pem"],
         "cannot read --peer-rpk /nonexistent/server.pem: No such file or directory"),
        (["--psk-identity", "dev1", "--psk", ""], "--psk is empty"),
        (["--retries", "-1", *PSK],
         "argument --retries: must be a whole number >= 0, got '-1' (see --help)"),
    ],
)
def test_client_flag_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert refused(capsys, "client", "127.0.0.1:9", *flags).startswith(message)


def test_client_certificate_without_its_key_is_refused(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    for pair in (["--cert", str(pki.client_crt)], ["--key", str(pki.client_key)]):
        message = refused(capsys, "client", "127.0.0.1:9", "--cafile", str(pki.ca_crt), *pair)
        assert message == "give --cert and --key together"


@pytest.mark.req("SEC-1")
@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("0102030405060708090a0b0c0d0e0fzz", "character 31 of 32 is not a hex digit"),
        ("0102030405060708090a0b0c0d0e0f1", "the digits do not pair up into whole bytes"),
    ],
)
def test_a_mistyped_psk_is_named_by_position_never_quoted(
    capsys: pytest.CaptureFixture[str], value: str, where: str
) -> None:
    """A key one digit off is nearly the key: the message says where it goes wrong."""
    for command in (["client", "127.0.0.1:9"], ["server"]):
        message = refused(capsys, *command, "--psk-identity", "dev1", "--psk", value)
        assert message == f"--psk {HEX_HINT}, {where}"
        assert value[:8] not in message



def test_client_psk_from_a_file_keeps_the_key_out_of_the_process_list(tmp_path: Path) -> None:
    """client, perf and the coap requests: the file's one entry, or the entry of
    --psk-identity when it has several (the server's format)."""
    one = tmp_path / "one.psk"
    one.write_text(f"# this device\n dev1 : {PSK_HEX}\n")
    for args in (client_args("--psk-file", str(one)),
                 parsed("perf", "192.0.2.1:5684", "--psk-file", str(one)),
                 parsed("coap", "get", "coaps://192.0.2.1/x", "--psk-file", str(one))):
        config = client_config(args, "192.0.2.1")
        assert (config.psk_identity, config.psk) == (b"dev1", KEY)
    several = tmp_path / "several.psk"
    several.write_text(f"dev1:{PSK_HEX}\ndev2:0a0b\n")
    config = client_config(client_args("--psk-file", str(several), "--psk-identity", "dev2"), "h")
    assert (config.psk_identity, config.psk) == (b"dev2", b"\x0a\x0b")


def test_client_psk_file_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    several = tmp_path / "several.psk"
    several.write_text(f"dev1:{PSK_HEX}\ndev2:0a0b\n")
    empty = tmp_path / "empty.psk"
    empty.write_text("# none yet\n")
    for flags, message in (
        (["--psk-file", str(several)],
         f"--psk-file {several} holds 2 identities: choose one with --psk-identity ID"),
        (["--psk-file", str(several), "--psk-identity", "dev3"],
         f"--psk-file {several} has no key for --psk-identity 'dev3'"),
        (["--psk-file", str(several), "--psk-identity", "dev1", "--psk", PSK_HEX],
         "give the key once: --psk-file FILE or --psk HEX"),
        (["--psk-file", str(several), "--psk-identity", "dev1", "--psk-text", "secretPSK"],
         "give the key once: --psk-file FILE or --psk-text TEXT"),
        (["--psk-file", str(empty)], f"--psk-file {empty} holds no keys (lines identity:HEXKEY)"),
        (["--psk-file", str(tmp_path)],
         f"--psk-file {tmp_path} is a directory, not a regular file"),
        (["--psk-file", str(several), "--cafile", "ca.pem"], "choose one mode"),
    ):
        assert refused(capsys, "client", "127.0.0.1:9", *flags).startswith(message)



def test_a_psk_given_as_text_is_its_bytes_on_every_command() -> None:
    """RFC 4279 §5.4: a management interface takes a PSK as an ASCII string as well as in
    hex (libcoap's -k); the bytes typed, as an identity's."""
    flags = ["--psk-identity", "dev1", "--psk-text", "secretPSK"]
    for args in (client_args(*flags), parsed("perf", "192.0.2.1:5684", *flags),
                 parsed("coap", "get", "coaps://192.0.2.1/x", *flags)):
        assert client_config(args, "192.0.2.1").psk == b"secretPSK"
    for args in (server_args(*flags), parsed("coap", "serve", *flags)):
        assert server_config(args).psk_store == {b"dev1": b"secretPSK"}
    typed = client_args("--psk-identity", "dev1", "--psk-text", os.fsdecode(b"cl\xe9"))
    assert client_config(typed, "h").psk == b"cl\xe9"


@pytest.mark.req("PSK-2")
def test_a_psk_identity_is_the_bytes_typed_in_any_encoding(tmp_path: Path) -> None:
    """Python decodes arguments with surrogateescape ('\\udcff' for the byte 0xff): the
    identity sent or looked up is the byte typed, on every command, never a traceback nor
    'give the identity as bytes', which a command line cannot (RFC 7925 §4.2)."""
    typed = os.fsdecode(b"dev\xff")
    flags = ["--psk-identity", typed, "--psk", PSK_HEX]
    for args in (client_args(*flags), parsed("perf", "192.0.2.1:5684", *flags),
                 parsed("coap", "get", "coaps://192.0.2.1/x", *flags)):
        assert client_config(args, "192.0.2.1").psk_identity == b"dev\xff"
    for args in (server_args(*flags), parsed("coap", "serve", *flags)):
        assert server_config(args).psk_store == {b"dev\xff": KEY}
    psk_file = tmp_path / "keys.psk"
    psk_file.write_bytes(b"dev\xff:0102\n\xe9t\xe9:ff\n")  # not UTF-8: Latin-1
    assert read_psk_file(str(psk_file)) == {b"dev\xff": b"\x01\x02", b"\xe9t\xe9": b"\xff"}


def test_a_value_that_cannot_be_bytes_is_refused_the_key_unquoted() -> None:
    """A lone surrogate is no byte typed: refused naming the flag; a key is never quoted."""
    lone = "dev\ud800"
    for args in (client_args("--psk-identity", lone, "--psk", "01"),
                 server_args("--psk-identity", lone, "--psk", "01")):
        with pytest.raises(UsageError) as caught:
            (client_config if args.command == "client" else server_config)(args)
        assert str(caught.value) == "--psk-identity 'dev\\ud800' cannot be encoded as bytes"
    with pytest.raises(UsageError) as caught:
        client_config(client_args("--psk-identity", "dev1", "--psk-text", lone))
    assert str(caught.value) == "--psk-text cannot be encoded as bytes"


# -- server ---------------------------------------------------------------------------------------


@pytest.mark.req("CFG-1")
def test_server_every_mode_at_once(pki: Pki, tmp_path: Path) -> None:
    psk_file = tmp_path / "psk.txt"
    psk_file.write_text("# fleet keys\n\nsensor-7:0a0b\n")
    config = server_config(
        server_args(*PSK, "--psk-file", str(psk_file),
                    "--rpk-key", str(pki.server_key), "--rpk-allow", str(pki.client_pub),
                    "--rpk-allow-sha256", "cd" * 32,
                    "--cert", str(pki.server_crt), "--key", str(pki.server_key),
                    "--client-cafile", str(pki.ca_crt)),
    )
    assert config.psk_store == {b"sensor-7": b"\x0a\x0b", b"dev1": KEY}
    assert config.raw_public_key is not None
    assert config.raw_public_key.spki_sha256 == PrivateKey.load(pki.server_key).spki_sha256
    assert tuple(config.client_public_keys) == (
        public_key_pin(pki.client_pub.read_bytes()), bytes.fromhex("cd" * 32),
    )
    (certified,) = config.certificates
    assert certified.chain == tuple(load_certificate_file(pki.server_crt))
    assert tuple(config.client_trust_anchors) == tuple(load_certificate_file(pki.ca_crt))
    assert config.require_extended_master_secret
    assert config.validated_chains == ServerConfig.validated_chains


def test_server_validated_chains_sets_what_the_client_trust_store_keeps(pki: Pki) -> None:
    config = server_config(
        server_args("--cert", str(pki.server_crt), "--key", str(pki.server_key),
                    "--client-cafile", str(pki.ca_crt), "--validated-chains", "5000"),
    )
    assert config.validated_chains == 5000
    assert config.client_trust_store is not None
    assert config.client_trust_store._validated.capacity == 5000



def test_server_psk_flags_for_an_identity_of_the_psk_file_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The flags' key silently replaced the file's: refused as an identity twice in the file
    is, naming neither key."""
    psk_file = tmp_path / "psk.txt"
    psk_file.write_text(f"dev1:{PSK_HEX}\nsensor-7:0a0b\n")
    message = refused(capsys, "server", "--psk-file", str(psk_file),
                      "--psk-identity", "dev1", "--psk", "ffff")
    assert message == (
        f"--psk-identity 'dev1' is also in --psk-file {psk_file} (one key per identity)"
    )


def test_the_server_takes_several_psk_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--psk-file a.psk --psk-file b.psk` served b.psk only (argparse kept the last): the
    files are merged; an identity in two of them is refused as one twice in a file is, naming
    both places, and so is a file given twice."""
    first, second = tmp_path / "a.psk", tmp_path / "b.psk"
    first.write_text("dev1:0102\n")
    second.write_text("# more\ndev2:0304\n")
    config = server_config(server_args("--psk-file", str(first), "--psk-file", str(second)))
    assert config.psk_store == {b"dev1": b"\x01\x02", b"dev2": b"\x03\x04"}
    second.write_text("# more\ndev2:0304\ndev1:0506\n")
    assert refused(capsys, "server", "--psk-file", str(first), "--psk-file", str(second)) == (
        f"{second}:3: identity 'dev1' is already in {first}:1 (one key per identity)")
    assert refused(capsys, "server", "--psk-file", str(first), "--psk-file", str(first)) == (
        f"--psk-file {first} given twice")
    second.write_text("# more\ndev2:0304\n")
    assert refused(capsys, "server", "--psk-file", str(first), "--psk-file", str(second),
                   "--psk-identity", "dev2", "--psk", "ff") == (
        f"--psk-identity 'dev2' is also in --psk-file {second} (one key per identity)")
    empty = tmp_path / "empty.psk"
    empty.write_text("# none yet\n")
    assert refused(capsys, "server", "--psk-file", str(empty), "--psk-file", str(empty) + "2"
                   ).startswith(f"cannot read --psk-file {empty}2: ")
    (tmp_path / "empty.psk2").write_text("")
    assert refused(capsys, "server", "--psk-file", str(empty), "--psk-file", str(empty) + "2"
                   ) == f"--psk-file {empty}, {empty}2 hold no keys (lines identity:HEXKEY)"


@pytest.mark.req("SEC-1")
def test_a_key_given_instead_of_its_file_is_never_quoted(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    pem = pki.client_key.read_text()
    line = f"dev1:{PSK_HEX}"  # a --psk-file line
    for flags, message in (
        (["--psk-file", line], "--psk-file was given a key in hex"),
        (["--psk-file", line + "\n"], "--psk-file was given text of several lines"),
        (["--peer-rpk-sha256", "00" * 32, "--rpk-key", pem], "--rpk-key was given PEM text"),
        (["--cafile", str(pki.ca_crt), "--cert", str(pki.client_crt), "--key", pem],
         "--key was given PEM text"),
    ):
        shown = refused(capsys, "client", "127.0.0.1:9", *flags)
        assert shown == f"{message}, not a path: give the file's path"
        assert PSK_HEX not in shown and pem.splitlines()[1] not in shown


@pytest.mark.req("SEC-1")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--psk-key", PSK_HEX], "unrecognized arguments: --psk-key (and 1 value, not shown)"),
        ([f"--psk-key={PSK_HEX}", "--psk-txt", "secretPSK42xyz"],
         "unrecognized arguments: --psk-key --psk-txt (and 2 values, not shown)"),
        (["--psk-text", "secret", "PSK42xyz"], "unrecognized arguments: 1 value, not shown"),
        ([f"--ps={PSK_HEX}"],
         "ambiguous option: --ps could match --psk-identity, --psk, --psk-text, --psk-file"),
        ([f"--allow-no-ems={PSK_HEX}"],
         "argument --allow-no-ems: takes no value (the one given is not shown)"),
        ([f"-v{PSK_HEX}"], "argument -v/--verbose: takes no value (the one given is not shown)"),
    ],
)
def test_a_mistyped_key_flag_never_shows_the_key(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    shown = refused(capsys, "client", "127.0.0.1:9", "--psk-identity", "dev1", *flags)
    assert shown == f"{message} (see --help)"


def test_an_unreadable_path_is_shown_on_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    odd = f"{tmp_path}/dev\x1b[2J.psk"
    assert refused(capsys, "server", "--psk-file", odd) == (
        f"cannot read --psk-file {tmp_path}/dev\\x1b[2J.psk: No such file or directory"
    )


@pytest.fixture
def never_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server command that is not refused returns at once (status 0) instead of serving:
    none binds a port, whatever the code under test does."""

    async def served(*args: object) -> int:
        return 0

    monkeypatch.setattr(echo, "_serve_alone", served)
    monkeypatch.setattr(coap, "_serve", served)


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        (["server"], "--psk", "00"),
        (["server"], "--psk-text", "k"),
        (["server"], "--rpk-key", "k.pem"),
        (["server"], "--cert", "c.pem"),
        (["server"], "--key", "k.pem"),
        (["server"], "--client-cafile", "ca.pem"),
        (["server"], "--keylog", "k.log"),
        (["client", "h:1"], "--psk-identity", "a"),
        (["client", "h:1"], "--psk-file", "a.psk"),
        (["client", "h:1"], "--rpk-key", "k.pem"),
        (["client", "h:1"], "--cafile", "ca.pem"),
        (["client", "h:1"], "--server-name", "a.example"),
        (["client", "h:1"], "--cache-dir", "d"),
        (["client", "h:1"], "--session-file", "s"),
        (["perf", "h:1"], "--psk-file", "a.psk"),
        (["coap", "get", "coaps://h/x"], "--psk-file", "a.psk"),
        (["coap", "serve"], "--cert", "c.pem"),
    ],
)
def test_a_flag_that_takes_one_value_given_twice_is_refused(
    capsys: pytest.CaptureFixture[str], never_serve: None, command: list[str], flag: str,
    value: str
) -> None:
    """argparse kept the last: `--psk-file A --psk-file B` silently took B, `--psk-identity a
    --psk 00 --psk-identity b --psk 11` served b only. Refused in one line naming the flag."""
    assert refused(capsys, *command, flag, value, flag, value + "2") == (
        f"{flag} given twice: it takes one value (see --help)")


def _single_value_flags() -> Iterator[tuple[list[str], str, str]]:
    """Every flag of every subcommand that takes one value (argparse's `store`, not `append`
    nor a flag without value), with the command line before it and a value its type takes."""

    def walk(
        parser: argparse.ArgumentParser, command: list[str]
    ) -> Iterator[tuple[list[str], str, str]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*command, name])
            elif action.option_strings and action.nargs != 0 and not isinstance(
                action, argparse._AppendAction
            ):
                yield command, action.option_strings[-1], _a_value_of(action)

    yield from walk(_parser(), [])


def _a_value_of(action: argparse.Action) -> str:
    """A value `action` takes: its first choice, or the first candidate its type accepts (its
    default first)."""
    if action.choices:
        return str(next(iter(action.choices)))
    defaults = [] if action.default is None else [str(action.default)]
    for candidate in (*defaults, "1", "127.0.0.1:1", "a"):
        try:
            if callable(action.type):
                action.type(candidate)
        except (argparse.ArgumentTypeError, ValueError):
            continue
        return candidate
    raise AssertionError(f"no value for {action.option_strings}")


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [pytest.param(*case, id=" ".join([*case[0], case[1]])) for case in _single_value_flags()],
)
def test_every_single_value_flag_given_twice_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    never_serve: None, command: list[str], flag: str, value: str
) -> None:
    """Only the credential and file flags were refused given twice: `server --listen A --listen
    B` listened on B, `--workers 2 --workers 3` started 3, `--mtu`, `--timeout`, perf's flags:
    the last won, as README says none does. The same value twice is refused too (a hint may
    follow: "; several PSK clients go in --psk-file"). In a directory of its own: a command not
    refused (`keygen ec-p256 --out 1`) writes its file there."""
    monkeypatch.chdir(tmp_path)
    message = refused(capsys, *command, flag, value, flag, value)
    assert message.startswith(f"{flag} given twice: it takes one value"), message
    assert message.endswith(" (see --help)"), message


def test_several_psk_identities_for_the_server_go_in_a_psk_file(
    capsys: pytest.CaptureFixture[str], never_serve: None
) -> None:
    assert refused(capsys, "server", "--psk-identity", "a", "--psk", "00",
                   "--psk-identity", "b", "--psk", "11") == (
        "--psk-identity given twice: it takes one value; several PSK clients go in --psk-file "
        "(see --help)")
    # The repeatable flags stay repeatable.
    served = server_args("--rpk-allow-sha256", "ab" * 32, "--rpk-allow-sha256", "cd" * 32)
    assert served.rpk_allow_sha256 == ["ab" * 32, "cd" * 32]
    client = client_args("--peer-rpk", "a.pem", "--peer-rpk", "b.pem")
    assert client.peer_rpk == ["a.pem", "b.pem"]


def test_a_psk_identity_too_long_for_the_handshake_names_its_line_or_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The library's message ("an identity in psk_store is 20000 bytes ... raise
    max_handshake_message to at least 20002") named an API setting the CLI has no flag for."""
    psk_file = tmp_path / "big.psk"
    psk_file.write_bytes(b"dev1:0102\n" + b"x" * 16_383 + b":0304\n")
    assert refused(capsys, "server", "--psk-file", str(psk_file)) == (
        f"{psk_file}:2: the identity is 16,383 bytes: too long for the handshake (at most "
        "16,382 bytes with the CLI's settings)")
    assert refused(capsys, "server", "--psk-identity", "y" * 20_000, "--psk", "01") == (
        "--psk-identity is 20,000 bytes: too long for the handshake (at most 16,382 bytes with "
        "the CLI's settings)")
    psk_file.write_bytes(b"x" * 16_382 + b":0304\n")  # the longest that fits
    assert server_config(server_args("--psk-file", str(psk_file))).psk_store is not None
    # The limit is the server's: a client may reach a server that takes longer identities.
    long_identity = client_config(client_args("--psk-identity", "y" * 20_000, "--psk", "01"))
    assert len(long_identity.identity) == 20_000
    psk_file.write_bytes(b"x" * 16_383 + b":0304\n")
    assert client_config(client_args("--psk-file", str(psk_file))).identity == b"x" * 16_383


def test_server_psk_alone_has_no_public_key_material() -> None:
    config = server_config(server_args(*PSK, "--allow-no-ems"))
    assert config.psk_store == {b"dev1": KEY}
    assert config.raw_public_key is None and config.client_public_keys == ()
    assert config.certificates == () and config.client_trust_anchors == ()
    assert not config.require_extended_master_secret


@pytest.mark.parametrize(
    "flag", ["--max-handshakes", "--max-handshakes-per-host", "--max-connections"]
)
def test_a_server_limit_of_one_is_taken_and_zero_refused(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each count of `add_server_limits` takes 1, the least, and refuses 0 (M14: their
    bounds)."""
    config = server_config_of(server_args(*PSK, flag, "1"))
    assert getattr(config, flag[2:].replace("-", "_")) == 1
    with pytest.raises(SystemExit):
        server_args(*PSK, flag, "0")
    assert flag in capsys.readouterr().err


def test_server_flags_beside_the_credentials() -> None:
    defaults = server_config_of(server_args(*PSK))
    assert defaults.cookie_exchange and defaults.mtu == DEFAULT_MTU
    assert defaults.keylog_file is None and not defaults.heartbeat
    assert defaults.max_handshakes == ServerConfig.max_handshakes
    assert defaults.max_connections == ServerConfig.max_connections
    assert defaults.max_handshakes_per_host == ServerConfig.max_handshakes_per_host
    assert defaults.idle_timeout == DEFAULT_IDLE_TIMEOUT
    assert defaults.retransmit == RFC6347_RETRANSMIT
    assert defaults.handshake_timeout == ServerConfig.handshake_timeout
    config = server_config_of(server_args(
        "--retransmit", "2.5",
        *PSK, "--no-cookie", "--mtu", "700", "--keylog", "/tmp/k.log", "--max-handshakes", "9",
        "--max-connections", "99", "--idle-timeout", "12.5", "--heartbeat", "3",
        "--max-handshakes-per-host", "5",
        "--timeout", "7.5",
    ))
    assert config.max_handshakes_per_host == 5
    assert config.handshake_timeout == 7.5  # half-open handshakes go after it
    assert not config.cookie_exchange and config.mtu == 700
    assert config.keylog_file == "/tmp/k.log"
    assert (config.max_handshakes, config.max_connections) == (9, 99)
    assert config.idle_timeout == 12.5
    assert config.heartbeat and config.keepalive_interval == 3.0
    assert config.retransmit == RetransmitPolicy(2.5, 60.0)


@pytest.mark.req("CFG-1")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "give credentials: --psk-identity ID --psk HEX or --psk-file FILE, "
             "--rpk-key FILE, or --cert FILE --key FILE"),
        (["--psk-identity", "dev1"], "give --psk-identity and --psk (or --psk-text) together"),
        (["--psk", PSK_HEX], "give --psk-identity and --psk (or --psk-text) together"),
        (["--psk-text", "secretPSK"], "give --psk-identity and --psk (or --psk-text) together"),
        ([*PSK, "--rpk-allow-sha256", "00" * 32],
         "--rpk-allow needs the server's own key: --rpk-key FILE"),
        ([*PSK, "--client-cafile", "ca.pem"],
         "--client-cafile needs the server's own --cert and --key"),
        ([*PSK, "--cert", "c.pem"], "give --cert and --key together"),
        ([*PSK, "--validated-chains", "10"],
         "--validated-chains counts client certificate chains: it needs --client-cafile FILE"),
        ([*PSK, "--validated-chains", "-1"],
         "argument --validated-chains: must be a whole number >= 0, got '-1' (see --help)"),
        ([*PSK, "--rpk-allow-sha256", "00"],
         "--rpk-allow-sha256 must be 64 hex digits (a SHA-256), optionally after sha256:, got "
         "'00'"),
        (["--psk-file", "/nonexistent/psk.txt"],
         "cannot read --psk-file /nonexistent/psk.txt: No such file or directory"),
        ([*PSK, "--rpk-key", "/nonexistent/k.pem", "--rpk-allow", "/nonexistent/c.pem"],
         "cannot read --rpk-allow /nonexistent/c.pem: No such file or directory"),
        (["--listen", "127.0.0.1:x", *PSK], "port must be a number from 0 to 65535, got 'x'"),
    ],
)
def test_server_flag_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert refused(capsys, "server", *flags) == message


@pytest.mark.parametrize("text", ["", "# no keys yet\n\n"])
def test_a_psk_file_without_keys_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str
) -> None:
    """Not 'give credentials: ... or --psk-file FILE' when a file was given."""
    path = tmp_path / "keys.psk"
    path.write_text(text)
    message = refused(capsys, "server", "--psk-file", str(path))
    assert message == f"--psk-file {path} holds no keys (lines identity:HEXKEY)"


def encrypted_key(pki: Pki, encoding: serialization.Encoding) -> bytes:
    """The test server key encrypted with a password (PKCS#8)."""
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    return key.private_bytes(encoding, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"secret"))


ENCRYPTED_ENCODINGS = {
    "encrypted pem": serialization.Encoding.PEM,
    "encrypted der": serialization.Encoding.DER,  # no ENCRYPTED header to see
}
GARBAGE = b"garbage\n"
DAY = datetime.timedelta(days=1)
UNREADABLE_KEY = "no private key in it (PEM or DER, PKCS#8 or SEC1)"
#: `keygen spki --key` takes a public key too (probe CB).
UNREADABLE_SPKI_KEY = (
    "no private or public key in it (PEM or DER, PKCS#8, SEC1 or SubjectPublicKeyInfo)"
)
ENCRYPTED = "encrypted keys are not supported: decrypt it first (openssl pkey -in {} -out KEY.pem)"
#: How every hex flag's message shows a valid value.
HEX_HINT = "must be hexadecimal bytes (e.g. 00112233445566778899aabbccddeeff)"
NO_SPKI = "a public key must be a SubjectPublicKeyInfo (DER or PEM) or its SHA-256"
NO_CERTIFICATE = "not a PEM or DER X.509 certificate"
#: A root whose version field is 1 (v2): cryptography's InvalidVersion, no ValueError, made
#: `--cafile` print a traceback (probe BW #1).
V2_ROOT = tests_pki.pem_certificate(tests_pki.with_version_field(tests_pki.root().der, 1))


@pytest.mark.parametrize(
    ("flags", "flag", "content", "problem"),
    [
        (["client", "h:1", "--peer-rpk-sha256", "00" * 32], "--rpk-key", GARBAGE, UNREADABLE_KEY),
        (["server"], "--rpk-key", "encrypted pem", ENCRYPTED),
        (["server"], "--rpk-key", "encrypted der", ENCRYPTED),
        (["server", "--cert", "{server_crt}"], "--key", GARBAGE, UNREADABLE_KEY),
        (["client", "h:1", "--cafile", "{ca_crt}", "--cert", "{client_crt}"], "--key",
         "encrypted pem", ENCRYPTED),
        (["keygen", "spki"], "--key", GARBAGE, UNREADABLE_SPKI_KEY),
        (["keygen", "spki"], "--key", "encrypted der", ENCRYPTED),
        (["server", "--rpk-key", "{server_key}"], "--rpk-allow", GARBAGE, NO_SPKI),
        (["client", "h:1"], "--peer-rpk", "{server_key}",
         "that is a private key (PEM PRIVATE KEY), not a public key; give its public key "
         "(iotdtls keygen spki --key KEY.pem --out PUB.pem writes it) or the public key's "
         "SHA-256"),
        (["server", "--rpk-key", "{server_key}"], "--rpk-allow", "{client_crt}",
         "that is a certificate (PEM CERTIFICATE), not a public key; give its public key "
         "(openssl x509 -in CERT.pem -pubkey -noout > PUB.pem writes it) or the public key's "
         "SHA-256"),
        (["server", "--key", "{server_key}"], "--cert", "{server_key}",
         "that is a private key (PEM PRIVATE KEY), not a certificate"),
        (["server", "--cert", "{server_crt}"], "--key", "{server_crt}",
         "that is a certificate (PEM CERTIFICATE), not a private key"),
        (["client", "h:1"], "--cafile", "{server_key}",
         "that is a private key (PEM PRIVATE KEY), not a certificate"),
        (["keygen", "spki"], "--key", "{client_crt}",
         "that is a certificate (PEM CERTIFICATE), not a private key; the certificate holds "
         "its public key: openssl x509 -in {} -pubkey -noout prints it"),
        (["client", "h:1"], "--cafile", GARBAGE, NO_CERTIFICATE),
        (["client", "h:1"], "--cafile", V2_ROOT,
         "a PEM certificate is not usable: X.509 version field 1 (v2) is not v1 or v3"),
        (["server", "--key", "{server_key}"], "--cert", GARBAGE, NO_CERTIFICATE),
        (["server", "--cert", "{server_crt}", "--key", "{server_key}"], "--client-cafile",
         GARBAGE, NO_CERTIFICATE),
    ],
    ids=lambda value: value if isinstance(value, str) and value.startswith("--") else "",
)
def test_a_key_or_certificate_file_that_cannot_be_used_is_named_with_its_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pki: Pki,
    flags: list[str], flag: str, content: bytes | str, problem: str,
) -> None:
    files = {name: str(getattr(pki, name)) for name in ("ca_crt", "server_crt", "server_key",
                                                         "client_crt")}
    path = tmp_path / "file.pem"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content in ENCRYPTED_ENCODINGS:
        path.write_bytes(encrypted_key(pki, ENCRYPTED_ENCODINGS[content]))
    else:
        path = Path(content.format(**files))
    argv = [arg.format(**files) for arg in flags]
    message = refused(capsys, *argv, flag, str(path))
    assert message == f"{flag} {path}: {problem.format(path)}"


def test_the_command_a_private_key_given_as_peer_rpk_is_told_writes_its_public_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pki: Pki
) -> None:
    """The hint said `iotdtls keygen spki --key KEY.pem writes it`, which only prints the
    key's SHA-256: the command it gives, run, makes the file --peer-rpk takes."""
    message = refused(capsys, "client", "h:1", "--peer-rpk", str(pki.server_key))
    hinted = re.search(r"\((iotdtls keygen spki [^)]*) writes it\)", message)
    assert hinted is not None, message
    public = tmp_path / "server.pub"
    argv = hinted.group(1).replace("KEY.pem", str(pki.server_key)).replace("PUB.pem", str(public))
    assert main(argv.split()[1:]) == 0
    capsys.readouterr()
    config = client_config(client_args("--peer-rpk", str(public)), "localhost")
    assert tuple(config.server_public_keys) == (public_key_pin(pki.server_pub.read_bytes()),)


def test_a_certificate_and_key_given_the_other_way_round_are_told_to_swap(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    """`--cert server.key --key server.crt` said "--cert server.key: no valid PEM certificate
    found": the two files named, and what to do."""
    message = refused(capsys, "server", "--cert", str(pki.server_key), "--key", str(pki.server_crt))
    assert message == (f"--cert {pki.server_key} holds a private key and --key {pki.server_crt} "
                       "a certificate: swap --cert and --key")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_command_a_certificate_given_as_rpk_allow_is_told_writes_its_public_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pki: Pki
) -> None:
    """The hint for a certificate given where a raw public key goes, run, makes the file
    --rpk-allow takes: the certificate's own key."""
    message = refused(capsys, "server", "--rpk-key", str(pki.server_key),
                      "--rpk-allow", str(pki.client_crt))
    hinted = re.search(r"\((openssl x509 [^)]*) > PUB.pem writes it\)", message)
    assert hinted is not None, message
    argv = hinted.group(1).replace("CERT.pem", str(pki.client_crt)).split()
    public = subprocess.run(argv, check=True, capture_output=True, timeout=30).stdout
    assert public_key_pin(public) == public_key_pin(pki.client_pub.read_bytes())


def expired_certificate_files(tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """A server certificate expired yesterday, its key and CA files, and the warning a
    configuration taking it logs."""
    anchor = tests_pki.root()
    now = datetime.datetime.now(datetime.UTC)
    leaf = tests_pki.server_leaf(anchor, not_before=now - 10 * DAY, not_after=now - DAY)
    cert, key, ca = tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.crt"
    cert.write_bytes(leaf.pem)
    key.write_bytes(leaf.key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ca.write_bytes(anchor.pem)
    warning = (f"our certificate {cert} expired {now - DAY:%Y-%m-%d} (valid "
               f"{now - 10 * DAY:%Y-%m-%d} to {now - DAY:%Y-%m-%d}): peers will refuse it with "
               "certificate_expired")
    return cert, key, ca, warning


@pytest.mark.parametrize("flags", [[], ["--client-cafile", "{ca}"]], ids=["alone", "mutual"])
def test_server_with_an_expired_certificate_warns_on_stderr_naming_the_file(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, flags: list[str],
) -> None:
    """`iotdtls server --cert server-expired.crt` started in silence and every client failed:
    it starts (the clock may be what is wrong), with a warning naming the file and its window."""
    cert, key, ca, warning = expired_certificate_files(tmp_path)
    with caplog.at_level(logging.WARNING, "iotdtls"):
        config = server_config(server_args("--cert", str(cert), "--key", str(key),
                                           *(f.format(ca=ca) for f in flags)))
    assert len(config.certificates) == 1
    assert [r.getMessage() for r in caplog.records] == [warning]


def test_server_workers_with_an_expired_certificate_warn_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """With --workers N the warning came N + 2 times (the parent built the configuration
    twice, each worker once more from the flags): the parent gives it once, for them all."""
    cert, key, _, warning = expired_certificate_files(tmp_path)
    sources: list[Callable[[], ServerConfig]] = []

    async def serve_workers(source: Callable[[], ServerConfig], *args: object) -> int:
        sources.append(source)
        return 0

    monkeypatch.setattr(echo, "_serve_workers", serve_workers)
    monkeypatch.setattr(echo, "server_logging", lambda verbose, quiet: None)
    with caplog.at_level(logging.WARNING, "iotdtls"):
        assert main(["server", "--listen", "127.0.0.1:45800", "--cert", str(cert),
                     "--key", str(key), "--workers", "2"]) == 0
        [source] = sources
        for _ in range(3):  # `workers.serve` checks it in the parent, then each worker
            assert len(source().certificates) == 1
    assert [r.getMessage() for r in caplog.records] == [warning]


def test_a_certificate_with_another_key_names_both_files(
    capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    message = refused(capsys, "server", "--cert", str(pki.server_crt), "--key", str(pki.client_key))
    assert message == (f"--cert {pki.server_crt} with --key {pki.client_key}: the private key "
                       "does not belong to the leaf certificate")


def test_psk_file_format(tmp_path: Path) -> None:
    """GnuTLS psktool lines: the key after the last colon, so an identity may hold colons."""
    path = tmp_path / "keys.psk"
    path.write_text("  # comment\n\n  urn:dev:mac:0024befffe804ff1:0102  \nb:ff\n")
    assert read_psk_file(str(path)) == {b"urn:dev:mac:0024befffe804ff1": b"\x01\x02", b"b": b"\xff"}



def test_psk_file_spaces_around_identity_and_key_are_ignored_alike(tmp_path: Path) -> None:
    """'  dev1 : 0102' is dev1, not 'dev1 ' (leading spaces went, the trailing one stayed)."""
    path = tmp_path / "keys.psk"
    path.write_text("  dev1 : 0102\n\tdev2\t:\tff\t\n")
    assert read_psk_file(str(path)) == {b"dev1": b"\x01\x02", b"dev2": b"\xff"}


def test_psk_file_that_is_not_a_regular_file_is_refused_without_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO is not waited on (the server hung), a device not read (/dev/zero took 1.3 GB in
    3 s): one line each, as --session-file."""
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device"),
                       (tmp_path, "a directory")):
        message = refused(capsys, "server", "--psk-file", str(path))
        assert message == f"--psk-file {path} is {kind}, not a regular file"


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (["server"], "--rpk-key"),
        (["server", "--rpk-key", "{key}"], "--rpk-allow"),
        (["server", "--key", "{key}"], "--cert"),
        (["server", "--cert", "{crt}"], "--key"),
        (["server", "--cert", "{crt}", "--key", "{key}"], "--client-cafile"),
        (["client", "127.0.0.1:9"], "--cafile"),
        (["client", "127.0.0.1:9"], "--peer-rpk"),
        (["keygen", "spki"], "--key"),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value[:1]),
)
def test_a_pem_file_that_is_not_a_regular_file_is_refused_without_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: Pki, command: list[str], flag: str
) -> None:
    """`server --rpk-key FIFO` hung as --psk-file did, and /dev/zero was read without end:
    every key, certificate and public-key file is read as --psk-file is, one line each."""
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.pem"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    files = {"key": pki.server_key, "crt": pki.server_crt}
    argv = [arg.format(**files) for arg in command]
    for path, problem in ((fifo, "is a FIFO, not a regular file"),
                          (Path("/dev/zero"), "is a character device, not a regular file"),
                          (big, "is larger than 1 MiB: is it the right file?")):
        assert refused(capsys, *argv, flag, str(path)) == f"{flag} {path} {problem}"


def test_psk_file_larger_than_a_mebibyte_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read up to the bound, not all of what is there: refused in one line."""
    path = tmp_path / "keys.psk"
    key = b"dev1:0102\n"
    path.write_bytes(key + b"#" * ((1 << 20) - len(key)))  # 1 MiB exactly: read
    assert read_psk_file(str(path)) == {b"dev1": b"\x01\x02"}
    with path.open("ab") as fh:
        fh.write(b"#")
    message = refused(capsys, "server", "--psk-file", str(path))
    assert message == f"--psk-file {path} is larger than 1 MiB: is it the right file?"
    with path.open("r+b") as fh:  # a sparse tebibyte: read whole, it would not fit in memory
        fh.truncate(1 << 40)
    message = refused(capsys, "server", "--psk-file", str(path))
    assert message == f"--psk-file {path} is larger than 1 MiB: is it the right file?"


def test_psk_file_saved_with_a_byte_order_mark(tmp_path: Path) -> None:
    """An editor's UTF-8 BOM is not part of the first identity."""
    path = tmp_path / "keys.psk"
    path.write_bytes(b"\xef\xbb\xbfClient_identity:0102\nb:ff\n")
    assert read_psk_file(str(path)) == {b"Client_identity": b"\x01\x02", b"b": b"\xff"}


def test_psk_file_with_an_identity_twice_is_refused(tmp_path: Path) -> None:
    """Not the last key silently: both lines named, neither key."""
    path = tmp_path / "keys.psk"
    path.write_text("a:0102030405060708090a0b0c0d0e0f10\n# comment\nb:ff\n"
                    "a:0a0b0c0d0e0f10111213141516171819\n")
    with pytest.raises(UsageError) as caught:
        read_psk_file(str(path))
    assert str(caught.value) == (
        f"{path}:4: identity 'a' is already on line 1 (one key per identity)"
    )


def test_a_long_identity_is_cut_in_a_message(tmp_path: Path) -> None:
    """A duplicate or unknown identity was quoted whole: up to 16 KB in a one-line error. Cut
    after 64 bytes and counted, as the logs show one (as text when it is UTF-8)."""
    path = tmp_path / "keys.psk"
    long_text, long_bytes = "é" * 500, b"\xff" * 500  # "é" is 2 bytes: 1,000 in all
    split = ("-" + "é" * 40).encode()  # the cut after 64 bytes halves an "é": left out
    for identity, shown in (
        (long_text.encode(), f"{'é' * 32!r}... (1000 bytes)"),
        (split, f"{'-' + 'é' * 31!r}... (81 bytes)"),
        (long_bytes, f"{long_bytes[:64]!r}... (500 bytes)"),
    ):
        path.write_bytes(identity + b":01\n" + identity + b":02\n")
        with pytest.raises(UsageError) as caught:
            read_psk_file(str(path))
        assert str(caught.value) == (
            f"{path}:2: identity {shown} is already on line 1 (one key per identity)")
    path.write_bytes(b"dev1:01\n")
    with pytest.raises(UsageError) as caught:
        client_config(client_args("--psk-file", str(path), "--psk-identity", "x" * 16_000))
    assert str(caught.value) == (
        f"--psk-file {path} has no key for --psk-identity {'x' * 64!r}... (16000 bytes)")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("no-colon-here", "expected identity:HEXKEY"),
        (":0102", "expected identity:HEXKEY"),
        ("dev1:", "key is empty"),
        ("dev1:0102zz", f"key {HEX_HINT}, "
                        "character 5 of 6 is not a hex digit"),
        ("dev1:01é2", f"key {HEX_HINT}, "
                      "character 3 of 5 is not a hex digit"),  # "é" is 2 bytes, not ASCII
    ],
)
def test_psk_file_mistakes_name_the_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "keys.psk"
    path.write_text(f"good:01\n# comment\n{line}\n")
    with pytest.raises(UsageError) as caught:
        read_psk_file(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}:3") and message.endswith(problem)
    assert message in (f"{path}:3: {problem}", f"{path}:3 {problem}")


# -- shared parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1:5684", ("192.0.2.1", 5684)),
        (":0", ("127.0.0.1", 0)),
        ("[::1]:65535", ("::1", 65535)),
        ("[2001:db8::7]:5684", ("2001:db8::7", 5684)),
        ("[fe80::1%eth0]:5684", ("fe80::1%eth0", 5684)),
        ("[fe80::1%25eth0]:5684", ("fe80::1%eth0", 5684)),  # a coaps URI's zone (RFC 6874)
        ("[]:7", ("127.0.0.1", 7)),
        ("gw.example:1", ("gw.example", 1)),
        ("GATEWAY-X:2", ("GATEWAY-X", 2)),  # only the brackets of an IPv6 address go
    ],
)
def test_hostport_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, any_port=expected[1] == 0) == expected


def test_hostport_default_host_is_the_callers() -> None:
    assert parse_hostport(":5684", "::") == ("::", 5684)


@pytest.mark.parametrize("command", [["server"], ["coap", "serve"]])
@pytest.mark.parametrize("listen", [":9", "[]:9"])
def test_a_server_listen_address_without_host_is_refused(
    capsys: pytest.CaptureFixture[str], never_serve: None, command: list[str], listen: str
) -> None:
    """`--listen :PORT` quietly served 127.0.0.1 only, where other tools take it for every
    address, while the API refuses an empty host: refused, saying what to write, in the API's
    words ("0.0.0.0:9 or [::]:9 to serve every address" put both on a par: probe BG, F3)."""
    assert refused(capsys, *command, "--listen", listen, *PSK) == (
        f"--listen {listen!r} has no host: give 127.0.0.1:9 to serve this machine only, "
        "0.0.0.0:9 (every IPv4 address) or [::]:9 (every address, IPv4 too)")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5684", "expected HOST:PORT, got '5684'"),
        ("host:65536", "port must be a number from 1 to 65535, got '65536'"),
        ("host:-1", "port must be a number from 1 to 65535, got '-1'"),
        ("host:0", "port must be a number from 1 to 65535, got '0'"),  # said "from 1" elsewhere
        ("host:", "expected HOST:PORT, got 'host:': the port is missing"),
        ("[::1]", "expected HOST:PORT, got '[::1]': the port is missing"),  # said got '1]'
        ("[::1]:", "expected HOST:PORT, got '[::1]:': the port is missing"),
        ("[::1", "expected HOST:PORT, got '[::1'"),
        ("[::1]5684", "expected HOST:PORT, got '[::1]5684'"),
        ("[::1]]:5684", "expected HOST:PORT, got '[::1]]:5684'"),  # the first "]" ends it
        ("[::1]:x", "port must be a number from 1 to 65535, got 'x'"),
        ("[fe80::1%25]:1", "the IPv6 zone of [fe80::1%25] is empty (RFC 6874): give the "
         "interface, as in [fe80::1%25eth0]"),
        # Brackets are for IPv6 (RFC 3986 §3.2.2): 127.0.0.1 was served, v1.x looked up in DNS.
        ("[127.0.0.1]:5684", "expected HOST:PORT, got '[127.0.0.1]:5684': brackets are for an "
         "IPv6 address only, write 127.0.0.1:5684"),
        ("[v1.x]:1", "expected HOST:PORT, got '[v1.x]:1': brackets are for an IPv6 address "
         "only, write v1.x:1"),
    ],
)
def test_hostport_mistakes(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_hostport(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("command", "lowest"),
    [(["client"], 1), (["perf"], 1), (["server", "--listen"], 0),
     (["coap", "serve", "--listen"], 0)],
)
def test_each_command_has_one_port_rule_and_message(
    capsys: pytest.CaptureFixture[str], command: list[str], lowest: int
) -> None:
    """A client or perf sends to a port from 1 (port 0 was refused by another check, "must be
    from 1", after "a number from 0" for 70000; perf sent to it); a server listens on 0 too,
    the port the kernel picks."""
    for port in ("0", "70000"):
        if port == "0" and lowest == 0:
            continue
        assert refused(capsys, *command, f"127.0.0.1:{port}", *PSK) == (
            f"port must be a number from {lowest} to 65535, got '{port}'")


@pytest.mark.parametrize(
    ("text", "example"),
    [
        ("::1", "[::1]:PORT"),  # was host ":" port 1
        ("fd00::2", "[fd00::2]:PORT"),  # was host "fd00:" port 2
        ("::1:39960", "[::1]:39960"),  # was taken as [::1]:39960 without a word
        ("fd00::2:5684", "[fd00::2]:5684 or [fd00::2:5684]:PORT"),  # both are addresses
        ("fe80::1%eth0:5684", "[fe80::1%eth0]:5684"),
        ("a:b:1", "[::1]:5684"),
    ],
)
@pytest.mark.parametrize("command", [["client"], ["perf"], ["server", "--listen"],
                                     ["coap", "serve", "--listen"]])
def test_an_ipv6_address_outside_brackets_is_refused(
    capsys: pytest.CaptureFixture[str], never_serve: None, command: list[str], text: str,
    example: str,
) -> None:
    """An IPv6 address without brackets was split at its last ":" (as host and port), which
    gave a host that makes no sense or, worse, a port taken from the address: refused, in one
    line saying to write it in brackets."""
    assert refused(capsys, *command, text, *PSK) == (
        f"expected HOST:PORT, got {text!r}: write an IPv6 address in brackets, as in {example}"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # It said "brackets are for an IPv6 address only, write 127.0.0.1%lo:5684", a form
        # refused too: "server name '127.0.0.1%lo' is neither ...", and `server --listen`
        # exited 1, "Name or service not known" (probe BL, F3).
        ("[127.0.0.1%lo]:5684", "an IPv4 address takes no zone, write 127.0.0.1:5684"),
        ("127.0.0.1%lo:5684", "an IPv4 address takes no zone, write 127.0.0.1:5684"),
        ("[127.0.0.1%25lo]:5684", "an IPv4 address takes no zone, write 127.0.0.1:5684"),
        ("[gw.example%eth0]:1", "a zone follows an IPv6 address only, write gw.example:1"),
        ("gw.example%eth0:1", "a zone follows an IPv6 address only, write gw.example:1"),
        ("%eth0:1", "a zone follows an IPv6 address only, as in [fe80::1%eth0]:1"),
        # The zone begins at the first "%" (M15: at the last, "127.0.0.1%lo" was the host)
        ("127.0.0.1%lo%x:5684", "an IPv4 address takes no zone, write 127.0.0.1:5684"),
        # Not an IPv6 address, and not to be written without brackets either ("write an IPv6
        # address in brackets" for what the hint said to write, fe80::zz:1).
        ("[fe80::zz]:1", "fe80::zz is not an IPv6 address"),
        ("[fe80::zz%lo]:1", "fe80::zz%lo is not an IPv6 address"),
    ],
)
@pytest.mark.parametrize("command", [["client"], ["perf"], ["server", "--listen"],
                                     ["coap", "serve", "--listen"]])
def test_a_zone_after_anything_but_an_ipv6_address_is_one_line_with_a_form_that_is_taken(
    capsys: pytest.CaptureFixture[str], never_serve: None, command: list[str], text: str,
    message: str,
) -> None:
    """An IPv4 address or a name with a zone (RFC 4007 §11: an IPv6 address's) is refused by
    every command in one line, status 2, saying what to write; what it says to write is
    taken."""
    assert refused(capsys, *command, text, *PSK) == f"expected HOST:PORT, got {text!r}: {message}"
    if ", write " in message:
        parse_hostport(message.rpartition(", write ")[2])


def test_a_host_in_brackets_is_refused_as_a_server_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--server-name [::1] said only that '[::1]' is neither a DNS name nor an IP address."""
    assert refused(capsys, "client", "[::1]:5684", "--server-name", "[::1]", *PSK) == (
        "server name '[::1]' is neither a DNS name nor an IP address (give it without "
        "brackets, '::1')"
    )


def test_hex_bytes_quotes_a_wrong_public_value_and_accepts_spaces() -> None:
    assert hex_bytes("--x", "01 0a ff") == b"\x01\x0a\xff"
    with pytest.raises(UsageError) as caught:
        hex_bytes("--x", "0g")
    assert str(caught.value) == f"--x {HEX_HINT}, got '0g'"
    # The example is itself a value the flags take (it was "0102...0f10": probe CK).
    example = re.search(r"e\.g\. (\S+)\)", HEX_HINT)
    assert example is not None
    assert len(hex_bytes("--x", example.group(1))) == 16
    with pytest.raises(UsageError) as caught:
        hex_bytes("--x", "")
    assert str(caught.value) == "--x is empty"


def test_hex_bytes_of_a_secret_says_where_it_goes_wrong() -> None:
    with pytest.raises(UsageError) as caught:
        hex_bytes("--k", "01 0x", secret=True)
    assert str(caught.value).endswith(", character 5 of 5 is not a hex digit")
    with pytest.raises(UsageError) as caught:
        hex_bytes("--k", "01 0", secret=True)
    assert str(caught.value).endswith(", the digits do not pair up into whole bytes")
    assert hex_bytes("--k", "01 02", secret=True) == b"\x01\x02"


# -- common flags, logging, signals ---------------------------------------------------------------


@pytest.mark.parametrize("command", [["server"], ["client", "h:1"], ["perf", "h:1"]])
def test_common_flags_and_their_defaults(command: list[str]) -> None:
    defaults = parsed(*command)
    assert (defaults.mtu, defaults.keylog, defaults.verbose) == (DEFAULT_MTU, None, False)
    given = parsed(*command, "--mtu", "500", "--keylog", "k.log", "-v")
    assert (given.mtu, given.keylog, given.verbose) == (500, "k.log", True)
    assert parsed(*command, "--verbose").verbose


@pytest.mark.parametrize("command", [["server"], ["perf", "h:1"]])
def test_the_loop_flag(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert parsed(*command).loop == "auto"
    assert parsed(*command, "--loop", "asyncio").loop == "asyncio"
    assert parsed(*command, "--loop", "uvloop").loop == "uvloop"
    with pytest.raises(SystemExit) as caught:
        parsed(*command, "--loop", "trio")
    assert caught.value.code == 2
    assert "invalid choice: 'trio'" in capsys.readouterr().err


#: Every number flag with a value out of its range, and the message naming it.
NUMBER_MISTAKES = [
    (["perf", "h:1", *PSK, "-c", "0"], "--concurrency/-c: must be a whole number >= 1, got '0'"),
    (["perf", "h:1", *PSK, "-n", "0"], "--handshakes/-n: must be a whole number >= 1, got '0'"),
    (["perf", "h:1", *PSK, "-d", "0"], "--duration/-d: must be a number of seconds > 0, got '0'"),
    (["perf", "h:1", *PSK, "-m", "-1"], "--messages/-m: must be a whole number >= 0, got '-1'"),
    (["perf", "h:1", *PSK, "--size", "0"], "--size: must be a whole number >= 1, got '0'"),
    (["perf", "h:1", *PSK, "--timeout", "0"],
     "--timeout: must be a number of seconds > 0, got '0'"),
    (["perf", "h:1", *PSK, "--echo-timeout", "-2"],
     "--echo-timeout: must be a number of seconds > 0, got '-2'"),
    (["perf", "h:1", *PSK, "-p", "0"], "--processes/-p: must be a whole number >= 1, got '0'"),
    (["server", *PSK, "--heartbeat", "0"],
     "--heartbeat: must be a number of seconds >= 1, got '0'"),
    (["client", "h:1", *PSK, "--heartbeat", "0.5"],
     "--heartbeat: must be a number of seconds >= 1, got '0.5'"),
    (["client", "h:1", *PSK, "--timeout", "0"],
     "--timeout: must be a number of seconds > 0, got '0'"),
    (["client", "h:1", *PSK, "--timeout", "nan"],
     "--timeout: must be a number of seconds > 0, got 'nan'"),
    (["client", "h:1", *PSK, "--timeout", "soon"],
     "--timeout: must be a number of seconds > 0, got 'soon'"),
    (["client", "h:1", *PSK, "--retries", "-1"],
     "--retries: must be a whole number >= 0, got '-1'"),
    (["server", *PSK, "--timeout", "-5"],
     "--timeout: must be a number of seconds > 0, got '-5'"),
    (["server", *PSK, "--idle-timeout", "0"],
     "--idle-timeout: must be a number of seconds > 0, got '0'"),
    (["server", *PSK, "--idle-timeout", "inf"],
     "--idle-timeout: must be a number of seconds > 0, got 'inf'"),
    (["server", *PSK, "--max-handshakes", "0"],
     "--max-handshakes: must be a whole number >= 1, got '0'"),
    (["server", *PSK, "--max-connections", "0"],
     "--max-connections: must be a whole number >= 1, got '0'"),
    (["server", *PSK, "--workers", "0"],
     "--workers: must be a whole number from 1 to 256, got '0'"),
    (["server", *PSK, "--workers", "1.5"],
     "--workers: must be a whole number from 1 to 256, got '1.5'"),
    (["server", *PSK, "--mtu", "big"],
     "--mtu: must be a whole number from 128 to 65507, got 'big'"),
    (["client", "h:1", *PSK, "--mtu", "127"],
     "--mtu: must be a whole number from 128 to 65507, got '127'"),
    (["perf", "h:1", *PSK, "--mtu", "65508"],
     "--mtu: must be a whole number from 128 to 65507, got '65508'"),
    (["client", "h:1", *PSK, "--retransmit", "1e-300"],
     "--retransmit: must be a number of seconds >= 0.1, got '1e-300'"),
    (["server", *PSK, "--no-cookie", "--retransmit", "0.05"],
     "--retransmit: must be a number of seconds >= 0.1, got '0.05'"),
    (["keygen", "psk", "--bytes", "0"], "--bytes: must be a whole number from 1 to 256, got '0'"),
    (["coap", "get", "coaps://h/x", *PSK, "--timeout", "-1"],
     "--timeout: must be a number of seconds > 0, got '-1'"),
    (["coap", "get", "coaps://h/x", *PSK, "--observe", "--duration", "0"],
     "--duration: must be a number of seconds > 0, got '0'"),
    (["coap", "serve", *PSK, "--mtu", "0"],
     "--mtu: must be a whole number from 128 to 65507, got '0'"),
]


@pytest.mark.usefixtures("no_runs")
@pytest.mark.parametrize(
    ("argv", "message"), NUMBER_MISTAKES, ids=[" ".join(argv[-2:]) for argv, _ in NUMBER_MISTAKES]
)
def test_number_flags_are_checked_when_parsed_and_named(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """The flag the user typed, not the configuration field it becomes."""
    assert refused(capsys, *argv) == f"argument {message} (see --help)"


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """`parser` and those of its subcommands, each with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


def test_every_number_flag_has_a_checked_type() -> None:
    """A flag added with a bare type=int or float would be checked (if at all) by the
    configuration, in its words: every number flag takes its bounds from `whole_number` or
    `seconds`."""
    bare = [
        (" ".join(path), action.dest)
        for path, parser in parsers(_parser())
        for action in parser._actions
        if action.type in (int, float) and action.choices is None
    ]
    assert bare == []


@pytest.mark.parametrize(
    ("flags", "handshakes", "connections"),
    [
        ([], ServerConfig.max_handshakes, ServerConfig.max_connections),
        (["--max-connections", "10"], ServerConfig.max_handshakes, 10),  # apart: on top
        (["--max-connections", "10", "--max-handshakes", "11"], 11, 10),
        (["--max-handshakes", "1000"], 1000, ServerConfig.max_connections),
    ],
)
def test_max_handshakes_and_max_connections_stand_apart(
    flags: list[str], handshakes: int, connections: int
) -> None:
    config = server_config_of(server_args(*PSK, *flags))
    assert (config.max_handshakes, config.max_connections) == (handshakes, connections)


#: Every command with --keylog, with the flags it needs besides.
KEYLOG_COMMANDS = [
    ["client", "127.0.0.1:9", *PSK],
    ["server", *PSK],
    ["perf", "127.0.0.1:9", *PSK],
    ["coap", "get", "coaps://127.0.0.1/x", *PSK],
    ["coap", "serve", *PSK],
]


@pytest.fixture
def no_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands that open sockets do nothing: a command line not refused returns 0."""
    for module, run in [(echo, "run_client"), (echo, "run_server"), (perf, "run_perf"),
                        (coap, "run_request"), (coap, "run_serve")]:
        monkeypatch.setattr(module, run, lambda args: 0)


@pytest.mark.usefixtures("no_runs")
@pytest.mark.parametrize("command", KEYLOG_COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_a_keylog_that_cannot_be_written_is_refused_before_any_handshake(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    for path, problem in [
        (tmp_path / "missing" / "k.log", "No such file or directory"),
        (tmp_path, "Is a directory"),
    ]:
        message = refused(capsys, *command, "--keylog", str(path))
        assert message == f"cannot write --keylog {path}: {problem}"


def test_a_refused_command_leaves_no_new_keylog_behind(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A command refused after its key-log file was made (a flag the URI has no use for, an
    unreadable credential file) removes the empty file it made; a file that was there stays."""
    new, kept = tmp_path / "new.log", tmp_path / "kept.log"
    kept.write_text("")
    for command in [
        ["coap", "get", "coap://127.0.0.1/x"],
        ["server", "--psk-file", str(tmp_path / "missing.txt")],
    ]:
        for path in (new, kept):
            refused(capsys, *command, "--keylog", str(path))
        assert not new.exists() and kept.exists()


@pytest.mark.req("SEC-1")
def test_a_new_keylog_is_private_and_an_existing_one_keeps_its_mode_and_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The key log holds master secrets: made 0600 before the library appends to it."""
    monkeypatch.setattr(echo, "run_client", lambda args: 0)
    new, kept = tmp_path / "new.log", tmp_path / "kept.log"
    kept.write_text("CLIENT_RANDOM earlier line\n")
    kept.chmod(0o400)
    umask = os.umask(0o022)
    try:
        for path in (new, kept):
            assert main(["client", "127.0.0.1:9", *PSK, "--keylog", str(path)]) == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o600 and new.read_text() == ""
    assert stat.S_IMODE(kept.stat().st_mode) == 0o400
    assert kept.read_text() == "CLIENT_RANDOM earlier line\n"


@pytest.mark.req("SEC-1")
@pytest.mark.usefixtures("no_runs")
def test_a_keylog_another_user_planted_or_can_read_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, give_away: Callable[[Path], str]
) -> None:
    """A symlink another user planted in a shared directory (/tmp), to a 0666 file of theirs,
    took every master secret there: the key log is not opened through a symlink, and an
    existing one must be ours and private (0600 or less), else refused in one line saying what
    to do, the file left as it was."""
    theirs = tmp_path / "theirs.log"
    theirs.write_text("")
    theirs.chmod(0o666)
    link = tmp_path / "link.log"
    link.symlink_to(theirs)
    shared = tmp_path / "shared.log"
    shared.write_text("")
    shared.chmod(0o640)
    for path, problem in [
        (link, "is a symbolic link; name the file itself"),
        (theirs, "is open to group or others (mode 0666): chmod 600 it or name a new file"),
        (shared, "is open to group or others (mode 0640): chmod 600 it or name a new file"),
    ]:
        assert refused(capsys, "client", "127.0.0.1:9", *PSK, "--keylog", str(path)) == (
            f"--keylog {path} {problem}")
    assert theirs.read_text() == "" and link.is_symlink()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    owned = tmp_path / "owned.log"
    owned.write_text("")
    owned.chmod(0o600)
    owner = give_away(owned)
    assert refused(capsys, "server", *PSK, "--keylog", str(owned)) == (
        f"--keylog {owned} is owned by {owner}, not by this user: name a file of your own "
        "(another user could read it)")


@pytest.mark.req("SEC-1")
@pytest.mark.usefixtures("no_runs")
def test_a_keylog_under_another_users_symlink_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
    give_away: Callable[[Path], str], in_shared_dir: Callable[[str], Path],
) -> None:
    """Only a symlink as the key log itself was refused (O_NOFOLLOW): one another user planted
    as a directory on the way, in a shared directory such as /tmp, was followed, and the key
    log made where that user chose, which they could then remove (probe BJ, F2). The path is
    checked as --session-file's is (`resolve_links`): such a link is refused in one line naming
    it and its owner, nothing made; our own link there is followed."""
    real = tmp_path / "real"
    real.mkdir()
    ours = in_shared_dir("ours")
    ours.symlink_to(real)
    assert main(["client", "127.0.0.1:9", *PSK, "--keylog", str(ours / "k.log")]) == 0
    assert stat.S_IMODE((real / "k.log").stat().st_mode) == 0o600
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    link = in_shared_dir("logs")
    link.symlink_to(theirs)
    owner = give_away(link)
    for command in (["client", "127.0.0.1:9", *PSK], ["server", *PSK]):
        path = link / "k.log"
        assert refused(capsys, *command, "--keylog", str(path)) == (
            f"cannot write --keylog {path}: {link} is a symbolic link owned by {owner}, who "
            "could point it anywhere: name the file itself")
    assert list(theirs.iterdir()) == []


@pytest.mark.req("SEC-1")
@pytest.mark.usefixtures("no_runs")
@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (["client", "127.0.0.1:9", "--psk-file", "FILE"], "--psk-file"),
        (["server", "--psk-file", "OTHER", "--psk-file", "FILE"], "--psk-file"),
        (["client", "localhost:9", "--cafile", "FILE", "--cert", "OTHER", "--key", "KEY"],
         "--cafile"),
        (["client", "localhost:9", "--cafile", "KEY", "--cert", "FILE", "--key", "OTHER"],
         "--cert"),
        (["server", "--cert", "OTHER", "--key", "FILE", "--client-cafile", "KEY"], "--key"),
        (["server", "--cert", "OTHER", "--key", "KEY", "--client-cafile", "FILE"],
         "--client-cafile"),
        (["server", "--rpk-key", "OTHER", "--rpk-allow", "KEY", "--rpk-allow", "FILE"],
         "--rpk-allow"),
        (["client", "127.0.0.1:9", "--rpk-key", "FILE", "--peer-rpk", "OTHER"], "--rpk-key"),
        (["perf", "127.0.0.1:9", "--rpk-key", "OTHER", "--peer-rpk", "FILE"], "--peer-rpk"),
        (["client", "127.0.0.1:9", *PSK, "--session-file", "FILE"], "--session-file"),
        (["coap", "get", "coaps://127.0.0.1/x", "--psk-file", "FILE"], "--psk-file"),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value[:2]),
)
def test_a_keylog_that_is_another_file_of_the_command_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str], flag: str
) -> None:
    """`--keylog ca.crt` appended master secrets to the CA file, `--keylog` naming the --key or
    the --psk-file file to the private key or the PSKs (corrupting the file for the next run):
    refused in one line before any file is opened, the file left as it was; named otherwise
    too (a symlink, `..`), and a file to come (--session-file) by path."""
    files = {name: tmp_path / f"{name.lower()}.pem" for name in ("FILE", "OTHER", "KEY")}
    for file in files.values():
        file.write_bytes(b"data\n")
        file.chmod(0o600)
    (tmp_path / "link").symlink_to(files["FILE"])
    (tmp_path / "sub").mkdir()
    argv = [str(files[word]) if word in files else word for word in command]
    for keylog in (files["FILE"], tmp_path / "link", tmp_path / "sub" / ".." / "file.pem"):
        assert refused(capsys, *argv, "--keylog", str(keylog)) == (
            f"--keylog {keylog} is the {flag} file too: give the key log a file of its own")
    assert all(file.read_bytes() == b"data\n" for file in files.values())
    files["FILE"].unlink()  # the session file is made after the handshake
    assert refused(capsys, *argv, "--keylog", str(files["FILE"])) == (
        f"--keylog {files['FILE']} is the {flag} file too: give the key log a file of its own")
    assert not files["FILE"].exists()


def subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every subcommand's parser, at any depth (`coap get`)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from subparsers(sub)


@pytest.mark.req("SEC-1")
def test_every_flag_naming_a_file_is_checked_against_the_keylog() -> None:
    """The --keylog file was checked against a hand-kept list of the file flags, which a file
    flag added later would silently have escaped. Every flag whose value is a file (FILE,
    *.pem) is now marked (`file_path`), and the check reads the marked ones from the parser
    (a --cache-dir is a directory: never the key-log file)."""
    checked = file_flags(_parser())
    for parser in subparsers(_parser()):
        for action in parser._actions:
            metavar = action.metavar if isinstance(action.metavar, str) else ""
            if action.dest == "keylog" or not (metavar == "FILE" or metavar.endswith(".pem")):
                continue
            flag = max(action.option_strings, key=len)
            assert action.type is file_path, f"{parser.prog} {flag}"
            assert checked[action.dest] == flag
    assert {"psk_file", "cert", "key", "cafile", "client_cafile", "rpk_key", "peer_rpk",
            "rpk_allow", "session_file"} <= checked.keys()


@pytest.mark.req("SEC-1")
@pytest.mark.usefixtures("no_runs")
def test_a_file_flag_added_later_is_checked_against_the_keylog_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def with_a_new_flag() -> argparse.ArgumentParser:
        parser = _parser()
        client = next(p for p in subparsers(parser) if p.prog.endswith(" client"))
        client.add_argument("--extra-file", metavar="FILE", type=file_path)
        return parser

    monkeypatch.setattr(cli, "_parser", with_a_new_flag)
    path = tmp_path / "extra.txt"
    path.write_text("data\n")
    assert refused(capsys, "client", "127.0.0.1:9", *PSK, "--extra-file", str(path),
                   "--keylog", str(path)) == (
        f"--keylog {path} is the --extra-file file too: give the key log a file of its own")
    assert path.read_text() == "data\n"


LIBRARY_LOGGERS = ("iotdtls", "iotdtls.aio", "iotdtls.cli", "iotdtls.workers", "iotdtls.coap")
UNSET = (logging.NOTSET,) * 4


@pytest.mark.parametrize(
    ("verbose", "server", "levels"),
    [
        # A server says where it listens, one line per handshake, and (coaps) what an
        # association's end sums up; a client only its error.
        (False, True, (logging.WARNING, logging.INFO, logging.INFO, logging.INFO, logging.INFO)),
        (False, False, (logging.WARNING, *UNSET)),
        # -v: everything, from the top logger down.
        (True, True, (logging.DEBUG, *UNSET)),
        (True, False, (logging.DEBUG, *UNSET)),
    ],
)
def test_logging_levels(
    verbose: bool, server: bool, levels: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in LIBRARY_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    setup_logging(verbose, server)
    assert tuple(logging.getLogger(name).level for name in LIBRARY_LOGGERS) == levels


def test_logging_goes_to_stderr_with_time_and_logger_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging.root, "handlers", [])  # as in a fresh process
    monkeypatch.setattr(logging.root, "level", logging.NOTSET)
    setup_logging(False, True)
    [handler] = logging.root.handlers
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
    assert handler.formatter is not None
    assert handler.formatter._fmt == "%(asctime)s %(name)s: %(message)s"
    assert logging.root.level == logging.WARNING


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_the_stop_signals_set_the_stop_event(sig: signal.Signals) -> None:
    async def main() -> bool:
        stop = stop_on_signals()  # the loop's handler replaces the fallback
        assert not stop.is_set()
        os.kill(os.getpid(), sig)
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
        except TimeoutError:
            return False
        return True

    with signal_fallback(sig) as caught_elsewhere:
        assert asyncio.run(main()), f"{sig.name} did not stop the server"
    assert caught_elsewhere == []


# -- settings and key files in every mode --------------------------------------------------------


def test_settings_reach_every_client_mode(pki: Pki) -> None:
    modes = [
        list(PSK),
        ["--peer-rpk-sha256", "00" * 32],
        ["--cafile", str(pki.ca_crt)],
    ]
    for flags in modes:
        config = client_config(client_args(*flags, "--allow-no-ems"), "h", mtu=512)
        assert config.mtu == 512 and not config.require_extended_master_secret, flags


def test_key_files_in_der_are_read_as_bytes(pki: Pki, tmp_path: Path) -> None:
    spki = PrivateKey.load(pki.server_key).spki
    der = tmp_path / "server.spki.der"
    der.write_bytes(spki)
    config = client_config(client_args("--peer-rpk", str(der)), "h")
    assert tuple(config.server_public_keys) == (public_key_pin(spki),)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-c", "2", "-p", "3"],
         "--processes 3 is more than the --concurrency (2): each process needs a handshake of "
         "its own"),
        (["-c", "10", "-n", "2", "-p", "3"],
         "--processes 3 is more than the --concurrency or --handshakes (2): each process needs "
         "a handshake of its own"),
    ],
)
def test_perf_processes_beyond_its_handshakes_are_refused_naming_the_flags(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert refused(capsys, "perf", "127.0.0.1:9", *PSK, *flags) == message


def test_seconds_takes_its_minimum_only_when_inclusive() -> None:
    """`--keepalive 1` is the least interval (>= 1 s); `--timeout 0` is refused (> 0)."""
    assert seconds(1.0, inclusive=True)("1") == 1.0
    assert seconds(1.0, inclusive=True)("1.5") == 1.5
    with pytest.raises(argparse.ArgumentTypeError, match=r"seconds >= 1, got '0.5'"):
        seconds(1.0, inclusive=True)("0.5")
    assert seconds()("0.01") == 0.01
    with pytest.raises(argparse.ArgumentTypeError, match=r"seconds > 0, got '0'"):
        seconds()("0")


def test_an_empty_psk_identity_is_refused_as_an_empty_psk_file_identity_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--psk-identity ''` was accepted (the server's store then held an identity naming no
    one), while a --psk-file line ":HEX" is refused."""
    for command in (["server"], ["client", "127.0.0.1:9"]):
        assert refused(capsys, *command, "--psk-identity", "", "--psk", PSK_HEX) == (
            "--psk-identity is empty: give the identity the key is known by")


def test_a_psk_file_key_too_long_for_the_protocol_names_its_line(tmp_path: Path) -> None:
    """A key of more than 65535 bytes (RFC 4279 §2) was refused by the configuration, in the
    API's words ("a psk in psk_store is 70000 bytes"), not naming the file or the line."""
    path = tmp_path / "keys.psk"
    path.write_text(f"good:01\nlong:{'ab' * 70_000}\nmost:{'cd' * 65_535}\n")
    with pytest.raises(UsageError) as caught:
        read_psk_file(str(path))
    assert str(caught.value) == (
        f"{path}:2 key is 70,000 bytes; at most 65,535 fit the protocol (RFC 4279 §2)")
    path.write_text(f"good:01\nmost:{'cd' * 65_535}\n")
    assert len(read_psk_file(str(path))[b"most"]) == 65_535
    for flag, value in (("--psk", "ab" * 70_000), ("--psk-text", "k" * 70_000)):
        with pytest.raises(UsageError) as caught:
            client_config(client_args("--psk-identity", "dev1", flag, value))
        assert str(caught.value) == (
            f"{flag} is 70,000 bytes; at most 65,535 fit the protocol (RFC 4279 §2)")
