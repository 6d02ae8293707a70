"""How a file name given for a key, a certificate or a credentials file appears in a one-line
error (errors are one line saying what to fix, with no key material in them).

A secret given where its file's path was expected (the PEM text of a private key, a
--psk-file line) is never quoted: the message says what it looks like instead. Any other path
is quoted, as the user wants to see a typo, on one line (control characters escaped) and cut
when very long."""

from __future__ import annotations

import base64
import binascii
import os
import re

__all__ = ["SHOWN_PATH_CHARS", "cannot_read", "directory_name_problem", "not_a_path", "shown_path"]

#: Characters of a path shown in a message; the rest is cut.
SHOWN_PATH_CHARS = 200

#: A key in hex, alone or as the key of an identity:HEXKEY line (GnuTLS psktool format).
_HEX_KEY = re.compile(r"(?:.*:)?\s*[0-9A-Fa-f]{16,}\s*")
#: A token of the base64 alphabet without "/", long enough for a key, that `_looks_base64`
#: takes when it mixes upper case, lower case and digits ("/" is a path's separator: with it,
#: only a token that decodes to a key's structure, or is padded, is taken for a key).
_BASE64_CHARS = 40
_BASE64_TOKEN = re.compile(rf"[A-Za-z0-9+]{{{_BASE64_CHARS},}}")
#: Surrounding whitespace, quotes and separators (a key copied from JSON, a list or an
#: environment file: `"...",`).
_WRAPPING = " \t\"',;"
#: What a key copied from where it is kept may carry before its base64: an environment
#: file's `NAME=` (a shell variable's name) or a data URI's `data:TYPE;base64,` (RFC 2397).
_KEY_PREFIX = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*=|data:[^,]*;base64,)(?=.)", re.I)
#: ASCII whitespace, and newlines written as `\n` / `\r` (a PEM body's lines joined as JSON,
#: YAML and environment stores hold them), which base64 decoders would skip.
_SPACES = re.compile(r"(?:[ \t]|\\+[nr])+")


def not_a_path(path: str | bytes, *, hex_is_secret: bool = True) -> str | None:
    """What `path` looks like when it cannot be a file's name but may be a secret (never to
    be quoted): "PEM text", "JSON text", "text of several lines", "text with a NUL
    character", "a key in hex" (unless not `hex_is_secret`: hex where a public key's file
    is expected is a mistyped pin, public) or "a key in base64" (naming no existing file, and
    in base64 by `_looks_base64`: a PEM body without its armour, a PSK, in quotes or not);
    None for a plausible path."""
    text = os.fsdecode(path)
    if text.lstrip().startswith("-----BEGIN"):
        return "PEM text"
    if text.lstrip().startswith("{"):
        return "JSON text"
    if "\n" in text or "\r" in text:
        return "text of several lines"
    if "\0" in text:
        return "text with a NUL character"
    if hex_is_secret and _HEX_KEY.fullmatch(text):
        return "a key in hex"
    if _looks_base64(text) and not os.path.lexists(text):
        return "a key in base64"
    return None


def _looks_base64(text: str) -> bool:
    """Whether `text`, stripped of whitespace, quotes and separators around it (and, as
    another reading, of a `NAME=` or data URI prefix: `_KEY_PREFIX`), with its spaces and
    written-out newlines dropped, is a key in base64 (standard or URL-safe alphabet): one that
    decodes to a DER SEQUENCE exactly as long as the
    bytes (a PKCS#8 or SubjectPublicKeyInfo key: a PEM body without its armour), or ends with
    "=" padding and decodes (a 16-byte PSK is 24 characters), or a token of `_BASE64_TOKEN`
    mixing upper-case letters, lower-case letters and digits, as encoded keys do (path names
    rarely mix all three). Anything else is taken for a path (quoted): a missing
    /etc/iotdtls/keys/Gateway01/ClientPrivateKey is one. Hex alone is left to
    the hex rule (a public key's pin)."""
    token = text.strip(_WRAPPING)
    unwrapped = _KEY_PREFIX.sub("", token, count=1).strip(_WRAPPING)
    if not token or _HEX_KEY.fullmatch(token):
        return False
    for candidate in dict.fromkeys((token, unwrapped)):
        decoded = _base64_decoded(_SPACES.sub("", candidate))
        if decoded is not None and (_is_der_sequence(decoded) or candidate.endswith("=")):
            return True
    return (
        _BASE64_TOKEN.fullmatch(token) is not None
        and any(c.isupper() for c in token)
        and any(c.islower() for c in token)
        and any(c.isdigit() for c in token)
    )


def _base64_decoded(token: str) -> bytes | None:
    """The bytes of `token` in standard or URL-safe base64 ("=" padding as given, or none:
    added), None if it is neither."""
    if token.endswith("=") and len(token) % 4:
        return None  # padded, so its length must be whole
    padded = token + "=" * (-len(token) % 4)
    for altchars in (b"+/", b"-_"):
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except binascii.Error:  # ValueError: not of the alphabet, or a bad length
            continue
    return None


def _is_der_sequence(data: bytes) -> bool:
    """Whether `data` is one DER SEQUENCE (tag 0x30) whose length field counts exactly the
    rest of `data`, as a key's PKCS#8 or SubjectPublicKeyInfo is."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    size = data[1]
    if size < 0x80:
        return 2 + size == len(data)
    count = size & 0x7F
    if not 1 <= count <= 4 or len(data) < 2 + count:
        return False
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big") == len(data)


def directory_name_problem(what: str, path: str | os.PathLike[str]) -> str | None:
    """Why `path`, given as `what` ("chain cache directory"), can name no directory, as a
    one-line message, or None. An empty str is refused ("" is not taken for the working
    directory; `Path("")` is `Path(".")` once made, the working directory, and taken as
    such). A NUL character no file name can hold (every later use raised a raw ValueError);
    such text is not quoted (`not_a_path`: maybe a secret in the wrong place). Anything but a
    str or an os.PathLike of str (bytes included) is a TypeError in one line naming it."""
    try:
        name: object = os.fspath(path)
    except TypeError:  # no path at all, or an __fspath__ answering neither str nor bytes
        name = None
    if not isinstance(name, str):
        raise TypeError(
            f"{what} must be a str or an os.PathLike of str, got {_given(path, name)}"
        )
    if not name:
        return f'{what} is empty: name the directory ("." for this one)'
    if "\0" in name:
        return f"{what} holds a NUL character, which no file name can: name the directory"
    return None


def _given(path: object, name: object) -> str:
    """What a message says was given as a directory: its type, and what its __fspath__
    answered when that is another type (an os.PathLike of bytes)."""
    given = "None" if path is None else type(path).__name__
    if name is not None and name is not path:
        given += f" (its __fspath__ returned {type(name).__name__})"
    return given


def shown_path(path: str | bytes) -> str:
    """`path` for a one-line message: control and other unprintable characters escaped as in
    a Python literal, cut after `SHOWN_PATH_CHARS` characters ("..." and the length)."""
    text = os.fsdecode(path)
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:SHOWN_PATH_CHARS])
    if len(text) <= SHOWN_PATH_CHARS:
        return shown
    return f"{shown}... ({len(text)} characters)"


def cannot_read(
    what: str,
    path: str | bytes,
    exc: OSError | ValueError,
    instead: str = "",
    *,
    hex_is_secret: bool = True,
) -> str:
    """The message for `path`, given as `what` ("key file", "--rpk-key"), that could not be
    opened or read (`exc`: `open` raises ValueError for a NUL): "cannot read WHAT PATH:
    REASON", or, for a value that is no path (`not_a_path`, `hex_is_secret` passed on), what
    it is and `instead`, the other way to give it (" (or ...)")."""
    given = not_a_path(path, hex_is_secret=hex_is_secret)
    if given is not None:
        return f"{what} was given {given}, not a path: give the file's path{instead}"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot read {what} {shown_path(path)}: {reason}"
