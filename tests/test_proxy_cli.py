"""`python -m iotdtls.proxy`, in process: what each flag parses to, the one-line error of each
mistake (never a traceback), and a run whose log and summary match what went through."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from iotdtls import proxy as proxy_module
from iotdtls.proxy import Impairment, LossyProxy, main
from tests.peers import LOCALHOST, free_udp_port


@pytest.fixture
def harmless_signals() -> Iterator[None]:
    """`main` installs SIGINT and SIGTERM handlers; the test process gets its own back after.
    Meanwhile both are ignored unless main() handles them, so a main() that forgot to cannot
    take pytest down (its test fails on time instead)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in saved:
            signal.signal(sig, signal.SIG_IGN)
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[LossyProxy]:
    """The proxies `main()` makes while the test runs, to look into after it."""
    proxies: list[LossyProxy] = []

    class Recorded(LossyProxy):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            proxies.append(self)

    monkeypatch.setattr(proxy_module, "LossyProxy", Recorded)
    return proxies


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line `main(argv)` exits with (status 2)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def parse(argv: list[str]) -> argparse.Namespace:
    return proxy_module._build_parser().parse_args(argv)


def test_defaults() -> None:
    args = parse(["--target", "127.0.0.1:5684"])
    assert args.target == ("127.0.0.1", 5684)
    assert args.listen == ("127.0.0.1", 0)
    assert (args.seed, args.loss, args.duplicate, args.reorder) == (0, 0.0, 0.0, 0.0)
    assert args.delay == (0.0, 0.0)
    assert args.client_to_server is None and args.server_to_client is None
    assert args.drop == [] and args.lifetime == 60.0 and args.log_json is None


def test_every_flag_parses_to_its_value() -> None:
    args = parse([
        "--target", "[::1]:5685", "--listen", ":7000", "--seed", "7", "--loss", "0.25",
        "--duplicate", "0.5", "--reorder", "0.125", "--delay", "0.01:0.02",
        "--client-to-server", "loss=0.2, duplicate=0.1,reorder=0.05,delay=0.01:0.05",
        "--server-to-client", "delay=0.3,", "--drop", "client:1", "--drop", "server:12",
        "--lifetime", "2.5", "--log-json", "out.json",
    ])  # fmt: skip
    assert args.target == ("::1", 5685)
    assert args.listen == ("127.0.0.1", 7000)
    assert (args.seed, args.loss, args.duplicate, args.reorder) == (7, 0.25, 0.5, 0.125)
    assert args.delay == (0.01, 0.02)
    assert args.client_to_server == Impairment(
        loss=0.2, duplicate=0.1, reorder=0.05, delay=(0.01, 0.05)
    )
    assert args.server_to_client == Impairment(delay=(0.3, 0.3))
    assert args.drop == [("client", 1), ("server", 12)]
    assert args.lifetime == 2.5 and args.log_json == "out.json"
    # A direction's SPEC without a delay has none (not the top-level --delay).
    spec = parse(["--target", ":1", "--delay", "1", "--client-to-server", "loss=0.5"])
    assert spec.client_to_server == Impairment(loss=0.5, delay=(0.0, 0.0))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --target"),
        (["--target", "5684"], "argument --target: expected HOST:PORT, got '5684'"),
        (["--target", "h:65536"], "port must be a number from 0 to 65535, got '65536'"),
        (["--target", "h:x"], "port must be a number from 0 to 65535, got 'x'"),
        (["--delay", "a"], "argument --delay: expected MIN[:MAX] seconds, got 'a'"),
        (["--delay", "1:2:3"], "argument --delay: expected MIN[:MAX] seconds, got '1:2:3'"),
        (["--client-to-server", "loss"], "expected KEY=VALUE, got 'loss'"),
        (["--client-to-server", "jitter=1"], "unknown impairment 'jitter'"),
        (["--client-to-server", "loss=x"], "bad value in 'loss=x'"),
        (["--client-to-server", "loss=1=2"], "bad value in 'loss=1=2'"),
        (["--server-to-client", "delay=x"], "--server-to-client: expected MIN[:MAX] seconds"),
        (["--server-to-client", "loss=2"], "loss must be a probability in [0, 1], got 2.0"),
        (["--drop", "client"], "expected client:N or server:N, got 'client'"),
        (["--drop", "peer:1"], "expected client:N or server:N, got 'peer:1'"),
        (["--drop", "server:0"], "expected client:N or server:N, got 'server:0'"),
        (["--drop", "server:x"], "expected client:N or server:N, got 'server:x'"),
        (["--drop", "client:\N{SUPERSCRIPT TWO}"],
         "argument --drop: expected client:N or server:N, got 'client:\N{SUPERSCRIPT TWO}'"),
    ],
)
def test_flag_mistakes_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv and argv[0] != "--target":
        argv = ["--target", "127.0.0.1:9", *argv]
    err = usage_error(argv, capsys)
    assert message in err, err
    assert err.startswith("python -m iotdtls.proxy: error: ") and err.endswith("(see --help)")


@pytest.mark.parametrize("flag", ["--listen", "--target"])
@pytest.mark.parametrize("text", ["[127.0.0.1%lo]:5684", "127.0.0.1%lo:5684"])
def test_an_ipv4_address_with_a_zone_is_one_line_saying_what_to_write(
    flag: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe BL, F3: the bracketed form was told "write 127.0.0.1%lo:5684", which the proxy
    then refused too ("cannot resolve '127.0.0.1%lo'")."""
    argv = ["--target", "127.0.0.1:9", flag, text] if flag == "--listen" else [flag, text]
    assert usage_error(argv, capsys) == (
        f"python -m iotdtls.proxy: error: argument {flag}: expected HOST:PORT, got {text!r}: "
        "an IPv4 address takes no zone, write 127.0.0.1:5684 (see --help)")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # Once the flags parse, the proxy's own checks: each a line, not a traceback.
        (["--loss", "1.5"], "loss must be a probability in [0, 1], got 1.5"),
        (["--duplicate", "-0.1"], "duplicate must be a probability in [0, 1], got -0.1"),
        (["--reorder", "nan"], "reorder must be a probability in [0, 1], got nan"),
        (["--delay", "0.2:0.1"], "delay must be a range 0 <= min <= max of finite seconds"),
        (["--delay", "-1"], "got (-1.0, -1.0)"),
        (["--delay", "nan"], "got (nan, nan)"),
        (["--delay", "0:inf"], "got (0.0, inf)"),
        (["--lifetime", "0"], "lifetime must be a positive number of seconds, got 0.0"),
        (["--lifetime", "nan"], "lifetime must be a positive number of seconds, got nan"),
        (["--listen", "192.0.2.1:5000"], "cannot listen on 192.0.2.1:5000: "),
        (["--target", "nosuch.invalid:9"], "cannot resolve 'nosuch.invalid': "),
        # A target no reply can come from: each a line saying what to name instead.
        (["--target", "0.0.0.0:37811"], "target 0.0.0.0:37811 is not a server's address: "
         "name the server's address, e.g. 127.0.0.1:37811 (see --help)"),
        (["--target", "[::]:37811"], "target [::]:37811 is not a server's address: "
         "name the server's address, e.g. [::1]:37811 (see --help)"),
        (["--target", "127.0.0.1:0"], "target 127.0.0.1:0 has port 0: name the port the "
         "server uses (see --help)"),
        (["--target", "127.0.0.1:37812", "--listen", "127.0.0.1:37812"],
         "target 127.0.0.1:37812 is the proxy's own listening address (127.0.0.1:37812): "
         "name the server's address (see --help)"),
        (["--target", "127.0.0.1:37812", "--listen", "0.0.0.0:37812"],
         "target 127.0.0.1:37812 is the proxy's own listening address (0.0.0.0:37812)"),
        # A link-local address without its interface: what the rest of the project says (the
        # target was taken, every datagram to it then refused by the kernel unseen).
        (["--target", "[fe80::1]:40930"], "target [fe80::1]:40930: a link-local address needs "
         "%interface, as in [fe80::1%eth0]:40930 (see --help)"),
        (["--listen", "[fe80::1]:40931"], "cannot listen on [fe80::1]:40931: a link-local "
         "address needs %interface, as in [fe80::1%eth0]:40931 (see --help)"),
    ],
)
def test_configuration_mistakes_are_one_line(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    harmless_signals: None,
) -> None:
    if "--target" not in argv:
        argv = ["--target", "127.0.0.1:9", *argv]
    err = usage_error(argv, capsys)
    assert message in err, err
    assert "[Errno" not in err


def test_an_unwritable_log_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], harmless_signals: None
) -> None:
    path = tmp_path / "missing" / "log.json"
    err = usage_error(["--target", "127.0.0.1:9", "--log-json", str(path)], capsys)
    assert err == (
        f"python -m iotdtls.proxy: error: cannot write the log {path}: No such file or directory "
        "(see --help)"
    )


@pytest.mark.parametrize("mistake", ["unspecified target", "listen port in use",
                                     "unresolvable target", "no such log"])
@pytest.mark.parametrize("earlier", [True, False])
def test_a_run_refused_at_its_start_leaves_the_log_as_it_was(
    mistake: str, earlier: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    made: list[LossyProxy], harmless_signals: None,
) -> None:
    """Probe BQ, finding 4: --log-json was emptied by its "writable?" check before the proxy
    was made, so a run then refused (status 2) wiped an earlier run's log. It is now left as it
    was, and not created when there was none; a log that cannot be written still stops the
    run before it starts (its proxy stopped)."""
    log_path = tmp_path / "log.json"
    if earlier:
        log_path.write_text('{"earlier": "run"}', encoding="utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOCALHOST, 0))
        argv = {
            "unspecified target": ["--target", "0.0.0.0:9"],
            "listen port in use": ["--target", "127.0.0.1:9",
                                   "--listen", f"{LOCALHOST}:{taken.getsockname()[1]}"],
            "unresolvable target": ["--target", "nosuch.invalid:9"],
            "no such log": ["--target", "127.0.0.1:9"],
        }[mistake]
        written = tmp_path / "missing" / "log.json" if mistake == "no such log" else log_path
        err = usage_error([*argv, "--log-json", str(written)], capsys)
    assert ("cannot write the log" in err) == (mistake == "no such log"), err
    if earlier:
        assert log_path.read_text(encoding="utf-8") == '{"earlier": "run"}'
    else:
        assert not log_path.exists()
    assert not any(proxy.running for proxy in made)


def test_a_run_writes_its_log_whole_over_an_earlier_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], harmless_signals: None
) -> None:
    """The log is checked by opening it to append; the run's own log still replaces an earlier,
    longer one whole."""
    log_path = tmp_path / "log.json"
    log_path.write_text("x" * 10_000, encoding="utf-8")
    assert main(["--target", "127.0.0.1:9", "--lifetime", "0.1", "--log-json", str(log_path)]) == 0
    assert json.loads(log_path.read_text(encoding="utf-8"))["datagrams"] == []


def test_the_api_refuses_what_the_flags_refuse() -> None:
    with pytest.raises(ValueError, match="port must be a number from 0 to 65535, got 65536"):
        LossyProxy((LOCALHOST, 65536), seed=1)
    with pytest.raises(ValueError, match="reorder_timeout must be a positive number"):
        LossyProxy((LOCALHOST, 9), seed=1, reorder_timeout=math.nan)
    with pytest.raises(ValueError, match="lifetime must be a positive number"):
        LossyProxy((LOCALHOST, 9), seed=1, lifetime=math.inf)
    with pytest.raises(OSError, match=r"cannot resolve 'nosuch\.invalid'"):
        LossyProxy(("nosuch.invalid", 9), seed=1)
    # The edges themselves are accepted.
    assert Impairment(loss=1.0, duplicate=0.0, delay=(0.0, 0.0)).loss == 1.0
    with LossyProxy((LOCALHOST, 65535), seed=1, lifetime=0.5, reorder_timeout=0.5) as proxy:
        assert proxy.target == (LOCALHOST, 65535)


class Client(threading.Thread):
    """Waits for main()'s "listening on" line, sends `datagrams` to the proxy one by one (each
    but the last awaited at the target), then sends the process `stop_with`, if any."""

    def __init__(
        self, capsys: pytest.CaptureFixture[str], datagrams: list[bytes], stop_with: int | None,
        strangers: int = 0, from_target: int = 0,
    ) -> None:
        super().__init__(daemon=True)
        self.capsys, self.datagrams, self.stop_with = capsys, datagrams, stop_with
        self.strangers = strangers  # datagrams then sent from another port
        self.from_target = from_target  # datagrams sent first from the target's own socket
        self.target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.target.bind((LOCALHOST, 0))
        self.target.settimeout(2.0)
        self.out = ""
        self.received: list[bytes] = []

    def run(self) -> None:
        with self.target, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(300):
                self.out += self.capsys.readouterr().out
                if found := re.search(r"listening on [\d.]+:(\d+) ", self.out):
                    break
                time.sleep(0.01)
            else:
                return
            for _ in range(self.from_target):
                self.target.sendto(b"from the target", (LOCALHOST, int(found.group(1))))
            for datagram in self.datagrams:
                sender.sendto(datagram, (LOCALHOST, int(found.group(1))))
                if datagram is not self.datagrams[-1]:
                    self.received.append(self.target.recv(100))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                for _ in range(self.strangers):
                    stranger.sendto(b"stranger", (LOCALHOST, int(found.group(1))))
            time.sleep(0.1)
            if self.stop_with is not None:
                os.kill(os.getpid(), self.stop_with)


def run_main(argv: list[str], client: Client) -> tuple[int, float, list[str]]:
    """main(argv) in this (the main) thread, `client` alongside: its status, how long it
    ran, and its stdout lines."""
    client.start()
    started = time.monotonic()
    status = main(argv)
    elapsed = time.monotonic() - started
    client.join(5.0)
    return status, elapsed, (client.out + client.capsys.readouterr().out).splitlines()


def test_a_run_prints_its_address_and_summary_and_writes_its_log(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    made: list[LossyProxy],
    harmless_signals: None,
) -> None:
    """Two datagrams from a client, the second dropped by --drop; main() runs until its
    lifetime ends: the summary and the JSON log say what went through."""
    client = Client(capsys, [b"one", b"two"], stop_with=None)
    target = f"{LOCALHOST}:{client.target.getsockname()[1]}"
    log_path = tmp_path / "log.json"
    argv = ["--target", target, "--drop", "client:2", "--lifetime", "1.0", "--seed", "7",
            "--client-to-server", "delay=0:0.001", "--server-to-client", "delay=0.001",
            "--log-json", str(log_path)]  # fmt: skip
    status, elapsed, out = run_main(argv, client)
    (proxy,) = made
    assert (proxy.seed, proxy.lifetime, proxy.drop) == (7, 1.0, {("client", 2)})
    assert proxy.impairments == {
        "client": Impairment(delay=(0.0, 0.001)),
        "server": Impairment(delay=(0.001, 0.001)),
    }
    assert [d.data for d in proxy.datagrams("client")] == [b"one", b"two"]
    assert proxy.datagrams("server") == []
    assert status == 0 and elapsed >= 1.0
    assert client.received == [b"one"]
    listening = re.fullmatch(r"listening on ([\d.]+):(\d+) -> (.*)", out[0])
    assert listening is not None and listening.group(3) == target, out
    assert out[1:] == ["stopped; client dropped: 1, client sent: 1"]
    log = json.loads(log_path.read_text(encoding="utf-8"))
    assert log["address"] == [listening.group(1), int(listening.group(2))]
    entries = log["datagrams"]
    assert [(d["from"], d["index"], d["fate"], d["hex"]) for d in entries] == [
        ("client", 1, "sent", b"one".hex()),
        ("client", 2, "dropped", b"two".hex()),
    ]
    assert all(0.0 <= d["time"] < 1.0 and d["time"] == round(d["time"], 6) for d in entries)
    assert entries[1]["time"] > 0.0  # after the first datagram's round trip: not rounded away


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_at_once(
    stop_with: int,
    capsys: pytest.CaptureFixture[str],
    made: list[LossyProxy],
    harmless_signals: None,
) -> None:
    client = Client(capsys, [b"only"], stop_with=stop_with)
    argv = ["--target", f"{LOCALHOST}:{client.target.getsockname()[1]}", "--lifetime", "20"]
    status, elapsed, out = run_main(argv, client)
    assert status == 0 and elapsed < 5.0
    assert out[1:] == ["stopped; client sent: 1"]
    assert made[0].log == []  # no --log-json: no datagram kept in memory


def test_the_summary_and_the_log_count_the_datagrams_of_a_second_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], harmless_signals: None
) -> None:
    """A second client (another source port) got nothing, and neither the summary nor the log
    said that any datagram was ignored."""
    client = Client(capsys, [b"one", b"two"], stop_with=signal.SIGTERM, strangers=3)
    log_path = tmp_path / "log.json"
    argv = ["--target", f"{LOCALHOST}:{client.target.getsockname()[1]}", "--lifetime", "20",
            "--log-json", str(log_path)]
    status, _, out = run_main(argv, client)
    assert status == 0
    assert out[1:] == [
        "stopped; client sent: 2, ignored (not from the client or the target): 3"
    ]
    log = json.loads(log_path.read_text(encoding="utf-8"))
    assert log["ignored"] == 3 and len(log["datagrams"]) == 2
    assert log["ignored_from_target"] == 0 and log["send_errors"] == {}


def test_datagrams_from_the_target_s_address_are_ignored_and_counted_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], harmless_signals: None
) -> None:
    """Probe BQ, finding 3: a datagram from the target's address sent to the listening port
    before the client made the proxy take the target for its client (and loop what the target
    sent back to it). Now the client is served, and the summary and the log count them."""
    client = Client(capsys, [b"one", b"two"], stop_with=signal.SIGTERM, strangers=1,
                    from_target=2)
    log_path = tmp_path / "log.json"
    argv = ["--target", f"{LOCALHOST}:{client.target.getsockname()[1]}", "--lifetime", "20",
            "--log-json", str(log_path)]
    status, _, out = run_main(argv, client)
    assert status == 0
    assert client.received == [b"one"]
    assert out[1:] == [
        "stopped; client sent: 2, ignored (not from the client or the target): 1, "
        "ignored (from the target, to the listening port): 2"
    ]
    log = json.loads(log_path.read_text(encoding="utf-8"))
    assert (log["ignored"], log["ignored_from_target"]) == (3, 2)
    assert [d["hex"] for d in log["datagrams"]] == [b"one".hex(), b"two".hex()]


def test_the_summary_and_the_log_count_what_could_not_be_sent(
    capsys: pytest.CaptureFixture[str], harmless_signals: None, tmp_path: Path
) -> None:
    """Probe BQ, finding 5: a datagram the kernel refused (EMSGSIZE: 65,527 bytes from an IPv6
    client for an IPv4 target) was "client sent" in the summary and "sent" in the log. Both
    now say it failed, and why."""
    log_path = tmp_path / "log.json"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
        target.bind((LOCALHOST, 0))
        out = ""

        def send() -> None:
            nonlocal out
            for _ in range(300):
                out += capsys.readouterr().out
                if found := re.search(r"listening on \[::1\]:(\d+) ", out):
                    break
                time.sleep(0.01)
            else:
                return
            client.sendto(b"x" * 65_527, ("::1", int(found.group(1))))
            client.sendto(b"small", ("::1", int(found.group(1))))
            target.settimeout(2.0)
            target.recv(100)
            os.kill(os.getpid(), signal.SIGTERM)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        status = main(["--listen", "[::1]:0", "--target", f"{LOCALHOST}:{target.getsockname()[1]}",
                       "--lifetime", "20", "--log-json", str(log_path)])
        sender.join(5.0)
    lines = (out + capsys.readouterr().out).splitlines()
    assert status == 0
    assert lines[1:] == ["stopped; client send failed: 1, client sent: 1, "
                         "send errors: client EMSGSIZE 1"]
    log = json.loads(log_path.read_text(encoding="utf-8"))
    assert log["send_errors"] == {"client": {"EMSGSIZE": 1}}
    assert [(d["fate"], d.get("error")) for d in log["datagrams"]] == [
        ("failed", "EMSGSIZE"), ("sent", None)
    ]


def test_the_summary_counts_what_is_discarded_at_the_stop_apart(
    capsys: pytest.CaptureFixture[str], harmless_signals: None
) -> None:
    """With --delay, a datagram still waiting at the stop was called "sent" by the summary."""
    client = Client(capsys, [b"late"], stop_with=signal.SIGTERM)
    argv = ["--target", f"{LOCALHOST}:{client.target.getsockname()[1]}", "--lifetime", "20",
            "--delay", "10"]
    status, _, out = run_main(argv, client)
    assert status == 0
    assert out[1:] == ["stopped; client discarded at stop: 1"]


def test_a_log_that_cannot_be_written_at_the_stop_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], harmless_signals: None
) -> None:
    """The --log-json directory removed during the run: a FileNotFoundError traceback."""
    directory = tmp_path / "gone"
    directory.mkdir()
    log_path = directory / "log.json"
    remover = threading.Timer(0.1, lambda: (log_path.unlink(), directory.rmdir()))
    remover.start()
    status = main(["--target", "127.0.0.1:9", "--lifetime", "0.5", "--log-json", str(log_path)])
    remover.join(5.0)
    assert status == 1
    assert capsys.readouterr().err == (
        f"python -m iotdtls.proxy: cannot write the log {log_path}: No such file or directory\n"
    )


def test_a_closed_stdout_pipe_at_the_stop_is_one_line() -> None:
    """stdout a pipe whose reader went away (`| head -c 5`): a BrokenPipeError traceback."""
    command = [sys.executable, "-m", "iotdtls.proxy", "--target", f"{LOCALHOST}:{free_udp_port()}",
               "--lifetime", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env) as process:
        assert process.stdout is not None and process.stderr is not None
        watchdog = threading.Timer(20.0, process.kill)  # bounds the reads below
        watchdog.start()
        try:
            assert process.stdout.read(5) == b"liste"
            process.stdout.close()
            err = process.stderr.read().decode()
            status = process.wait(10)
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
    assert (status, err) == (1, "python -m iotdtls.proxy: cannot print: Broken pipe\n")


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full and that nobody reads: (read end, write end), the write end
    blocking again."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, bytes(65536))
    os.set_blocking(write_end, True)
    return read_end, write_end


def handles(process: subprocess.Popen[bytes], sig: int, within: float = 30.0) -> float:
    """When `process` handles `sig` (Linux: the SigCgt mask of /proc/PID/status) or has ended,
    by `time.monotonic()`: a signal sent then finds the handler however long the start took
    (a fixed second was too short for the mutation run's package, seconds to import)."""
    deadline = time.monotonic() + within
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("SigCgt:") and int(line.split()[1], 16) >> (sig - 1) & 1:
                    return time.monotonic()
        time.sleep(0.02)
    assert process.poll() is not None, f"no handler of signal {sig} within {within} s"
    return time.monotonic()


@pytest.mark.parametrize("unread", ["stdout", "stdout and stderr", "stdout, stderr closed"])
@pytest.mark.parametrize("stop_with", [None, signal.SIGTERM])
def test_a_stdout_nobody_reads_does_not_hold_the_run(unread: str, stop_with: int | None) -> None:
    """stdout (and stderr) a full pipe nobody reads, as in a harness that never reads the
    proxy's output: the "listening" line blocked the main thread for ever, so neither the end
    of --lifetime nor SIGTERM ended the process (the forwarding thread stopped, the process
    stayed). It now ends at its lifetime, or at once on SIGTERM, saying on stderr when it can
    that it could not print."""
    read_end, write_end = full_pipe()
    lifetime = "1" if stop_with is None else "60"
    command = [sys.executable, "-m", "iotdtls.proxy", "--target", f"{LOCALHOST}:{free_udp_port()}",
               "--lifetime", lifetime]
    if unread == "stdout, stderr closed":  # Python's sys.stderr is then None
        command = ["sh", "-c", 'exec "$@" 2>&-', "sh", *command]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    stderr: int = write_end if unread == "stdout and stderr" else subprocess.PIPE
    try:
        with subprocess.Popen(command, stdout=write_end, stderr=stderr, env=env) as process:
            try:
                started = handles(process, signal.SIGTERM)  # its lifetime runs by then
                if stop_with is not None:
                    time.sleep(0.5)  # the proxy is blocked on its first line
                    process.send_signal(stop_with)
                status = process.wait(30)
                err = process.stderr.read().decode() if process.stderr is not None else ""
            finally:
                if process.poll() is None:
                    process.kill()
    finally:
        os.close(read_end)
        os.close(write_end)
    assert status == 1 and time.monotonic() - started < 10.0
    if unread == "stdout":
        assert err == "python -m iotdtls.proxy: cannot print: stdout is not being read\n"


def test_a_run_without_datagrams_says_so(
    capsys: pytest.CaptureFixture[str], harmless_signals: None
) -> None:
    assert main(["--target", "127.0.0.1:9", "--lifetime", "0.1"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "stopped; no datagrams"


def test_an_ipv6_address_is_printed_in_brackets(
    capsys: pytest.CaptureFixture[str], harmless_signals: None
) -> None:
    """"listening on :::39991 -> ::1:39990": now as the rest of the project writes them."""
    assert main(["--listen", "[::1]:0", "--target", "[::1]:9", "--lifetime", "0.1"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(r"listening on \[::1\]:\d+ -> \[::1\]:9", line), line


def test_help_names_every_flag_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m iotdtls.proxy ")
    assert "Lossy UDP proxy for tests (seeded loss, duplication, reordering, delay)." in text
    for shown in ("--listen LISTEN", "--target TARGET", "--seed SEED", "--loss LOSS",
                  "--duplicate DUPLICATE", "--reorder REORDER", "--delay DELAY",
                  "--client-to-server SPEC", "--server-to-client SPEC", "--drop DIR:N",
                  "--lifetime LIFETIME", "--log-json PATH"):  # fmt: skip
        assert shown in text, shown
    for action in proxy_module._build_parser()._actions:
        assert action.help, action.dest
    assert ("one client: the first source address to send is served, datagrams from any other "
            "are ignored and counted in the summary and the log (so are those from the "
            "target's address, or from its port on another address of this machine when the "
            "target is on it, which would loop)") in text
    # A SPEC replaces the four flags for its direction as a whole, and says so.
    assert ("instead of --loss, --duplicate, --reorder and --delay, which then do not apply to "
            "that direction at all (what SPEC leaves out is 0)") in text


class _Running:
    """What `_write_line` reads of a proxy: whether it still runs."""

    def __init__(self, running: bool) -> None:
        self.running = running


class _FailingRaw(io.RawIOBase):
    """A binary stream with no descriptor whose writes fail with `failure` while it is set."""

    def __init__(self, failure: OSError) -> None:
        super().__init__()
        self.failure: OSError | None = failure

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.failure is not None:
            raise self.failure
        return len(data)


@pytest.mark.parametrize(
    ("failure", "said"),
    [(OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
     (OSError("the disk went away"), "the disk went away")],
)
def test_a_stream_without_a_descriptor_that_fails_is_said_on_stderr(
    monkeypatch: pytest.MonkeyPatch, failure: OSError, said: str
) -> None:
    """stdout a stream with no descriptor (as a test's capture), buffered, whose write fails
    only when flushed: the line is flushed at once, its failure is one line on stderr (the
    error's strerror, else the error), and the line is not printed."""
    raw = _FailingRaw(failure)
    stdout = io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8")
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    try:
        assert proxy_module._print_line("listening", cast(Any, _Running(True))) is False
    finally:
        raw.failure = None
        stdout.close()
    assert stderr.getvalue() == f"python -m iotdtls.proxy: cannot print: {said}\n"


def _bounded(call: Any, seconds: float) -> Any:
    """`call()`'s answer, which must come within `seconds`."""
    answers: list[Any] = []
    runner = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    runner.start()
    runner.join(seconds)
    assert answers, f"no answer within {seconds} s"
    return answers[0]


def test_a_line_goes_whole_on_the_descriptor_in_the_stream_s_encoding() -> None:
    """A line longer than a pipe holds, read as it comes: written whole by the writer thread,
    in the stream's encoding (what it cannot encode escaped), with a newline."""
    read_end, write_end = os.pipe()
    got = bytearray()

    def read() -> None:
        while chunk := os.read(read_end, 65536):
            got.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with open(write_end, "w", encoding="ascii", closefd=False) as stream:
            line = "é€" + "x" * 200_000
            assert _bounded(lambda: proxy_module._write_line(
                stream, "stdout", line, cast(Any, _Running(True))), 10.0) is None
    finally:
        os.close(write_end)
        reader.join(5.0)
        os.close(read_end)
    assert bytes(got) == b"\\xe9\\u20ac" + b"x" * 200_000 + b"\n"


def test_a_descriptor_that_fails_is_said() -> None:
    """A pipe whose reader has gone: the write's error (its strerror) is the answer."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with open(write_end, "w", encoding="utf-8", closefd=False) as stream:
            assert _bounded(lambda: proxy_module._write_line(
                stream, "stdout", "lost", cast(Any, _Running(True))), 10.0) == "Broken pipe"
    finally:
        os.close(write_end)


@pytest.mark.parametrize(("running", "read_after", "answer"), [
    (True, 2.0, None),  # the proxy runs: the line waits for its reader, past the grace
    (False, 0.6, None),  # stopped: the line waits the grace for a late reader
    (False, None, "stdout is not being read"),  # stopped, never read: given up after the grace
])
def test_a_blocked_line_waits_while_the_proxy_runs_and_a_grace_after(
    monkeypatch: pytest.MonkeyPatch, running: bool, read_after: float | None, answer: str | None
) -> None:
    """stdout a full pipe: a line waits for a reader as long as the proxy runs and then
    `_UNREAD_GRACE` seconds (1.2 here) more; a line still blocked then is given up, its writer
    thread left behind (a daemon: it does not hold the process at exit)."""
    monkeypatch.setattr(proxy_module, "_UNREAD_GRACE", 1.2)
    read_end, write_end = full_pipe()
    threads = set(threading.enumerate())

    def drain() -> None:
        os.set_blocking(read_end, False)
        with contextlib.suppress(BlockingIOError):
            while os.read(read_end, 65536):
                pass

    reader = threading.Timer(read_after, drain) if read_after is not None else None
    try:
        with open(write_end, "w", encoding="utf-8", closefd=False) as stream:
            started = time.monotonic()
            if reader is not None:
                reader.start()
            said = _bounded(lambda: proxy_module._write_line(
                stream, "stdout", "late", cast(Any, _Running(running))), 10.0)
            elapsed = time.monotonic() - started
            assert said == answer
            if read_after is not None:
                assert elapsed >= read_after  # written once read, not before
            else:
                assert 1.2 <= elapsed < 5.0
                behind = set(threading.enumerate()) - threads
                assert behind and all(t.daemon for t in behind)
    finally:
        if reader is not None:
            reader.join(5.0)
        os.close(read_end)  # the writer left behind ends with EPIPE
        os.close(write_end)
