"""How a file name given for a key, a certificate or a credentials file appears in a one-line
error (errors are one line saying what to fix, with no key material in them).

A secret given where its file's path was expected (the PEM text of a private key, a
--psk-file line) is never quoted: the message says what it looks like instead. Any other path
is quoted, as the user wants to see a typo, on one line (control characters escaped) and cut
when very long."""

from __future__ import annotations

import os
import re

__all__ = ["SHOWN_PATH_CHARS", "cannot_read", "directory_name_problem", "not_a_path", "shown_path"]

#: Characters of a path shown in a message; the rest is cut.
SHOWN_PATH_CHARS = 200

#: A key in hex, alone or as the key of an identity:HEXKEY line (GnuTLS psktool format).
_HEX_KEY = re.compile(r"(?:.*:)?\s*[0-9A-Fa-f]{16,}\s*")
#: A key in base64 on one line (a PEM body without its armour, as secret stores and
#: environment variables hold keys): at least `_BASE64_CHARS` characters of the base64
#: alphabet, "=" padding allowed at the end.
_BASE64_CHARS = 40
_BASE64_KEY = re.compile(rf"\s*[A-Za-z0-9+/]{{{_BASE64_CHARS},}}={{0,2}}\s*")


def not_a_path(path: str | bytes, *, hex_is_secret: bool = True) -> str | None:
    """What `path` looks like when it cannot be a file's name but may be a secret (never to
    be quoted): "PEM text", "JSON text", "text of several lines", "text with a NUL
    character", "a key in hex" (unless not `hex_is_secret`: hex where a public key's file
    is expected is a mistyped pin, public) or "a key in base64" (a long token of the base64
    alphabet with upper- and lower-case letters and digits, naming no existing file: a PEM
    body without its armour); None for a plausible path."""
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
    """Whether `text` is a long base64 token (`_BASE64_KEY`) mixing upper-case letters,
    lower-case letters and digits, as encoded keys do (path names of that alphabet rarely
    mix all three). Hex alone is left to the hex rule (a public key's pin)."""
    return (
        _BASE64_KEY.fullmatch(text) is not None
        and _HEX_KEY.fullmatch(text) is None
        and any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() for c in text)
    )


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
