"""Helpers for tests that talk to real DTLS peers (OpenSSL, GnuTLS): ports, processes, PKI.

This is a helper module, not a test file. ``tests/`` is a package: tests import it as
``from tests import peers`` or ``from tests.peers import ...`` (pytest puts the project
root on ``sys.path``). It imports nothing from ``tests``, so a tool may also put ``tests/``
itself on ``sys.path`` and ``import peers`` (tools/record_vectors.py does).

What it gives (see /work/shared/peers.md for the peers and their pitfalls):

- `free_udp_port()`: a fresh loopback UDP port, never the same twice in one process.
- `holds_within(condition, timeout)`: poll a condition until it holds or the time is up
  (`tests.aio_support.eventually` for a test with an event loop).
- `TakesAnyAddress`: a socket class to patch in for `socket.socket`, which "binds" any
  address (a link-local one on a machine without it) and names it as its own.
- `link_local_addresses()`: this machine's link-local IPv6 addresses and their interfaces.
- `require_peer(name)`: `pytest.skip` when an executable or Python module is missing (under
  ``CI=true`` the conftest turns that skip into a failure, on purpose).
- `PeerProcess`: a peer command in its own session (process group) with a hard time bound,
  output collected by a thread, `wait_for_output()`, `write_line()`, and on exit SIGTERM then
  SIGKILL to its process group, by pid.
- Command builders returning unstarted `PeerProcess` objects: `openssl_psk_server`,
  `openssl_psk_client`, `openssl_cert_server`, `openssl_cert_client`, `gnutls_psk_server`,
  `gnutls_psk_client`, `gnutls_cert_server`, `gnutls_cert_client`; `write_psk_file`.
- `make_test_pki(dir)`: a P-256 CA, a server certificate (SAN DNS:localhost, IP:127.0.0.1) and
  a client certificate (CN an EUI-64), all ECDSA-SHA256, plus the raw-public-key files.
- `NetNamespace` and the `netns` fixture: a private network namespace (root only).

gnutls-serv and network namespaces
----------------------------------
gnutls-serv has no bind option: it listens on 0.0.0.0 and ::. To keep every test strictly on
loopback, tests run it in a private network namespace (`NetNamespace`, ``ip netns add``;
checked to work here as root). A Python process cannot move itself into a namespace (no
``os.setns`` before 3.12, and the whole process would move), but a *thread* can: the
namespace's sockets are made by `NetNamespace.socket()`, which enters the namespace in a
short-lived helper thread (``setns(2)`` through ctypes affects only the calling thread),
creates the socket there, and the thread ends. A socket stays in the namespace it was
created in, so the test process keeps using it from any thread. That is the chosen way to run
OUR client (or `iotdtls.proxy.LossyProxy`, via ``socket_factory=ns.socket``) against a
gnutls-serv inside the namespace: no subprocess wrapper for our side, no listening socket on
the host's external interfaces, and the peers (gnutls-serv, gnutls-cli) run under
``ip netns exec`` through `NetNamespace.wrap()`. Where namespaces are not available
(not root), the `netns` fixture skips; the fallback for a manual run is gnutls-serv in the
host namespace, talking only to 127.0.0.1.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import datetime
import errno
import importlib.util
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# -- test credentials (peers.md) --------------------------------------------------------------

CLIENT_IDENTITY = "Client_identity"
PSK_HEX = "0102030405060708090a0b0c0d0e0f10"
PSK = bytes.fromhex(PSK_HEX)
LOCALHOST = "127.0.0.1"
CLIENT_EUI64 = "01-23-45-67-89-AB-CD-EF"

OPENSSL_PSK_CIPHER = "PSK-AES128-CCM8"
OPENSSL_ECDHE_CIPHER = "ECDHE-ECDSA-AES128-CCM8"
GNUTLS_PRIO_PSK = (
    "NONE:+VERS-DTLS1.2:+PSK:+AES-128-CCM-8:+AEAD:+COMP-NULL:+SIGN-ALL:+GROUP-SECP256R1"
)
GNUTLS_PRIO_EC = (
    "NONE:+VERS-DTLS1.2:+ECDHE-ECDSA:+AES-128-CCM-8:+AEAD:+COMP-NULL:+SIGN-ECDSA-SHA256"
    ":+GROUP-SECP256R1"
)
GNUTLS_PRIO_RPK = GNUTLS_PRIO_EC + ":+CTYPE-CLI-RAWPK:+CTYPE-SRV-RAWPK"

# Output lines that say a peer is ready / done with its handshake.
OPENSSL_SERVER_READY = r"ACCEPT"
OPENSSL_SERVER_HANDSHAKE_DONE = r"CIPHER is "
#: s_client prints its session block after a failed handshake too, with "Cipher is (NONE)".
OPENSSL_CLIENT_HANDSHAKE_DONE = r"Cipher is (?!\(NONE\))[A-Z0-9-]+"
GNUTLS_SERVER_READY = r"Waiting for connection"
GNUTLS_SERVER_HANDSHAKE_DONE = r"Accepted connection from"
GNUTLS_CLIENT_HANDSHAKE_DONE = r"- Simple Client Mode:"

# -- ports ------------------------------------------------------------------------------------

_port_lock = threading.Lock()
_handed_out: set[int] = set()
_port_counter = 0


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _udp_port_is_free(port: int) -> bool:
    """Free on 127.0.0.1 and on the wildcard address (gnutls-serv binds 0.0.0.0 and ::)."""
    for family, host in ((socket.AF_INET, LOCALHOST), (socket.AF_INET, "")):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def holds_within(condition: Callable[[], object], timeout: float) -> bool:
    """Poll `condition` every 10 ms until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


@contextlib.contextmanager
def answers_once_then_goes() -> Iterator[tuple[str, int]]:
    """The address of a UDP port that answers the first datagram (with 13 bytes no client
    takes for a record) and then closes, as a server that went away after its first answer:
    the client's retransmissions draw ICMP port-unreachable reports after it heard the port.
    The thread that answers is joined (bounded) on leaving."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((LOCALHOST, 0))
    peer.settimeout(5.0)
    address = peer.getsockname()

    def answer_once_and_go() -> None:
        with peer:
            _, client = peer.recvfrom(4096)
            peer.sendto(bytes(13), client)

    thread = threading.Thread(target=answer_once_and_go)
    thread.start()
    try:
        yield address
    finally:
        thread.join(10.0)


def free_udp_port() -> int:
    """Return a UDP port that is free now and was not handed out before in this process.

    Ports come from a counter walking the range below the kernel's ephemeral range (so the
    ports the kernel gives to ``bind(0)`` sockets, like clients' source ports, cannot take
    them), starting at an offset derived from the process id (so parallel test processes
    start far apart); each candidate is checked by binding it. If that range is exhausted,
    fall back to ``bind(0)``, still never handing out a port twice.
    """
    global _port_counter
    low, _ = _ephemeral_range()
    first, last = 20000, max(20000 + 1000, low - 1)
    span = last - first
    with _port_lock:
        for _ in range(512):
            candidate = first + (os.getpid() * 389 + _port_counter) % span
            _port_counter += 1
            if candidate not in _handed_out and _udp_port_is_free(candidate):
                _handed_out.add(candidate)
                return candidate
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((LOCALHOST, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free UDP port found")


class TakesAnyAddress(socket.socket):
    """A socket bound without the kernel (which binds a link-local address only on an
    interface that has it): it keeps the address it is given and names it as its own."""

    bound: Any = None

    def bind(self, address: Any) -> None:
        self.bound = address

    def getsockname(self) -> Any:
        return self.bound


def link_local_addresses() -> list[tuple[str, str]]:
    """(address, interface) of this machine's link-local IPv6 addresses (Linux; none
    elsewhere, or in a network namespace with only loopback)."""
    try:
        with open("/proc/net/if_inet6") as table:
            rows = [line.split() for line in table]
    except OSError:
        return []
    found = []
    for row in rows:
        address = ipaddress.IPv6Address(bytes.fromhex(row[0]))
        if address.is_link_local:
            found.append((str(address), row[5]))
    return found


class V6OnlyByDefault(socket.socket):
    """A socket made as on a host whose IPv6 sockets take no IPv4 unless told to (Linux with
    net.ipv6.bindv6only=1, the BSDs, Windows): IPV6_V6ONLY on from the start."""

    def __init__(self, family: int = -1, *args: Any, **kwargs: Any) -> None:
        super().__init__(family, *args, **kwargs)
        if self.family == socket.AF_INET6:
            self.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def v6only(sock: Any) -> int:
    """The IPV6_V6ONLY option of an IPv6 socket (or of a transport's socket)."""
    return int(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))


# -- peers ------------------------------------------------------------------------------------


def require_peer(executable_or_module: str) -> str:
    """Skip the test unless `executable_or_module` is an executable on PATH or an importable
    module; return the executable's path (or the module name)."""
    path = shutil.which(executable_or_module)
    if path is not None:
        return path
    if "/" not in executable_or_module and importlib.util.find_spec(executable_or_module):
        return executable_or_module
    pytest.skip(f"peer {executable_or_module!r} is not installed (run `make peers`)")


class PeerExited(AssertionError):
    """The peer process ended before printing what the test waited for."""


class PeerProcess:
    """A peer process in its own session, with a hard time bound and collected output.

    Use as a context manager: the process starts on ``__enter__`` and on ``__exit__`` (or
    `stop()`) its whole process group gets SIGTERM, then SIGKILL if it is still there after
    one second; everything is done by the pid recorded at start. stdout and stderr are merged
    and read by a thread into `output`.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        time_limit: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """Prepare (not start) `argv`; `env` entries are added to the current environment."""
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self.time_limit = time_limit
        self.env = dict(env or {})
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._output: list[str] = []
        self._cursor = 0
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._eof = False

    # lifecycle

    def __enter__(self) -> Self:
        """Start the process."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the process group."""
        self.stop()

    def start(self) -> None:
        """Start the process and its output reader and time-limit timer."""
        if self.proc is not None:
            raise RuntimeError("already started")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.env},
            cwd=self.cwd,
        )
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-out", daemon=True)
        self._reader.start()
        self._timer = threading.Timer(self.time_limit, self._kill_group, (signal.SIGKILL,))
        self._timer.daemon = True
        self._timer.start()

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs."""
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the process to exit; return its status or None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _kill_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.proc.send_signal(sig)

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL it after 1 s; return the exit status."""
        if self.proc is None:
            return None
        if self._timer is not None:
            self._timer.cancel()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._kill_group(signal.SIGTERM)
        status = self.wait(1.0)
        if status is None:
            self._kill_group(signal.SIGKILL)
            status = self.wait(1.0)
        else:
            # The leader is gone; make sure nothing else of its group survives.
            self._kill_group(signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(1.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return status

    # output

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            text = decoder.decode(chunk, final=not chunk)
            with self._cond:
                if text:
                    self._output.append(text)
                if not chunk:
                    self._eof = True
                self._cond.notify_all()
            if not chunk:
                return

    @property
    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        with self._cond:
            return "".join(self._output)

    def wait_for_output(
        self, pattern: str | re.Pattern[str], timeout: float, *, from_start: bool = False
    ) -> re.Match[str]:
        """Wait up to `timeout` seconds for `pattern` (a regex) in the output and return the
        match. Searches from the end of the previous match (so successive calls consume the
        output in order) unless `from_start`. Raises `TimeoutError` or `PeerExited`, with the
        output in the message."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = "".join(self._output)
                match = regex.search(text, 0 if from_start else self._cursor)
                if match is not None:
                    self._cursor = match.end()
                    return match
                if self._eof:
                    raise PeerExited(
                        f"{self.name} ended (status {self.returncode}) before printing "
                        f"{regex.pattern!r}; output:\n{text[-4000:]}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self.name} did not print {regex.pattern!r} within {timeout} s; "
                        f"output:\n{text[-4000:]}"
                    )
                self._cond.wait(min(remaining, 0.1))

    # input

    def write_line(self, line: str) -> None:
        """Write `line` and a newline to the process's stdin and flush."""
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError("not started")
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        """Close stdin (end of input: s_client and gnutls-cli then close the connection)."""
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()


def _keylog_env(keylog: Path | None) -> dict[str, str]:
    return {"SSLKEYLOGFILE": str(keylog)} if keylog is not None else {}


def _openssl(
    tool: str,
    address: str,
    args: Sequence[str],
    keylog: Path | None,
    extra: Sequence[str],
    time_limit: float,
) -> PeerProcess:
    """``openssl s_server -accept`` / ``s_client -connect`` (DTLS 1.2), `args`, then `extra`."""
    where = "-accept" if tool == "s_server" else "-connect"
    argv = ["openssl", tool, "-dtls1_2", where, address, *args]
    if keylog is not None:
        argv += ["-keylogfile", str(keylog)]
    return PeerProcess([*argv, *extra], name=tool, time_limit=time_limit)


def _openssl_psk_args(psk_hex: str, identity: str, cipher: str) -> list[str]:
    return ["-psk", psk_hex, "-psk_identity", identity, "-cipher", cipher]


def openssl_psk_server(
    port: int,
    *,
    psk_hex: str = PSK_HEX,
    identity: str = CLIENT_IDENTITY,
    host: str = LOCALHOST,
    cipher: str = OPENSSL_PSK_CIPHER,
    naccept: int = 1,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``openssl s_server`` for PSK CCM_8. Wait for `OPENSSL_SERVER_READY` before connecting.

    Its stdin is a pipe that stays open until `PeerProcess.stop` (s_server exits at EOF);
    lines written to it are sent to the client.
    """
    args = ["-nocert", *_openssl_psk_args(psk_hex, identity, cipher), "-naccept", str(naccept)]
    return _openssl("s_server", f"{host}:{port}", args, keylog, extra, time_limit)


def openssl_psk_client(
    port: int,
    *,
    psk_hex: str = PSK_HEX,
    identity: str = CLIENT_IDENTITY,
    host: str = LOCALHOST,
    cipher: str = OPENSSL_PSK_CIPHER,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``openssl s_client`` for PSK CCM_8; `OPENSSL_CLIENT_HANDSHAKE_DONE` after the handshake.

    Lines written to it are sent (avoid lines starting with Q or R, which are commands);
    closing stdin sends close_notify and ends it.
    """
    args = _openssl_psk_args(psk_hex, identity, cipher)
    return _openssl("s_client", f"{host}:{port}", args, keylog, extra, time_limit)


def openssl_cert_server(
    port: int,
    pki: Pki,
    *,
    host: str = LOCALHOST,
    require_client_cert: bool = True,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``openssl s_server`` for ECDHE-ECDSA CCM_8 on P-256, mutual certificates by default."""
    args = ["-cert", str(pki.server_crt), "-key", str(pki.server_key),
            "-cipher", OPENSSL_ECDHE_CIPHER, "-groups", "P-256", "-naccept", "1"]
    if require_client_cert:
        args += ["-verifyCAfile", str(pki.ca_crt), "-Verify", "1", "-verify_return_error"]
    return _openssl("s_server", f"{host}:{port}", args, keylog, extra, time_limit)


def openssl_cert_client(
    port: int,
    pki: Pki,
    *,
    host: str = LOCALHOST,
    client_cert: bool = True,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``openssl s_client`` for ECDHE-ECDSA CCM_8 on P-256, checking the name ``localhost``."""
    args = ["-CAfile", str(pki.ca_crt), "-verify", "1", "-verify_return_error",
            "-verify_hostname", "localhost", "-cipher", OPENSSL_ECDHE_CIPHER,
            "-groups", "P-256"]
    if client_cert:
        args += ["-cert", str(pki.client_crt), "-key", str(pki.client_key)]
    return _openssl("s_client", f"{host}:{port}", args, keylog, extra, time_limit)


def write_psk_file(path: Path, identity: str = CLIENT_IDENTITY, psk_hex: str = PSK_HEX) -> Path:
    """Write a gnutls-serv ``--pskpasswd`` file (``identity:HEXKEY`` lines) and return it."""
    path.write_text(f"{identity}:{psk_hex}\n")
    path.chmod(0o600)  # iotdtls refuses a --psk-file others can read
    return path


def _gnutls(
    tool: str,
    port: int,
    args: Sequence[str],
    netns: NetNamespace | None,
    keylog: Path | None,
    extra: Sequence[str],
    time_limit: float,
) -> PeerProcess:
    """``gnutls-serv``/``gnutls-cli --udp -p port`` with `args`, then `extra`, line-buffered."""
    argv = ["stdbuf", "-oL", "-eL", tool]
    if netns is not None:
        argv = netns.wrap(argv)
    argv += ["--udp", "-p", str(port), *args]
    return PeerProcess([*argv, *extra], name=tool, time_limit=time_limit,
                       env=_keylog_env(keylog))


def gnutls_psk_server(
    port: int,
    psk_file: Path,
    *,
    priority: str = GNUTLS_PRIO_PSK,
    netns: NetNamespace | None = None,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``gnutls-serv --udp`` with PSK (an echo server); `GNUTLS_SERVER_READY` when listening.

    It binds 0.0.0.0 and ::, so pass `netns` to keep it in a private namespace.
    """
    args = ["--pskpasswd", str(psk_file), "--priority", priority]
    return _gnutls("gnutls-serv", port, args, netns, keylog, extra, time_limit)


def gnutls_psk_client(
    port: int,
    *,
    host: str = LOCALHOST,
    identity: str = CLIENT_IDENTITY,
    psk_hex: str = PSK_HEX,
    priority: str = GNUTLS_PRIO_PSK,
    netns: NetNamespace | None = None,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``gnutls-cli --udp`` with PSK; `GNUTLS_CLIENT_HANDSHAKE_DONE` after the handshake.

    Lines written to it are sent; closing stdin sends close_notify and ends it.
    """
    args = [host, "--pskusername", identity, "--pskkey", psk_hex, "--priority", priority]
    return _gnutls("gnutls-cli", port, args, netns, keylog, extra, time_limit)


def gnutls_cert_server(
    port: int,
    pki: Pki,
    *,
    priority: str = GNUTLS_PRIO_EC,
    require_client_cert: bool = True,
    netns: NetNamespace | None = None,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``gnutls-serv --udp`` with the server certificate, mutual authentication by default."""
    args = ["--x509certfile", str(pki.server_crt), "--x509keyfile", str(pki.server_key),
            "--x509cafile", str(pki.ca_crt), "--priority", priority]
    if require_client_cert:
        args += ["--require-client-cert", "--verify-client-cert"]
    return _gnutls("gnutls-serv", port, args, netns, keylog, extra, time_limit)


def gnutls_cert_client(
    port: int,
    pki: Pki,
    *,
    host: str = LOCALHOST,
    priority: str = GNUTLS_PRIO_EC,
    client_cert: bool = True,
    netns: NetNamespace | None = None,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``gnutls-cli --udp`` with the CA (the server certificate names 127.0.0.1 too)."""
    args = [host, "--x509cafile", str(pki.ca_crt), "--priority", priority]
    if client_cert:
        args += ["--x509certfile", str(pki.client_crt), "--x509keyfile", str(pki.client_key)]
    return _gnutls("gnutls-cli", port, args, netns, keylog, extra, time_limit)


def gnutls_rpk_server(
    port: int,
    pki: Pki,
    *,
    require_client_key: bool = True,
    netns: NetNamespace | None = None,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``gnutls-serv --udp`` with the server's raw public key (RFC 7250); mutual by default
    (GnuTLS then takes any client key: the pinning is the client's side of the test)."""
    priority = GNUTLS_PRIO_RPK if require_client_key else GNUTLS_PRIO_EC + ":+CTYPE-SRV-RAWPK"
    args = ["--rawpkkeyfile", str(pki.server_key), "--rawpkfile", str(pki.server_pub),
            "--priority", priority]
    if require_client_key:
        args += ["--require-client-cert"]
    return _gnutls("gnutls-serv", port, args, netns, keylog, extra, time_limit)


def gnutls_rpk_client(
    port: int,
    pki: Pki,
    *,
    host: str = LOCALHOST,
    client_key: bool = True,
    netns: NetNamespace | None = None,
    keylog: Path | None = None,
    extra: Sequence[str] = (),
    time_limit: float = 60.0,
) -> PeerProcess:
    """``gnutls-cli --udp`` with raw public keys; ``--insecure`` because GnuTLS cannot pin a
    raw key on its command line. Without `client_key` it offers a server key type only."""
    priority = GNUTLS_PRIO_RPK if client_key else GNUTLS_PRIO_EC + ":+CTYPE-SRV-RAWPK"
    args = [host, "--priority", priority, "--insecure"]
    if client_key:
        args += ["--rawpkkeyfile", str(pki.client_key), "--rawpkfile", str(pki.client_pub)]
    return _gnutls("gnutls-cli", port, args, netns, keylog, extra, time_limit)


# -- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Test certificate material; every attribute is a file path.

    Keys are PKCS#8 PEM (``*_key``), certificates PEM (``*_crt``) with ``*_der`` twins; the
    ``*_pub`` files are SubjectPublicKeyInfo PEM for raw-public-key tests (the PKCS#8 key files
    double as ``--rawpkkeyfile``).
    """

    ca_crt: Path
    ca_key: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    ca_der: Path
    server_der: Path
    client_der: Path
    server_pub: Path
    client_pub: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotdtls tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_test_pki(directory: Path, *, client_id: str = CLIENT_EUI64) -> Pki:
    """Generate a P-256 CA, a server and a client certificate (ECDSA-SHA256) in `directory`.

    The server certificate has SAN DNS:localhost and IP:127.0.0.1; the client certificate's
    CN is `client_id` (an EUI-64, draft "Certificate Use"). Valid from one day ago for ten
    years.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("iotdtls test CA")

    def builder(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    ca_cert = (
        builder(ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                               key_encipherment=False, data_encipherment=False,
                               key_agreement=False, key_cert_sign=False, crl_sign=False,
                               encipher_only=False, decipher_only=False)
    server_cert = (
        builder(_name("localhost"), server_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_usage, critical=True)
        .add_extension(aki, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOCALHOST))]),
            critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_cert = (
        builder(_name(client_id), client_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_usage, critical=True)
        .add_extension(aki, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def write(name: str, data: bytes, mode: int = 0o644) -> Path:
        path = directory / name
        path.write_bytes(data)
        path.chmod(mode)  # keys 0600, as a private key is kept (the CLI warns of others)
        return path

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def pub_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)

    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    return Pki(
        ca_crt=write("ca.crt", ca_cert.public_bytes(pem)),
        ca_key=write("ca.key", key_pem(ca_key), 0o600),
        server_crt=write("server.crt", server_cert.public_bytes(pem)),
        server_key=write("server.key", key_pem(server_key), 0o600),
        client_crt=write("client.crt", client_cert.public_bytes(pem)),
        client_key=write("client.key", key_pem(client_key), 0o600),
        ca_der=write("ca.der", ca_cert.public_bytes(der)),
        server_der=write("server.der", server_cert.public_bytes(der)),
        client_der=write("client.der", client_cert.public_bytes(der)),
        server_pub=write("server.pub.pem", pub_pem(server_key)),
        client_pub=write("client.pub.pem", pub_pem(client_key)),
    )


# -- network namespaces -----------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_netns_lock = threading.Lock()
_netns_counter = 0
_netns_probe: bool | None = None


def _run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


def netns_available() -> bool:
    """Whether ``ip netns add`` works here (root and a kernel with network namespaces)."""
    global _netns_probe
    if _netns_probe is None:
        try:
            with NetNamespace():
                _netns_probe = True
        except (OSError, subprocess.SubprocessError):
            _netns_probe = False
    return _netns_probe


class NetNamespace:
    """A private network namespace with only ``lo`` (up), deleted on exit.

    `wrap(argv)` runs a command inside it (``ip netns exec``); `socket()` makes a socket inside
    it for this process. On exit, processes still inside (those the test started there) are
    killed by pid, then the namespace is deleted.
    """

    def __init__(self, name: str | None = None) -> None:
        """Choose a unique name (``iotdtls-<pid>-<n>``); nothing is created before enter."""
        global _netns_counter
        with _netns_lock:
            _netns_counter += 1
            self.name = name or f"iotdtls-{os.getpid()}-{_netns_counter}"
        self._created = False

    def __enter__(self) -> Self:
        """Create the namespace and bring ``lo`` up."""
        _run_ip("netns", "add", self.name)
        self._created = True
        try:
            _run_ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Delete the namespace."""
        self.close()

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def socket(
        self,
        family: socket.AddressFamily = socket.AF_INET,
        kind: socket.SocketKind = socket.SOCK_DGRAM,
    ) -> socket.socket:
        """A new socket that lives in this namespace (made by a helper thread that enters it).

        Its signature fits `iotdtls.proxy.LossyProxy`'s ``socket_factory``.
        """
        result: list[socket.socket] = []
        failure: list[BaseException] = []

        def make() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if libc.setns(target, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns: {os.strerror(err)}")
                    try:
                        result.append(socket.socket(family, kind))
                    finally:
                        if libc.setns(own, _CLONE_NEWNET) != 0:
                            # This thread ends right now anyway; never reuse it.
                            failure.append(OSError(errno.EPERM, "setns back failed"))
                finally:
                    os.close(target)
            except BaseException as exc:
                failure.append(exc)
            finally:
                os.close(own)

        thread = threading.Thread(target=make, name=f"netns-{self.name}")
        thread.start()
        thread.join(5.0)
        if result and not failure:
            return result[0]
        for sock in result:
            sock.close()
        raise failure[0] if failure else OSError("netns socket helper did not finish")

    def pids(self) -> list[int]:
        """Process ids running inside the namespace."""
        done = _run_ip("netns", "pids", self.name, check=False)
        return [int(p) for p in done.stdout.split() if p.isdigit()]

    def close(self) -> None:
        """Kill what is left inside (by pid) and delete the namespace. Idempotent."""
        if not self._created:
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        _run_ip("netns", "del", self.name, check=False)
        self._created = False


@pytest.fixture
def netns() -> Iterator[NetNamespace]:
    """A private network namespace for gnutls-serv and its counterpart; skips without it.

    A test module makes the fixture visible with a module-level assignment (an import of an
    unused name would upset ruff)::

        from tests import peers
        netns = peers.netns

        def test_x(netns: peers.NetNamespace) -> None: ...
    """
    if not netns_available():
        pytest.skip("network namespaces not available (needs root and `ip netns`)")
    with NetNamespace() as ns:
        yield ns
