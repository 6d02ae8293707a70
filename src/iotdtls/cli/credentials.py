"""Credential flags shared by every command that opens associations (`client`, `server`, and
the tools built on them): one place that turns flags into a `ClientConfig` / `ServerConfig`,
so each command gets every credential mode at once."""

from __future__ import annotations

import argparse
from typing import Any

from iotdtls.cli.common import UsageError, hex_bytes
from iotdtls.config import ClientConfig, ServerConfig

__all__ = [
    "add_client_credentials",
    "add_server_credentials",
    "client_config",
    "read_psk_file",
    "server_config",
]


def read_psk_file(path: str) -> dict[bytes, bytes]:
    """Lines `identity:HEXKEY` (GnuTLS psktool format); blank lines and # comments skipped."""
    store: dict[bytes, bytes] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --psk-file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        identity, sep, key = line.rpartition(":")
        if not sep or not identity:
            raise UsageError(f"{path}:{number}: expected identity:HEXKEY")
        store[identity.encode()] = hex_bytes(f"{path}:{number} key", key)
    return store


def add_client_credentials(p: argparse.ArgumentParser) -> None:
    """The client's credentials for the one server it talks to (CFG-1)."""
    p.add_argument("--psk-identity", metavar="ID", help="PSK identity")
    p.add_argument("--psk", metavar="HEX", help="pre-shared key in hex")


def client_config(args: argparse.Namespace, **settings: Any) -> ClientConfig:
    """A `ClientConfig` from the credential flags plus `settings` (mtu, timeouts, ...)."""
    if args.psk_identity is None or args.psk is None:
        raise UsageError("give --psk-identity ID and --psk HEX")
    return ClientConfig(
        psk_identity=args.psk_identity, psk=hex_bytes("--psk", args.psk), **settings
    )


def add_server_credentials(p: argparse.ArgumentParser) -> None:
    """The server's credentials; several modes may be given at once."""
    p.add_argument("--psk-identity", metavar="ID")
    p.add_argument("--psk", metavar="HEX")
    p.add_argument("--psk-file", metavar="FILE", help="lines identity:HEXKEY")


def server_config(args: argparse.Namespace, **settings: Any) -> ServerConfig:
    """A `ServerConfig` from the credential flags plus `settings`."""
    store: dict[bytes, bytes] = read_psk_file(args.psk_file) if args.psk_file else {}
    if (args.psk_identity is None) != (args.psk is None):
        raise UsageError("give --psk-identity and --psk together")
    if args.psk is not None:
        store[args.psk_identity.encode()] = hex_bytes("--psk", args.psk)
    if not store:
        raise UsageError("give --psk-identity ID --psk HEX, or --psk-file FILE")
    return ServerConfig(psk_store=store, **settings)
