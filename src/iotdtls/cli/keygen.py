"""`iotdtls keygen`: make the credentials the profile's modes need (profile §3, CFG-1).

* `keygen ec-p256 --out KEY.pem [--force]`: a new ECDSA P-256 private key (PKCS#8 PEM, mode
  0600, written atomically; an existing file is kept unless `--force`); prints the SHA-256 of
  its SubjectPublicKeyInfo in hex, the pin a peer provisions for it (RPK-3).
* `keygen spki --key KEY.pem [--out PUB.pem] [--force]`: the SubjectPublicKeyInfo of a key as
  PEM (`--peer-rpk` / `--rpk-allow` files; never over the --key file) and its SHA-256.
* `keygen psk [--bytes N]`: a random pre-shared key in hex (CFG-2: from the OS CSPRNG).

Argument wiring only: keys come from `iotdtls.crypto`.
"""

from __future__ import annotations

import argparse
import base64
from typing import Any, BinaryIO, Final

from iotdtls._files import same_file, write_atomically
from iotdtls.cli.common import UsageError, file_path, stdout_buffer, whole_number
from iotdtls.cli.credentials import file_holds, load_private_key, load_public_key_spki
from iotdtls.crypto import random_bytes
from iotdtls.crypto.pem import CERTIFICATE, PUBLIC_KEY
from iotdtls.crypto.signature import PrivateKey, spki_sha256

__all__ = ["register"]

DEFAULT_PSK_BYTES: Final = 16
MAX_PSK_BYTES: Final = 256
_PEM_LINE = 64  # RFC 7468 §2
#: What `keygen spki --key` reads: a private key (PKCS#8, or SEC1: RFC 5915) or a public key
#: (SubjectPublicKeyInfo, RFC 5280 §4.1.2.7), in PEM or DER.
_KEY_FORMS = "PEM or DER, PKCS#8, SEC1 or SubjectPublicKeyInfo"


def register(sub: Any) -> None:
    """Add `keygen` and its three kinds to the subcommands."""
    keygen = sub.add_parser("keygen", help="make a P-256 key pair, its public key, or a PSK")
    kinds = keygen.add_subparsers(dest="kind", required=True, metavar="{ec-p256,spki,psk}")

    ec = kinds.add_parser("ec-p256", help="write a new P-256 private key, print its SPKI SHA-256")
    ec.add_argument(
        "--out", required=True, metavar="KEY.pem", type=file_path,
        help="file to create (mode 0600)",
    )
    ec.add_argument("--force", action="store_true", help="replace KEY.pem if it exists")
    ec.set_defaults(run=run_ec_p256, server_logging=None, streams=["stdout"])

    spki = kinds.add_parser("spki", help="print a key's SPKI SHA-256; --out writes its public key")
    spki.add_argument(
        "--key", required=True, metavar="KEY.pem", type=file_path,
        help="private or public key (PEM or DER)",
    )
    spki.add_argument(
        "--out", metavar="PUB.pem", type=file_path, help="file to write the public key to"
    )
    spki.add_argument("--force", action="store_true", help="replace PUB.pem if it exists")
    spki.set_defaults(run=run_spki, server_logging=None, streams=["stdout"])

    psk = kinds.add_parser("psk", help="print a random pre-shared key in hex")
    psk.add_argument(
        "--bytes",
        type=whole_number(1, MAX_PSK_BYTES),
        default=DEFAULT_PSK_BYTES,
        metavar="N",
        help=f"key length in bytes (default {DEFAULT_PSK_BYTES})",
    )
    psk.set_defaults(run=run_psk, server_logging=None, streams=["stdout"])


def run_ec_p256(args: argparse.Namespace) -> int:
    out = stdout_buffer()  # before the key is written: its pin is printed only there
    key = PrivateKey.generate()
    _write(args.out, key.to_pem(), mode=0o600, force=args.force)
    _print(out, key.spki_sha256.hex())
    return 0


def run_spki(args: argparse.Namespace) -> int:
    out = stdout_buffer()
    if args.out and same_file(args.out, args.key):
        raise UsageError(
            f"--out {args.out} is the --key file: name another file for the public key"
        )
    spki = _key_spki(args.key)
    if args.out is not None:
        _write(args.out, spki_pem(spki), mode=0o644, force=args.force)
    _print(out, spki_sha256(spki).hex())
    return 0


def _key_spki(path: str) -> bytes:
    """The --key file's SubjectPublicKeyInfo, its point uncompressed (RFC 8422 §5.1.2, as the
    pin is made): of a private key, or of a public key (PEM or DER, either point form), which
    is what the help promises ("print a key's SPKI SHA-256")."""
    if file_holds(path, "--key") == PUBLIC_KEY:
        return load_public_key_spki(path, "--key")
    return _private_key(path).spki


def _private_key(path: str) -> PrivateKey:
    """The --key file's key; a file that holds no key of either kind is refused naming both
    (`spki` takes a public key too), a certificate given instead with the command that prints
    the public key it holds."""
    try:
        return load_private_key(path, "--key")
    except UsageError as exc:
        held = file_holds(path, "--key")
        if held is None:
            raise UsageError(
                f"--key {path}: no private or public key in it ({_KEY_FORMS})"
            ) from None
        if held != CERTIFICATE:
            raise
        raise UsageError(
            f"{exc}; the certificate holds its public key: openssl x509 -in {path} -pubkey "
            "-noout prints it"
        ) from None


def run_psk(args: argparse.Namespace) -> int:
    _print(stdout_buffer(), random_bytes(args.bytes).hex())
    return 0


def _print(out: BinaryIO, line: str) -> None:
    """`line` on stdout, flushed: a key or pin that cannot be printed is an `OSError` (the
    command's one line, status 1), never lost in silence."""
    out.write(line.encode("ascii") + b"\n")
    out.flush()


def spki_pem(spki: bytes) -> bytes:
    """A DER SubjectPublicKeyInfo as a PEM PUBLIC KEY block (RFC 7468 §13)."""
    text = base64.b64encode(spki).decode("ascii")
    lines = [text[i : i + _PEM_LINE] for i in range(0, len(text), _PEM_LINE)]
    return (
        "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"
    ).encode("ascii")


def _write(path: str, data: bytes, *, mode: int, force: bool) -> None:
    if not path:
        raise UsageError("--out is empty: name the file to write")
    try:
        write_atomically(path, data, mode=mode, replace=force)
    except FileExistsError:
        raise UsageError(f"{path} exists; add --force to replace it") from None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
