"""The message-format errors of RFC 7252 that aiocoap (0.4.17) decodes as messages.

aiocoap's `Message.decode` raises `UnparsableMessage` for a header it cannot read, but takes a
Token Length of 9 to 15 (a reserved value, RFC 7252 §3: its token is the next 9 to 15 bytes,
and a server answered with that 15-byte token and TKL 15), a token cut short by the end of the
datagram (the bytes there are its token), a payload marker with no payload after it (§3:
"MUST be processed as a message format error"), an Empty message (code 0.00) with a token or
bytes after its message ID (§4.1), and a code of a reserved class, 1, 6 or 7 (§12.1: 0 is for
requests, 2, 4 and 5 for responses), which it then ignores. `format_error` names these, so
that the transports treat them as messages that cannot be decoded (a Reset for a confirmable
one, §4.2; others ignored, §4.3: `iotdtls.coap.addresses.CoapsInterface.deliver`).
"""

from __future__ import annotations

__all__ = ["MAX_TOKEN_LENGTH", "RESERVED_CODE_CLASSES", "format_error"]

#: The longest token, in bytes; Token Length values 9 to 15 are reserved (RFC 7252 §3).
MAX_TOKEN_LENGTH = 8
#: The code classes no CoAP message over UDP or DTLS may carry (RFC 7252 §12.1).
RESERVED_CODE_CLASSES = frozenset({1, 6, 7})
#: The byte that ends the options and starts a payload (RFC 7252 §3).
PAYLOAD_MARKER = 0xFF
#: The fixed header: version, type, token length, code, message ID (RFC 7252 §3).
_HEADER = 4


def format_error(data: bytes) -> str | None:
    """What makes `data` a message format error that aiocoap would decode (see the module
    docstring), or None: for a well-formed message, and for one whose header or options
    aiocoap itself cannot decode (it raises `UnparsableMessage` for those)."""
    if len(data) < _HEADER:
        return None
    token_length = data[0] & 0x0F
    if token_length > MAX_TOKEN_LENGTH:
        return f"token length {token_length} is reserved (RFC 7252 §3)"
    if len(data) < _HEADER + token_length:
        return f"a {token_length}-byte token cut short at {len(data) - _HEADER} bytes"
    code_class = data[1] >> 5
    if code_class in RESERVED_CODE_CLASSES:
        return f"code class {code_class} is reserved (RFC 7252 §12.1)"
    if data[1] == 0 and len(data) > _HEADER:
        return "an Empty message with bytes after its message ID (RFC 7252 §4.1)"
    if _ends_with_a_bare_payload_marker(data, _HEADER + token_length):
        return "a payload marker with no payload (RFC 7252 §3)"
    return None


def _ends_with_a_bare_payload_marker(data: bytes, start: int) -> bool:
    """Whether the options from `start` end at a payload marker that is the last byte of
    `data` (RFC 7252 §3.1); False also for options aiocoap cannot decode (its error)."""
    position = start
    while position < len(data):
        if data[position] == PAYLOAD_MARKER:
            return position == len(data) - 1
        first = data[position]
        delta = _extended(first >> 4, data, position + 1)
        if delta is None:
            return False
        length = _extended(first & 0x0F, data, delta[1])
        if length is None:
            return False
        position = length[1] + length[0]
    return False


def _extended(nibble: int, data: bytes, position: int) -> tuple[int, int] | None:
    """An option delta or length of `nibble` (RFC 7252 §3.1: 13 and 14 take one and two more
    bytes from `position`, 15 is reserved) and the position after it; None if it cannot be."""
    if nibble < 13:
        return nibble, position
    if nibble == 13 and position + 1 <= len(data):
        return data[position] + 13, position + 1
    if nibble == 14 and position + 2 <= len(data):
        return int.from_bytes(data[position:position + 2], "big") + 269, position + 2
    return None
