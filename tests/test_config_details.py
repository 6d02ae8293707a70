"""Every configuration check at its edges (CFG-1): the first value refused gives its one-line
message, the last value accepted passes, and each mode's extras are refused in the others."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import functools
import gc
import inspect
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iotdtls import config as config_module
from iotdtls.cli.common import UsageError, prepare_keylog
from iotdtls.config import (
    MAX_MTU,
    MAX_PSK_LENGTH,
    MIN_MTU,
    ClientConfig,
    FileKeyLog,
    KeyLogFailed,
    RetransmitPolicy,
    RetryPolicy,
    ServerConfig,
)
from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.crypto import psk_premaster_secret
from iotdtls.crypto.suites import SUITES
from iotdtls.crypto.x509 import MAX_CHAIN_DEPTH_LIMIT
from iotdtls.errors import ConfigError
from iotdtls.handshake.keyschedule import KeySchedule
from tests.peers import PSK as KEY
from tests.pki import chain_der, intermediate, root, server_leaf

pytestmark = pytest.mark.req("CFG-1")

PSK_CLIENT: dict[str, Any] = {"psk_identity": "device", "psk": KEY}
PSK_SERVER: dict[str, Any] = {"psk_store": {b"device": KEY}}
SERVER_KEY = PrivateKey.generate()
ANCHOR = root()
LEAF = server_leaf(ANCHOR, "gw.example")
CERTIFIED = CertifiedKey((LEAF.der,), PrivateKey(LEAF.key))
INTERMEDIATE = intermediate(ANCHOR, "iotdtls test intermediate")
CHAIN_LEAF = server_leaf(INTERMEDIATE, "gw.example")
CHAIN_CERTIFIED = CertifiedKey(chain_der(CHAIN_LEAF, INTERMEDIATE), PrivateKey(CHAIN_LEAF.key))
X509_CLIENT: dict[str, Any] = {"trust_anchors": [ANCHOR.der], "server_name": "gw.example"}

EXACTLY_ONE_MODE = (
    "give exactly one of psk_identity+psk (PSK), server_public_keys (raw public keys) or "
    "trust_anchors (certificates)"
)
X509_EXTRAS = (
    "cached_server_chain, indicate_trusted_cas and certificate_urls are for certificate mode: "
    "add trust_anchors"
)
URLS_PER_CERTIFICATE = (
    "certificate_urls needs a certificate and one URL per certificate of its chain as sent ({}: "
    "a self-signed root at its end is not sent), got {}"
)


def refusal(make: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        make(**kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


COMMON_EDGES = [
    # (setting, first value refused, its message, last value accepted)
    ("mtu", MIN_MTU - 1, f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got 127", MIN_MTU),
    ("mtu", MAX_MTU + 1, f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got 65508",
     MAX_MTU),
    ("handshake_timeout", 0, "handshake_timeout must be > 0 seconds, got 0", 0.001),
    ("receive_queue", 0, "receive_queue must be at least 1, got 0", 1),
    ("max_handshake_message", 255, "max_handshake_message must be at least 256 bytes", 256),
    ("integrity_limit", 0, "integrity_limit must be a whole number >= 1 (or None), got 0", 1),
    ("integrity_limit", 1.5, "integrity_limit must be a whole number >= 1 (or None), got 1.5",
     None),
]


@pytest.mark.parametrize("role", [ClientConfig, ServerConfig])
@pytest.mark.parametrize(("setting", "refused", "message", "accepted"), COMMON_EDGES)
def test_common_settings_at_their_edges(
    role: Any, setting: str, refused: object, message: str, accepted: object
) -> None:
    base = PSK_CLIENT if role is ClientConfig else PSK_SERVER
    assert refusal(role, **base, **{setting: refused}) == message
    assert getattr(role(**base, **{setting: accepted}), setting) == accepted


def test_a_servers_keepalive_and_its_retries_must_end_within_its_idle_timeout() -> None:
    """Only the peer's records reset `idle_timeout`: a heartbeat sent after
    `keepalive_interval` and sent again for `handshake_timeout` must be over before it, or a
    peer that only listens is let go for one lost datagram."""
    assert refusal(ServerConfig, **PSK_SERVER, heartbeat=True, keepalive_interval=3541.0) == (
        "keepalive_interval (3541 s) plus handshake_timeout (60 s, while a heartbeat is sent "
        "again) must not exceed idle_timeout (3600 s): a peer that only listens would be let go "
        "before its heartbeat is answered"
    )
    assert refusal(ServerConfig, **PSK_SERVER, heartbeat=True, keepalive_interval=2.0,
                   handshake_timeout=0.6, idle_timeout=2.5).startswith(
        "keepalive_interval (2 s) plus handshake_timeout (0.6 s, ")
    exact = ServerConfig(**PSK_SERVER, heartbeat=True, keepalive_interval=3540.0)
    assert exact.keepalive_interval == 3540.0
    never = ServerConfig(**PSK_SERVER, heartbeat=True, keepalive_interval=7200.0,
                         idle_timeout=None)
    assert never.keepalive_interval == 7200.0


def test_keepalive_needs_heartbeats_and_a_second() -> None:
    assert refusal(ClientConfig, **PSK_CLIENT, keepalive_interval=5.0) == (
        "keepalive_interval needs heartbeat=True (RFC 6520 heartbeats)"
    )
    assert refusal(ClientConfig, **PSK_CLIENT, heartbeat=True, keepalive_interval=0.999) == (
        "keepalive_interval must be at least 1 s, got 0.999"
    )
    accepted = ClientConfig(**PSK_CLIENT, heartbeat=True, keepalive_interval=1.0)
    assert accepted.keepalive_interval == 1.0
    assert ClientConfig(**PSK_CLIENT, heartbeat=True).keepalive_interval is None


def test_a_key_log_file_becomes_a_callback_appending_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys.log"
    keylog = ClientConfig(**PSK_CLIENT, keylog_file=str(path)).keylog
    assert isinstance(keylog, FileKeyLog) and repr(keylog) == f"FileKeyLog({str(path)!r})"
    keylog("CLIENT_RANDOM 00 11")
    keylog("CLIENT_RANDOM 22 33")
    assert path.read_text("ascii") == "CLIENT_RANDOM 00 11\nCLIENT_RANDOM 22 33\n"
    assert path.stat().st_mode & 0o777 == 0o600  # master secrets: its owner's eyes only
    assert config_module.file_keylog(path).path == str(path)  # a PathLike is fine too
    lines: list[str] = []
    given = ClientConfig(**PSK_CLIENT, keylog=lines.append, keylog_file=str(path)).keylog
    assert given == lines.append  # an explicit callback wins


@pytest.mark.req("SEC-1")
def test_a_key_log_file_is_never_written_through_a_symlink_nor_when_others_can_read_it(
    tmp_path: Path,
) -> None:
    """The callback appended master secrets wherever a symlink planted at the path led (a
    shared directory), and to a file others could read: it now refuses either when it writes
    (`KeyLogFailed` naming the file and why, which the handshake logs and goes on), and
    nothing is appended."""
    path, theirs = tmp_path / "keys.log", tmp_path / "theirs.log"
    keylog = FileKeyLog(path)
    theirs.write_text("")
    path.symlink_to(theirs)
    symlink = r"^key log '.*keys\.log' is a symbolic link; name the file itself$"
    with pytest.raises(KeyLogFailed, match=symlink):
        keylog("CLIENT_RANDOM 00 11")
    path.unlink()
    path.write_text("")
    path.chmod(0o644)
    readable = r"^key log '.*' is open to group or others \(mode 0644\)"
    with pytest.raises(KeyLogFailed, match=readable):
        keylog("CLIENT_RANDOM 00 11")
    path.unlink()
    theirs.chmod(0o600)
    os.link(theirs, path)  # a hard link to a file of ours: appending would write into it
    linked = r"^key log '.*' has 2 hard links, so it is also another file"
    with pytest.raises(KeyLogFailed, match=linked):
        keylog("CLIENT_RANDOM 00 11")
    assert theirs.read_text() == path.read_text() == ""


@pytest.mark.req("SEC-1")
def test_a_key_log_file_under_another_users_symlink_is_refused(
    tmp_path: Path, give_away: Callable[[Path], str], in_shared_dir: Callable[[str], Path],
) -> None:
    """A symlink another user planted in a shared directory as a directory on the way to the
    key log was followed (only the last part was not, O_NOFOLLOW), the key log made in a
    directory of theirs (probe BJ, F2): refused where it is configured (`ConfigError`) and at
    each line (`KeyLogFailed`), naming the link and its owner, nothing made there."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    where = in_shared_dir("logs")
    where.mkdir()  # a directory of ours when the key log is configured
    keylog = FileKeyLog(where / "k.log")
    where.rmdir()
    where.symlink_to(theirs)  # then another user's link in its place
    owner = give_away(where)
    planted = (f"{where} is a symbolic link owned by {owner}, who could point it anywhere: "
               "name the file itself")
    with pytest.raises(KeyLogFailed) as failed:
        keylog("CLIENT_RANDOM 00 11")
    assert str(failed.value) == f"key log {str(where / 'k.log')!r} cannot be written: {planted}"
    with pytest.raises(ConfigError) as refused:
        FileKeyLog(where / "k.log")
    assert str(refused.value) == (
        f"keylog_file {str(where / 'k.log')!r} cannot be written: {planted}")
    assert list(theirs.iterdir()) == []


@pytest.mark.parametrize("settings", [ClientConfig, ServerConfig])
def test_a_key_log_file_that_is_a_fifo_is_refused_where_it_is_configured(
    tmp_path: Path, settings: type[ClientConfig] | type[ServerConfig]
) -> None:
    """`keylog_file=FIFO` froze the whole event loop at the first handshake (the callback
    opened the FIFO, waiting for a reader): refused when the configuration is made, as is a
    symlink or a file others can read, which the callback would refuse anyway."""
    fifo, link, shared = tmp_path / "keys.fifo", tmp_path / "link.log", tmp_path / "shared.log"
    os.mkfifo(fifo)
    link.symlink_to(tmp_path / "keys.log")
    shared.write_text("")
    shared.chmod(0o604)
    credentials = PSK_CLIENT if settings is ClientConfig else PSK_SERVER
    for path, problem in [
        (fifo, "is a FIFO, not a regular file: name a regular file"),
        (link, "is a symbolic link; name the file itself"),
        (shared, "is open to group or others (mode 0604): chmod 600 it or name a new file"),
    ]:
        assert refusal(settings, **credentials, keylog_file=path) == (
            f"keylog_file {str(path)!r} {problem}")
    keylog = FileKeyLog(tmp_path / "keys.log")
    os.mkfifo(keylog.path)  # made after the configuration: refused by the callback too
    reader = os.open(keylog.path, os.O_RDONLY | os.O_NONBLOCK)  # so that no version blocks
    try:
        with pytest.raises(KeyLogFailed, match=r"^key log '.*' is a FIFO, not a regular file"):
            keylog("CLIENT_RANDOM 00 11")
        assert os.read(reader, 100) == b""  # nothing was written (and no writer is left)
    finally:
        os.close(reader)


@pytest.mark.parametrize("settings", [ClientConfig, ServerConfig])
def test_a_key_log_in_a_directory_that_does_not_exist_is_refused_where_it_is_configured(
    tmp_path: Path, settings: type[ClientConfig] | type[ServerConfig]
) -> None:
    """`keylog_file="nodir/keys.log"` was accepted, then each handshake warned only "key log
    callback failed: FileNotFoundError": refused when the configuration is made, naming the
    directory; a directory gone later makes the callback say which file and why."""
    credentials = PSK_CLIENT if settings is ClientConfig else PSK_SERVER
    missing = tmp_path / "nodir" / "keys.log"
    assert refusal(settings, **credentials, keylog_file=missing) == (
        f"keylog_file {str(missing)!r} is in a directory that does not exist "
        f"({tmp_path / 'nodir'}): make it or name another")
    (tmp_path / "gone").mkdir()
    keylog = FileKeyLog(tmp_path / "gone" / "keys.log")
    (tmp_path / "gone").rmdir()
    gone = r"^key log '.*keys\.log' cannot be written: No such file"
    with pytest.raises(KeyLogFailed, match=gone):
        keylog("CLIENT_RANDOM 00 11")


def handshakes_logging(keylog: FileKeyLog, times: list[float], monkeypatch: pytest.MonkeyPatch,
                       caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings of handshakes writing `keylog` at each of `times` (monotonic seconds)."""
    caplog.clear()
    for now in times:
        monkeypatch.setattr(config_module.time, "monotonic", lambda now=now: now)
        keys = KeySchedule(keylog)
        keys.client_random, keys.server_random = bytes(32), bytes(range(32))
        with caplog.at_level(logging.WARNING, logger="iotdtls"):
            keys.derive(psk_premaster_secret(KEY), SUITES[0xC0A8], True)
    return [record.getMessage() for record in caplog.records]


@pytest.mark.req("SEC-1")
def test_a_key_log_file_that_keeps_being_refused_is_logged_once_then_summed_up_a_minute_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A key log replaced during a run by a file others can read, a symlink, a FIFO, or its
    directory gone: one warning per handshake, 4,010 lines in a 3 s perf run (probe AS). Now
    the first failure of each kind is logged at once, the later ones summed up in a line a
    minute at most, as a failing session store's are."""
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "keys.log"
    keylog = FileKeyLog(path)
    named = f"key log {str(path)!r}"
    path.write_text("")
    path.chmod(0o644)
    readable = "is open to group or others (mode 0644): chmod 600 it or name a new file"
    assert handshakes_logging(keylog, [100.0, 101.0, 130.0, 159.9], monkeypatch, caplog) == [
        f"{named} {readable}"]
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.log")
    symlink = "is a symbolic link; name the file itself"
    assert handshakes_logging(keylog, [160.0, 161.0, 162.0], monkeypatch, caplog) == [
        f"{named} {symlink}", f"{named}: 4 more failures (the latest: {symlink})"]
    path.unlink()
    os.mkfifo(path)
    fifo = "is a FIFO, not a regular file: name a regular file"
    assert handshakes_logging(keylog, [170.0, 171.0], monkeypatch, caplog) == [
        f"{named} {fifo}"]
    path.unlink()
    directory.rmdir()
    gone = "cannot be written: No such file or directory"
    # The failures since the summary at 161 s: at 162, 171, 210, 220.9 and 221 s.
    assert handshakes_logging(keylog, [200.0, 210.0, 220.9, 221.0], monkeypatch, caplog) == [
        f"{named} {gone}", f"{named}: 5 more failures (the latest: {gone})"]
    assert handshakes_logging(keylog, [222.0, 280.9], monkeypatch, caplog) == []
    assert handshakes_logging(keylog, [281.0], monkeypatch, caplog) == [
        f"{named}: 3 more failures (the latest: {gone})"]
    assert not tmp_path.joinpath("elsewhere.log").exists()


#: Key-log lines as `keylog_line` makes them: 175 characters, then the newline.
LINES = [f"CLIENT_RANDOM {n * 64} {n * 96}" for n in "abc"]

#: A process writing LINES[0] to the key log argv[1], then LINES[1] with the file size limited
#: to argv[2] bytes (a write past it is cut short, as on a full disk; the next one fails with
#: EFBIG), then LINES[2] with the limit lifted; it prints what the second write raised.
CUT_SHORT = f"""
import resource, signal, sys
from iotdtls.config import FileKeyLog, KeyLogFailed
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
keylog = FileKeyLog(sys.argv[1])
keylog({LINES[0]!r})
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), hard))
try:
    keylog({LINES[1]!r})
except KeyLogFailed as exc:
    print(exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
keylog({LINES[2]!r})
"""


@pytest.mark.req("SEC-1")
def test_a_key_log_line_cut_short_by_a_full_disk_is_never_glued_to_the_next(
    tmp_path: Path,
) -> None:
    """On a full disk the line being written was cut short with no newline, and the next line,
    once there was room, was glued to it: `CLIENT_RANDOM 3397...5dCLIENT_RANDOM 624f...`, both
    lost to Wireshark (probe AS). The line is written in one call, and the next starts on a
    line of its own: only the line cut short is lost."""
    path = tmp_path / "keys.log"
    done = subprocess.run(
        [sys.executable, "-c", CUT_SHORT, str(path), str(176 + 100)], capture_output=True,
        text=True, timeout=30, check=False,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == (f"key log {str(path)!r} cannot be written whole: a line was cut "
                           "short (a full disk?)\n")
    assert path.read_text("ascii").split("\n") == [LINES[0], LINES[1][:100], LINES[2], ""]


def test_a_key_log_line_starts_on_a_line_of_its_own_after_one_another_process_cut_short(
    tmp_path: Path,
) -> None:
    """Workers append to one key log (O_APPEND): a line one of them had cut short (a full
    disk) is not ended by the next line another writes, which starts on a new line."""
    path = tmp_path / "keys.log"
    path.write_text(f"{LINES[0]}\n{LINES[1][:100]}")
    path.chmod(0o600)
    FileKeyLog(path)(LINES[2])
    assert path.read_text("ascii").split("\n") == [LINES[0], LINES[1][:100], LINES[2], ""]


def test_a_key_log_line_is_written_in_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write call per line, whole or cut short, never completed by a second call (which
    another worker's line could come before), as a full disk does with the first call."""
    path = tmp_path / "keys.log"
    keylog = FileKeyLog(path)
    calls: list[bytes] = []
    real_write = os.write

    def half(fd: int, data: bytes) -> int:
        calls.append(bytes(data))
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(config_module.os, "write", half)
    with pytest.raises(KeyLogFailed, match=r"cannot be written whole: a line was cut short"):
        keylog(LINES[0])
    monkeypatch.setattr(config_module.os, "write", real_write)
    keylog(LINES[1])
    assert calls == [f"{LINES[0]}\n".encode()]
    assert path.read_text("ascii").split("\n") == [LINES[0][:88], LINES[1], ""]


def test_retransmit_policy_edges() -> None:
    assert RetransmitPolicy(initial=2.0, maximum=2.0).maximum == 2.0
    with pytest.raises(ConfigError, match=r"retransmit maximum \(1.5 s\) must be >= initial"):
        RetransmitPolicy(initial=2.0, maximum=1.5)


def test_retry_policy_edges() -> None:
    assert RetryPolicy(attempts=1).attempts == 1
    assert RetryPolicy(initial=3.0, maximum=3.0).initial == 3.0
    assert RetryPolicy(initial=0.001).initial == 0.001
    for attempts in (0, 2.0, "3"):
        with pytest.raises(ConfigError, match="retry attempts must be an integer >= 1"):
            RetryPolicy(attempts=attempts)
    for initial, maximum in ((0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)):
        assert refusal(RetryPolicy, initial=initial, maximum=maximum) == (
            "retry needs 0 < initial <= maximum (seconds)"
        )


@pytest.mark.parametrize(("drawn", "fraction"), [(0, 0.5), (1000, 1.0), (500, 0.75)])
def test_retry_delay_doubles_to_its_cap_with_jitter_from_half_to_all(
    monkeypatch: pytest.MonkeyPatch, drawn: int, fraction: float
) -> None:
    asked: list[int] = []

    def randbelow(bound: int) -> int:
        asked.append(bound)
        return drawn

    monkeypatch.setattr(config_module.secrets, "randbelow", randbelow)
    policy = RetryPolicy(attempts=10, initial=1.5, maximum=10.0)
    delays = [policy.delay(failures) for failures in range(1, 6)]
    assert delays == [ceiling * fraction for ceiling in (1.5, 3.0, 6.0, 10.0, 10.0)]
    assert set(asked) == {1001}


def test_client_modes_are_exclusive_and_psk_needs_both_halves() -> None:
    assert refusal(ClientConfig) == EXACTLY_ONE_MODE
    assert refusal(ClientConfig, **PSK_CLIENT, server_public_keys=[SERVER_KEY.spki]) == (
        EXACTLY_ONE_MODE
    )
    assert refusal(ClientConfig, **PSK_CLIENT, **X509_CLIENT) == EXACTLY_ONE_MODE
    for half in ({"psk": KEY}, {"psk_identity": "device"}):
        assert refusal(ClientConfig, **half) == "PSK mode needs both psk_identity and psk"


def test_psk_identity_and_key_lengths_at_the_protocol_limit() -> None:
    longest = "i" * MAX_PSK_LENGTH
    assert ClientConfig(psk_identity=longest, psk=KEY).identity == longest.encode()
    assert refusal(ClientConfig, psk_identity=longest + "i", psk=KEY) == (
        f"psk_identity is longer than {MAX_PSK_LENGTH} bytes"
    )
    assert ClientConfig(psk_identity="d", psk=bytes(MAX_PSK_LENGTH)).psk_key == bytes(
        MAX_PSK_LENGTH
    )
    assert refusal(ClientConfig, psk_identity="d", psk=bytes(MAX_PSK_LENGTH + 1)) == (
        f"psk is {MAX_PSK_LENGTH + 1} bytes; at most {MAX_PSK_LENGTH} fit the protocol"
    )
    assert refusal(ServerConfig, psk_store={"d": b""}) == (
        "a psk in psk_store is empty: give the pre-shared key bytes"
    )


def test_a_stored_identity_must_fit_the_client_key_exchange() -> None:
    """A 65536-byte identity in psk_store was taken (ClientConfig refuses it), and one over
    16382 bytes could never arrive: its ClientKeyExchange (2 + its length bytes) exceeds the
    server's max_handshake_message."""
    assert refusal(ServerConfig, psk_store={b"i" * (MAX_PSK_LENGTH + 1): KEY},
                   max_handshake_message=70000) == (
        f"an identity in psk_store is longer than {MAX_PSK_LENGTH} bytes"
    )
    longest = b"i" * 16382
    assert ServerConfig(psk_store={longest: KEY}).psk_store == {longest: KEY}
    assert refusal(ServerConfig, psk_store={longest + b"i": KEY}) == (
        "an identity in psk_store is 16383 bytes; at most 16382 fit max_handshake_message=16384 "
        "(its ClientKeyExchange has 2 more bytes): raise max_handshake_message to at least 16385"
    )
    widest = b"i" * MAX_PSK_LENGTH
    assert ServerConfig(psk_store={widest: KEY}, max_handshake_message=MAX_PSK_LENGTH + 2)


def test_an_identity_given_as_str_and_as_bytes_is_refused() -> None:
    """{"a": K1, b"a": K2} is one identity on the wire: the last key silently won."""
    assert refusal(ServerConfig, psk_store={"dev\n1": KEY, b"dev\n1": bytes(16)}) == (
        "psk_store has the identity b'dev\\n1' twice, as str and as bytes: keep one"
    )
    long_text = "é" * 40  # 80 bytes of UTF-8: shown cut after 64
    assert refusal(ServerConfig, psk_store={long_text.encode(): KEY, long_text: KEY}) == (
        f"psk_store has the identity {long_text.encode()[:64]!r}... (80 bytes) twice, as str "
        "and as bytes: keep one"
    )


def test_each_modes_credentials_are_refused_in_the_others() -> None:
    assert refusal(ClientConfig, **PSK_CLIENT, raw_public_key=SERVER_KEY) == (
        "raw_public_key is for raw-public-key mode: add server_public_keys"
    )
    assert refusal(ClientConfig, **PSK_CLIENT, certificate=CERTIFIED) == (
        "certificate is for certificate mode: add trust_anchors"
    )
    for extra in ({"cached_server_chain": [LEAF.der]}, {"indicate_trusted_cas": True},
                  {"certificate_urls": ["http://ca.example/leaf.der"]}):
        assert refusal(ClientConfig, **PSK_CLIENT, **extra) == X509_EXTRAS
        assert refusal(ClientConfig, server_public_keys=[SERVER_KEY.spki], **extra) == (
            X509_EXTRAS
        )
        ClientConfig(**X509_CLIENT, certificate=CERTIFIED, **extra)


def test_certificates_given_as_pem_are_kept_as_der_and_junk_is_named() -> None:
    config = ClientConfig(trust_anchors=[ANCHOR.pem], cached_server_chain=[LEAF.pem])
    assert config.trust_anchors == (ANCHOR.der,)
    assert config.cached_server_chain == (LEAF.der,)
    server = ServerConfig(certificates=[CERTIFIED], client_trust_anchors=[ANCHOR.pem])
    assert server.client_trust_anchors == (ANCHOR.der,)
    for setting in ("trust_anchors", "cached_server_chain"):
        given = {"trust_anchors": [ANCHOR.der], setting: [b"junk"]}
        assert refusal(ClientConfig, **given) == (
            f"{setting}: not a PEM or DER X.509 certificate"
        )
    assert refusal(ClientConfig, psk_identity="d", psk=5) == "psk must be bytes, got int"
    assert refusal(ClientConfig, **PSK_CLIENT, server_name=b"gw.example") == (
        "server_name must be a DNS name or an IP address (a str)"
    )


def test_certificate_urls_are_strings_one_per_certificate() -> None:
    url = "http://ca.example/leaf.der"
    config = ClientConfig(**X509_CLIENT, certificate=CERTIFIED, certificate_urls=[url])
    assert config.certificate_urls == (url,)
    assert refusal(ClientConfig, **X509_CLIENT, certificate=CERTIFIED, certificate_urls=url) == (
        "certificate_urls must be a list of URL strings"
    )
    assert refusal(ClientConfig, **X509_CLIENT, certificate=CERTIFIED,
                   certificate_urls=[url.encode()]) == (
        "certificate_urls must be a list of URL strings"
    )
    assert refusal(ClientConfig, **X509_CLIENT, certificate_urls=[url]) == (
        URLS_PER_CERTIFICATE.format(0, 1)
    )
    assert refusal(ClientConfig, **X509_CLIENT, certificate=CERTIFIED,
                   certificate_urls=[url, url]) == URLS_PER_CERTIFICATE.format(1, 2)


@pytest.mark.parametrize(("urls", "reason"), [
    (["http://ex\u00e4mple/c"], "certificate_urls: URL 1 must be printable ASCII without "
                                 "spaces, not 'ä' at character 10 (RFC 6066 §5)"),
    (["http://ca.example/c\nx"], "URL 1 must be printable ASCII without spaces, not '\\n' at "
                                 "character 20"),
    (["http://ca.example/c", "http://ca.example/a c"], "URL 2 must be printable ASCII without "
                                                       "spaces, not ' ' at character 20"),
    ([""], "certificate_urls: URL 1 of 0 bytes outside 1..65535 (RFC 6066 §5)"),
    (["http://ca.example/" + "x" * 70_000], "URL 1 of 70018 bytes outside 1..65535"),
    (["http://ca.example/" + "x" * 40_000] * 2, "certificate_urls: url_and_hash_list of 80082 "
                                                "bytes outside 1..65535 (RFC 6066 §5)"),
])
def test_certificate_urls_a_certificate_url_cannot_carry_are_refused(
    urls: list[str], reason: str
) -> None:
    """RFC 6066 §5: url<1..2^16-1> (printable ASCII here) in url_and_hash_list<1..2^16-1>:
    refused at construction, not in the middle of a handshake, by the CertificateURL encoder's
    own rules; the URL is named by its number, never shown (it may hold user information)."""
    certified = CERTIFIED if len(urls) == 1 else CHAIN_CERTIFIED
    message = refusal(ClientConfig, **X509_CLIENT, certificate=certified, certificate_urls=urls)
    assert reason in message
    assert len(message) < 200
    assert not any(url and url in message for url in urls)


def test_fragment_length_and_chain_depth_edges() -> None:
    for length in (512, 4096, None):
        assert ClientConfig(**PSK_CLIENT, max_fragment_length=length).max_fragment_length == length
    assert refusal(ClientConfig, **PSK_CLIENT, max_fragment_length=513) == (
        "max_fragment_length must be 512, 1024, 2048 or 4096, got 513"
    )
    for role, base in ((ClientConfig, X509_CLIENT), (ServerConfig, {"certificates": [CERTIFIED]})):
        for depth in (0, MAX_CHAIN_DEPTH_LIMIT):
            assert role(**base, max_chain_depth=depth).max_chain_depth == depth
        for depth in (-1, MAX_CHAIN_DEPTH_LIMIT + 1, 2.0):
            assert refusal(role, **base, max_chain_depth=depth) == (
                f"max_chain_depth must be an integer from 0 to {MAX_CHAIN_DEPTH_LIMIT}, "
                f"got {depth!r}"
            )


def test_an_identity_with_no_utf8_form_is_refused_in_one_line() -> None:
    """A str with a lone surrogate (what os.fsdecode makes of undecodable bytes) raised
    UnicodeEncodeError from inside the configuration."""
    assert refusal(ClientConfig, psk_identity="dev\udcff", psk=KEY) == (
        "psk_identity is a str with no UTF-8 form (a lone surrogate at index 3): give the "
        "identity as bytes"
    )
    assert refusal(ServerConfig, psk_store={"\udcff": KEY}) == (
        "an identity in psk_store is a str with no UTF-8 form (a lone surrogate at index 0): "
        "give the identity as bytes"
    )


def test_server_credentials_and_what_needs_them() -> None:
    assert refusal(ServerConfig) == (
        "server needs credentials: psk_store or psk_lookup (PSK), raw_public_key (raw public "
        "keys) or certificates (X.509)"
    )
    assert refusal(ServerConfig, psk_store={}) == (
        "server needs credentials (psk_store is empty): psk_store or psk_lookup (PSK), "
        "raw_public_key (raw public keys) or certificates (X.509)"
    )
    assert refusal(ServerConfig, **PSK_SERVER, psk_lookup=lambda identity: None) == (
        "psk_store and psk_lookup are both given: give one (psk_lookup would be asked for every "
        "identity and psk_store never read)"
    )
    ServerConfig(psk_store={}, certificates=[CERTIFIED])  # certificates only
    ServerConfig(psk_lookup=lambda identity: None)
    ServerConfig(raw_public_key=SERVER_KEY)
    ServerConfig(certificates=[CERTIFIED])
    needs_key = "client_public_keys needs raw_public_key (the server's own key)"
    assert refusal(ServerConfig, **PSK_SERVER, client_public_keys=[SERVER_KEY.spki]) == needs_key
    assert refusal(ServerConfig, **PSK_SERVER, client_key_lookup=lambda key: True) == needs_key
    assert refusal(ServerConfig, **PSK_SERVER, client_trust_anchors=[ANCHOR.der]) == (
        "client_trust_anchors needs certificates (the server's own chain)"
    )
    assert refusal(ServerConfig, **PSK_SERVER, client_trust_anchors=[b"junk"]) == (
        "client_trust_anchors: not a PEM or DER X.509 certificate"
    )
    # Alone, with no credential of the server's: what they need, not "server needs
    # credentials" (probe CA).
    assert refusal(ServerConfig, client_public_keys=[SERVER_KEY.spki]) == needs_key
    assert refusal(ServerConfig, client_trust_anchors=[ANCHOR.der]) == (
        "client_trust_anchors needs certificates (the server's own chain)"
    )


def test_a_client_credential_without_its_mode_names_what_it_needs() -> None:
    """ClientConfig(certificate=...) without trust_anchors said "give exactly one of ..." of
    three modes (probe CA): the mode the credential is for is known, so is what it lacks."""
    assert refusal(ClientConfig, certificate=CERTIFIED) == (
        "certificate needs trust_anchors (the CAs or certificates to check the server's chain "
        "with)"
    )
    assert refusal(ClientConfig, raw_public_key=SERVER_KEY) == (
        "raw_public_key needs server_public_keys (the server's raw public keys or their "
        "SHA-256)"
    )
    assert refusal(ClientConfig) == EXACTLY_ONE_MODE


SERVER_EDGES = [
    ("cookie_rotation", 0, "cookie_rotation must be > 0 seconds, got 0", 0.5),
    ("cookie_secret", bytes(15), "cookie_secret must be at least 16 random bytes (32 recommended)",
     bytes(16)),
    ("session_cache_size", -1, "session_cache_size must be an integer >= 0 (0: no resumption)",
     0),
    ("session_cache_size", 1.0, "session_cache_size must be an integer >= 0 (0: no resumption)",
     1),
    ("session_lifetime", 0, "session_lifetime must be > 0 seconds, got 0", 0.5),
    ("idle_timeout", 0, "idle_timeout must be > 0 seconds (or None: never), got 0", 0.5),
    ("idle_timeout", -1, "idle_timeout must be > 0 seconds (or None: never), got -1", None),
    ("certificate_url_size_limit", 0, "certificate_url_size_limit must be at least 1 byte, got 0",
     1),
    ("certificate_url_timeout", 0, "certificate_url_timeout must be > 0 seconds, got 0", 0.5),
]


@pytest.mark.parametrize(("setting", "refused", "message", "accepted"), SERVER_EDGES)
def test_server_settings_at_their_edges(
    setting: str, refused: object, message: str, accepted: object
) -> None:
    assert refusal(ServerConfig, **PSK_SERVER, **{setting: refused}) == message
    assert getattr(ServerConfig(**PSK_SERVER, **{setting: accepted}), setting) == accepted


def test_the_caps_of_associations_and_handshakes_stand_apart() -> None:
    """Half-open handshakes count on top of the established associations (`max_connections`
    caps only those): each cap is at least 1, neither bounds the other. A smaller
    max_connections than the default max_handshakes (256) was refused, naming a setting the
    user had not set."""
    assert refusal(ServerConfig, **PSK_SERVER, max_connections=0, max_handshakes=1) == (
        "max_connections must be at least 1"
    )
    assert refusal(ServerConfig, **PSK_SERVER, max_handshakes=0) == (
        "max_handshakes must be at least 1"
    )
    config = ServerConfig(**PSK_SERVER, max_connections=10)
    assert (config.max_connections, config.max_handshakes) == (10, ServerConfig.max_handshakes)
    assert ServerConfig(**PSK_SERVER, max_connections=8, max_handshakes=9).max_handshakes == 9
    assert ServerConfig(**PSK_SERVER, max_connections=1, max_handshakes=1).max_handshakes == 1
    assert refusal(ServerConfig, **PSK_SERVER, max_handshakes_per_host=0) == (
        "max_handshakes_per_host must be at least 1"
    )
    # Above max_handshakes (the default 64 beside a smaller one): no cap of its own, no error.
    assert ServerConfig(**PSK_SERVER, max_handshakes=2).max_handshakes_per_host == 64


# -- types: every setting's type is checked when the configuration is built -----------------------

#: Wrong-typed values of the settings both roles share: (setting, value, message).
COMMON_TYPE_MISTAKES = [
    # Once accepted, then an AttributeError out of connect (leaking its socket).
    ("retransmit", 2.0, "retransmit must be a RetransmitPolicy, got float"),
    ("handshake_timeout", "5", "handshake_timeout must be a number of seconds, got str"),
    ("handshake_timeout", True, "handshake_timeout must be a number of seconds, got bool"),
    ("require_extended_master_secret", 1,
     "require_extended_master_secret must be True or False, got int"),
    ("max_handshake_message", "16384", "max_handshake_message must be an integer, got str"),
    ("receive_queue", "10", "receive_queue must be an integer, got str"),
    ("receive_queue", 2.5, "receive_queue must be an integer, got float"),
    ("keylog", "keys.log", "keylog must be callable (or None), got str"),
    ("keylog_file", b"keys.log",
     "keylog_file must be a str or os.PathLike path (or None), got bytes"),
    ("heartbeat", "yes", "heartbeat must be True or False, got str"),
    ("answer_heartbeats", None, "answer_heartbeats must be True or False, got None"),
    ("keepalive_interval", "30",
     "keepalive_interval must be a number of seconds (or None), got str"),
    ("mtu", True, f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got True"),
    ("mtu", "big", f"mtu must be an integer from {MIN_MTU} to {MAX_MTU}, got str"),
    ("integrity_limit", True, "integrity_limit must be a whole number >= 1 (or None), got True"),
]
HEX_KEY = KEY.hex()
HEX_HINT = " (a hex key? bytes.fromhex(...))"
CLIENT_TYPE_MISTAKES = [
    # Once accepted, then an AttributeError in the event loop, and connect never returned.
    ("retry", 3, "retry must be a RetryPolicy (or None), got int"),
    ("psk", HEX_KEY, f"psk must be bytes, got str{HEX_HINT}"),
    ("server_public_keys", SERVER_KEY.spki_sha256.hex(),
     "server_public_keys must be a list of public keys or their SHA-256 (bytes or str), got str"),
    ("raw_public_key", SERVER_KEY.to_pem(),
     "raw_public_key must be a PrivateKey (or None), got bytes"),
    ("trust_anchors", ANCHOR.der,
     "trust_anchors must be a list of certificates (DER or PEM bytes), got bytes"),
    ("certificate", LEAF.der, "certificate must be a CertifiedKey (or None), got bytes"),
    ("max_fragment_length", 512.0,
     "max_fragment_length must be 512, 1024, 2048 or 4096, got 512.0"),
    ("max_fragment_length", "512", "max_fragment_length must be 512, 1024, 2048 or 4096, got str"),
    ("max_chain_depth", True,
     f"max_chain_depth must be an integer from 0 to {MAX_CHAIN_DEPTH_LIMIT}, got True"),
    ("wall_clock", 0.0, "wall_clock must be callable, got float"),
    ("cached_server_chain", 5,
     "cached_server_chain must be a list of certificates (DER or PEM bytes), got int"),
    ("indicate_trusted_cas", "no", "indicate_trusted_cas must be True or False, got str"),
]
SERVER_TYPE_MISTAKES = [
    ("psk_store", [(b"device", KEY)],
     "psk_store must be a mapping of identity to key (or None), got list of tuple"),
    ("psk_store", {b"device": HEX_KEY}, f"a psk in psk_store must be bytes, got str{HEX_HINT}"),
    ("psk_store", {5: KEY}, "an identity in psk_store must be bytes or str, got int"),
    # Once accepted: psk_lookup failed, and a raw_public_key raised, at every ClientHello.
    ("psk_lookup", b"not callable", "psk_lookup must be callable (or None), got bytes"),
    ("raw_public_key", b"server.pem", "raw_public_key must be a PrivateKey (or None), got bytes"),
    ("client_public_keys", SERVER_KEY.spki,
     "client_public_keys must be a list of public keys or their SHA-256 (bytes or str), got bytes"),
    ("client_key_lookup", True, "client_key_lookup must be callable (or None), got bool"),
    ("certificates", CERTIFIED, "certificates must be a list of CertifiedKey, got CertifiedKey"),
    ("certificates", [LEAF.der], "certificates must be a list of CertifiedKey, got list of bytes"),
    ("client_trust_anchors", ANCHOR.pem,
     "client_trust_anchors must be a list of certificates (DER or PEM bytes), got bytes"),
    ("certificate_fetcher", "http://ca.example/",
     "certificate_fetcher must be callable (or None), got str"),
    ("certificate_url_size_limit", 16384.0,
     "certificate_url_size_limit must be an integer, got float"),
    ("certificate_url_timeout", "10",
     "certificate_url_timeout must be a number of seconds, got str"),
    ("wall_clock", None, "wall_clock must be callable, got None"),
    ("cookie_exchange", 0, "cookie_exchange must be True or False, got int"),
    ("cookie_rotation", "300", "cookie_rotation must be a number of seconds, got str"),
    ("max_connections", "10", "max_connections must be an integer, got str"),
    ("max_handshakes", 2.0, "max_handshakes must be an integer, got float"),
    ("max_handshakes_per_host", "8", "max_handshakes_per_host must be an integer, got str"),
    ("cookie_secret", "x" * 32, "cookie_secret must be bytes (or None), got str"),
    ("session_cache_size", True, "session_cache_size must be an integer >= 0 (0: no resumption)"),
    ("session_lifetime", "3600", "session_lifetime must be a number of seconds, got str"),
    ("server_name_lookup", {}, "server_name_lookup must be callable (or None), got dict"),
    ("reject_unknown_server_names", "yes",
     "reject_unknown_server_names must be True or False, got str"),
    ("idle_timeout", "30", "idle_timeout must be a number of seconds (or None), got str"),
]
TYPE_MISTAKES = [
    *[(role, *mistake) for role in (ClientConfig, ServerConfig)
      for mistake in COMMON_TYPE_MISTAKES],
    *[(ClientConfig, *mistake) for mistake in CLIENT_TYPE_MISTAKES],
    *[(ServerConfig, *mistake) for mistake in SERVER_TYPE_MISTAKES],
]


@pytest.mark.parametrize(
    ("role", "setting", "value", "message"),
    TYPE_MISTAKES,
    ids=[f"{role.__name__}.{setting}-{type(value).__name__}"
         for role, setting, value, _ in TYPE_MISTAKES],
)
def test_a_wrong_type_is_refused_in_one_line_naming_the_setting(
    role: Any, setting: str, value: object, message: str
) -> None:
    base = PSK_CLIENT if role is ClientConfig else PSK_SERVER
    assert refusal(role, **{**base, setting: value}) == message


@pytest.mark.parametrize(("value", "shown"), [
    (10**5000, "an int of 16610 bits"),  # its repr raises ValueError (4300 digits at most)
    (2**64, "an int of 65 bits"),
    (2**64 - 1, str(2**64 - 1)),
], ids=["10**5000", "2**64", "2**64-1"])
def test_a_huge_number_is_told_by_its_size_in_one_line(value: int, shown: str) -> None:
    assert refusal(ClientConfig, **{**PSK_CLIENT, "mtu": value}) == (
        f"mtu must be an integer from 128 to 65507, got {shown}"
    )


async def _async_callback(*args: object) -> None:
    return None


class _AsyncCall:
    async def __call__(self, *args: object) -> None:
        return None


CALLBACKS = [
    (ClientConfig, "keylog"), (ClientConfig, "wall_clock"), (ServerConfig, "keylog"),
    (ServerConfig, "wall_clock"), (ServerConfig, "psk_lookup"),
    (ServerConfig, "client_key_lookup"), (ServerConfig, "server_name_lookup"),
    (ServerConfig, "certificate_fetcher"),
]


@pytest.mark.parametrize(("role", "setting"), CALLBACKS,
                         ids=[f"{role.__name__}.{setting}" for role, setting in CALLBACKS])
@pytest.mark.parametrize(
    "callback",
    [_async_callback, _AsyncCall(), functools.partial(_async_callback, 1),
     functools.partial(_AsyncCall())],
    ids=["async-def", "async-__call__", "partial", "partial-of-object"],
)
def test_an_async_callback_is_refused_in_one_line(role: Any, setting: str,
                                                  callback: object) -> None:
    """The handshake calls these synchronously: an async one only made a coroutine (never
    awaited: a psk_lookup that failed every handshake, a key log silently lost), so it is
    refused here, as serve refuses async DatagramHandler methods."""
    base = PSK_CLIENT if role is ClientConfig else PSK_SERVER
    assert refusal(role, **{**base, setting: callback}) == (
        f"{setting} is async def: it is called synchronously (never awaited), so it would only "
        "make a coroutine: make it a plain def"
    )


def test_an_empty_psk_identity_is_refused_in_one_line() -> None:
    """An empty identity names no one (RFC 4279 §5: the identity is how the server picks the
    key): refused as a --psk-file line ":HEX" is, where both were accepted."""
    for identity in (b"", ""):
        assert refusal(ClientConfig, psk_identity=identity, psk=KEY) == (
            "psk_identity is empty: give the identity the server knows the key by "
            "(RFC 4279 §5)"
        )
        assert refusal(ServerConfig, psk_store={b"dev": KEY, identity: KEY}) == (
            "an identity in psk_store is empty: give the identity the client names its key "
            "by (RFC 4279 §5)"
        )


def test_every_setting_of_both_roles_has_its_type_checked() -> None:
    """No setting takes just anything: a field added without a check fails here."""
    for role, base in ((ClientConfig, PSK_CLIENT), (ServerConfig, PSK_SERVER)):
        for setting in (f.name for f in dataclasses.fields(role)):
            if setting == "certificate_urls":  # only in certificate mode, checked there
                given = {**X509_CLIENT, "certificate": CERTIFIED, setting: object()}
            else:
                given = {**base, setting: object()}
            assert refusal(role, **given).startswith(f"{setting} must be ")
    for policy, prefix in ((RetransmitPolicy, "retransmit"), (RetryPolicy, "retry")):
        for setting in (f.name for f in dataclasses.fields(policy)):
            assert refusal(policy, **{setting: object()}).startswith(f"{prefix} {setting} must be ")


def test_policies_refuse_wrong_types_and_bools() -> None:
    assert refusal(RetransmitPolicy, initial="1") == (
        "retransmit initial must be a number of seconds, got str"
    )
    assert refusal(RetransmitPolicy, maximum=None) == (
        "retransmit maximum must be a number of seconds, got None"
    )
    assert refusal(RetransmitPolicy, maximum=float("nan")) == (
        "retransmit maximum (nan s) must be >= initial (1.0 s)"
    )
    assert refusal(RetryPolicy, initial="1") == "retry initial must be a number of seconds, got str"
    assert refusal(RetryPolicy, maximum=True) == (
        "retry maximum must be a number of seconds, got bool"
    )
    assert refusal(RetryPolicy, attempts=True) == "retry attempts must be an integer >= 1, got True"
    # Whole numbers are seconds too.
    assert RetransmitPolicy(initial=2, maximum=8) == RetransmitPolicy(2.0, 8.0)


def test_the_right_types_in_their_other_forms_are_accepted(tmp_path: Path) -> None:
    config = ClientConfig(
        psk_identity="device", psk=memoryview(KEY), handshake_timeout=5,
        keylog_file=tmp_path / "keys.log",
        retry=RetryPolicy(), max_fragment_length=None, keepalive_interval=None,
    )
    assert type(config.psk) is bytes and config.psk == KEY
    assert config.handshake_timeout == 5
    assert isinstance(config.keylog, FileKeyLog)
    assert config.keylog.path == str(tmp_path / "keys.log")
    server = ServerConfig(psk_store={"device": bytearray(KEY)}, certificates=[CERTIFIED],
                          idle_timeout=None, cookie_secret=bytes(32), session_lifetime=60)
    assert server.lookup_psk(b"device") == KEY and type(server.lookup_psk(b"device")) is bytes
    assert server.certificates == (CERTIFIED,)
    assert ServerConfig(psk_lookup=lambda identity: None, client_public_keys=()).has_psk


def test_a_psk_in_text_is_refused_whatever_it_holds() -> None:
    """Keys are entered as text or in hex (RFC 4279 §5.3): the caller says which by giving
    bytes (`b"..."`, `.encode()` or `bytes.fromhex(...)`); a str identity stays its UTF-8."""
    for text in (HEX_KEY, "a passphrase"):
        assert refusal(ClientConfig, psk_identity="device", psk=text) == (
            f"psk must be bytes, got str{HEX_HINT}"
        )
        assert refusal(ServerConfig, psk_store={"device": text}) == (
            f"a psk in psk_store must be bytes, got str{HEX_HINT}"
        )
    assert ClientConfig(psk_identity="device", psk=bytes.fromhex(HEX_KEY)).psk == KEY


@pytest.mark.req("EXT-2")
def test_for_host_sends_the_host_as_server_name_in_every_mode() -> None:
    """`for_host` (what `connect`, perf and the CoAP client apply): a PSK or raw-key client
    reached by name sends it too (a server may choose its credentials by it), an IP address
    never; a configuration naming its server already is returned as it is."""
    psk = ClientConfig(psk_identity=b"dev", psk=bytes(16))
    raw = ClientConfig(server_public_keys=[SERVER_KEY.spki])
    for config in (psk, raw):
        assert config.for_host("GW.example").sni_name == "gw.example"
        assert config.for_host("192.0.2.1").sni_name is None
        assert dataclasses.replace(config.for_host("gw.example"), server_name=None) == config
    named = ClientConfig(**X509_CLIENT)
    assert named.for_host("other.example") is named


def test_for_host_gives_a_certificate_configuration_without_a_server_name_the_host() -> None:
    """In certificate mode without a server_name, the server's certificate is checked against
    the host (RFC 7925 §4.4.1, RFC 6125 §6.2), and a DNS name is sent as server_name (RFC 6066
    §3), an IP address never; the rest of the configuration is kept."""
    anchored = ClientConfig(trust_anchors=[ANCHOR.der], mtu=600)
    assert anchored.server_name is None
    for host, sent in [("GW.example.", "gw.example"), ("192.0.2.1", None), ("2001:db8::1", None)]:
        config = anchored.for_host(host)
        assert (config.server_name, config.sni_name) == (host, sent)
        assert dataclasses.replace(config, server_name=None) == anchored
    assert anchored.server_name is None  # the configuration given is left as it was


def test_for_host_gives_one_configuration_per_host() -> None:
    """`for_host` runs per connection (`chaincache.for_server`, the CoAP client): a host's
    configuration is made once, so its trust store and the chains it validated are shared by
    every connection to that host."""
    anchored = ClientConfig(trust_anchors=[ANCHOR.der])
    first = anchored.for_host("gw.example")
    again = anchored.for_host("gw.example")
    assert again is first and again.trust_store is first.trust_store
    assert anchored.for_host("other.example").server_name == "other.example"
    assert anchored.for_host("gw.example") is first
    # 64 hosts are kept; a 65th drops them all.
    for n in range(62):
        anchored.for_host(f"host{n}.example")
    assert anchored.for_host("gw.example") is first
    anchored.for_host("one-more.example")
    assert anchored.for_host("gw.example") is not first


def deny_reading(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os.open refusing O_RDWR with EACCES, as for a write-only file (mode 0200) of a user
    who is not root (root reads whatever the mode); the flags of every call, in order."""
    real_open = os.open
    calls: list[int] = []

    def write_only(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        calls.append(flags)
        if flags & os.O_ACCMODE == os.O_RDWR:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", write_only)
    return calls


@pytest.mark.req("SEC-1")
def test_a_write_only_key_log_is_appended_to_without_the_last_byte_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key log its owner made write-only (mode 0200) was refused since it is opened O_RDWR
    to read its last byte, "cannot be written: Permission denied" (probe AU), by the API's
    `keylog_file` and at startup by --keylog: it is opened write-only then, without the
    check that a line starts on a line of its own (which needs reading)."""
    path = tmp_path / "keys.log"
    path.write_text(f"{LINES[0]}\n{LINES[1][:100]}")
    path.chmod(0o200)
    calls = deny_reading(monkeypatch)
    args = argparse.Namespace(keylog=str(path))
    assert prepare_keylog(args, {}) is False  # accepted at startup
    FileKeyLog(path)(LINES[2])
    assert [flags & os.O_ACCMODE for flags in calls] == [os.O_RDWR, os.O_WRONLY] * 2
    monkeypatch.undo()
    assert path.read_text("ascii") == f"{LINES[0]}\n{LINES[1][:100]}{LINES[2]}\n"


def deny_creating(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """os.open refusing every open of `path` with EACCES, as some kernels refuse O_CREAT on
    another user's symlink in a sticky directory before O_NOFOLLOW could (probe CD: even with
    fs.protected_symlinks 0), whatever user the test runs as."""
    real_open = os.open

    def denied(name: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if os.fspath(name) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        return real_open(name, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", denied)


def keylog_refusal(path: Path) -> str:
    """What `--keylog PATH` is refused with when the command starts (a `UsageError`)."""
    with pytest.raises(UsageError) as refused:
        prepare_keylog(argparse.Namespace(keylog=str(path)), {})
    return str(refused.value)


@pytest.mark.req("SEC-1")
def test_a_key_log_symlink_the_kernel_refuses_with_eacces_is_named_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symlink another user planted in /tmp as --keylog was "cannot write --keylog ...:
    Permission denied" (probe CD), not the symlink refusal: that kernel's open gave EACCES,
    not ELOOP. Either error on a symlink is the symlink's refusal now, at startup and at each
    line; EACCES on a regular file stays the permission error it is."""
    link = tmp_path / "keys.log"
    keylog = FileKeyLog(link)
    link.symlink_to(tmp_path / "theirs.log")
    deny_creating(monkeypatch, link)
    assert keylog_refusal(link) == f"--keylog {link} is a symbolic link; name the file itself"
    with pytest.raises(KeyLogFailed) as failed:
        keylog(LINES[0])
    assert str(failed.value) == f"key log {str(link)!r} is a symbolic link; name the file itself"
    link.unlink()
    link.write_text("")
    link.chmod(0o600)
    assert keylog_refusal(link) == f"cannot write --keylog {link}: Permission denied"
    assert not (tmp_path / "theirs.log").exists()


@pytest.mark.req("SEC-1")
def test_eacces_on_a_key_log_that_is_no_symlink_stays_the_permission_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a symlink makes EACCES the refusal of what lstat finds there (`_maybe_planted`):
    EACCES on a regular file with a problem of its own (mode 0644, as another user's file
    might be) stays "Permission denied", at startup and at each line, and so does EACCES on a
    key log that is not there yet (a directory this user cannot write), without asking lstat
    for the mode of a file that does not exist."""
    shared = tmp_path / "shared.log"
    missing = tmp_path / "missing.log"
    keylogs = [FileKeyLog(shared), FileKeyLog(missing)]  # checked while nothing is there
    shared.write_text("")
    shared.chmod(0o644)
    for path, keylog in zip((shared, missing), keylogs, strict=True):
        deny_creating(monkeypatch, path)
        assert keylog_refusal(path) == f"cannot write --keylog {path}: Permission denied"
        with pytest.raises(KeyLogFailed) as failed:
            keylog(LINES[0])
        assert "Permission denied" in str(failed.value), failed.value
        monkeypatch.undo()
    assert not missing.exists()
    assert shared.read_text() == ""


@pytest.mark.req("SEC-1")
def test_a_key_log_symlink_another_user_planted_in_a_shared_directory_is_refused(
    give_away: Callable[[Path], str], in_shared_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    """The same for real: another user's symlink as --keylog in a sticky world-writable
    directory (nobody's as root, where this kernel's open gives EACCES; otherwise ELOOP) is
    refused as a symlink, and nothing is made where it points."""
    link = in_shared_dir("planted.log")
    link.symlink_to(tmp_path / "theirs.log")
    give_away(link)
    assert keylog_refusal(link) == f"--keylog {link} is a symbolic link; name the file itself"
    assert not (tmp_path / "theirs.log").exists()


#: A process writing LINES[0] to the write-only key log argv[1] as user nobody.
AS_NOBODY = f"""
import codecs, os, sys
from iotdtls.config import FileKeyLog
import iotdtls._failures
codecs.lookup("ascii")
os.setgid(65534)
os.setuid(65534)
FileKeyLog(sys.argv[1])({LINES[0]!r})
"""


@pytest.mark.req("SEC-1")
def test_a_real_write_only_key_log_of_its_owner_is_appended_to(tmp_path: Path) -> None:
    """Mode 0200 for real: as user nobody when run as root (which reads whatever the mode)."""
    path = tmp_path / "keys.log"
    path.write_text("")
    path.chmod(0o200)
    if os.geteuid() == 0:
        directory = Path(tempfile.mkdtemp())  # not in tmp_path: its parents are root's 0700
        try:
            os.chmod(directory, 0o755)
            nobody = directory / "keys.log"
            nobody.write_text("")
            os.chown(nobody, 65534, 65534)
            nobody.chmod(0o200)
            done = subprocess.run([sys.executable, "-c", AS_NOBODY, str(nobody)],
                                  capture_output=True, text=True, timeout=30, check=False)
            assert (done.returncode, done.stderr) == (0, ""), done.stderr
            assert nobody.read_text("ascii") == f"{LINES[0]}\n"
        finally:
            shutil.rmtree(directory)
    else:
        FileKeyLog(path)(LINES[0])
        path.chmod(0o600)
        assert path.read_text("ascii") == f"{LINES[0]}\n"


#: A process appending argv[2] key-log lines of its own (number argv[3]) to argv[1]: it says
#: "ready" once imported, then waits for a line on stdin (so that all start together).
APPENDER = """
import sys
from iotdtls.config import FileKeyLog
keylog = FileKeyLog(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for n in range(int(sys.argv[2])):
    keylog(f"CLIENT_RANDOM {int(sys.argv[3]):04x}{n:060x} " + "cd" * 48)
"""


def test_key_log_lines_appended_by_several_processes_at_once_are_whole_and_alone(
    tmp_path: Path,
) -> None:
    """Workers or generators appending at once got spurious empty lines (about 1 %, probe AU):
    the check of the file's last byte saw another process's line half appended, and started
    the line with a newline. Among our writers, the check and the write are one now (a lock):
    no empty line, no glued or cut line, every line there once."""
    path = tmp_path / "keys.log"
    writers, lines = 4, 5000
    children = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(lines), str(number)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for number in range(writers)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
    assert [child.wait(timeout=120) for child in children] == [0] * writers
    written = path.read_text("ascii").split("\n")
    assert written.pop() == ""
    assert sorted(written) == sorted(
        f"CLIENT_RANDOM {number:04x}{n:060x} " + "cd" * 48
        for number in range(writers) for n in range(lines)
    )


def test_a_key_log_locked_by_a_stopped_writer_is_appended_to_after_a_bounded_wait(
    tmp_path: Path,
) -> None:
    """The lock between writers is waited for a few dozen milliseconds at most: a writer
    stopped while holding it (SIGSTOP) never blocks the others' handshakes."""
    path = tmp_path / "keys.log"
    keylog = FileKeyLog(path)
    keylog(LINES[0])
    holder = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        writer = threading.Thread(target=keylog, args=(LINES[1],), daemon=True)
        started = time.monotonic()
        writer.start()
        writer.join(timeout=5.0)
        assert not writer.is_alive(), "blocked on the lock"
        assert time.monotonic() - started >= 0.04  # it did wait for the lock first
    finally:
        os.close(holder)
    assert path.read_text("ascii") == f"{LINES[0]}\n{LINES[1]}\n"


#: A process whose key log argv[1] fails at three handshakes in a row (its directory gone),
#: logging as the CLI does, then exits; the key log is gone by then (as the configuration
#: holding it often is).
FAILING_THRICE = """
import logging, os, sys
from iotdtls.config import FileKeyLog, KeyLogFailed
def run():
    keylog = FileKeyLog(sys.argv[1])
    os.rmdir(os.path.dirname(sys.argv[1]))
    for _ in range(3):
        try:
            keylog("CLIENT_RANDOM 00 11")
        except KeyLogFailed as exc:
            if exc.shown is not None:
                logging.getLogger("iotdtls").warning("%s", exc.shown)
logging.basicConfig(format="%(name)s: %(message)s")
run()
"""


def test_only_a_key_log_with_failures_not_logged_yet_is_held_until_they_are(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The process holds a `FileKeyLog` until its exit only while it has failures counted but
    not logged (to sum them up then): one whose failure was logged at once, or whose summary
    was logged (`log_unlogged_failures`), is let go with its configuration."""
    (tmp_path / "gone").mkdir()
    path = tmp_path / "gone" / "keys.log"
    gone = "cannot be written: No such file or directory"

    def fail(keylog: FileKeyLog) -> str | None:
        try:
            keylog("CLIENT_RANDOM 00 11")
        except KeyLogFailed as exc:
            return exc.shown
        raise AssertionError("the key log was written")

    logged_at_once, summed_up = FileKeyLog(path), FileKeyLog(path)
    (tmp_path / "gone").rmdir()
    assert fail(logged_at_once) == f"key log {str(path)!r} {gone}"
    held = weakref.ref(logged_at_once)
    del logged_at_once
    gc.collect()
    assert held() is None
    assert fail(summed_up) is not None and fail(summed_up) is None  # counted
    with caplog.at_level(logging.WARNING, logger="iotdtls"):
        summed_up.log_unlogged_failures()
    assert [r.getMessage() for r in caplog.records] == [
        f"key log {str(path)!r}: 1 more failure (the latest: {gone})"]
    held = weakref.ref(summed_up)
    del summed_up
    gc.collect()
    assert held() is None


def test_key_log_failures_not_summed_up_yet_are_when_the_process_ends(tmp_path: Path) -> None:
    """The failures after the first of a kind were summed up only at a later failure a minute
    on: a short run never said how many lines were lost (probe AU). The process says it as
    it ends."""
    (tmp_path / "gone").mkdir()
    path = tmp_path / "gone" / "keys.log"
    done = subprocess.run([sys.executable, "-c", FAILING_THRICE, str(path)],
                          capture_output=True, text=True, timeout=30, check=False)
    gone = "cannot be written: No such file or directory"
    assert (done.returncode, done.stderr.splitlines()) == (0, [
        f"iotdtls: key log {str(path)!r} {gone}",
        f"iotdtls: key log {str(path)!r}: 2 more failures (the latest: {gone})",
    ])


@pytest.mark.req("CRT-4")
def test_client_trust_anchors_says_the_client_is_named_by_an_eui64() -> None:
    """ServerConfig's words on client_trust_anchors said only "clients must present one": the
    leaf must also name the client by an EUI-64 (CRT-4), in a dNSName subjectAltName or else
    the CN, what `x509._client_eui64` requires (probe CA)."""
    source = inspect.getsource(ServerConfig)
    comment = source[: source.index("    client_trust_anchors: Sequence[bytes]")]
    words = " ".join(line.strip().removeprefix("#:").strip()
                     for line in comment.splitlines()[-7:])
    assert "whose leaf names the client by an EUI-64 (CRT-4" in words
    assert "in a dNSName subjectAltName, or else in the subject's most specific CN" in words
    assert "is bad_certificate" in words
    assert "naming the client by an EUI-64" in " ".join((ServerConfig.__doc__ or "").split())
