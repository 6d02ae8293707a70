"""`iotdtls coap` as subprocesses: `serve` (the demo site) with `get`, against each other and
against libcoap's server; output streams, exit statuses, error lines."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiocoap
import pytest

import iotdtls
import iotdtls.sync
from tests.coap_support import LIBCOAP_KEY_HEX, libcoap_server, make_rpk_files, reply
from tests.interop_support import CLI, CREDENTIALS, WRONG_PSK_HEX, AnsweringServer
from tests.peers import (
    CLIENT_EUI64,
    CLIENT_IDENTITY,
    LOCALHOST,
    PSK,
    PSK_HEX,
    PeerProcess,
    Pki,
    free_udp_port,
    require_peer,
)

LIBCOAP_CREDENTIALS = ["--psk-identity", CLIENT_IDENTITY, "--psk", LIBCOAP_KEY_HEX]


@contextmanager
def coap_serve(*args: str) -> Iterator[tuple[int, PeerProcess]]:
    """`iotdtls coap serve` on a fresh loopback port, listening when this yields."""
    port = free_udp_port()
    argv = [*CLI, "coap", "serve", "--listen", f"{LOCALHOST}:{port}", *args]
    with PeerProcess(argv, name="iotdtls-coap-serve", time_limit=60.0) as server:
        server.wait_for_output(rf"listening on coaps://127\.0\.0\.1:{port}", 10.0)
        yield port, server


def coap(*args: str, stdin: str | None = None, timeout: float = 30.0,
         ) -> subprocess.CompletedProcess[str]:
    """`iotdtls coap ARGS`: exit status, stdout, stderr."""
    return subprocess.run([*CLI, "coap", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.req("COAP-1")
def test_serve_and_get_hello_core_counter_and_not_found(tmp_path: Path) -> None:
    psk_file = tmp_path / "psk.txt"
    psk_file.write_text(f"{CLIENT_IDENTITY}:{PSK_HEX}\nsensor-2:a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\n")
    psk_file.chmod(0o600)  # a --psk-file others can read is refused
    with coap_serve("--psk-file", str(psk_file)) as (port, server):
        base = f"coaps://{LOCALHOST}:{port}"
        hello = coap("get", f"{base}/hello", *CREDENTIALS)
        assert (hello.returncode, hello.stdout, hello.stderr) == (
            0, "Hello, Client_identity!", "2.05 Content\n")
        other = coap("get", f"{base}/hello", "--psk-identity", "sensor-2",
                     "--psk", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
        assert other.stdout == "Hello, sensor-2!", other.stderr
        core = coap("get", f"{base}/.well-known/core", *CREDENTIALS)
        assert core.returncode == 0
        assert {"</hello>", "</counter>"} <= {link.split(";")[0] for link in
                                              core.stdout.strip().split(",")}
        assert "obs" in core.stdout.split("</counter>")[1]
        observed = coap("get", f"{base}/counter", "--observe", "--duration", "2.3", *CREDENTIALS)
        assert observed.returncode == 0, observed.stderr
        values = [int(v) for v in observed.stdout.split()]
        assert len(values) >= 3 and values == sorted(set(values)), values
        missing = coap("get", f"{base}/nothing", *CREDENTIALS)
        assert (missing.returncode, missing.stderr) == (1, "4.04 Not Found\n")
        refused = coap("post", f"{base}/hello", "data", *CREDENTIALS)
        assert (refused.returncode, refused.stderr) == (1, "4.05 Method Not Allowed\n")
        server.wait_for_output(r"handshake complete: peer 127\.0\.0\.1:\d+ psk identity", 5.0)
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait(5.0) == 0
    assert "Traceback" not in server.output


def observe_counter(mid: int) -> bytes:
    """A confirmable Observe registration of `/counter` (RFC 7641 §3.1), its token its `mid`."""
    message = aiocoap.Message(code=aiocoap.GET, uri_path=("counter",), observe=0)
    message.mtype, message.mid, message.token = aiocoap.CON, mid, mid.to_bytes(2, "big")
    return message.encode()


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_serve_sums_up_registrations_past_the_bound_at_the_association_end(
    quiet: list[str],
) -> None:
    """Past 16 live Observe registrations a registration is served as a plain GET; the end of
    the association says how many at info level, which `coap serve` shows without -v (its
    logger, iotdtls.coap, was left at warning: the line showed with -v only, probe CB)."""
    config = iotdtls.ClientConfig(psk_identity=CLIENT_IDENTITY.encode(), psk=PSK)
    with coap_serve(*CREDENTIALS, *quiet) as (port, server):
        with iotdtls.sync.connect(LOCALHOST, port, config) as device:
            for mid in range(18):
                device.send(observe_counter(mid))
                assert device.recv(timeout=5.0) is not None
        server.wait_for_output(
            r"iotdtls\.coap: <ServerRemote coaps://127\.0\.0\.1:\d+ psk identity "
            r"b'Client_identity' ended>: 2 Observe registrations past 16 live ones were served "
            r"as plain GETs", 10.0)


@pytest.mark.req("COAP-1")
def test_wrong_key_exits_1_with_a_clear_line_within_the_deadline() -> None:
    with coap_serve(*CREDENTIALS) as (port, _):
        started = time.monotonic()
        done = coap("get", f"coaps://{LOCALHOST}:{port}/hello", "--psk-identity",
                    CLIENT_IDENTITY, "--psk", WRONG_PSK_HEX, "--timeout", "5")
        assert time.monotonic() - started < 5.0
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [  # one line, as every subcommand prints
        f"iotdtls: coaps: DTLS handshake with {LOCALHOST}:{port} failed: "
        "received fatal alert decrypt_error (the server could not verify our Finished: the PSK "
        "does not match the server's, or the PSK identity is unknown to it). "
        "Check the credentials: the PSK or the PSK identity does not match the server's.",
    ]


def test_silent_server_exits_1_after_the_handshake_deadline() -> None:
    port = free_udp_port()  # nobody listens
    started = time.monotonic()
    done = coap("get", f"coaps://{LOCALHOST}:{port}/", *CREDENTIALS, "--timeout", "1")
    assert 1.0 <= time.monotonic() - started < 6.0
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"iotdtls: coaps: DTLS handshake with {LOCALHOST}:{port} failed: handshake timed out")


@pytest.mark.parametrize(("args", "message"), [
    (["get", "coaps://127.0.0.1/x"], "choose one mode: --psk-identity ID --psk HEX, or"),
    (["get", "http://127.0.0.1/x", *CREDENTIALS], "expected a coaps://HOST[:PORT]/PATH URI"),
    (["put", "coaps://127.0.0.1/x", "v", "--content-format", "text/nonsense", *CREDENTIALS],
     "--content-format: unknown media type"),
    (["serve", "--listen", "127.0.0.1:5684"], "give credentials: --psk-identity ID --psk HEX"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    done = coap(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("iotdtls: error: ") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.req("COAP-1")
def test_put_post_delete_against_libcoap_server() -> None:
    require_peer("coap-server-gnutls")
    # -e: PUT echoes its payload back; -d: POST creates resources, DELETE removes them.
    with libcoap_server("gnutls", "-e", "-d", "4") as (port, _):
        base = f"coaps://{LOCALHOST}:{port}"
        put = coap("put", f"{base}/example_data", "--content-format", "text/plain",
                   *LIBCOAP_CREDENTIALS, stdin="from stdin\n")
        assert (put.returncode, put.stdout) == (0, "from stdin\n"), put.stderr
        back = coap("get", f"{base}/example_data", *LIBCOAP_CREDENTIALS)
        assert back.stdout == "from stdin\n"
        post = coap("post", f"{base}/made", "from the argument", *LIBCOAP_CREDENTIALS)
        assert (post.returncode, post.stderr) == (0, "2.01 Created\n")
        made = coap("get", f"{base}/made", *LIBCOAP_CREDENTIALS)
        assert made.stdout == "from the argument"  # as it is: no newline added to a pipe
        deleted = coap("delete", f"{base}/made", *LIBCOAP_CREDENTIALS)
        assert (deleted.returncode, deleted.stderr) == (0, "2.02 Deleted\n")
        gone = coap("get", f"{base}/made", *LIBCOAP_CREDENTIALS)
        assert (gone.returncode, gone.stderr) == (1, "4.04 Not Found\n")


@pytest.mark.req("COAP-1")
def test_an_observation_libcoap_ends_with_4_04_exits_1() -> None:
    """libcoap's server ends an observation with a 4.04 on its token (RFC 7641 §3.2) when the
    resource is deleted, or when it stops (probe CH: SIGINT): the command prints that code as
    every notification's and exits 1, as for an error response (it exited 0, printing
    nothing for it)."""
    require_peer("coap-server-gnutls")
    # -d: POST creates resources, DELETE removes them.
    with libcoap_server("gnutls", "-d", "4") as (port, _):
        base = f"coaps://{LOCALHOST}:{port}"
        made = coap("post", f"{base}/made", "here", *LIBCOAP_CREDENTIALS)
        assert made.returncode == 0, made.stderr
        argv = [*CLI, "coap", "get", f"{base}/made", "--observe", "--duration", "20",
                *LIBCOAP_CREDENTIALS]
        with PeerProcess(argv, name="iotdtls-coap-observe", time_limit=30.0) as observer:
            observer.wait_for_output(r"here\n", 10.0)  # the response: the observer is known
            deleted = coap("delete", f"{base}/made", *LIBCOAP_CREDENTIALS)
            assert deleted.returncode == 0, deleted.stderr
            assert observer.wait(10.0) == 1, observer.output
        assert observer.output == "2.05 Content\nhere\n4.04 Not Found\n"


@pytest.mark.req("COAP-1")
def test_raw_public_keys_through_the_shared_credential_flags(tmp_path: Path) -> None:
    files = make_rpk_files(tmp_path)
    with coap_serve("--rpk-key", str(files.server_key), "--rpk-allow", str(files.client_pub),
                    ) as (port, _):
        done = coap("get", f"coaps://{LOCALHOST}:{port}/hello", "--peer-rpk",
                    str(files.server_pub), "--rpk-key", str(files.client_key))
    assert (done.returncode, done.stderr) == (0, "2.05 Content\n")
    assert done.stdout.startswith("Hello, raw public key sha256:")


@pytest.mark.req("COAP-1", "CRT-4")
def test_certificates_through_the_shared_credential_flags(pki: Pki, tmp_path: Path) -> None:
    cache = tmp_path / "chains"
    ours = ["--cafile", str(pki.ca_crt), "--cert", str(pki.client_crt),
            "--key", str(pki.client_key)]
    with coap_serve("--cert", str(pki.server_crt), "--key", str(pki.server_key),
                    "--client-cafile", str(pki.ca_crt)) as (port, server):
        # The server name checked is the URI's host (its certificate has SAN IP 127.0.0.1).
        done = coap("get", f"coaps://{LOCALHOST}:{port}/hello", *ours, "--cache-dir", str(cache))
        assert (done.returncode, done.stdout, done.stderr) == (
            0, f"Hello, certificate {CLIENT_EUI64}!", "2.05 Content\n")
        assert len(list(cache.iterdir())) == 1  # the server's chain, for cached_info next time
        other = coap("get", f"coaps://{LOCALHOST}:{port}/hello", *ours,
                     "--server-name", "gw.example", "--timeout", "5")
        server.wait_for_output(rf"handshake complete: peer .* certificate {CLIENT_EUI64}", 5.0)
    assert (other.returncode, other.stdout) == (1, "")
    assert other.stderr.splitlines() == [
        f"iotdtls: coaps: DTLS handshake with {LOCALHOST}:{port} failed: sent fatal alert "
        "bad_certificate: the server certificate is not valid for gw.example. "
        "Check the trust anchors and the server name (by default the URI's host): "
        "the server's certificate did not validate against them.",
    ]


def blocks(first: int, then: int) -> AnsweringServer:
    """A coaps server answering a GET with Block2 block `first` of 16 bytes and more to come,
    and the request for the next block with block `then` (RFC 7959 §2.2)."""

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        number = first if request.opt.block2 is None else then
        response = aiocoap.Message(code=aiocoap.CONTENT, block2=(number, True, 0),
                                   payload=b"x" * 16)
        return [reply(request, response)]

    return AnsweringServer(answer)


@pytest.mark.parametrize(
    ("first", "then", "problem"),
    [(0, 3, "NotImplemented"), (3, 4, "UnexpectedBlock2")],
    ids=["blocks-jump", "first-block-not-0"],
)
def test_a_response_aiocoap_cannot_handle_is_the_command_s_one_line_alone(
    first: int, then: int, problem: str
) -> None:
    """Probe BA: aiocoap logs an error of its own for these ("coap.blockwise-requester: Error
    assembling blockwise response, passing on error NotImplemented()") before raising what the
    command's line then reports: two lines where README promises one. Without -v its line is
    not printed; -v shows it."""
    with blocks(first, then) as server:
        target = f"coaps://{LOCALHOST}:{server.port}/x"
        plain = coap("get", target, *CREDENTIALS, "--timeout", "5")
        verbose = coap("get", target, *CREDENTIALS, "--timeout", "5", "-v")
    line = f"iotdtls: the server's response could not be handled (aiocoap: {problem})\n"
    assert (plain.returncode, plain.stdout, plain.stderr) == (1, "", line)
    assert verbose.returncode == 1 and line in verbose.stderr
    assert "coap.blockwise-requester: Error assembling blockwise response" in verbose.stderr


def unacknowledged_last_block() -> AnsweringServer:
    """A coaps server taking a Block1 upload as libcoap's does: 2.31 Continue with Block1 for
    each block but the last, then 2.01 Created without Block1 (RFC 7959 §2.3 allows it)."""

    def answer(data: bytes) -> list[bytes]:
        request = aiocoap.Message.decode(data)
        block1 = request.opt.block1
        if block1 is not None and block1.more:
            return [reply(request, aiocoap.Message(code=aiocoap.CONTINUE, block1=block1))]
        return [reply(request, aiocoap.Message(code=aiocoap.CREATED))]

    return AnsweringServer(answer)


def test_an_upload_whose_last_block_has_no_block1_answer_is_the_command_s_line_alone() -> None:
    """Probe CC: a 2,500-byte PUT to coap-server-openssl succeeded, "2.01 Created", but aiocoap
    printed its remark "Block1 option completely ignored by server, assuming it knows what
    it is doing." on stderr too; without -v it is held back, -v shows it."""
    with unacknowledged_last_block() as server:
        target = f"coaps://{LOCALHOST}:{server.port}/up"
        payload = "x" * 2500
        plain = coap("put", target, payload, *CREDENTIALS, "--timeout", "5")
        verbose = coap("put", target, payload, *CREDENTIALS, "--timeout", "5", "-v")
    assert (plain.returncode, plain.stdout, plain.stderr) == (0, "", "2.01 Created\n")
    assert verbose.returncode == 0
    assert "Block1 option completely ignored by server" in verbose.stderr


def test_a_coap_multicast_request_that_cannot_be_sent_is_one_line() -> None:
    """Probe BL, F2: coap:// to a multicast address on an interface without multicast (lo: no
    route) printed aiocoap's 20-line traceback ("Exception raised through dispatch_error":
    the OSError, then an AttributeError in its UDP transport's __eq__), its plea for a bug
    report, and "the server's response could not be handled (aiocoap: AttributeError ...)",
    no server involved. Now the one line a coaps:// request gives, status 1 as for an
    unreachable address; -v has aiocoap's lines as debug lines, the traceback once."""
    port = free_udp_port()
    target = f"coap://[ff02::1%25lo]:{port}/x"
    plain = coap("get", target, "--timeout", "5")
    verbose = coap("get", target, "--timeout", "5", "-v")
    line = f"iotdtls: coap: cannot reach [ff02::1%lo]:{port}: Network is unreachable\n"
    assert (plain.returncode, plain.stdout, plain.stderr) == (1, "", line)
    assert (verbose.returncode, verbose.stdout) == (1, "") and verbose.stderr.endswith(line)
    assert "iotdtls.cli: aiocoap logged: Exception raised through dispatch_error" in (
        verbose.stderr)
    assert verbose.stderr.count("During handling of the above exception") == 1, verbose.stderr
    assert "iotdtls.cli: aiocoap failed sending the request\nTraceback" in verbose.stderr


def test_a_reset_answering_the_request_is_one_line() -> None:
    """Probe BZ: a server answering the request with a matching Reset (RFC 7252 §4.2) made
    aiocoap warn "An exception that is not an aiocoap Error was raised from a transport;
    please report this as a bug in aiocoap" (it hands the request the class MessageError), and
    the command said "iotdtls: Network error: MessageError". Now one line saying what
    happened, status 1; -v has aiocoap's warning as a debug line."""

    def reset(data: bytes) -> list[bytes]:
        return [bytes([0x70, 0x00]) + data[2:4]]

    with AnsweringServer(reset) as server:
        target = f"coaps://{LOCALHOST}:{server.port}/x"
        plain = coap("get", target, *CREDENTIALS, "--timeout", "5")
        verbose = coap("get", target, *CREDENTIALS, "--timeout", "5", "-v")
    line = "iotdtls: the server rejected the request with a Reset (RST)\n"
    assert (plain.returncode, plain.stdout, plain.stderr) == (1, "", line)
    assert (verbose.returncode, verbose.stdout) == (1, "") and line in verbose.stderr
    assert "iotdtls.cli: aiocoap logged: An exception that is not an aiocoap Error" in (
        verbose.stderr)
