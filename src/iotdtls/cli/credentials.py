"""Credential flags shared by every command that opens associations (`client`, `server`, and
the tools built on them): one place that turns flags into a `ClientConfig` / `ServerConfig`,
so each command gets every credential mode at once (profile §3, CFG-1).

Client, one mode per server: `--psk-identity ID --psk HEX` or `--psk-file FILE` (the key out
of the process list); or `--peer-rpk SPKI.pem` / `--peer-rpk-sha256 HEX` (the server's raw
key) with `--rpk-key KEY.pem` (ours, for mutual authentication); or `--cafile FILE` (trust
anchors) with `--cert FILE --key FILE` (ours) and
`--server-name NAME`. Server, any mix: the PSK flags, `--rpk-key KEY.pem` with `--rpk-allow
SPKI.pem` / `--rpk-allow-sha256 HEX` (client keys, which then are required), `--cert FILE
--key FILE` with `--client-cafile FILE` (client certificates, which then are required).
Both: `--allow-no-ems` to reach peers without the extended master secret (RFC 7627; RES-3:
such a session is never resumed, and the log line of its handshake says so).

A key or certificate file that cannot be used is refused in one line naming its flag and file.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from iotdtls._files import (
    MAX_CREDENTIAL_FILE,
    RefusedFile,
    not_ours_alone,
    read_regular_file_and_stat,
)
from iotdtls._paths import cannot_read, shown_path
from iotdtls.chaincache import ChainCache
from iotdtls.cli.common import Once, UsageError, file_path, hex_bytes, whole_number
from iotdtls.config import (
    DEFAULT_MAX_PSK_IDENTITY,
    MAX_PSK_LENGTH,
    ClientConfig,
    ServerConfig,
)
from iotdtls.credentials import (
    PIN_TEXT,
    CertifiedKey,
    PrivateKey,
    mark_validity_warned,
    pin_from_hex,
    public_key_pin,
    public_key_spki,
)
from iotdtls.crypto.pem import CERTIFICATE, PRIVATE_KEY, kind_of
from iotdtls.crypto.x509 import load_certificates
from iotdtls.errors import ConfigError
from iotdtls.identity import shown_identity

__all__ = [
    "add_client_credentials",
    "add_server_credentials",
    "chain_cache",
    "client_config",
    "file_holds",
    "load_private_key",
    "read_psk_file",
    "server_config",
]


_log = logging.getLogger("iotdtls.cli")

#: The largest --psk-file read: far more keys than one server process holds.
MAX_PSK_FILE = 1 << 20
#: The largest key, certificate or public-key file read: far more than a chain or trust-anchor
#: bundle holds (the API's loaders take as much).
MAX_PEM_FILE = MAX_CREDENTIAL_FILE


def read_psk_file(
    path: str, known: dict[bytes, tuple[str, int]] | None = None, longest: int | None = None
) -> dict[bytes, bytes]:
    """Lines `identity:HEXKEY` (GnuTLS psktool format); blank lines and # comments skipped, a
    UTF-8 byte order mark ignored, spaces around the identity and the key too; an identity
    given twice is refused (which key would be meant?), naming both lines, also one already
    in `known` (the file and line of each identity of the files read before, to which this
    file's are added). The file is read as bytes: an identity is the bytes written, whatever
    their encoding (RFC 7925 §4.2, PSK-2: identities are opaque), of at most `longest` bytes
    when given (`_check_length`). Only a regular file of at most `MAX_PSK_FILE` bytes is read
    (a FIFO would block the command, /dev/zero fill its memory)."""
    store: dict[bytes, bytes] = {}
    place_of = {} if known is None else known
    data, info = _read_regular_and_stat(path, "--psk-file", MAX_PSK_FILE)
    # The keys of every client (or ours): kept like --keylog and --session-file (CFG-2).
    problem = _open_to_others(info)
    if problem is not None:
        raise UsageError(f"--psk-file {shown_path(path)} {problem}")
    data = data.removeprefix(b"\xef\xbb\xbf")
    for number, line in enumerate(data.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        name, sep, key = line.rpartition(b":")
        name, key = name.strip(), key.strip()
        if not sep or not name:
            raise UsageError(f"{path}:{number}: expected identity:HEXKEY")
        if name in place_of:
            earlier, first = place_of[name]
            where = f"on line {first}" if earlier == path else f"in {earlier}:{first}"
            raise UsageError(
                f"{path}:{number}: identity {_as_typed(name)} is already {where} "
                "(one key per identity)"
            )
        _check_length(name, longest, f"{path}:{number}: the identity")
        place_of[name] = (path, number)
        text = key.decode("ascii", "surrogateescape")  # a byte not ASCII: not a hex digit
        where = f"{path}:{number} key"
        store[name] = _fitting_psk(hex_bytes(where, text, secret=True), where)
    return store


def _fitting_psk(key: bytes, where: str) -> bytes:
    """A key of --psk, --psk-text or a --psk-file line, refused naming it (`where`) when longer
    than the 2-byte length of RFC 4279 §2 allows, rather than by the configuration in the
    API's words ("a psk in psk_store")."""
    if len(key) > MAX_PSK_LENGTH:
        raise UsageError(
            f"{where} is {len(key):,} bytes; at most {MAX_PSK_LENGTH:,} fit the protocol "
            "(RFC 4279 §2)"
        )
    return key


def _as_typed(identity: bytes) -> str:
    """A PSK identity quoted for a message as the user wrote it: as text when it is UTF-8
    ('dev1'), else as bytes; cut as in log lines (`shown_identity`)."""
    return shown_identity(identity, as_text=True)


def _identity_bytes(text: str, longest: int | None = None) -> bytes:
    """A --psk-identity, as the bytes typed (`_typed_bytes`), so an identity in any encoding is
    sent as it was typed (RFC 7925 §4.2, PSK-2: identities are opaque bytes); at most `longest`
    bytes when given (`_check_length`), not empty."""
    identity = _typed_bytes(text, "--psk-identity", quoted=True)
    if not identity:  # names no one, as a --psk-file line ":HEX" (RFC 4279 §5)
        raise UsageError("--psk-identity is empty: give the identity the key is known by")
    _check_length(identity, longest, "--psk-identity")
    return identity


def _typed_bytes(text: str, flag: str, *, quoted: bool) -> bytes:
    """The value of `flag` as the bytes typed: Python's decoding of the arguments
    (surrogateescape) undone. A `UsageError` naming the flag for one that cannot be (a lone
    surrogate), quoting the value only when `quoted` (never a key: RFC 4279 §5.4 keys as
    text)."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        shown = f" {text!r}" if quoted else ""
        raise UsageError(f"{flag}{shown} cannot be encoded as bytes") from None


def _check_length(identity: bytes, longest: int | None, where: str) -> None:
    """A server's PSK identity must fit its ClientKeyExchange (2 + its length bytes, RFC 4279
    §2), which must fit the default `max_handshake_message` (the CLI has no flag for it): so
    at most `longest` (`DEFAULT_MAX_PSK_IDENTITY`) bytes, else a `UsageError` naming `where`,
    the --psk-file line or --psk-identity (the library's message names the API's setting)."""
    if longest is not None and len(identity) > longest:
        raise UsageError(
            f"{where} is {len(identity):,} bytes: too long for the handshake (at most "
            f"{longest:,} bytes with the CLI's settings)"
        )


def _read_regular(path: str, flag: str, limit: int) -> bytes:
    """The bytes of the regular file `path`, given as `flag`, at most `limit`
    (`read_regular_file`); a `UsageError` naming both for anything else."""
    return _read_regular_and_stat(path, flag, limit)[0]


def _read_regular_and_stat(path: str, flag: str, limit: int) -> tuple[bytes, os.stat_result]:
    """`_read_regular`, with the file's status as read (for its owner and mode)."""
    try:
        return read_regular_file_and_stat(path, limit)
    except RefusedFile as exc:
        raise UsageError(f"{flag} {shown_path(path)} {exc}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(cannot_read(flag, path, exc)) from None


def _open_to_others(info: os.stat_result) -> str | None:
    """What makes a secret file with status `info` (a --psk-file, a private key) readable by
    others than us, or another user's (`not_ours_alone`), or None."""
    return not_ours_alone(info, "file", "600", could="could have written it")


def _read(path: str, flag: str) -> bytes:
    """The key, certificate or public-key file `path`, given as `flag`: a regular file of at
    most `MAX_PEM_FILE` bytes, as --psk-file (a FIFO would block the command, /dev/zero fill
    its memory)."""
    return _read_regular(path, flag, MAX_PEM_FILE)


def load_private_key(path: str, flag: str, *, warn: bool = True) -> PrivateKey:
    """The private key in file `path`, given as `flag`; a `UsageError` naming both when the
    file cannot be read or holds no usable key (encrypted keys are not supported). A key file
    others could read or another user's is used, with one warning line (`warn`: not given
    already, by the parent of the workers): unlike a --psk-file it is commonly made so (a key
    written through the shell, `openssl genpkey > key.pem`, or copied is 0644 under the usual
    umask; OpenSSL 3's -out and keygen write 0600). The
    warning comes once the file is known to hold a private key: a file refused, or a public
    key that the caller reads instead (`keygen spki`), gets none."""
    data, info = _read_regular_and_stat(path, flag, MAX_PEM_FILE)
    try:
        key = PrivateKey.from_pem(data)
    except ConfigError as exc:
        # cryptography refuses an encrypted key without its password with a TypeError.
        if b"ENCRYPTED" in data or isinstance(exc.__context__, TypeError):
            raise UsageError(
                f"{flag} {path}: encrypted keys are not supported: decrypt it first "
                f"(openssl pkey -in {path} -out KEY.pem)"
            ) from None
        raise UsageError(f"{flag} {path}: {exc}") from None
    problem = _open_to_others(info)
    if problem is not None and warn:
        _log.warning("%s %s %s; used all the same", flag, shown_path(path), problem)
    return key


def _certificates(path: str, flag: str) -> tuple[bytes, ...]:
    """The certificates (DER) in file `path`, given as `flag`."""
    try:
        return load_certificates(_read(path, flag))
    except ConfigError as exc:
        raise UsageError(f"{flag} {path}: {exc}") from None


def _pin_file(path: str, flag: str) -> bytes:
    """The pin of the SubjectPublicKeyInfo in file `path`, given as `flag`."""
    try:
        return public_key_pin(_read(path, flag))
    except ConfigError as exc:
        raise UsageError(f"{flag} {path}: {exc}") from None


def _pins(files: list[str], hashes: list[str], flag: str) -> list[bytes]:
    """Raw public keys from SPKI files and SHA-256 hex digests (optionally after "sha256:", as
    the demo and the logs print them: `pin_from_hex`)."""
    pins = [_pin_file(path, flag) for path in files]
    for text in hashes:
        digest = pin_from_hex(text)
        if digest is None:
            raise UsageError(f"{flag}-sha256 must be {PIN_TEXT}, got {text!r}")
        pins.append(digest)
    return pins


def _certified(args: argparse.Namespace, *, warned: bool = False) -> CertifiedKey | None:
    """--cert and --key; `warned`: its validity warning is given already (by the parent of
    the workers), not again (`mark_validity_warned`)."""
    if (args.cert is None) != (args.key is None):
        raise UsageError("give --cert and --key together")
    if args.cert is None:
        return None
    try:
        chain = _certificates(args.cert, "--cert")
    except UsageError:
        _refuse_swapped(args.cert, args.key)
        raise
    key = load_private_key(args.key, "--key", warn=not warned)
    try:
        certified = CertifiedKey(chain, key, source=args.cert)
    except ConfigError as exc:
        raise UsageError(f"--cert {args.cert} with --key {args.key}: {exc}") from None
    if warned:
        mark_validity_warned(certified)
    return certified


def load_public_key_spki(path: str, flag: str) -> bytes:
    """The public key in file `path` (PEM or DER SubjectPublicKeyInfo, either point form),
    given as `flag`, as DER with its point uncompressed; a `UsageError` naming both otherwise."""
    try:
        return public_key_spki(_read(path, flag))
    except ConfigError as exc:
        raise UsageError(f"{flag} {path}: {exc}") from None


def file_holds(path: str, flag: str) -> str | None:
    """What the file `path`, given as `flag`, holds (`iotdtls.crypto.pem.kind_of`): `CERTIFICATE`,
    `PRIVATE_KEY`, ..., or None; to say what a file that was refused holds."""
    found = kind_of(_read(path, flag))
    return None if found is None else found[0]


def _refuse_swapped(cert: str, key: str) -> None:
    """A `UsageError` when --cert holds a private key and --key a certificate: the two files
    were given the other way round."""
    if file_holds(cert, "--cert") == PRIVATE_KEY and file_holds(key, "--key") == CERTIFICATE:
        raise UsageError(
            f"--cert {cert} holds a private key and --key {key} a certificate: swap --cert "
            "and --key"
        )


def add_client_credentials(p: argparse.ArgumentParser) -> None:
    """The client's credentials for the one server it talks to (CFG-1)."""
    g = p.add_argument_group("credentials (one mode)")
    g.add_argument(
        "--psk-identity", metavar="ID", action=Once,
        help="PSK identity (with --psk-file: the entry to use)",
    )
    _add_key_flags(g, "pre-shared key")
    g.add_argument(
        "--psk-file", metavar="FILE", type=file_path, action=Once,
        help="lines identity:HEXKEY as the server's (several: choose one with --psk-identity); "
        "refused if others can read it (chmod 600)",
    )
    g.add_argument(
        "--peer-rpk",
        metavar="SPKI.pem", type=file_path,
        action="append",
        default=[],
        help="the server's raw public key (repeatable)",
    )
    g.add_argument(
        "--peer-rpk-sha256",
        metavar="HEX",
        action="append",
        default=[],
        help="SHA-256 of the server's SubjectPublicKeyInfo, its point uncompressed: 64 hex "
        "digits, optionally after sha256: as the demo and the logs print it (repeatable)",
    )
    g.add_argument(
        "--rpk-key", metavar="KEY.pem", type=file_path, action=Once,
        help="our raw-public-key private key (a warning if others can read it)",
    )
    g.add_argument(
        "--cafile", metavar="FILE", type=file_path, action=Once,
        help="trust anchors for the server certificate",
    )
    _add_certificate_flags(g)
    g.add_argument(
        "--server-name",
        metavar="NAME",
        action=Once,
        help="the server's DNS name: sent as server_name (SNI) and checked against its "
        "certificate (default: the host)",
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        action=Once,
        help="keep the server's chain here between runs (cached_info, RFC 7924)",
    )
    _add_legacy_flag(p, "servers")


def _add_certificate_flags(g: argparse._ArgumentGroup) -> None:
    """--cert FILE and --key FILE: our certificate chain and its key."""
    g.add_argument(
        "--cert", metavar="FILE", type=file_path, action=Once,
        help="our certificate chain (PEM, leaf first; a root at its end is not sent)",
    )
    g.add_argument(
        "--key", metavar="FILE", type=file_path, action=Once,
        help="the private key of --cert (a warning if others can read it)",
    )


def _add_key_flags(g: argparse._ArgumentGroup, what: str) -> None:
    """--psk HEX or --psk-text TEXT: a management interface takes a PSK both in hex and as
    text (RFC 4279 §5.4); either shows in the process list, which --psk-file avoids."""
    keys = g.add_mutually_exclusive_group()
    keys.add_argument(
        "--psk", metavar="HEX", action=Once,
        help=f"{what} in hex (other users see it in the process list: prefer --psk-file)",
    )
    keys.add_argument(
        "--psk-text", metavar="TEXT", action=Once,
        help=f"{what} as text, its bytes as typed (seen in the process list too)",
    )


def _key_flag(args: argparse.Namespace) -> bytes | None:
    """The key of --psk or --psk-text (the bytes typed, as an identity's), if one was given."""
    if args.psk is not None:
        return _fitting_psk(hex_bytes("--psk", args.psk, secret=True), "--psk")
    if args.psk_text is None:
        return None
    key = _typed_bytes(args.psk_text, "--psk-text", quoted=False)
    if not key:
        raise UsageError("--psk-text is empty")
    return _fitting_psk(key, "--psk-text")


def _add_legacy_flag(p: argparse.ArgumentParser, peers: str) -> None:
    """--allow-no-ems: reach peers that lack the extended master secret (RFC 7627)."""
    p.add_argument(
        "--allow-no-ems",
        action="store_true",
        help=f"accept {peers} without the extended master secret (RFC 7627); such sessions "
        "are never resumed",
    )


def _legacy(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with `require_extended_master_secret` off when --allow-no-ems was given
    (every command with credential flags has it)."""
    if args.allow_no_ems:
        return {**settings, "require_extended_master_secret": False}
    return settings


def client_config(
    args: argparse.Namespace, host: str | None = None, **settings: Any
) -> ClientConfig:
    """A `ClientConfig` from the credential flags plus `settings` (mtu, timeouts, ...); `host`,
    the server the client connects to, is the name its certificate must carry unless
    `--server-name` says otherwise (RFC 6125, CRT-3)."""
    settings = _legacy(args, settings)
    psk = (args.psk_identity, args.psk, args.psk_text, args.psk_file) != (None,) * 4
    rpk = bool(args.peer_rpk or args.peer_rpk_sha256)
    x509 = args.cafile is not None
    if psk + rpk + x509 != 1:
        raise UsageError(
            "choose one mode: --psk-identity ID --psk HEX, or --psk-file FILE, or --peer-rpk FILE "
            "/ --peer-rpk-sha256 HEX [--rpk-key FILE], or --cafile FILE [--cert FILE --key FILE]"
        )
    if args.rpk_key is not None and not rpk:
        raise UsageError("--rpk-key needs the server's key: --peer-rpk or --peer-rpk-sha256")
    if (args.cert is not None or args.key is not None) and not x509:
        raise UsageError("--cert/--key need trust anchors for the server: --cafile FILE")
    if args.cache_dir is not None and not x509:
        raise UsageError("--cache-dir keeps certificate chains: it needs --cafile FILE")
    # The name the server is reached by: sent as server_name when it is a DNS name (SNI,
    # RFC 6066 §3) and, with certificates, the name the server's certificate must carry.
    settings.setdefault("server_name", args.server_name or host)
    if psk:
        identity, psk_key = _client_psk(args)
        return ClientConfig(psk_identity=identity, psk=psk_key, **settings)
    if rpk:
        own = None if args.rpk_key is None else load_private_key(args.rpk_key, "--rpk-key")
        pins = _pins(args.peer_rpk, args.peer_rpk_sha256, "--peer-rpk")
        return ClientConfig(server_public_keys=pins, raw_public_key=own, **settings)
    return ClientConfig(
        trust_anchors=_certificates(args.cafile, "--cafile"),
        certificate=_certified(args),
        **settings,
    )


def _client_psk(args: argparse.Namespace) -> tuple[bytes, bytes]:
    """The client's PSK identity and key: `--psk-identity ID --psk HEX`, or the entry of
    `--psk-file FILE` (its only one, or the one of `--psk-identity`), which keeps the key out
    of the process list."""
    key = _key_flag(args)
    if args.psk_file is None:
        if args.psk_identity is None or key is None:
            raise UsageError("give --psk-identity ID and --psk HEX (or --psk-text TEXT) together")
        return _identity_bytes(args.psk_identity), key
    if key is not None:
        given = "--psk HEX" if args.psk is not None else "--psk-text TEXT"
        raise UsageError(f"give the key once: --psk-file FILE or {given}")
    store = read_psk_file(args.psk_file)
    if args.psk_identity is not None:
        identity = _identity_bytes(args.psk_identity)
        if identity not in store:
            raise UsageError(
                f"--psk-file {args.psk_file} has no key for --psk-identity "
                f"{_as_typed(identity)}"
            )
        return identity, store[identity]
    if not store:
        raise UsageError(f"--psk-file {args.psk_file} holds no keys (lines identity:HEXKEY)")
    if len(store) > 1:
        raise UsageError(
            f"--psk-file {args.psk_file} holds {len(store)} identities: choose one with "
            "--psk-identity ID"
        )
    ((identity, key),) = store.items()
    return identity, key


def add_server_credentials(p: argparse.ArgumentParser) -> None:
    """The server's credentials; several modes may be given at once."""
    g = p.add_argument_group("credentials (any mix)")
    g.add_argument(
        "--psk-identity", metavar="ID", action=Once, hint="several PSK clients go in --psk-file",
        help="a client's PSK identity",
    )
    _add_key_flags(g, "its pre-shared key")
    g.add_argument(
        "--psk-file", metavar="FILE", type=file_path, action="append", default=[],
        help="lines identity:HEXKEY (spaces around either ignored; at most 1 MiB; repeatable); "
        "refused if others can read it (chmod 600)",
    )
    g.add_argument(
        "--rpk-key", metavar="KEY.pem", type=file_path, action=Once,
        help="our raw-public-key private key (a warning if others can read it)",
    )
    g.add_argument(
        "--rpk-allow",
        metavar="SPKI.pem", type=file_path,
        action="append",
        default=[],
        help="a client raw public key to accept (repeatable)",
    )
    g.add_argument(
        "--rpk-allow-sha256",
        metavar="HEX",
        action="append",
        default=[],
        help="SHA-256 of a client SubjectPublicKeyInfo, its point uncompressed, to accept: 64 "
        "hex digits, optionally after sha256: as the demo and the logs print it (repeatable)",
    )
    _add_certificate_flags(g)
    g.add_argument(
        "--client-cafile",
        metavar="FILE", type=file_path,
        action=Once,
        help="trust anchors for client certificates (then required, each naming its EUI-64)",
    )
    g.add_argument(
        "--validated-chains", metavar="N", type=whole_number(0), action=Once,
        help="client chains remembered as validated, so that a client coming back skips the "
        "path validation: at least the number of devices that reconnect in turn (0: none; "
        f"default {ServerConfig.validated_chains})",
    )
    _add_legacy_flag(p, "clients")


def server_config(
    args: argparse.Namespace, *, validity_warned: bool = False, **settings: Any
) -> ServerConfig:
    """A `ServerConfig` from the credential flags plus `settings`; `validity_warned`: the
    warning of a --cert out of its validity period is given already (`_certified`)."""
    settings = _legacy(args, settings)
    store: dict[bytes, bytes] = {}
    place_of: dict[bytes, tuple[str, int]] = {}
    files: list[str] = args.psk_file
    for number, path in enumerate(files):
        if path in files[:number]:
            raise UsageError(f"--psk-file {path} given twice")
        # An identity in two files is refused.
        store.update(read_psk_file(path, place_of, DEFAULT_MAX_PSK_IDENTITY))
    key = _key_flag(args)
    if (args.psk_identity is None) != (key is None):
        raise UsageError("give --psk-identity and --psk (or --psk-text) together")
    if key is not None:
        name = _identity_bytes(args.psk_identity, longest=DEFAULT_MAX_PSK_IDENTITY)
        if name in store:  # which key would be meant? As for an identity twice in the file
            raise UsageError(
                f"--psk-identity {_as_typed(name)} is also in --psk-file {place_of[name][0]} "
                "(one key per identity)"
            )
        store[name] = key
    allow = _pins(args.rpk_allow, args.rpk_allow_sha256, "--rpk-allow")
    if allow and args.rpk_key is None:
        raise UsageError("--rpk-allow needs the server's own key: --rpk-key FILE")
    certified = _certified(args, warned=validity_warned)
    if args.client_cafile is not None and certified is None:
        raise UsageError("--client-cafile needs the server's own --cert and --key")
    if args.validated_chains is not None:
        if args.client_cafile is None:
            raise UsageError("--validated-chains counts client certificate chains: it needs "
                             "--client-cafile FILE")
        settings = {**settings, "validated_chains": args.validated_chains}
    if not store and args.rpk_key is None and certified is None:
        if files:
            holds = "holds" if len(files) == 1 else "hold"
            raise UsageError(
                f"--psk-file {', '.join(files)} {holds} no keys (lines identity:HEXKEY)"
            )
        raise UsageError(
            "give credentials: --psk-identity ID --psk HEX or --psk-file FILE, "
            "--rpk-key FILE, or --cert FILE --key FILE"
        )
    return ServerConfig(
        psk_store=store or None,
        raw_public_key=(
            None
            if args.rpk_key is None
            else load_private_key(args.rpk_key, "--rpk-key", warn=not validity_warned)
        ),
        client_public_keys=allow,
        certificates=() if certified is None else (certified,),
        client_trust_anchors=(
            ()
            if args.client_cafile is None
            else _certificates(args.client_cafile, "--client-cafile")
        ),
        **settings,
    )


def chain_cache(args: argparse.Namespace) -> ChainCache | None:
    """The `--cache-dir` store of server chains (certificate mode), or None."""
    return None if args.cache_dir is None else ChainCache(args.cache_dir)
