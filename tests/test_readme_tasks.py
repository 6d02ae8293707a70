"""The README's "Common tasks" recipes run as written (on a fresh port, on loopback), each in
a fresh interpreter with what the recipe takes as given (`config`, `echo`, a server to talk
to) set up around it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.peers import free_udp_port
from tests.test_readme import serve_until_ctrl_c

README = Path(__file__).resolve().parent.parent / "README.md"

#: What every recipe takes as given: a PSK both sides share and an echo handler.
PROLOGUE = """
import asyncio, threading, socket
import iotdtls
KEY = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
server_config = iotdtls.ServerConfig(psk_store={b"dev1": KEY})
async def echo(session):
    async for datagram in session:
        session.send(datagram)
"""


def recipes() -> list[str]:
    """The Python blocks of the section, dedented (they sit in a list)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Common tasks") : text.index("### The adapters in detail")]
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", section, re.S)]


def recipe(marker: str, port: int) -> str:
    (block,) = [block for block in recipes() if marker in block]
    return block.replace("5684", str(port)).replace('"gw.local"', '"127.0.0.1"')


def run(source: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_server_recipe_serves_until_cancelled_then_frees_its_port() -> None:
    port = free_udp_port()
    server = recipe("asyncio.Event().wait()", port).replace('"0.0.0.0"', '"127.0.0.1"')
    server = server[: server.index("\ntry:")]  # main() alone, run here as asyncio.run would
    source = PROLOGUE + "config = server_config\n" + server + textwrap.dedent(f"""
        async def check():
            task = asyncio.ensure_future(main())
            await asyncio.sleep(0.3)
            client = iotdtls.ClientConfig(psk_identity=b"dev1", psk=KEY)
            async with iotdtls.connect("127.0.0.1", {port}, client) as conn:
                conn.send(b"ping")
                print(await conn.recv())
            task.cancel()  # what asyncio.run does to main() on Ctrl-C
            try:
                await task
            except asyncio.CancelledError:
                pass
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", {port}))  # the server's port is free again
            print("closed")
        asyncio.run(check())
        """)
    assert run(source).split() == ["b'ping'", "closed"]


def test_the_server_recipe_ends_quietly_on_ctrl_c(tmp_path: Path) -> None:
    """Saved as a script, the recipe serves until Ctrl-C, its peer then told with close_notify,
    and exits 0 without the KeyboardInterrupt traceback that `asyncio.run(main())` alone
    prints (probe CK)."""
    port = free_udp_port()
    server = recipe("asyncio.Event().wait()", port).replace('"0.0.0.0"', '"127.0.0.1"')
    script = tmp_path / "server.py"
    script.write_text(PROLOGUE + "config = server_config\n" + server)
    status, output = serve_until_ctrl_c(script, port)
    assert (status, output) == (0, "")


#: A server in a thread that sends its client one command, then closes the association.
COMMANDING_SERVER = """
async def command(session):
    await session.recv()
    session.send(b"reboot")
    await asyncio.sleep(0.2)
    session.close()
ready = threading.Event()
def serve_in_thread():
    async def main():
        async with iotdtls.serve(command, "127.0.0.1", PORT, server_config):
            ready.set()
            await asyncio.sleep(10)
    asyncio.run(main())
threading.Thread(target=serve_in_thread, daemon=True).start()
ready.wait(10)
config = iotdtls.ClientConfig(psk_identity=b"dev1", psk=KEY)
"""


def test_the_blocking_recipe_ends_its_loop_when_the_server_closes() -> None:
    """Its loop stops at the server's close_notify (`ended`) instead of spinning on None."""
    port = free_udp_port()
    source = PROLOGUE + COMMANDING_SERVER.replace("PORT", str(port)) + recipe(
        "iotdtls.sync.connect", port
    ) + "print('done')\n"
    assert run(source).splitlines() == ["command: b'reboot'", "done"]


def failure_recipe(port: int, setup: str) -> str:
    attempt = textwrap.indent(recipe("except iotdtls.AlertReceived", port), "    ")
    return PROLOGUE + setup + "async def attempt():\n" + attempt + "asyncio.run(attempt())\n"


def test_the_failure_recipe_names_a_wrong_psk() -> None:
    port = free_udp_port()
    setup = COMMANDING_SERVER.replace("PORT", str(port)).replace(
        "psk=KEY)", "psk=bytes(16))"
    )
    out = run(failure_recipe(port, setup))
    # The alert by its name: an IntEnum's str() is its number on Python 3.11 (probe CK).
    assert out.startswith("refused (decrypt_error): received fatal alert decrypt_error"), out


def test_the_failure_recipe_names_a_server_that_is_not_there() -> None:
    port = free_udp_port()
    setup = 'config = iotdtls.ClientConfig(psk_identity=b"dev1", psk=KEY)\n'
    out = run(failure_recipe(port, setup))
    assert out.startswith("down: "), out


def test_the_failure_recipe_names_a_host_that_does_not_resolve() -> None:
    """A name that does not resolve is a socket.gaierror (an OSError), not a DtlsError: the
    recipe catches it too, as the text says (probe CK: it escaped as a traceback)."""
    port = free_udp_port()
    setup = 'config = iotdtls.ClientConfig(psk_identity=b"dev1", psk=KEY)\n'
    attempt = recipe("except iotdtls.AlertReceived", port).replace(
        '"127.0.0.1"', '"nonexistent.invalid"')  # RFC 6761 §6.4: never resolves
    source = PROLOGUE + setup + "async def attempt():\n" + textwrap.indent(attempt, "    ") + (
        "asyncio.run(attempt())\n")
    out = run(source)
    assert re.match(r"network: \[Errno -?\d+\] cannot resolve nonexistent\.invalid: ", out), out
